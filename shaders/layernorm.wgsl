// Layer normalisation over the last dim D of row-major [M, D] tensors (PyTorch's
// nn.LayerNorm: biased variance, affine weight and bias [D]). Rows are chunked past the binding
// limit; `xOff`, `dOff`, `sOff`, `yOff` are element offsets of the chunk's first row in the
// x / dy, second input, statistics and output bindings. Statistics are [M, 2]: (mean, rstd).
//
//   ln_fwd      one invocation per row: two-pass mean and variance, y = x̂·w + b (3·D loop
//               iterations; the host keeps D under llvmpipe's loop budget)
//   ln_bwd_x    one invocation per row: dx = rstd·(g - mean(g) - x̂·mean(g·x̂)), g = dy·w
//   ln_bwd_wb   one invocation per column d: dw[d] (+)= Σ_rows dy·x̂, db[d] (+)= Σ_rows dy over
//               the chunk's rows in order (the host chunks rows under the loop budget and
//               accumulates the chunks in order)

override WG: u32 = 256u;

{{struct:LayerNormParams}}

// ---- ln_fwd ----

@group(0) @binding(0) var<storage, read> lf_x: array<f32>;
@group(0) @binding(1) var<storage, read> lf_w: array<f32>;
@group(0) @binding(2) var<storage, read> lf_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> lf_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> lf_s: array<f32>;
@group(0) @binding(5) var<uniform> lf_p: LayerNormParams;

@compute @workgroup_size(WG)
fn ln_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = flat_index(gid, nwg, WG);
  if (r >= lf_p.rows) { return; }
  let D = lf_p.D;
  let xb = lf_p.xOff + r * D;
  var s = 0.0;
  for (var d = 0u; d < D; d++) {
    s += lf_x[xb + d];
  }
  let mean = s / f32(D);
  var v = 0.0;
  for (var d = 0u; d < D; d++) {
    let c = lf_x[xb + d] - mean;
    v += c * c;
  }
  let rstd = inverseSqrt(v / f32(D) + lf_p.eps);
  let yb = lf_p.yOff + r * D;
  for (var d = 0u; d < D; d++) {
    lf_y[yb + d] = (lf_x[xb + d] - mean) * rstd * lf_w[d] + lf_b[d];
  }
  lf_s[lf_p.sOff + 2u * r] = mean;
  lf_s[lf_p.sOff + 2u * r + 1u] = rstd;
}

// ---- ln_bwd_x ----

@group(0) @binding(0) var<storage, read> lx_x: array<f32>;
@group(0) @binding(1) var<storage, read> lx_dy: array<f32>;
@group(0) @binding(2) var<storage, read> lx_s: array<f32>;
@group(0) @binding(3) var<storage, read> lx_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> lx_dx: array<f32>;
@group(0) @binding(5) var<uniform> lx_p: LayerNormParams;

@compute @workgroup_size(WG)
fn ln_bwd_x(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = flat_index(gid, nwg, WG);
  if (r >= lx_p.rows) { return; }
  let D = lx_p.D;
  let xb = lx_p.xOff + r * D;
  let db = lx_p.dOff + r * D;
  let mean = lx_s[lx_p.sOff + 2u * r];
  let rstd = lx_s[lx_p.sOff + 2u * r + 1u];
  var sg = 0.0;
  var sgx = 0.0;
  for (var d = 0u; d < D; d++) {
    let g = lx_dy[db + d] * lx_w[d];
    sg += g;
    sgx += g * (lx_x[xb + d] - mean) * rstd;
  }
  let mg = sg / f32(D);
  let mgx = sgx / f32(D);
  let ob = lx_p.yOff + r * D;
  for (var d = 0u; d < D; d++) {
    let xh = (lx_x[xb + d] - mean) * rstd;
    lx_dx[ob + d] = rstd * (lx_dy[db + d] * lx_w[d] - mg - xh * mgx);
  }
}

// ---- ln_bwd_wb ----

@group(0) @binding(0) var<storage, read> lw_x: array<f32>;
@group(0) @binding(1) var<storage, read> lw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> lw_s: array<f32>;
@group(0) @binding(3) var<storage, read_write> lw_dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> lw_db: array<f32>;
@group(0) @binding(5) var<uniform> lw_p: LayerNormParams;

@compute @workgroup_size(WG)
fn ln_bwd_wb(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let D = lw_p.D;
  if (d >= D) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var r = 0u; r < lw_p.rows; r++) {
    let g = lw_dy[lw_p.dOff + r * D + d];
    let xh = (lw_x[lw_p.xOff + r * D + d] - lw_s[lw_p.sOff + 2u * r]) * lw_s[lw_p.sOff + 2u * r + 1u];
    sw += g * xh;
    sb += g;
  }
  if (lw_p.accW != 0u) { sw += lw_dw[d]; }
  if (lw_p.accB != 0u) { sb += lw_db[d]; }
  lw_dw[d] = sw;
  lw_db[d] = sb;
}
