// CAM inference kernels (src/cam/fuse.ts). 2-D grids: x over the pixels of a plane, workgroup
// y over the planes of a chunk. The host splits planes into chunks that fit one storage binding;
// `*off` are the element offsets of the chunk's first plane inside each binding.
//
//   flip_w     y[q, r, x] = x[q, r, W-1-x]: horizontal flip of NCHW planes.
//   accum      y[c] (+)= up(relu(x[c])), optionally mirrored: bilinear resize of pre-ReLU class
//              maps [h, w] to [H, W] (PyTorch align_corners=false) after a ReLU of the taps;
//              "mirrored" writes output column x from column W-1-x (un-flips the CAMs of a
//              flipped image); overwrite or add into y.
//   tag_norm   out[t] = acc[c_t] / (max(acc[c_t]) + 1e-5): per-class max normalisation (one
//              workgroup per plane; ReLU'd, so the max of an all-zero map is 0).

override WG: u32 = 64u;

// ---- flip_w ----

{{struct:FlipParams}}

@group(0) @binding(0) var<storage, read> fl_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> fl_y: array<f32>;
@group(0) @binding(2) var<uniform> fl_p: FlipParams;

@compute @workgroup_size(WG)
fn flip_w(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let n = fl_p.H * fl_p.W;
  let r = gid.x;
  if (r >= n) {
    return;
  }
  let row = r / fl_p.W;
  let x = r - row * fl_p.W;
  fl_y[fl_p.ooff + wid.y * n + r] = fl_x[fl_p.ioff + wid.y * n + row * fl_p.W + fl_p.W - 1u - x];
}

// ---- accum ----

{{struct:AccParams}}

@group(0) @binding(0) var<storage, read> ac_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> ac_y: array<f32>;
@group(0) @binding(2) var<uniform> ac_p: AccParams;

@compute @workgroup_size(WG)
fn accum(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let p = ac_p;
  let r = gid.x;
  if (r >= p.H * p.W) {
    return;
  }
  let y = r / p.W;
  var x = r - y * p.W;
  if ((p.flags & 2u) != 0u) {
    x = p.W - 1u - x;
  }
  // Taps of the prelude's bilinear_tap (PyTorch's align_corners=false map).
  let ty = bilinear_tap(p.sh, y, p.h, false);
  let tx = bilinear_tap(p.sw, x, p.w, false);
  let b = p.ioff + wid.y * p.h * p.w;
  let r0 = b + ty.i0 * p.w;
  let r1 = b + ty.i1 * p.w;
  let top = (1.0 - tx.l) * max(ac_x[r0 + tx.i0], 0.0) + tx.l * max(ac_x[r0 + tx.i1], 0.0);
  let bot = (1.0 - tx.l) * max(ac_x[r1 + tx.i0], 0.0) + tx.l * max(ac_x[r1 + tx.i1], 0.0);
  let v = (1.0 - ty.l) * top + ty.l * bot;
  let o = p.ooff + wid.y * p.H * p.W + r;
  if ((p.flags & 1u) != 0u) {
    ac_y[o] = ac_y[o] + v;
  } else {
    ac_y[o] = v;
  }
}

// ---- tag_norm ----

{{struct:NormParams}}

@group(0) @binding(0) var<storage, read> tn_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> tn_y: array<f32>;
@group(0) @binding(2) var<uniform> tn_p: NormParams;

const NORM_WG: u32 = 256u;
var<workgroup> tn_max: array<f32, NORM_WG>;

@compute @workgroup_size(NORM_WG)
fn tag_norm(@builtin(local_invocation_id) lid: vec3u) {
  let n = tn_p.n;
  var m = 0.0;
  for (var i = lid.x; i < n; i += NORM_WG) {
    m = max(m, tn_x[tn_p.ioff + i]);
  }
  tn_max[lid.x] = m;
  workgroupBarrier();
  for (var s = NORM_WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      tn_max[lid.x] = max(tn_max[lid.x], tn_max[lid.x + s]);
    }
    workgroupBarrier();
  }
  let d = tn_max[0] + 1e-5;
  for (var i = lid.x; i < n; i += NORM_WG) {
    tn_y[tn_p.ooff + i] = max(tn_x[tn_p.ioff + i], 0.0) / d;
  }
}
