// AffinityNet (psa, Ahn & Kwak, CVPR 2018): pairwise affinities on the feature grid, psa's
// affinity loss and the random-walk transition matrix.
//
// Pairs follow psa's `get_indices_of_pairs(R, (H, W))`: the "from" pixels are the crop
// rows [0, H-R+1), columns [R-1, W-R+1) (cropH x cropW, so every partner is inside the map),
// each paired with the P offsets (dy, dx) of the half disc, in psa's order:
//   (0, 1..R-1), then for dy = 1..R-1, dx = -(R-1)..R-1 with dx² + dy² < R².
// Affinity layout per sample: aff[k·nFrom + i], k the offset, i the crop pixel (row-major).
//
//   aff_fwd    aff(p, q) = exp(-mean_c |f[c,p] - f[c,q]|); one invocation per from pixel.
//   aff_bwd    d f from d aff, one invocation per pixel gathering its pairs in both
//              directions (deterministic, no atomics); |x|' = sign(x), sign(0) = 0.
//   loss_grad  d loss / d aff for pair codes (0 ignore, 1 bg-pos, 2 fg-pos, 3 neg).
//   loss_fwd   one workgroup: sums of the three terms (fixed-order tree reduction).
//   rw_degree  d[j] = 1 + Σ_{pairs touching j} aff^beta (the column sums of A^beta).
//   rw_dense   M[i, j] = A[i, j]^beta / d[j] (A symmetric, A[i, i] = 1): psa's transition
//              matrix, normalised over dim 0.

override WG: u32 = 64u;

const LOSS_EPS: f32 = 1e-5;

// Whether (dy, dx) is one of the offsets (dy >= 0 is the caller's loop range).
fn in_half_disc(dy: i32, dx: i32, R: i32) -> bool {
  return (dy > 0 || dx > 0) && dx * dx + dy * dy < R * R;
}

// a^beta for an affinity (0 for a <= 0: WGSL's pow is undefined at 0).
fn pow_beta(a: f32, beta: f32) -> f32 {
  if (a <= 0.0) { return 0.0; }
  return pow(a, beta);
}

// Index k of offset (dy, dx) in the half disc, or -1 when it is not one of them.
fn index_of(dy: i32, dx: i32, R: i32) -> i32 {
  if (dy == 0) {
    if (dx >= 1 && dx < R) { return dx - 1; }
    return -1;
  }
  if (dy < 1 || dy >= R || dx * dx + dy * dy >= R * R) { return -1; }
  var n = R - 1;
  for (var y = 1; y < R; y++) {
    for (var x = -(R - 1); x < R; x++) {
      if (x * x + y * y < R * R) {
        if (y == dy && x == dx) { return n; }
        n++;
      }
    }
  }
  return -1;
}

// Uniform of every pair kernel, declared (with the loss's) in src/ops/affinity.ts.
{{struct:PairParams}}

// ---- aff_fwd ----

@group(0) @binding(0) var<storage, read> af_f: array<f32>;
@group(0) @binding(1) var<storage, read_write> af_a: array<f32>;
@group(0) @binding(2) var<uniform> af_p: PairParams;

@compute @workgroup_size(WG)
fn aff_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let nFrom = af_p.cropH * af_p.cropW;
  if (gid.x >= nFrom) { return; }
  let HW = af_p.H * af_p.W;
  let R = i32(af_p.R);
  let fb = af_p.off0 + wid.y * af_p.C * HW;
  let ab = af_p.off1 + wid.y * af_p.P * nFrom;
  let y = i32(gid.x / af_p.cropW);
  let x = i32(gid.x % af_p.cropW) + R - 1;
  let p = u32(y) * af_p.W + u32(x);
  let invC = 1.0 / f32(af_p.C);
  var k = 0u;
  for (var dy = 0; dy < R; dy++) {
    for (var dx = -(R - 1); dx < R; dx++) {
      if (!in_half_disc(dy, dx, R)) { continue; }
      let q = u32(y + dy) * af_p.W + u32(x + dx);
      var s = 0.0;
      for (var c = 0u; c < af_p.C; c++) {
        s += abs(af_f[fb + c * HW + p] - af_f[fb + c * HW + q]);
      }
      af_a[ab + k * nFrom + gid.x] = exp(-s * invC);
      k++;
    }
  }
}

// ---- aff_bwd ----

@group(0) @binding(0) var<storage, read> ab_f: array<f32>;
@group(0) @binding(1) var<storage, read> ab_a: array<f32>;
@group(0) @binding(2) var<storage, read> ab_da: array<f32>;
@group(0) @binding(3) var<storage, read_write> ab_df: array<f32>;
@group(0) @binding(4) var<uniform> ab_p: PairParams;

@compute @workgroup_size(WG)
fn aff_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = ab_p.H * ab_p.W;
  if (gid.x >= HW) { return; }
  let nFrom = ab_p.cropH * ab_p.cropW;
  let R = i32(ab_p.R);
  let fb = ab_p.off0 + wid.y * ab_p.C * HW;
  let ab = ab_p.off1 + wid.y * ab_p.P * nFrom;
  let db = ab_p.off2 + wid.y * ab_p.P * nFrom;
  let ob = ab_p.off3 + wid.y * ab_p.C * HW;
  let y = i32(gid.x / ab_p.W);
  let x = i32(gid.x % ab_p.W);
  let x0 = R - 1;
  let x1 = R - 1 + i32(ab_p.cropW);
  let invC = 1.0 / f32(ab_p.C);
  let pFrom = y < i32(ab_p.cropH) && x >= x0 && x < x1;
  let iFrom = u32(y) * ab_p.cropW + u32(x - x0);
  for (var c = 0u; c < ab_p.C; c++) {
    let fp = ab_f[fb + c * HW + gid.x];
    var g = 0.0;
    var k = 0u;
    for (var dy = 0; dy < R; dy++) {
      for (var dx = -(R - 1); dx < R; dx++) {
        if (!in_half_disc(dy, dx, R)) { continue; }
        // p as the "from" end: d aff / d f_p = -aff · sign(f_p - f_q) / C.
        if (pFrom) {
          let q = u32(y + dy) * ab_p.W + u32(x + dx);
          let j = k * nFrom + iFrom;
          g -= ab_da[db + j] * ab_a[ab + j] * sign(fp - ab_f[fb + c * HW + q]);
        }
        // p as the "to" end of the pair from s = p - (dy, dx): d aff / d f_p = aff · sign(f_s - f_p) / C.
        let sy = y - dy;
        let sx = x - dx;
        if (sy >= 0 && sy < i32(ab_p.cropH) && sx >= x0 && sx < x1) {
          let s = u32(sy) * ab_p.W + u32(sx);
          let j = k * nFrom + u32(sy) * ab_p.cropW + u32(sx - x0);
          g += ab_da[db + j] * ab_a[ab + j] * sign(ab_f[fb + c * HW + s] - fp);
        }
        k++;
      }
    }
    ab_df[ob + c * HW + gid.x] = g * invC;
  }
}

// ---- loss_grad ----

{{struct:AffinityLossParams}}

@group(0) @binding(0) var<storage, read> lg_a: array<f32>;
@group(0) @binding(1) var<storage, read> lg_code: array<f32>;
@group(0) @binding(2) var<storage, read_write> lg_g: array<f32>;
@group(0) @binding(3) var<uniform> lg_p: AffinityLossParams;

@compute @workgroup_size(256)
fn loss_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= lg_p.n) { return; }
  let a = lg_a[i];
  let code = u32(lg_code[i]);
  var g = 0.0;
  if (code == 1u) {
    g = -0.25 / (lg_p.cnt_bg * (a + LOSS_EPS));
  } else if (code == 2u) {
    g = -0.25 / (lg_p.cnt_fg * (a + LOSS_EPS));
  } else if (code == 3u) {
    g = 0.5 / (lg_p.cnt_neg * (1.0 + LOSS_EPS - a));
  }
  lg_g[i] = g;
}

// ---- loss_fwd ----
// out: [total, bg, fg, neg, Σbg, Σfg, Σneg, 0]; with `accumulate` the running sums of earlier
// chunks (out[4..6]) are added to, and the averaged terms are recomputed from them.

@group(0) @binding(0) var<storage, read> lf_a: array<f32>;
@group(0) @binding(1) var<storage, read> lf_code: array<f32>;
@group(0) @binding(2) var<storage, read_write> lf_out: array<f32>;
@group(0) @binding(3) var<uniform> lf_p: AffinityLossParams;

var<workgroup> lf_red: array<vec3f, 256>;

@compute @workgroup_size(256)
fn loss_fwd(@builtin(local_invocation_index) t: u32) {
  var s = vec3f(0.0);
  for (var i = t; i < lf_p.n; i += 256u) {
    let a = lf_a[i];
    let code = u32(lf_code[i]);
    if (code == 1u) {
      s.x -= log(a + LOSS_EPS);
    } else if (code == 2u) {
      s.y -= log(a + LOSS_EPS);
    } else if (code == 3u) {
      s.z -= log(1.0 + LOSS_EPS - a);
    }
  }
  lf_red[t] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (t < w) { lf_red[t] += lf_red[t + w]; }
    workgroupBarrier();
  }
  if (t == 0u) {
    var tot = lf_red[0];
    if (lf_p.accumulate != 0u) { tot += vec3f(lf_out[4], lf_out[5], lf_out[6]); }
    let bg = tot.x / lf_p.cnt_bg;
    let fg = tot.y / lf_p.cnt_fg;
    let neg = tot.z / lf_p.cnt_neg;
    lf_out[0] = bg * 0.25 + fg * 0.25 + neg * 0.5;
    lf_out[1] = bg;
    lf_out[2] = fg;
    lf_out[3] = neg;
    lf_out[4] = tot.x;
    lf_out[5] = tot.y;
    lf_out[6] = tot.z;
    lf_out[7] = 0.0;
  }
}

// ---- rw_degree ----
// One invocation per pixel of one image; `aff` bound whole.

@group(0) @binding(0) var<storage, read> rd_a: array<f32>;
@group(0) @binding(1) var<storage, read_write> rd_d: array<f32>;
@group(0) @binding(2) var<uniform> rd_p: PairParams;

@compute @workgroup_size(WG)
fn rw_degree(@builtin(global_invocation_id) gid: vec3u) {
  let HW = rd_p.H * rd_p.W;
  if (gid.x >= HW) { return; }
  let nFrom = rd_p.cropH * rd_p.cropW;
  let R = i32(rd_p.R);
  let y = i32(gid.x / rd_p.W);
  let x = i32(gid.x % rd_p.W);
  let x0 = R - 1;
  let x1 = R - 1 + i32(rd_p.cropW);
  let pFrom = y < i32(rd_p.cropH) && x >= x0 && x < x1;
  let iFrom = u32(y) * rd_p.cropW + u32(x - x0);
  var d = 1.0;
  var k = 0u;
  for (var dy = 0; dy < R; dy++) {
    for (var dx = -(R - 1); dx < R; dx++) {
      if (!in_half_disc(dy, dx, R)) { continue; }
      if (pFrom) { d += pow_beta(rd_a[k * nFrom + iFrom], rd_p.beta); }
      let sy = y - dy;
      let sx = x - dx;
      if (sy >= 0 && sy < i32(rd_p.cropH) && sx >= x0 && sx < x1) {
        d += pow_beta(rd_a[k * nFrom + u32(sy) * rd_p.cropW + u32(sx - x0)], rd_p.beta);
      }
      k++;
    }
  }
  rd_d[gid.x] = d;
}

// ---- rw_dense ----
// One invocation per column j (gid.x) of row off0 + wid.y, written at off1 + wid.y·HW + j.

@group(0) @binding(0) var<storage, read> rm_a: array<f32>;
@group(0) @binding(1) var<storage, read> rm_d: array<f32>;
@group(0) @binding(2) var<storage, read_write> rm_m: array<f32>;
@group(0) @binding(3) var<uniform> rm_p: PairParams;

@compute @workgroup_size(WG)
fn rw_dense(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = rm_p.H * rm_p.W;
  if (gid.x >= HW) { return; }
  let i = rm_p.off0 + wid.y;
  let j = gid.x;
  let R = i32(rm_p.R);
  var v = 0.0;
  if (i == j) {
    v = 1.0;
  } else {
    var fy = i32(i / rm_p.W);
    var fx = i32(i % rm_p.W);
    var dy = i32(j / rm_p.W) - fy;
    var dx = i32(j % rm_p.W) - fx;
    if (dy < 0 || (dy == 0 && dx < 0)) {
      fy += dy;
      fx += dx;
      dy = -dy;
      dx = -dx;
    }
    let k = index_of(dy, dx, R);
    let x0 = R - 1;
    if (k >= 0 && fy < i32(rm_p.cropH) && fx >= x0 && fx < x0 + i32(rm_p.cropW)) {
      let nFrom = rm_p.cropH * rm_p.cropW;
      let a = rm_a[u32(k) * nFrom + u32(fy) * rm_p.cropW + u32(fx - x0)];
      v = pow_beta(a, rm_p.beta);
    }
  }
  rm_m[rm_p.off1 + wid.y * HW + j] = v / rm_d[j];
}
