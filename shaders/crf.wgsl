// Dense CRF (src/ops/crf.ts, docs/crf.md): the kernels both paths share, the exact path's
// features and normalisers, and the lattice path's separable Gaussian. Label-major layouts:
// probabilities, -U, Q and messages are [L, N] (N = H·W pixels, p = y·W + x).
//
//   unary_init      lu = log(clamp(probs, clip, 1)) (= -U), q = softmax_l(lu)
//   update          q = softmax_l(lu + cg·ng·G + cb·nb·B)   (G, B: unnormalised-on-output
//                   filtered messages; ng, nb: the per-pixel normalisers)
//   exact_features  feat[2p] = (x/sg, y/sg, x/sb, y/sb), feat[2p+1] = (r/sr, g/sr, b/sr, 0)
//   exact_norm      ng = 1/sqrt(Σ_q kg(p,q) + 1e-20), nb likewise (O(N) per pixel)
//   gauss_h         t[l,y,x] = Σ_|dx|<=r w(dx)·s(y,x+dx)·v[l,y,x+dx]   (s = ng, or 1 for ones)
//   gauss_v         g[l,y,x] = Σ_|dy|<=r w(dy)·t[l,y+dy,x]; mode 1: g = 1/sqrt(g + 1e-20)
// with w(i) = exp(-0.5·(i/sxy)²). Every sum runs in a fixed order: runs repeat bit for bit.

{{struct:CrfParams}}

// ---- unary_init ----

@group(0) @binding(0) var<storage, read> ui_probs: array<f32>;
@group(0) @binding(1) var<storage, read_write> ui_lu: array<f32>;
@group(0) @binding(2) var<storage, read_write> ui_q: array<f32>;
@group(0) @binding(3) var<uniform> ui_p: CrfParams;

@compute @workgroup_size(64)
fn unary_init(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = ui_p.N;
  if (p >= N) { return; }
  var m = -3.0e38;
  for (var l = 0u; l < ui_p.L; l++) {
    let v = log(clamp(ui_probs[l * N + p], ui_p.clip, 1.0));
    ui_lu[l * N + p] = v;
    m = max(m, v);
  }
  var z = 0.0;
  for (var l = 0u; l < ui_p.L; l++) {
    z += exp(ui_lu[l * N + p] - m);
  }
  let iz = 1.0 / z;
  for (var l = 0u; l < ui_p.L; l++) {
    ui_q[l * N + p] = exp(ui_lu[l * N + p] - m) * iz;
  }
}

// ---- update ----

@group(0) @binding(0) var<storage, read> up_lu: array<f32>;
@group(0) @binding(1) var<storage, read> up_g: array<f32>;
@group(0) @binding(2) var<storage, read> up_b: array<f32>;
@group(0) @binding(3) var<storage, read> up_ng: array<f32>;
@group(0) @binding(4) var<storage, read> up_nb: array<f32>;
@group(0) @binding(5) var<storage, read_write> up_q: array<f32>;
@group(0) @binding(6) var<uniform> up_p: CrfParams;

fn up_tmp(l: u32, p: u32, wg: f32, wb: f32) -> f32 {
  let i = l * up_p.N + p;
  var t = up_lu[i];
  if (up_p.has_g != 0u) { t += wg * up_g[i]; }
  if (up_p.has_b != 0u) { t += wb * up_b[i]; }
  return t;
}

@compute @workgroup_size(64)
fn update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = up_p.N;
  if (p >= N) { return; }
  var wg = 0.0;
  var wb = 0.0;
  if (up_p.has_g != 0u) { wg = up_p.cg * up_ng[p]; }
  if (up_p.has_b != 0u) { wb = up_p.cb * up_nb[p]; }
  var m = -3.0e38;
  for (var l = 0u; l < up_p.L; l++) {
    m = max(m, up_tmp(l, p, wg, wb));
  }
  var z = 0.0;
  for (var l = 0u; l < up_p.L; l++) {
    z += exp(up_tmp(l, p, wg, wb) - m);
  }
  let iz = 1.0 / z;
  for (var l = 0u; l < up_p.L; l++) {
    up_q[l * N + p] = exp(up_tmp(l, p, wg, wb) - m) * iz;
  }
}

// ---- exact_features ----

@group(0) @binding(0) var<storage, read> ef_img: array<f32>;
@group(0) @binding(1) var<storage, read_write> ef_feat: array<vec4f>;
@group(0) @binding(2) var<uniform> ef_p: CrfParams;

@compute @workgroup_size(64)
fn exact_features(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = ef_p.N;
  if (p >= N) { return; }
  let x = f32(p % ef_p.W);
  let y = f32(p / ef_p.W);
  let r = clamp(ef_img[p], 0.0, 255.0);
  let g = clamp(ef_img[N + p], 0.0, 255.0);
  let b = clamp(ef_img[2u * N + p], 0.0, 255.0);
  ef_feat[2u * p] = vec4f(x / ef_p.sg, y / ef_p.sg, x / ef_p.sb, y / ef_p.sb);
  ef_feat[2u * p + 1u] = vec4f(r / ef_p.srgb, g / ef_p.srgb, b / ef_p.srgb, 0.0);
}

// ---- exact_norm ----

@group(0) @binding(0) var<storage, read> en_feat: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> en_ng: array<f32>;
@group(0) @binding(2) var<storage, read_write> en_nb: array<f32>;
@group(0) @binding(3) var<uniform> en_p: CrfParams;

@compute @workgroup_size(64)
fn exact_norm(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = en_p.N;
  if (p >= N) { return; }
  let fa = en_feat[2u * p];
  let fc = en_feat[2u * p + 1u];
  var sg = 0.0;
  var sb = 0.0;
  for (var q = 0u; q < N; q++) {
    let da = fa - en_feat[2u * q];
    let dc = fc - en_feat[2u * q + 1u];
    sg += exp(-0.5 * dot(da.xy, da.xy));
    sb += exp(-0.5 * (dot(da.zw, da.zw) + dot(dc.xyz, dc.xyz)));
  }
  en_ng[p] = 1.0 / sqrt(sg + 1e-20);
  en_nb[p] = 1.0 / sqrt(sb + 1e-20);
}

// ---- gauss_h / gauss_v: one invocation per (pixel, label) ----

@group(0) @binding(0) var<storage, read> gh_v: array<f32>;
@group(0) @binding(1) var<storage, read> gh_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> gh_t: array<f32>;
@group(0) @binding(3) var<uniform> gh_p: CrfParams;

@compute @workgroup_size(64)
fn gauss_h(@builtin(global_invocation_id) gid: vec3u) {
  let p = gid.x;
  let l = gid.y;
  let N = gh_p.N;
  if (p >= N) { return; }
  let W = gh_p.W;
  let x = i32(p % W);
  let row = p - u32(x);
  let r = i32(gh_p.radius);
  let lo = max(x - r, 0);
  let hi = min(x + r, i32(W) - 1);
  var s = 0.0;
  for (var xx = lo; xx <= hi; xx++) {
    let dx = f32(xx - x) / gh_p.sg;
    let q = row + u32(xx);
    var v = 1.0;
    if (gh_p.mode == 0u) { v = gh_s[q] * gh_v[l * N + q]; }
    s += exp(-0.5 * dx * dx) * v;
  }
  gh_t[l * N + p] = s;
}

@group(0) @binding(0) var<storage, read> gv_t: array<f32>;
@group(0) @binding(1) var<storage, read_write> gv_g: array<f32>;
@group(0) @binding(2) var<uniform> gv_p: CrfParams;

@compute @workgroup_size(64)
fn gauss_v(@builtin(global_invocation_id) gid: vec3u) {
  let p = gid.x;
  let l = gid.y;
  let N = gv_p.N;
  if (p >= N) { return; }
  let W = gv_p.W;
  let y = i32(p / W);
  let x = p % W;
  let r = i32(gv_p.radius);
  let lo = max(y - r, 0);
  let hi = min(y + r, i32(gv_p.H) - 1);
  var s = 0.0;
  for (var yy = lo; yy <= hi; yy++) {
    let dy = f32(yy - y) / gv_p.sg;
    s += exp(-0.5 * dy * dy) * gv_t[l * N + u32(yy) * W + x];
  }
  if (gv_p.mode == 1u) {
    s = 1.0 / sqrt(s + 1e-20);
  }
  gv_g[l * N + p] = s;
}
