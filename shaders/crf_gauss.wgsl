// Dense CRF, lattice path (src/ops/crf.ts, docs/crf.md): the kernels of the separable Gaussian,
// templated on its radius R: src/ops/crf.ts unrolls the taps into the H_BODY / V_BODY
// placeholders (straight-line code, weights in registers, each output's taps in increasing
// column / row order, as a plain loop adds them). Label-major [L, N] layouts.
//
//   gauss_h  t[l,y,x] = Σ_|dx|<=R w(dx)·v[l,y,x+dx]   (v = ng·q, or 1 for ones; HB pixels of
//            a row per invocation)
//   update   q = softmax_l(lu + cg·ng·G + cb·nb·B) for VB pixels of a column per invocation, G
//            the vertical pass of the Gaussian over t and B the lattice slice of the blurred
//            lattice values A (alpha·Σ_j bary·A[vertex]); mode 1 also writes the next
//            messages' inputs s = [ng·q label-major, nb·q pixel-major]
// with w(i) = pix[2N + i] (gauss_weights, shaders/crf.wgsl). Every sum runs in a fixed order.

{{struct:CrfGaussParams}}

// The scaled probabilities s: ng·Q label-major [L, N], then from qb_offset nb·Q pixel-major
// [N, L4] (labels padded with zeros to L4 = 4·ceil(L/4): the splat reads them as vec4).
fn qb_offset(L: u32, N: u32) -> u32 {
  return (L * N + 3u) / 4u * 4u;
}

fn qb_index(L: u32, N: u32, p: u32, l: u32) -> u32 {
  return qb_offset(L, N) + p * ((L + 3u) / 4u * 4u) + l;
}

const HB: u32 = {{HB}}u;
const VB: u32 = {{VB}}u;
// The label count when at most 32 (the softmax stays in registers), else 1 and PRIV false.
const NLP: u32 = {{NLP}}u;
const PRIV: bool = {{PRIV}};

// ---- gauss_h: one invocation per HB pixels x0 .. x0 + HB - 1 of a row and one label ----

@group(0) @binding(0) var<storage, read> gh_v: array<f32>;
@group(0) @binding(1) var<storage, read> gh_pix: array<f32>;
@group(0) @binding(2) var<storage, read_write> gh_t: array<f32>;
@group(0) @binding(3) var<uniform> gh_p: CrfGaussParams;

// Weight i (the loop form of a large radius).
fn gh_w(i: u32) -> f32 {
  return gh_pix[2u * gh_p.N + i];
}

fn gh_val(i: u32) -> f32 {
  if (gh_p.mode == 0u) { return gh_v[i]; }
  return 1.0;
}

@compute @workgroup_size(64)
fn gauss_h(@builtin(global_invocation_id) gid: vec3u) {
  let W = gh_p.W;
  let nbx = (W + HB - 1u) / HB;
  let b = gid.x;
  let l = gid.y;
  if (b >= nbx * gh_p.H) { return; }
  let N = gh_p.N;
  let iW = i32(W);
  let base = l * N + (b / nbx) * W;
  let x0 = i32((b % nbx) * HB);
  let wo = 2u * N;
{{H_WEIGHTS}}
{{H_ACC}}
{{H_BODY}}
  let o = base + u32(x0);
{{H_STORE}}
}

// ---- update: one invocation per column x and VB rows y0 .. y0 + VB - 1 ----

@group(0) @binding(0) var<storage, read> up_lu: array<f32>;
@group(0) @binding(1) var<storage, read> up_t: array<f32>;
@group(0) @binding(2) var<storage, read> up_a: array<f32>;
@group(0) @binding(3) var<storage, read> up_corner: array<vec2u>;
@group(0) @binding(4) var<storage, read> up_pix: array<f32>;
@group(0) @binding(5) var<storage, read_write> up_q: array<f32>;
@group(0) @binding(6) var<storage, read_write> up_s: array<f32>;
@group(0) @binding(7) var<uniform> up_p: CrfGaussParams;

fn up_w(i: u32) -> f32 {
  return up_pix[2u * up_p.N + i];
}

@compute @workgroup_size(64)
fn update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let b = flat_index(gid, nwg, 64u);
  let W = up_p.W;
  let H = up_p.H;
  if (b >= W * ((H + VB - 1u) / VB)) { return; }
  let N = up_p.N;
  let L = up_p.L;
  let x = b % W;
  let y0 = (b / W) * VB;
  let iy0 = i32(y0);
  let iH = i32(H);
  let nk = min(VB, H - y0);
  let alpha = 1.0 / (1.0 + exp2(-5.0));
  let wo = 2u * N;
  let has_g = up_p.has_g != 0u;
  let has_b = up_p.has_b != 0u;
  var off: array<u32, VB * 6u>;
  var bary: array<f32, VB * 6u>;
  var wg: array<f32, VB>;
  var wb: array<f32, VB>;
  var m: array<f32, VB>;
  // The logits, then their exponentials, of the VB pixels (labels below NLP: L <= 32).
  var tq: array<f32, VB * NLP>;
  for (var k = 0u; k < VB; k++) {
    if (k >= nk) { break; }
    let p = (y0 + k) * W + x;
    wg[k] = up_p.cg * up_pix[p];
    wb[k] = up_p.cb * up_pix[N + p];
    m[k] = -3.0e38;
    if (has_b) {
      for (var j = 0u; j < 6u; j++) {
        let c = up_corner[p * 6u + j];
        off[k * 6u + j] = c.x * L;
        bary[k * 6u + j] = bitcast<f32>(c.y);
      }
    }
  }
{{V_WEIGHTS}}
  for (var l = 0u; l < L; l++) {
{{V_ACC}}
    if (has_g) {
      let base = l * N + x;
{{V_BODY}}
    }
    let g = array<f32, VB>({{V_LIST}});
    for (var k = 0u; k < VB; k++) {
      if (k >= nk) { break; }
      let p = (y0 + k) * W + x;
      var t = up_lu[l * N + p];
      if (has_g) { t += wg[k] * g[k]; }
      if (has_b) {
        // The lattice slice.
        var s = 0.0;
        for (var j = 0u; j < 6u; j++) {
          s += bary[k * 6u + j] * up_a[off[k * 6u + j] + l];
        }
        s *= alpha;
        t += wb[k] * s;
      }
      if (PRIV) { tq[k * NLP + l] = t; } else { up_q[l * N + p] = t; }
      m[k] = max(m[k], t);
    }
  }
  for (var k = 0u; k < VB; k++) {
    if (k >= nk) { break; }
    let p = (y0 + k) * W + x;
    var z = 0.0;
    for (var l = 0u; l < L; l++) {
      if (PRIV) {
        let e = exp(tq[k * NLP + l] - m[k]);
        tq[k * NLP + l] = e;
        z += e;
      } else {
        let e = exp(up_q[l * N + p] - m[k]);
        up_q[l * N + p] = e;
        z += e;
      }
    }
    let iz = 1.0 / z;
    let ng = up_pix[p];
    let nb = up_pix[N + p];
    for (var l = 0u; l < L; l++) {
      var e: f32;
      if (PRIV) { e = tq[k * NLP + l]; } else { e = up_q[l * N + p]; }
      let v = e * iz;
      up_q[l * N + p] = v;
      if (up_p.mode == 1u) {
        up_s[l * N + p] = ng * v;
        up_s[qb_index(L, N, p, l)] = nb * v;
      }
    }
    if (up_p.mode == 1u) {
      for (var l = L; l < (L + 3u) / 4u * 4u; l++) { up_s[qb_index(L, N, p, l)] = 0.0; }
    }
  }
}
