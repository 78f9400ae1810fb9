// Ops over the channel axis (dim 1) of NCHW tensors, one invocation per (n, pixel) on a 2-D
// grid (x: pixel, workgroup y: sample of the chunk); the channel values of a pixel lie HW apart. Work is chunked over whole samples; `ioff`/`ooff`
// are element offsets of the chunk's first sample in the input/output bindings.
//
//   softmax_fwd   y = softmax_c(x / T) (max-subtracted)
//   softmax_bwd   dx = y·(dy - Σ_c y·dy) / T
//   argmax        index of the first maximum over c (NaN counts as the maximum, as PyTorch),
//                 written as an f32 value into an [N, H, W] tensor.

override WG: u32 = 64u;

{{struct:ChannelParams}}

// Index of channel 0 of pixel gid.x of sample wid.y, relative to the chunk.
fn pixel_base(gid: vec3u, wid: vec3u, C: u32, HW: u32) -> u32 {
  return wid.y * C * HW + gid.x;
}

// ---- softmax_fwd ----

@group(0) @binding(0) var<storage, read> sf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> sf_y: array<f32>;
@group(0) @binding(2) var<uniform> sf_p: ChannelParams;

@compute @workgroup_size(WG)
fn softmax_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  if (gid.x >= sf_p.HW) { return; }
  let C = sf_p.C;
  let HW = sf_p.HW;
  let rel = pixel_base(gid, wid, C, HW);
  let xb = sf_p.ioff + rel;
  let yb = sf_p.ooff + rel;
  var m = sf_x[xb] * sf_p.inv_t;
  for (var c = 1u; c < C; c++) {
    m = max(m, sf_x[xb + c * HW] * sf_p.inv_t);
  }
  var z = 0.0;
  for (var c = 0u; c < C; c++) {
    z += exp(sf_x[xb + c * HW] * sf_p.inv_t - m);
  }
  let iz = 1.0 / z;
  for (var c = 0u; c < C; c++) {
    sf_y[yb + c * HW] = exp(sf_x[xb + c * HW] * sf_p.inv_t - m) * iz;
  }
}

// ---- softmax_bwd ----

@group(0) @binding(0) var<storage, read> sb_y: array<f32>;
@group(0) @binding(1) var<storage, read> sb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> sb_dx: array<f32>;
@group(0) @binding(3) var<uniform> sb_p: ChannelParams;

@compute @workgroup_size(WG)
fn softmax_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  if (gid.x >= sb_p.HW) { return; }
  let C = sb_p.C;
  let HW = sb_p.HW;
  let rel = pixel_base(gid, wid, C, HW);
  let yb = sb_p.ioff + rel;
  let db = sb_p.ioff2 + rel;
  var dot = 0.0;
  for (var c = 0u; c < C; c++) {
    dot += sb_y[yb + c * HW] * sb_dy[db + c * HW];
  }
  for (var c = 0u; c < C; c++) {
    let y = sb_y[yb + c * HW];
    sb_dx[sb_p.ooff + rel + c * HW] = y * (sb_dy[db + c * HW] - dot) * sb_p.inv_t;
  }
}

// ---- argmax ----

@group(0) @binding(0) var<storage, read> am_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> am_out: array<f32>;
@group(0) @binding(2) var<uniform> am_p: ChannelParams;

@compute @workgroup_size(WG)
fn argmax(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  if (gid.x >= am_p.HW) { return; }
  let C = am_p.C;
  let HW = am_p.HW;
  let xb = am_p.ioff + pixel_base(gid, wid, C, HW);
  var best = am_x[xb];
  var bi = 0u;
  for (var c = 1u; c < C; c++) {
    let v = am_x[xb + c * HW];
    if (!is_nan(best) && (v > best || is_nan(v))) {
      best = v;
      bi = c;
    }
  }
  am_out[am_p.ooff + wid.y * HW + gid.x] = f32(bi);
}
