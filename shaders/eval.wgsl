// Evaluation kernels (docs/evaluation.md), driven by src/eval/confusion.ts and src/eval/cam.ts.
//
// Label maps (predictions, ground truth, pseudo masks) are packed u8: pixel 4w+b is byte b
// (little-endian) of u32 word w. Values: 0 = background, 1..C = classes, 255 = ignore (ground
// truth only). K = C + 1. Tags are a bit set over K indices (bit c+1 = foreground class c),
// 256 bits in two vec4u. Counts are u32 atomics; the host reads and clears them before any
// could wrap (it never lets more than 2^32-1 pixels accumulate between two reads).
//
// Runs of equal keys are counted in a register and added with one atomic when the key
// changes: label maps are piecewise constant, so this removes most atomic traffic.
//
// Entry points reuse binding numbers with different types; no entry point uses two variables
// of the same binding.

override WG: u32 = 64u;

fn has_tag(lo: vec4u, hi: vec4u, k: u32) -> bool {
  let w = k >> 5u;
  let v = select(hi, lo, w < 4u);
  return ((v[w & 3u] >> (k & 31u)) & 1u) == 1u;
}

fn label_at(word: u32, b: u32) -> u32 {
  return (word >> (8u * b)) & 255u;
}

// f32 <-> u32 with the same order (for atomicMax over floats of any sign).
fn ord_f32(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unord_f32(u: u32) -> f32 {
  return bitcast<f32>(select(~u, u & 0x7fffffffu, (u & 0x80000000u) != 0u));
}

// ---------------------------------------------------------------------------------------------
// Confusion matrix + OC counts of a predicted mask.
// counts layout (u32): [0, (K+1)K): matrix, row = ground truth (row K = ignore), col = pred;
// [(K+1)K, 2(K+1)K): the same cells for OC pixels only (pred foreground, not tagged).

// Declared in src/eval/counters.ts: n pixels in this chunk, k = C + 1, per = pixels per
// invocation (multiple of 4), the tag bit set.
{{struct:MaskParams}}

@group(0) @binding(0) var<storage, read> m_pred: array<u32>;
@group(0) @binding(1) var<storage, read> m_gt: array<u32>;
@group(0) @binding(2) var<storage, read_write> m_counts: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> mp: MaskParams;

fn mask_flush(key: u32, cnt: u32) {
  if (cnt == 0u) {
    return;
  }
  atomicAdd(&m_counts[key], cnt);
  let pred = key % mp.k;
  if (pred != 0u && !has_tag(mp.tag_lo, mp.tag_hi, pred)) {
    atomicAdd(&m_counts[(mp.k + 1u) * mp.k + key], cnt);
  }
}

@compute @workgroup_size(WG)
fn confusion(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let start = flat_index(gid, nwg, WG) * mp.per;
  if (start >= mp.n) {
    return;
  }
  let end = min(start + mp.per, mp.n);
  var key = 0xffffffffu;
  var cnt = 0u;
  for (var w = start / 4u; w * 4u < end; w++) {
    let pw = m_pred[w];
    let gw = m_gt[w];
    // Fast path: a whole word of one (ground truth, prediction) pair.
    if (w * 4u + 4u <= end && pw == (pw & 255u) * 0x01010101u && gw == (gw & 255u) * 0x01010101u) {
      var g = gw & 255u;
      if (g == 255u) {
        g = mp.k;
      }
      let kk = g * mp.k + (pw & 255u);
      if (kk == key) {
        cnt += 4u;
      } else {
        mask_flush(key, cnt);
        key = kk;
        cnt = 4u;
      }
      continue;
    }
    for (var b = 0u; b < 4u; b++) {
      if (w * 4u + b >= end) {
        break;
      }
      var g = label_at(gw, b);
      if (g == 255u) {
        g = mp.k;
      }
      let kk = g * mp.k + label_at(pw, b);
      if (kk == key) {
        cnt++;
      } else {
        mask_flush(key, cnt);
        key = kk;
        cnt = 1u;
      }
    }
  }
  mask_flush(key, cnt);
}

// ---------------------------------------------------------------------------------------------
// CAMs [C, h, w] (f32), bilinearly upsampled to H x W on the fly with PyTorch's
// align_corners=false rule: src = max(scale * (dst + 0.5) - 0.5, 0), scale = in / out.
// Work is split by the host into class chunks [c0, c0+cc) (the CAM binding starts `base`
// elements before class c0's map) and pixel chunks [p0, p0+np).
//
// Per-pixel state (4 u32 words): all-class max value (f32 bits), its class (C = none),
// best tag-restricted normalised score relu(v)/(relu(max_c)+1e-5) (f32 bits, -1 = none),
// its class (C = none). Ties keep the lowest class index.

// Declared in src/eval/counters.ts (field meanings there).
{{struct:CamParams}}

@group(0) @binding(0) var<storage, read> c_cam: array<f32>;
@group(0) @binding(1) var<storage, read_write> c_max: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> cp_max: CamParams;

// The upsampled value at (ly, lx) of the map whose rows start at r0 / r1 in c_cam (taps of the
// prelude's bilinear_tap, align_corners=false).
fn cam_at(r0: u32, r1: u32, ly: BilinearTap, lx: BilinearTap, relu: bool) -> f32 {
  var v00 = c_cam[r0 + lx.i0];
  var v01 = c_cam[r0 + lx.i1];
  var v10 = c_cam[r1 + lx.i0];
  var v11 = c_cam[r1 + lx.i1];
  if (relu) {
    v00 = max(v00, 0.0);
    v01 = max(v01, 0.0);
    v10 = max(v10, 0.0);
    v11 = max(v11, 0.0);
  }
  return (1.0 - ly.l) * ((1.0 - lx.l) * v00 + lx.l * v01) +
    ly.l * ((1.0 - lx.l) * v10 + lx.l * v11);
}

// Per-class maximum of the upsampled maps: one invocation per (class, row, segment of `per`
// pixels), one atomicMax each. c_max holds order-preserving u32 codes (see ord_f32).
@compute @workgroup_size(WG)
fn cam_max(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = cp_max;
  let nseg = (p.ww + p.per - 1u) / p.per;
  let i = flat_index(gid, nwg, WG);
  if (i >= p.cc * p.hh * nseg) {
    return;
  }
  let seg = i % nseg;
  let y = (i / nseg) % p.hh;
  let j = i / (nseg * p.hh);
  let ly = bilinear_tap(p.sy, y, p.h, false);
  let b = p.base + j * p.h * p.w;
  let r0 = b + ly.i0 * p.w;
  let r1 = b + ly.i1 * p.w;
  let x1 = min((seg + 1u) * p.per, p.ww);
  let relu = (p.flags & 4u) != 0u;
  var m = 0.0;
  for (var x = seg * p.per; x < x1; x++) {
    let v = cam_at(r0, r1, ly, bilinear_tap(p.sx, x, p.w, false), relu);
    if (x == seg * p.per || v > m) {
      m = v;
    }
  }
  atomicMax(&c_max[p.c0 + j], ord_f32(m));
}

@group(0) @binding(1) var<storage, read> a_max: array<u32>;
@group(0) @binding(2) var<storage, read_write> a_state: array<u32>;
@group(0) @binding(3) var<uniform> cp_arg: CamParams;

// Per-pixel state update over one class chunk (one invocation per pixel of the chunk).
@compute @workgroup_size(WG)
fn cam_argmax(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = cp_arg;
  let i = flat_index(gid, nwg, WG);
  if (i >= p.np) {
    return;
  }
  let pix = p.p0 + i;
  let ly = bilinear_tap(p.sy, pix / p.ww, p.h, false);
  let lx = bilinear_tap(p.sx, pix % p.ww, p.w, false);
  let relu = (p.flags & 4u) != 0u;
  var am = 0.0;
  var aa = p.ncls;
  var tm = -1.0;
  var ta = p.ncls;
  if ((p.flags & 1u) == 0u) {
    am = bitcast<f32>(a_state[4u * i]);
    aa = a_state[4u * i + 1u];
    tm = bitcast<f32>(a_state[4u * i + 2u]);
    ta = a_state[4u * i + 3u];
  }
  for (var j = 0u; j < p.cc; j++) {
    let b = p.base + j * p.h * p.w;
    let r0 = b + ly.i0 * p.w;
    let r1 = b + ly.i1 * p.w;
    let v = cam_at(r0, r1, ly, lx, relu);
    let c = p.c0 + j;
    if (aa == p.ncls || v > am) {
      am = v;
      aa = c;
    }
    if (has_tag(p.tag_lo, p.tag_hi, c + 1u)) {
      let s = max(v, 0.0) / (max(unord_f32(a_max[c]), 0.0) + 1e-5);
      if (s > tm) {
        tm = s;
        ta = c;
      }
    }
  }
  a_state[4u * i] = bitcast<u32>(am);
  a_state[4u * i + 1u] = aa;
  a_state[4u * i + 2u] = bitcast<u32>(tm);
  a_state[4u * i + 3u] = ta;
}

// Unrestricted-CAM OC counts. A pixel is active when its all-class max am > 0 and
// am >= tau * relu(max over tagged classes of their map maxima); it is OC when its argmax
// class is not tagged. counts (u32): [0] active, [1] OC, [2 + g*K + c+1] OC pixels by
// ground-truth row g (K = ignore or no ground truth) and OC class c.
@group(0) @binding(0) var<storage, read> s_state: array<u32>;
@group(0) @binding(1) var<storage, read> s_gt: array<u32>;
@group(0) @binding(2) var<storage, read> o_max: array<u32>;
@group(0) @binding(3) var<storage, read_write> o_counts: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> cp_oc: CamParams;

@compute @workgroup_size(WG)
fn cam_oc(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = cp_oc;
  let start = flat_index(gid, nwg, WG) * p.per;
  if (start >= p.np) {
    return;
  }
  let end = min(start + p.per, p.np);
  let k = p.ncls + 1u;
  var tag_max = 0.0;
  for (var c = 0u; c < p.ncls; c++) {
    if (has_tag(p.tag_lo, p.tag_hi, c + 1u)) {
      tag_max = max(tag_max, unord_f32(o_max[c]));
    }
  }
  let thr = p.thr * tag_max;
  let with_gt = (p.flags & 2u) != 0u;
  var n_active = 0u;
  var oc = 0u;
  var key = 0xffffffffu;
  var cnt = 0u;
  for (var i = start; i < end; i++) {
    let am = bitcast<f32>(s_state[4u * i]);
    if (!(am > 0.0 && am >= thr)) {
      continue;
    }
    n_active++;
    let c = s_state[4u * i + 1u] + 1u;
    if (has_tag(p.tag_lo, p.tag_hi, c)) {
      continue;
    }
    oc++;
    var g = k;
    if (with_gt) {
      g = label_at(s_gt[i / 4u], i % 4u);
      if (g == 255u) {
        g = k;
      }
    }
    let kk = g * k + c;
    if (kk == key) {
      cnt++;
    } else {
      if (cnt > 0u) {
        atomicAdd(&o_counts[2u + key], cnt);
      }
      key = kk;
      cnt = 1u;
    }
  }
  if (cnt > 0u) {
    atomicAdd(&o_counts[2u + key], cnt);
  }
  if (n_active > 0u) {
    atomicAdd(&o_counts[0], n_active);
  }
  if (oc > 0u) {
    atomicAdd(&o_counts[1], oc);
  }
}

// Threshold sweep. For the tag-restricted pseudo mask at threshold t a pixel is its best
// tagged class c when score > t, else background. With thresholds sorted ascending and
// b = #{i : t_i < score}, the pixel is c for thresholds i < b and background for i >= b, so
// one histogram hist[(g*K + c)*(T+1) + b] (g = ground truth, ignore skipped; c = 0 when no
// class is tagged) yields every threshold's confusion matrix by prefix sums on the host.
@group(0) @binding(2) var<storage, read> w_thr: array<f32>;
@group(0) @binding(3) var<storage, read_write> w_hist: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> cp_sw: CamParams;

@compute @workgroup_size(WG)
fn cam_sweep(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = cp_sw;
  let start = flat_index(gid, nwg, WG) * p.per;
  if (start >= p.np) {
    return;
  }
  let end = min(start + p.per, p.np);
  let k = p.ncls + 1u;
  var key = 0xffffffffu;
  var cnt = 0u;
  for (var i = start; i < end; i++) {
    let g = label_at(s_gt[i / 4u], i % 4u);
    if (g == 255u) {
      continue;
    }
    let ta = s_state[4u * i + 3u];
    var c = 0u;
    var b = 0u;
    if (ta < p.ncls) {
      c = ta + 1u;
      let tm = bitcast<f32>(s_state[4u * i + 2u]);
      for (var t = 0u; t < p.nt; t++) {
        if (w_thr[t] < tm) {
          b++;
        }
      }
    }
    let kk = (g * k + c) * (p.nt + 1u) + b;
    if (kk == key) {
      cnt++;
    } else {
      if (cnt > 0u) {
        atomicAdd(&w_hist[key], cnt);
      }
      key = kk;
      cnt = 1u;
    }
  }
  if (cnt > 0u) {
    atomicAdd(&w_hist[key], cnt);
  }
}

// Pseudo mask at background threshold thr: class c+1 where the best tagged score > thr,
// else 0 (psa/SEAM: argmax over [thr, normalised tagged CAMs], background first on ties).
// With cam_argmax's best tag score, the WGSL form of src/cam/pseudo_mask.ts's rule.
// One invocation per output word (4 pixels); p0 is a multiple of 4.
@group(0) @binding(1) var<storage, read_write> q_mask: array<u32>;
@group(0) @binding(2) var<uniform> cp_ps: CamParams;

@compute @workgroup_size(WG)
fn cam_pseudo(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = cp_ps;
  let wi = flat_index(gid, nwg, WG);
  if (wi * 4u >= p.np) {
    return;
  }
  var word = 0u;
  for (var b = 0u; b < 4u; b++) {
    let i = wi * 4u + b;
    if (i < p.np) {
      let ta = s_state[4u * i + 3u];
      if (ta < p.ncls && bitcast<f32>(s_state[4u * i + 2u]) > p.thr) {
        word |= (ta + 1u) << (8u * b);
      }
    }
  }
  q_mask[wi] = word;
}
