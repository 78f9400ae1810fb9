// Pooling over NCHW planes, f32. Every kernel works on a chunk of whole (n, c) planes; the
// `off*` fields are element offsets of the chunk's first plane inside each binding (in binding
// order). max_fwd, max_bwd and gap_bwd run on a 2-D grid: x over the items of a plane,
// workgroup y over the chunk's planes.
//
//   max_fwd   invocation per output: window max (first maximum in row-major window order
//             wins, NaN propagates, as PyTorch) and its index ih·W + iw within the plane (u32).
//   max_bwd   invocation per input pixel: gathers dy of the outputs whose window contains the
//             pixel and whose saved index is that pixel (deterministic, no atomics).
//   gap_fwd   invocation per plane (1-D grid over n planes): mean over the plane (4 register
//             accumulators).
//   gap_bwd   invocation per input element: dx = dy[plane] / (H·W) (ACC: dx += ...).

override WG: u32 = 64u;
// gap_bwd adds into dx instead of writing it (dx already holds another consumer's gradient).
override ACC: bool = false;

{{struct:PoolParams}}

// ---- max_fwd ----

@group(0) @binding(0) var<storage, read> mf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> mf_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> mf_idx: array<u32>;
@group(0) @binding(3) var<uniform> mf_p: PoolParams;

@compute @workgroup_size(WG)
fn max_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r = gid.x;
  if (r >= mf_p.OH * mf_p.OW) { return; }
  let oh = r / mf_p.OW;
  let ow = r - oh * mf_p.OW;
  let h0 = i32(oh * mf_p.sh) - i32(mf_p.ph);
  let w0 = i32(ow * mf_p.sw) - i32(mf_p.pw);
  let hs = u32(max(h0, 0));
  let ws = u32(max(w0, 0));
  let he = u32(min(h0 + i32(mf_p.kh), i32(mf_p.H)));
  let we = u32(min(w0 + i32(mf_p.kw), i32(mf_p.W)));
  let xb = mf_p.off0 + wid.y * mf_p.H * mf_p.W;
  var bi = hs * mf_p.W + ws;
  var best = mf_x[xb + bi];
  for (var ih = hs; ih < he; ih++) {
    for (var iw = ws; iw < we; iw++) {
      let j = ih * mf_p.W + iw;
      let v = mf_x[xb + j];
      if (v > best || is_nan(v)) {
        best = v;
        bi = j;
      }
    }
  }
  let o = wid.y * mf_p.OH * mf_p.OW + r;
  mf_y[mf_p.off1 + o] = best;
  mf_idx[mf_p.off2 + o] = bi;
}

// ---- max_bwd ----

@group(0) @binding(0) var<storage, read> mb_dy: array<f32>;
@group(0) @binding(1) var<storage, read> mb_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> mb_dx: array<f32>;
@group(0) @binding(3) var<uniform> mb_p: PoolParams;

@compute @workgroup_size(WG)
fn max_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let j = gid.x;
  if (j >= mb_p.H * mb_p.W) { return; }
  let ih = j / mb_p.W;
  let iw = j - ih * mb_p.W;
  // Outputs oh whose window [oh·s - p, oh·s - p + k) contains ih.
  let lo_h = i32(ih + mb_p.ph) - i32(mb_p.kh) + 1;
  let oh0 = select(0u, (u32(lo_h) + mb_p.sh - 1u) / mb_p.sh, lo_h > 0);
  let oh1 = min((ih + mb_p.ph) / mb_p.sh + 1u, mb_p.OH);
  let lo_w = i32(iw + mb_p.pw) - i32(mb_p.kw) + 1;
  let ow0 = select(0u, (u32(lo_w) + mb_p.sw - 1u) / mb_p.sw, lo_w > 0);
  let ow1 = min((iw + mb_p.pw) / mb_p.sw + 1u, mb_p.OW);
  let base = wid.y * mb_p.OH * mb_p.OW;
  var s = 0.0;
  for (var oh = oh0; oh < oh1; oh++) {
    for (var ow = ow0; ow < ow1; ow++) {
      let o = base + oh * mb_p.OW + ow;
      if (mb_idx[mb_p.off1 + o] == j) {
        s += mb_dy[mb_p.off0 + o];
      }
    }
  }
  mb_dx[mb_p.off2 + wid.y * mb_p.H * mb_p.W + j] = s;
}

// ---- gap_fwd ----

@group(0) @binding(0) var<storage, read> gf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gf_y: array<f32>;
@group(0) @binding(2) var<uniform> gf_p: PoolParams;

@compute @workgroup_size(WG)
fn gap_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let q = flat_index(gid, nwg, WG);
  if (q >= gf_p.n) { return; }
  let hw = gf_p.H * gf_p.W;
  let b = gf_p.off0 + q * hw;
  var acc = vec4f(0.0);
  var i = 0u;
  for (; i + 4u <= hw; i += 4u) {
    acc += vec4f(gf_x[b + i], gf_x[b + i + 1u], gf_x[b + i + 2u], gf_x[b + i + 3u]);
  }
  var tail = 0.0;
  for (; i < hw; i++) {
    tail += gf_x[b + i];
  }
  gf_y[gf_p.off1 + q] = ((acc.x + acc.y) + (acc.z + acc.w) + tail) / f32(hw);
}

// ---- gap_bwd ----

@group(0) @binding(0) var<storage, read> gb_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> gb_dx: array<f32>;
@group(0) @binding(2) var<uniform> gb_p: PoolParams;

@compute @workgroup_size(WG)
fn gap_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let hw = gb_p.H * gb_p.W;
  if (gid.x >= hw) { return; }
  let i = gb_p.off1 + wid.y * hw + gid.x;
  let v = gb_dy[gb_p.off0 + wid.y] / f32(hw);
  if (ACC) {
    gb_dx[i] = gb_dx[i] + v;
  } else {
    gb_dx[i] = v;
  }
}
