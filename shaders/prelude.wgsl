// Shared helpers, appended by the shader loader (src/gpu/shaders.ts) to every module: one copy
// of what several shader files need.

// Flat index of an invocation of a 1-D dispatch whose workgroups are split over x and y past
// the per-dimension limit (GpuContext.dispatch1d); wg is the workgroup width. Kernels
// bounds-check the result.
fn flat_index(gid: vec3u, nwg: vec3u, wg: u32) -> u32 {
  return gid.x + gid.y * nwg.x * wg;
}

// NaN test on the bits: `v != v` may be folded away by fast-math compilers (llvmpipe does).
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// PyTorch's bilinear source index (`upsample_bilinear2d`) along one axis of `size` inputs for
// output index d with scale s (set by the host as PyTorch does: align_corners ? (in-1)/(out-1)
// (0 when out == 1) : 1/scale_factor or in/out):
//   align_corners:  src = s·d
//   otherwise:      src = max(s·(d + 0.5) - 0.5, 0)
// Taps i0 = floor(src) (clamped), i1 = min(i0 + 1, size - 1), weights (1 - l, l) with
// l = src - i0 (clamped to [0, 1]).
struct BilinearTap {
  i0: u32,
  i1: u32,
  l: f32,
}

fn bilinear_src(s: f32, d: u32, align: bool) -> f32 {
  if (align) {
    return s * f32(d);
  }
  return max(s * (f32(d) + 0.5) - 0.5, 0.0);
}

fn bilinear_tap(s: f32, d: u32, size: u32, align: bool) -> BilinearTap {
  let r = bilinear_src(s, d, align);
  let i0 = min(u32(r), size - 1u);
  let i1 = min(i0 + 1u, size - 1u);
  return BilinearTap(i0, i1, clamp(r - f32(i0), 0.0, 1.0));
}
