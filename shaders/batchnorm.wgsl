// Batch normalisation over (N, H, W) per channel, NCHW, f32.
//
// Entry points (each has its own bindings; the variables of different entries share binding
// numbers, which WGSL allows because no entry uses two of them):
//   stats         workgroup per channel: two-pass (mean, then sum of squared deviations) over
//                 a chunk of (n, c) planes; writes (count, mean, M2) partials per chunk.
//   stats_final   invocation per channel: merges chunk partials (Chan et al.), writes mean and
//                 1/sqrt(var + eps) (biased var) and updates the running stats (unbiased var).
//   apply         elementwise y = (x - mean) * inv * gamma + beta (2-D grid: pixels x planes,
//                 so the channel is uniform per workgroup); with EVAL the statistics are
//                 running mean/var and inv = 1/sqrt(var + eps); with RELU y = max(y, 0).
//   bwd_reduce    workgroup per channel: sum(dy) and sum(dy * (x - mean)) over a chunk.
//   bwd_final     invocation per channel: dgamma, dbeta and the coefficients of bwd_apply
//                 (with EVAL, running statistics are constants: dx = gamma * inv * dy).
//   bwd_apply     elementwise dx = A * (dy - E - (x - mean) * F), coef = (A, E, F, mean).
//
// RELU fuses the ReLU that follows a batchnorm: apply writes max(y, 0), and bwd_reduce and
// bwd_apply take the gradient of that output and mask it themselves with the saved output
// (dy where y > 0, else 0: relu_bwd's rule), so a BN + ReLU pair costs no pass of its own in
// either direction. Both backward entries always bind a y plane input (without RELU the
// caller binds x there and it is never read), so the two variants share one binding layout.
//
// Reductions: each of the 64 invocations accumulates a strided part of its channel in
// registers; one barrier, then every invocation sums the 64 partials in the same order
// (deterministic, and only one barrier per reduction, which matters on llvmpipe).

const RWG: u32 = 64u;
override WG: u32 = 64u;
override EVAL: bool = false;
// bwd_final adds dgamma/dbeta into the gradients instead of writing them (shared parameters).
override ACC: bool = false;
// apply: y = max(y, 0); bwd_reduce, bwd_apply: dy masked by the saved output (y > 0).
override RELU: bool = false;

var<workgroup> red_a: array<f32, 64>;
var<workgroup> red_b: array<f32, 64>;

// ---- stats ----

{{struct:StatsParams}}

@group(0) @binding(0) var<storage, read> st_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> st_part: array<f32>;
@group(0) @binding(2) var<uniform> st_p: StatsParams;

@compute @workgroup_size(RWG)
fn stats(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let C = st_p.C;
  let HW = st_p.HW;
  let c = wid.x;
  let q0 = st_p.first + (c + C - st_p.first % C) % C;
  let end = st_p.first + st_p.count;
  var s = 0.0;
  var planes = 0u;
  for (var q = q0; q < end; q += C) {
    let base = st_p.xoff + (q - st_p.first) * HW;
    for (var i = lid; i < HW; i += RWG) {
      s += st_x[base + i];
    }
    planes += 1u;
  }
  red_a[lid] = s;
  workgroupBarrier();
  var tot = 0.0;
  for (var k = 0u; k < RWG; k++) {
    tot += red_a[k];
  }
  let cnt = f32(planes * HW);
  let mean = select(0.0, tot / cnt, planes > 0u);
  var s2 = 0.0;
  for (var q = q0; q < end; q += C) {
    let base = st_p.xoff + (q - st_p.first) * HW;
    for (var i = lid; i < HW; i += RWG) {
      let d = st_x[base + i] - mean;
      s2 += d * d;
    }
  }
  red_b[lid] = s2;
  workgroupBarrier();
  if (lid == 0u) {
    var m2 = 0.0;
    for (var k = 0u; k < RWG; k++) {
      m2 += red_b[k];
    }
    let o = (st_p.chunk * C + c) * 4u;
    st_part[o] = cnt;
    st_part[o + 1u] = mean;
    st_part[o + 2u] = m2;
    st_part[o + 3u] = 0.0;
  }
}

// ---- stats_final ----

{{struct:FinalParams}}

@group(0) @binding(0) var<storage, read> sf_part: array<f32>;
@group(0) @binding(1) var<storage, read_write> sf_mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> sf_inv: array<f32>;
@group(0) @binding(3) var<storage, read_write> sf_rmean: array<f32>;
@group(0) @binding(4) var<storage, read_write> sf_rvar: array<f32>;
@group(0) @binding(5) var<uniform> sf_p: FinalParams;

@compute @workgroup_size(RWG)
fn stats_final(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  let C = sf_p.C;
  if (c >= C) { return; }
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var k = 0u; k < sf_p.K; k++) {
    let o = (k * C + c) * 4u;
    let nb = sf_part[o];
    if (nb > 0.0) {
      let delta = sf_part[o + 1u] - mean;
      let nt = n + nb;
      mean += delta * (nb / nt);
      m2 += sf_part[o + 2u] + delta * delta * (n * nb / nt);
      n = nt;
    }
  }
  sf_mean[c] = mean;
  sf_inv[c] = 1.0 / sqrt(m2 / n + sf_p.eps);
  if (sf_p.update != 0u) {
    let m = sf_p.momentum;
    sf_rmean[c] = (1.0 - m) * sf_rmean[c] + m * mean;
    sf_rvar[c] = (1.0 - m) * sf_rvar[c] + m * (m2 / (n - 1.0));
  }
}

// ---- apply ----
// 2-D grid: x over the pixels of a plane, y over the chunk's planes, so the channel is one
// value per workgroup (no per-element integer division).

{{struct:ApplyParams}}

@group(0) @binding(0) var<storage, read> ap_x: array<f32>;
@group(0) @binding(1) var<storage, read> ap_mean: array<f32>;
@group(0) @binding(2) var<storage, read> ap_s: array<f32>;
@group(0) @binding(3) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> ap_y: array<f32>;
@group(0) @binding(6) var<uniform> ap_p: ApplyParams;

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let i = gid.x;
  if (i >= ap_p.HW) { return; }
  let c = (ap_p.first + wid.y) % ap_p.C;
  var inv = ap_s[c];
  if (EVAL) {
    inv = 1.0 / sqrt(inv + ap_p.eps);
  }
  let e = wid.y * ap_p.HW + i;
  var y = (ap_x[ap_p.xoff + e] - ap_mean[c]) * (inv * ap_gamma[c]) + ap_beta[c];
  if (RELU) {
    // The pointwise table's relu, so the fused output equals BN then ReLU bit for bit.
    y = max(y, 0.0);
  }
  ap_y[ap_p.yoff + e] = y;
}

// ---- bwd_reduce ----

{{struct:BwdReduceParams}}

@group(0) @binding(0) var<storage, read> br_x: array<f32>;
@group(0) @binding(1) var<storage, read> br_dy: array<f32>;
@group(0) @binding(2) var<storage, read> br_y: array<f32>;
@group(0) @binding(3) var<storage, read> br_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> br_part: array<f32>;
@group(0) @binding(5) var<uniform> br_p: BwdReduceParams;

@compute @workgroup_size(RWG)
fn bwd_reduce(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let C = br_p.C;
  let HW = br_p.HW;
  let c = wid.x;
  let q0 = br_p.first + (c + C - br_p.first % C) % C;
  let end = br_p.first + br_p.count;
  let mean = br_mean[c];
  var sdy = 0.0;
  var sdx = 0.0;
  for (var q = q0; q < end; q += C) {
    let xb = br_p.xoff + (q - br_p.first) * HW;
    let db = br_p.dyoff + (q - br_p.first) * HW;
    let yb = br_p.yoff + (q - br_p.first) * HW;
    for (var i = lid; i < HW; i += RWG) {
      var g = br_dy[db + i];
      if (RELU) {
        g = select(0.0, g, br_y[yb + i] > 0.0);
      }
      sdy += g;
      sdx += g * (br_x[xb + i] - mean);
    }
  }
  red_a[lid] = sdy;
  red_b[lid] = sdx;
  workgroupBarrier();
  if (lid == 0u) {
    var a = 0.0;
    var b = 0.0;
    for (var k = 0u; k < RWG; k++) {
      a += red_a[k];
      b += red_b[k];
    }
    let o = (br_p.chunk * C + c) * 2u;
    br_part[o] = a;
    br_part[o + 1u] = b;
  }
}

// ---- bwd_final ----

{{struct:BwdFinalParams}}

@group(0) @binding(0) var<storage, read> bf_part: array<f32>;
@group(0) @binding(1) var<storage, read> bf_mean: array<f32>;
@group(0) @binding(2) var<storage, read> bf_s: array<f32>;
@group(0) @binding(3) var<storage, read> bf_gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> bf_dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> bf_dbeta: array<f32>;
@group(0) @binding(6) var<storage, read_write> bf_coef: array<vec4f>;
@group(0) @binding(7) var<uniform> bf_p: BwdFinalParams;

@compute @workgroup_size(RWG)
fn bwd_final(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  let C = bf_p.C;
  if (c >= C) { return; }
  var sdy = 0.0;
  var sdx = 0.0;
  for (var k = 0u; k < bf_p.K; k++) {
    sdy += bf_part[(k * C + c) * 2u];
    sdx += bf_part[(k * C + c) * 2u + 1u];
  }
  var inv = bf_s[c];
  if (EVAL) {
    inv = 1.0 / sqrt(inv + bf_p.eps);
  }
  let dgamma = sdx * inv;
  if (ACC) {
    bf_dgamma[c] += dgamma;
    bf_dbeta[c] += sdy;
  } else {
    bf_dgamma[c] = dgamma;
    bf_dbeta[c] = sdy;
  }
  let a = bf_gamma[c] * inv;
  if (EVAL) {
    bf_coef[c] = vec4f(a, 0.0, 0.0, bf_mean[c]);
  } else {
    bf_coef[c] = vec4f(a, sdy / bf_p.M, inv * dgamma / bf_p.M, bf_mean[c]);
  }
}

// ---- bwd_apply ----
// Same 2-D grid as apply.

{{struct:BwdApplyParams}}

@group(0) @binding(0) var<storage, read> ba_x: array<f32>;
@group(0) @binding(1) var<storage, read> ba_dy: array<f32>;
@group(0) @binding(2) var<storage, read> ba_y: array<f32>;
@group(0) @binding(3) var<storage, read> ba_coef: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> ba_dx: array<f32>;
@group(0) @binding(5) var<uniform> ba_p: BwdApplyParams;

@compute @workgroup_size(WG)
fn bwd_apply(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let i = gid.x;
  if (i >= ba_p.HW) { return; }
  let k = ba_coef[(ba_p.first + wid.y) % ba_p.C];
  let e = wid.y * ba_p.HW + i;
  var g = ba_dy[ba_p.dyoff + e];
  if (RELU) {
    g = select(0.0, g, ba_y[ba_p.yoff + e] > 0.0);
  }
  ba_dx[ba_p.dxoff + e] = k.x * (g - k.y - (ba_x[ba_p.xoff + e] - k.w) * k.z);
}
