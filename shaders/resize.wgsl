// Bilinear resize of NCHW planes with PyTorch's `upsample_bilinear2d` semantics, f32.
//
// Source taps of output index d along an axis: the prelude's bilinear_tap (PyTorch's source
// index with or without align_corners; weights (1 - l, l) on taps i0, i1).
//
//   fwd   invocation per output pixel: the 4-tap blend.
//   bwd   invocation per input pixel: gathers dy·weight over the outputs that read it (the
//         outputs o with i0(o) in {i - 1, i}, a contiguous range since i0 is monotonic), in a
//         fixed order: deterministic, no atomics.
// ioff/ooff: element offsets of the chunk's first plane in the input/output binding. 2-D grid:
// x over the items of a plane, workgroup y over the chunk's planes.

override WG: u32 = 64u;

{{struct:ResizeParams}}

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
