// Dense CRF (src/ops/crf.ts, docs/crf.md): the kernels both paths share, the exact path's
// features and normalisers, and the lattice path's separable Gaussian. Label-major layouts:
// probabilities, -U, Q and messages are [L, N] (N = H·W pixels, p = y·W + x).
//
//   unary_init      lu = log(clamp(probs, clip, 1)) (= -U), q = softmax_l(lu); mode 1 also
//                   writes s = [ng·q, nb·q] ([2, L, N]: the next messages' inputs)
//   update          (lattice path) q = softmax_l(lu + cg·ng·G + cb·nb·B) with G the vertical
//                   pass of the Gaussian over t and B the lattice slice of the blurred lattice
//                   values A (alpha·Σ_j bary·A[vertex]); mode 1 also writes s as above
//   exact_features  feat[2p] = (x/sg, y/sg, x/sb, y/sb), feat[2p+1] = (r/sr, g/sr, b/sr, 0)
//   exact_norm      ng = 1/sqrt(Σ_q kg(p,q) + 1e-20), nb likewise (O(N) per pixel)
//   gauss_weights   pix[2N + i] = w(i), i = 0..radius
//   gauss_h         t[l,y,x] = Σ_|dx|<=r w(dx)·v[l,y,x+dx]   (v = ng·q, or 1 for ones)
//   gauss_norm      ng = pix[0, N) = 1/sqrt(Σ_|dy|<=r w(dy)·t[y+dy,x] + 1e-20)
// with w(i) = exp(-0.5·(i/sxy)²); pix = [ng (N), nb (N), w (radius + 1)] per image. Every sum
// runs in a fixed order: runs repeat bit for bit.

{{struct:CrfParams}}

// The scaled probabilities s: ng·Q label-major [L, N], then from qb_offset nb·Q pixel-major
// [N, L4] (labels padded with zeros to L4 = 4·ceil(L/4): the splat reads them as vec4).
fn qb_offset(L: u32, N: u32) -> u32 {
  return (L * N + 3u) / 4u * 4u;
}

fn qb_index(L: u32, N: u32, p: u32, l: u32) -> u32 {
  return qb_offset(L, N) + p * ((L + 3u) / 4u * 4u) + l;
}

// ---- unary_init ----

@group(0) @binding(0) var<storage, read> ui_probs: array<f32>;
@group(0) @binding(1) var<storage, read> ui_pix: array<f32>;
@group(0) @binding(2) var<storage, read_write> ui_lu: array<f32>;
@group(0) @binding(3) var<storage, read_write> ui_q: array<f32>;
@group(0) @binding(4) var<storage, read_write> ui_s: array<f32>;
@group(0) @binding(5) var<uniform> ui_p: CrfParams;

@compute @workgroup_size(64)
fn unary_init(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = ui_p.N;
  if (p >= N) { return; }
  let L = ui_p.L;
  var m = -3.0e38;
  for (var l = 0u; l < L; l++) {
    let v = log(clamp(ui_probs[l * N + p], ui_p.clip, 1.0));
    ui_lu[l * N + p] = v;
    m = max(m, v);
  }
  var z = 0.0;
  for (var l = 0u; l < L; l++) {
    let e = exp(ui_lu[l * N + p] - m);
    ui_q[l * N + p] = e;
    z += e;
  }
  let iz = 1.0 / z;
  for (var l = 0u; l < L; l++) {
    let v = ui_q[l * N + p] * iz;
    ui_q[l * N + p] = v;
    if (ui_p.mode == 1u) {
      ui_s[l * N + p] = ui_pix[p] * v;
      ui_s[qb_index(L, N, p, l)] = ui_pix[N + p] * v;
    }
  }
  if (ui_p.mode == 1u) {
    for (var l = L; l < (L + 3u) / 4u * 4u; l++) { ui_s[qb_index(L, N, p, l)] = 0.0; }
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

// ---- gauss_weights: pix[2N + i] = w(i), i = 0..radius ----

@group(0) @binding(0) var<storage, read_write> gw_pix: array<f32>;
@group(0) @binding(1) var<uniform> gw_p: CrfParams;

@compute @workgroup_size(64)
fn gauss_weights(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i > gw_p.radius) { return; }
  let d = f32(i) / gw_p.sg;
  gw_pix[2u * gw_p.N + i] = exp(-0.5 * d * d);
}

// ---- gauss_norm: the vertical pass of the blur of ones, pix[p] = 1/sqrt(· + 1e-20) ----

@group(0) @binding(0) var<storage, read> gn_t: array<f32>;
@group(0) @binding(1) var<storage, read_write> gn_pix: array<f32>;
@group(0) @binding(2) var<uniform> gn_p: CrfParams;

@compute @workgroup_size(64)
fn gauss_norm(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = gn_p.N;
  if (p >= N) { return; }
  let W = gn_p.W;
  let y = i32(p / W);
  let x = p % W;
  let r = i32(gn_p.radius);
  let lo = max(y - r, 0);
  let hi = min(y + r, i32(gn_p.H) - 1);
  var s = 0.0;
  for (var yy = lo; yy <= hi; yy++) {
    s += gn_pix[2u * N + u32(abs(yy - y))] * gn_t[u32(yy) * W + x];
  }
  gn_pix[p] = 1.0 / sqrt(s + 1e-20);
}
