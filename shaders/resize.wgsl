// Bilinear and bicubic resize of NCHW planes with PyTorch's `upsample_bilinear2d` and
// `upsample_bicubic2d` semantics, f32.
//
// Source taps of output index d along an axis: the prelude's bilinear_tap (PyTorch's source
// index with or without align_corners; weights (1 - l, l) on taps i0, i1).
//
//   fwd   invocation per output pixel: the 4-tap blend.
//   bwd   invocation per input pixel: gathers dy·weight over the outputs that read it (the
//         outputs o with i0(o) in {i - 1, i}, a contiguous range since i0 is monotonic), in a
//         fixed order: deterministic, no atomics.
//   cubic_fwd       invocation per output pixel: 4 rows of 4 taps (clamped to the border),
//                   each row interpolated, then the rows (PyTorch's order).
//   cubic_bwd_axis  the transpose along one axis, dy [outer, ON, inner] → dx [outer, IN, inner]
//                   per plane (the host runs it along the width, then the height): invocation
//                   per input element, gathering over the outputs whose taps reach it, a
//                   contiguous range (the first tap i0 is monotonic in the output index) found
//                   by binary search, in a fixed order.
// ioff/ooff: element offsets of the chunk's first plane in the input/output binding. 2-D grid:
// x over the items of a plane, workgroup y over the chunk's planes.

override WG: u32 = 64u;

{{struct:ResizeParams}}

{{struct:CubicAxisParams}}

// Weight with which output d (along an axis) reads input i.
fn weight(t: BilinearTap, i: u32) -> f32 {
  return select(0.0, 1.0 - t.l, t.i0 == i) + select(0.0, t.l, t.i1 == i);
}

// First output index that may read input i: a float estimate of the inverse map, less a margin
// (outputs before it have i0 < i - 1; the loops below skip any extra ones).
fn first_out(s: f32, i: u32, align: bool) -> u32 {
  if (s <= 0.0 || i < 2u) {
    return 0u;
  }
  var est: f32;
  if (align) {
    est = (f32(i) - 1.0) / s;
  } else {
    est = (f32(i) - 0.5) / s - 0.5;
  }
  return u32(max(floor(est) - 2.0, 0.0));
}

// ---- fwd ----

@group(0) @binding(0) var<storage, read> rf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rf_y: array<f32>;
@group(0) @binding(2) var<uniform> rf_p: ResizeParams;

@compute @workgroup_size(WG)
fn fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = gid.x;
  if (r >= rf_p.OH * rf_p.OW) { return; }
  let oh = r / rf_p.OW;
  let al = rf_p.align != 0u;
  let th = bilinear_tap(rf_p.sh, oh, rf_p.IH, al);
  let tw = bilinear_tap(rf_p.sw, r - oh * rf_p.OW, rf_p.IW, al);
  let b = rf_p.ioff + wid.y * rf_p.IH * rf_p.IW;
  let r0 = b + th.i0 * rf_p.IW;
  let r1 = b + th.i1 * rf_p.IW;
  let w1 = tw.l;
  let w0 = 1.0 - w1;
  let top = w0 * rf_x[r0 + tw.i0] + w1 * rf_x[r0 + tw.i1];
  let bot = w0 * rf_x[r1 + tw.i0] + w1 * rf_x[r1 + tw.i1];
  rf_y[rf_p.ooff + wid.y * rf_p.OH * rf_p.OW + r] = (1.0 - th.l) * top + th.l * bot;
}

// ---- bwd ----

@group(0) @binding(0) var<storage, read> rb_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> rb_dx: array<f32>;
@group(0) @binding(2) var<uniform> rb_p: ResizeParams;

@compute @workgroup_size(WG)
fn bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = gid.x;
  if (r >= rb_p.IH * rb_p.IW) { return; }
  let ih = r / rb_p.IW;
  let iw = r - ih * rb_p.IW;
  let al = rb_p.align != 0u;
  let b = rb_p.ioff + wid.y * rb_p.OH * rb_p.OW;
  let ow_start = first_out(rb_p.sw, iw, al);
  var s = 0.0;
  for (var oh = first_out(rb_p.sh, ih, al); oh < rb_p.OH; oh++) {
    let th = bilinear_tap(rb_p.sh, oh, rb_p.IH, al);
    if (th.i0 > ih) { break; }
    let wh = weight(th, ih);
    if (wh == 0.0) { continue; }
    var row = 0.0;
    for (var ow = ow_start; ow < rb_p.OW; ow++) {
      let tw = bilinear_tap(rb_p.sw, ow, rb_p.IW, al);
      if (tw.i0 > iw) { break; }
      row += weight(tw, iw) * rb_dy[b + oh * rb_p.OW + ow];
    }
    s += wh * row;
  }
  rb_dx[rb_p.ooff + wid.y * rb_p.IH * rb_p.IW + r] = s;
}

// ---- bicubic: shared ----

// The first tap i0 (floor of the source coordinate, at most size - 1; -1 or less left of the
// image) and the fraction t in [0, 1] of output index d: PyTorch's
// area_pixel_compute_source_index(cubic = true) (no clamp at 0) and guard_index_and_lambda.
struct CubicTap {
  i0: i32,
  t: f32,
}

fn cubic_tap(s: f32, d: u32, size: u32, align: bool) -> CubicTap {
  var r: f32;
  if (align) {
    r = s * f32(d);
  } else {
    r = s * (f32(d) + 0.5) - 0.5;
  }
  let i0 = min(i32(floor(r)), i32(size) - 1);
  return CubicTap(i0, clamp(r - f32(i0), 0.0, 1.0));
}

// Weights of taps i0 - 1 .. i0 + 2 (cubic convolution, A = -0.75).
fn cubic_weights(t: f32) -> vec4f {
  let A = -0.75;
  let x0 = t + 1.0;
  let x2 = 1.0 - t;
  let x3 = 2.0 - t;
  return vec4f(
    ((A * x0 - 5.0 * A) * x0 + 8.0 * A) * x0 - 4.0 * A,
    ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0,
    ((A + 2.0) * x2 - (A + 3.0)) * x2 * x2 + 1.0,
    ((A * x3 - 5.0 * A) * x3 + 8.0 * A) * x3 - 4.0 * A,
  );
}

// Tap k (0..3) of first tap i0, clamped to [0, size - 1].
fn cubic_index(i0: i32, k: i32, size: u32) -> u32 {
  return u32(clamp(i0 - 1 + k, 0, i32(size) - 1));
}

// ---- cubic_fwd ----

@group(0) @binding(0) var<storage, read> cf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> cf_y: array<f32>;
@group(0) @binding(2) var<uniform> cf_p: ResizeParams;

@compute @workgroup_size(WG)
fn cubic_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = gid.x;
  if (r >= cf_p.OH * cf_p.OW) { return; }
  let oh = r / cf_p.OW;
  let al = cf_p.align != 0u;
  let ty = cubic_tap(cf_p.sh, oh, cf_p.IH, al);
  let tx = cubic_tap(cf_p.sw, r - oh * cf_p.OW, cf_p.IW, al);
  let wy = cubic_weights(ty.t);
  let wx = cubic_weights(tx.t);
  let c0 = cubic_index(tx.i0, 0, cf_p.IW);
  let c1 = cubic_index(tx.i0, 1, cf_p.IW);
  let c2 = cubic_index(tx.i0, 2, cf_p.IW);
  let c3 = cubic_index(tx.i0, 3, cf_p.IW);
  let b = cf_p.ioff + wid.y * cf_p.IH * cf_p.IW;
  var s = 0.0;
  for (var k = 0; k < 4; k++) {
    let row = b + cubic_index(ty.i0, k, cf_p.IH) * cf_p.IW;
    let v = wx.x * cf_x[row + c0] + wx.y * cf_x[row + c1] + wx.z * cf_x[row + c2] +
      wx.w * cf_x[row + c3];
    s += wy[k] * v;
  }
  cf_y[cf_p.ooff + wid.y * cf_p.OH * cf_p.OW + r] = s;
}

// ---- cubic_bwd_axis ----

@group(0) @binding(0) var<storage, read> ca_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> ca_dx: array<f32>;
@group(0) @binding(2) var<uniform> ca_p: CubicAxisParams;

@compute @workgroup_size(WG)
fn cubic_bwd_axis(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = gid.x;
  let IN = ca_p.IN;
  let ON = ca_p.ON;
  if (r >= ca_p.outer * IN * ca_p.inner) { return; }
  let q = r / ca_p.inner;
  let inn = r - q * ca_p.inner;
  let o_ = q / IN;
  let i = q - o_ * IN;
  let al = ca_p.align != 0u;
  // Outputs whose taps reach input i have first taps in [i - 2, i + 1]; a border input is
  // also reached by the taps clamped onto it (every i0 <= 1 for input 0, i0 >= IN - 3 for
  // the last).
  let ii = i32(i);
  let lo = select(ii - 2, -2147483647, i == 0u);
  let hi = select(ii + 1, 2147483647, i == IN - 1u);
  // First output with i0 >= lo (binary search: i0 is nondecreasing in the output index).
  var a = 0u;
  var z = ON;
  if (i != 0u) {
    while (a < z) {
      let mid = (a + z) / 2u;
      if (cubic_tap(ca_p.s, mid, IN, al).i0 < lo) {
        a = mid + 1u;
      } else {
        z = mid;
      }
    }
  }
  let base = ca_p.ioff + wid.y * ca_p.outer * ON * ca_p.inner + o_ * ON * ca_p.inner + inn;
  var s = 0.0;
  for (var o = a; o < ON; o++) {
    let tap = cubic_tap(ca_p.s, o, IN, al);
    if (tap.i0 > hi) { break; }
    let w = cubic_weights(tap.t);
    var wi = 0.0;
    wi += select(0.0, w.x, cubic_index(tap.i0, 0, IN) == i);
    wi += select(0.0, w.y, cubic_index(tap.i0, 1, IN) == i);
    wi += select(0.0, w.z, cubic_index(tap.i0, 2, IN) == i);
    wi += select(0.0, w.w, cubic_index(tap.i0, 3, IN) == i);
    s += wi * ca_dy[base + o * ca_p.inner];
  }
  ca_dx[ca_p.ooff + wid.y * ca_p.outer * IN * ca_p.inner + r] = s;
}
