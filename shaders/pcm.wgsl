// SEAM's pixel correlation module (Wang et al., CVPR 2020), forward and backward, and the
// no-grad CAM normalisation it refines (src/ops/pcm.ts). Per sample, with f [D, HW] the
// projected features and x [C, HW] the normalised CAM:
//   fn_i = f_i / (‖f_i‖ + 1e-5)              (pcm_norm)
//   a_ij = relu(fn_i · fn_j),  s_j = Σ_i a_ij (the column sums, SEAM's dim 1)
//   y_cj = Σ_i x_ci a_ij / (s_j + 1e-5)      (pcm_fwd, one invocation per column j)
// The HW x HW affinity is never stored: every pass recomputes the dot products it needs, so a
// sample's bindings are only its features and maps (a 56x56 map with D = 192 binds 2.4 MB).
// Backward (dy given, x constant):
//   dA_ij = Σ_c x_ci dy_cj,  t_j = Σ_i dA_ij a_ij / (s_j + 1e-5)²     (pcm_bwd_col)
//   dg_ij = [fn_i·fn_j > 0] (dA_ij / (s_j + 1e-5) - t_j)
//   dfn_k = Σ_j (dg_kj + dg_jk) fn_j, then through the normalisation  (pcm_bwd_feat)
//
// llvmpipe's loop budget: llvmpipe ends an invocation's loops silently once they have run
// 65535 iterations in all (one counter for all loops of the invocation, inner ones included;
// real GPUs have no such limit). A pass over all HW pixels costs HW·(D + C) trips (1.3 M at
// 64x64, D 256, C 64), so the three pair kernels walk only the pixel range [i0, i1) of the
// uniform: src/ops/pcm.ts records one dispatch per range, in pixel order, and each invocation
// carries its running sums from one range to the next in its own output (y and s, t, df: read
// back when i0 > 0, finished when i1 = HW). The ranges are sized (pcmRange in src/ops/pcm.ts,
// from the trip counts stated at each kernel) so that no invocation runs more than 60,000 loop
// trips at any shape the op takes (D <= 256, C <= 64, any HW). The channel loops are unrolled
// by 4 (the same terms in the same order as a plain loop), which quarters their trips. Every
// sum runs in a fixed order (pixel order, across the dispatches) in one invocation:
// deterministic, no atomics, and no more memory than a single pass.
// cdn_max / cdn_apply: SEAM's cam_d_norm (see src/ops/pcm.ts).

override WG: u32 = 64u;

const EPS: f32 = 1e-5;
const MAXC: u32 = 64u;
const MAXD: u32 = 256u;

// Uniform of every kernel here, declared in src/ops/pcm.ts: C maps, D feature channels, HW
// pixels, o0..o6 the element offsets of the chunk's first sample in the bindings (in binding
// order).
{{struct:PcmParams}}

// ---- pcm_norm: fn = f / (‖f‖ + eps), one invocation per pixel ----

@group(0) @binding(0) var<storage, read> pn_f: array<f32>;
@group(0) @binding(1) var<storage, read_write> pn_fn: array<f32>;
@group(0) @binding(2) var<uniform> pn_p: PcmParams;

@compute @workgroup_size(WG)
fn pcm_norm(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = pn_p.HW;
  if (gid.x >= HW) { return; }
  let fb = pn_p.o0 + wid.y * pn_p.D * HW + gid.x;
  let ob = pn_p.o1 + wid.y * pn_p.D * HW + gid.x;
  var ss = 0.0;
  for (var d = 0u; d < pn_p.D; d++) {
    let v = pn_f[fb + d * HW];
    ss += v * v;
  }
  let inv = 1.0 / (sqrt(ss) + EPS);
  for (var d = 0u; d < pn_p.D; d++) {
    pn_fn[ob + d * HW] = pn_f[fb + d * HW] * inv;
  }
}

// ---- pcm_fwd: y[:, j] and s_j over pixels [i0, i1), one invocation per column j ----
// Loop trips: (C + 1) + (i1 - i0)·(1 + u(D) + u(C)) + 1 + (C + 1), u(n) = n/4 + 5 the trips
// of a loop unrolled by 4 with its tail (each loop's exit test counted as a trip).

@group(0) @binding(0) var<storage, read> pf_fn: array<f32>;
@group(0) @binding(1) var<storage, read> pf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> pf_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> pf_s: array<f32>;
@group(0) @binding(4) var<uniform> pf_p: PcmParams;

@compute @workgroup_size(WG)
fn pcm_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = pf_p.HW;
  let j = gid.x;
  if (j >= HW) { return; }
  let C = pf_p.C;
  let D = pf_p.D;
  let fb = pf_p.o0 + wid.y * D * HW;
  let xb = pf_p.o1 + wid.y * C * HW;
  let yb = pf_p.o2 + wid.y * C * HW + j;
  let sb = pf_p.o3 + wid.y * HW + j;
  // The running sums of the earlier ranges (raw, not yet divided by s).
  let first = pf_p.i0 == 0u;
  var acc: array<f32, MAXC>;
  for (var c = 0u; c < C; c++) { acc[c] = select(pf_y[yb + c * HW], 0.0, first); }
  var s = select(pf_s[sb], 0.0, first);
  for (var i = pf_p.i0; i < pf_p.i1; i++) {
    var g = 0.0;
    var d = 0u;
    for (; d + 4u <= D; d += 4u) {
      let p = fb + d * HW;
      g += pf_fn[p + i] * pf_fn[p + j];
      g += pf_fn[p + HW + i] * pf_fn[p + HW + j];
      g += pf_fn[p + 2u * HW + i] * pf_fn[p + 2u * HW + j];
      g += pf_fn[p + 3u * HW + i] * pf_fn[p + 3u * HW + j];
    }
    for (; d < D; d++) { g += pf_fn[fb + d * HW + i] * pf_fn[fb + d * HW + j]; }
    let a = max(g, 0.0);
    if (a > 0.0) {
      s += a;
      var c = 0u;
      for (; c + 4u <= C; c += 4u) {
        let q = xb + c * HW + i;
        acc[c] += pf_x[q] * a;
        acc[c + 1u] += pf_x[q + HW] * a;
        acc[c + 2u] += pf_x[q + 2u * HW] * a;
        acc[c + 3u] += pf_x[q + 3u * HW] * a;
      }
      for (; c < C; c++) { acc[c] += pf_x[xb + c * HW + i] * a; }
    }
  }
  var inv = 1.0;
  if (pf_p.i1 == HW) { inv = 1.0 / (s + EPS); }
  for (var c = 0u; c < C; c++) { pf_y[yb + c * HW] = acc[c] * inv; }
  pf_s[sb] = s;
}

// ---- pcm_bwd_col: t_j over pixels [i0, i1), one invocation per column j ----
// Loop trips: (C + 1) + (i1 - i0)·(1 + u(D) + u(C)) + 1 (u as for pcm_fwd).

@group(0) @binding(0) var<storage, read> pc_fn: array<f32>;
@group(0) @binding(1) var<storage, read> pc_x: array<f32>;
@group(0) @binding(2) var<storage, read> pc_dy: array<f32>;
@group(0) @binding(3) var<storage, read> pc_s: array<f32>;
@group(0) @binding(4) var<storage, read_write> pc_t: array<f32>;
@group(0) @binding(5) var<uniform> pc_p: PcmParams;

@compute @workgroup_size(WG)
fn pcm_bwd_col(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = pc_p.HW;
  let j = gid.x;
  if (j >= HW) { return; }
  let C = pc_p.C;
  let D = pc_p.D;
  let fb = pc_p.o0 + wid.y * D * HW;
  let xb = pc_p.o1 + wid.y * C * HW;
  let db = pc_p.o2 + wid.y * C * HW;
  let tb = pc_p.o4 + wid.y * HW + j;
  var dyj: array<f32, MAXC>;
  for (var c = 0u; c < C; c++) { dyj[c] = pc_dy[db + c * HW + j]; }
  // The running sum of the earlier ranges (not yet divided by (s_j + eps)²).
  var acc = select(pc_t[tb], 0.0, pc_p.i0 == 0u);
  for (var i = pc_p.i0; i < pc_p.i1; i++) {
    var g = 0.0;
    var d = 0u;
    for (; d + 4u <= D; d += 4u) {
      let p = fb + d * HW;
      g += pc_fn[p + i] * pc_fn[p + j];
      g += pc_fn[p + HW + i] * pc_fn[p + HW + j];
      g += pc_fn[p + 2u * HW + i] * pc_fn[p + 2u * HW + j];
      g += pc_fn[p + 3u * HW + i] * pc_fn[p + 3u * HW + j];
    }
    for (; d < D; d++) { g += pc_fn[fb + d * HW + i] * pc_fn[fb + d * HW + j]; }
    if (g > 0.0) {
      var da = 0.0;
      var c = 0u;
      for (; c + 4u <= C; c += 4u) {
        let q = xb + c * HW + i;
        da += pc_x[q] * dyj[c];
        da += pc_x[q + HW] * dyj[c + 1u];
        da += pc_x[q + 2u * HW] * dyj[c + 2u];
        da += pc_x[q + 3u * HW] * dyj[c + 3u];
      }
      for (; c < C; c++) { da += pc_x[xb + c * HW + i] * dyj[c]; }
      acc += da * g;
    }
  }
  if (pc_p.i1 == HW) {
    let se = pc_s[pc_p.o3 + wid.y * HW + j] + EPS;
    acc = acc / (se * se);
  }
  pc_t[tb] = acc;
}

// ---- pcm_bwd_feat: df[:, k] over pixels j in [i0, i1), one invocation per pixel k ----
// Loop trips: (C + 1) + (D + 1) + (i1 - i0)·(1 + 2·u(D) + u(C)) + 1 + 2·(D + 1) (u as for
// pcm_fwd; the last range's normalisation is the 2·(D + 1)).

@group(0) @binding(0) var<storage, read> pb_f: array<f32>;
@group(0) @binding(1) var<storage, read> pb_fn: array<f32>;
@group(0) @binding(2) var<storage, read> pb_x: array<f32>;
@group(0) @binding(3) var<storage, read> pb_dy: array<f32>;
@group(0) @binding(4) var<storage, read> pb_s: array<f32>;
@group(0) @binding(5) var<storage, read> pb_t: array<f32>;
@group(0) @binding(6) var<storage, read_write> pb_df: array<f32>;
@group(0) @binding(7) var<uniform> pb_p: PcmParams;

@compute @workgroup_size(WG)
fn pcm_bwd_feat(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = pb_p.HW;
  let k = gid.x;
  if (k >= HW) { return; }
  let C = pb_p.C;
  let D = pb_p.D;
  let fb = pb_p.o0 + wid.y * D * HW;
  let nb = pb_p.o1 + wid.y * D * HW;
  let xb = pb_p.o2 + wid.y * C * HW;
  let db = pb_p.o3 + wid.y * C * HW;
  let sb = pb_p.o4 + wid.y * HW;
  let tb = pb_p.o5 + wid.y * HW;
  let ob = pb_p.o6 + wid.y * D * HW + k;
  var xk: array<f32, MAXC>;
  var dyk: array<f32, MAXC>;
  for (var c = 0u; c < C; c++) {
    xk[c] = pb_x[xb + c * HW + k];
    dyk[c] = pb_dy[db + c * HW + k];
  }
  let sk = pb_s[sb + k] + EPS;
  let tk = pb_t[tb + k];
  // dfn_k's running sum of the earlier ranges.
  let first = pb_p.i0 == 0u;
  var acc: array<f32, MAXD>;
  for (var d = 0u; d < D; d++) { acc[d] = select(pb_df[ob + d * HW], 0.0, first); }
  for (var j = pb_p.i0; j < pb_p.i1; j++) {
    var g = 0.0;
    var d = 0u;
    for (; d + 4u <= D; d += 4u) {
      let p = nb + d * HW;
      g += pb_fn[p + k] * pb_fn[p + j];
      g += pb_fn[p + HW + k] * pb_fn[p + HW + j];
      g += pb_fn[p + 2u * HW + k] * pb_fn[p + 2u * HW + j];
      g += pb_fn[p + 3u * HW + k] * pb_fn[p + 3u * HW + j];
    }
    for (; d < D; d++) { g += pb_fn[nb + d * HW + k] * pb_fn[nb + d * HW + j]; }
    if (g > 0.0) {
      var dkj = 0.0;
      var djk = 0.0;
      var c = 0u;
      for (; c + 4u <= C; c += 4u) {
        let q = c * HW + j;
        dkj += xk[c] * pb_dy[db + q];
        djk += pb_x[xb + q] * dyk[c];
        dkj += xk[c + 1u] * pb_dy[db + q + HW];
        djk += pb_x[xb + q + HW] * dyk[c + 1u];
        dkj += xk[c + 2u] * pb_dy[db + q + 2u * HW];
        djk += pb_x[xb + q + 2u * HW] * dyk[c + 2u];
        dkj += xk[c + 3u] * pb_dy[db + q + 3u * HW];
        djk += pb_x[xb + q + 3u * HW] * dyk[c + 3u];
      }
      for (; c < C; c++) {
        dkj += xk[c] * pb_dy[db + c * HW + j];
        djk += pb_x[xb + c * HW + j] * dyk[c];
      }
      let sj = pb_s[sb + j] + EPS;
      let coef = (dkj / sj - pb_t[tb + j]) + (djk / sk - tk);
      var e = 0u;
      for (; e + 4u <= D; e += 4u) {
        let p = nb + e * HW + j;
        acc[e] += coef * pb_fn[p];
        acc[e + 1u] += coef * pb_fn[p + HW];
        acc[e + 2u] += coef * pb_fn[p + 2u * HW];
        acc[e + 3u] += coef * pb_fn[p + 3u * HW];
      }
      for (; e < D; e++) { acc[e] += coef * pb_fn[nb + e * HW + j]; }
    }
  }
  if (pb_p.i1 < HW) {
    for (var d = 0u; d < D; d++) { pb_df[ob + d * HW] = acc[d]; }
    return;
  }
  // Through fn = f / (r + eps), r = ‖f‖: df = dfn/(r+eps) - f (f·dfn) / (r (r+eps)²).
  var ss = 0.0;
  var fd = 0.0;
  for (var d = 0u; d < D; d++) {
    let v = pb_f[fb + d * HW + k];
    ss += v * v;
    fd += v * acc[d];
  }
  let r = sqrt(ss);
  let re = r + EPS;
  var q = 0.0;
  if (r > 0.0) { q = fd / (r * re * re); }
  for (var d = 0u; d < D; d++) {
    pb_df[ob + d * HW] = acc[d] / re - pb_f[fb + d * HW + k] * q;
  }
}

// ---- cdn_max: m[n, c] = max over pixels of relu(cam), one invocation per channel ----

@group(0) @binding(0) var<storage, read> cm_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> cm_m: array<f32>;
@group(0) @binding(2) var<uniform> cm_p: PcmParams;

@compute @workgroup_size(WG)
fn cdn_max(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let c = gid.x;
  if (c >= cm_p.C) { return; }
  let HW = cm_p.HW;
  let xb = cm_p.o0 + (wid.y * cm_p.C + c) * HW;
  var m = 0.0;
  for (var i = 0u; i < HW; i++) { m = max(m, cm_x[xb + i]); }
  cm_m[cm_p.o1 + wid.y * cm_p.C + c] = m;
}

// ---- cdn_apply: SEAM's cam_d_norm, one invocation per pixel ----

@group(0) @binding(0) var<storage, read> ca_x: array<f32>;
@group(0) @binding(1) var<storage, read> ca_m: array<f32>;
@group(0) @binding(2) var<storage, read_write> ca_y: array<f32>;
@group(0) @binding(3) var<uniform> ca_p: PcmParams;

@compute @workgroup_size(WG)
fn cdn_apply(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = ca_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C = ca_p.C;
  let xb = ca_p.o0 + wid.y * C * HW + i;
  let mb = ca_p.o1 + wid.y * C;
  let yb = ca_p.o2 + wid.y * C * HW + i;
  var fg = 0.0;
  for (var c = 1u; c < C; c++) {
    let v = max(max(ca_x[xb + c * HW], 0.0) - EPS, 0.0) / (ca_m[mb + c] + EPS);
    fg = max(fg, v);
  }
  ca_y[yb] = 1.0 - fg;
  for (var c = 1u; c < C; c++) {
    let v = max(max(ca_x[xb + c * HW], 0.0) - EPS, 0.0) / (ca_m[mb + c] + EPS);
    ca_y[yb + c * HW] = select(0.0, v, v >= fg);
  }
}
