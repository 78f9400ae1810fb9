// SEAM's losses (Wang et al., CVPR 2020; train_SEAM.py), forward and backward
// (src/losses/seam.ts). Maps are [N, C1, HW] with channel 0 the background; tags [N, C1 - 1]
// (1 = the image has the class), the background always counts as tagged.
//
//   mn_stats / mn_apply     max_norm: r = relu(x); per (n, c) plane min and max of r (first
//                           index on ties); y = relu(r - min - e) / (max - min + e)
//   mn_bstats / mn_bwd      its backward, the gradient also flowing through the plane's min
//                           and max (to their first index, as torch.max/min route it)
//   tk_select / tk_finish   per row: the sum of f(v) over the k largest (or smallest) values,
//                           f = identity or relu, by an exact radix select of the k-th key
//                           (4 passes of 8 bits, integer histograms in workgroup memory), then
//                           loss = scale · Σ_rows in a fixed order
//   tk_bwd                  its backward: rows' selected elements get scale·f'(v); the tied
//                           k-th values share the remaining picks evenly (take / neq each)
//   fgmax_fwd / fgmax_bwd   m[p] = max_{c>=1} tag_c · x_c[p] (adaptive min-pooling's input)
//   er_fwd / er_bwd         v_c[p] = |tag_c (a_c[p] - b_c[p])| for c >= 1
//   ecr_fwd / ecr_bwd       v_c[p] = |T_c[p] - tag_c · y_c[p]|, T = max_onehot of the tagged
//                           target with T_0 = 1 - max_{c>=1} T_c
// Every sum runs in a fixed order: deterministic, no float atomics.

override WG: u32 = 64u;

const RWG: u32 = 256u; // invocations of the per-plane / per-row reduction workgroups
const E: f32 = 1e-5;
const FLAG_SMALLEST: u32 = 1u;
const FLAG_RELU: u32 = 2u;

// The uniform block, declared in src/losses/seam.ts: C1 channels, HW pixels, L elements per
// row, k picks, flags, scale, R rows (tk_finish), o0..o5 the element offsets of the chunk's
// first plane in the bindings, in binding order.
{{struct:SeamParams}}

var<workgroup> wf: array<f32, RWG>;
var<workgroup> wf2: array<f32, RWG>;
var<workgroup> wu: array<u32, RWG>;
var<workgroup> wu2: array<u32, RWG>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sel: vec3u;

// ---- max_norm ----

@group(0) @binding(0) var<storage, read> ms_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> ms_s: array<f32>;
@group(0) @binding(2) var<uniform> ms_p: SeamParams;

@compute @workgroup_size(RWG)
fn mn_stats(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let t = lid.x;
  let HW = ms_p.HW;
  let xb = ms_p.o0 + wid.y * HW;
  var mx = -1.0;
  var imx = 0xffffffffu;
  var mn = 3.0e38;
  var imn = 0xffffffffu;
  for (var i = t; i < HW; i += RWG) {
    let v = max(ms_x[xb + i], 0.0);
    if (v > mx) {
      mx = v;
      imx = i;
    }
    if (v < mn) {
      mn = v;
      imn = i;
    }
  }
  wf[t] = mx;
  wu[t] = imx;
  wf2[t] = mn;
  wu2[t] = imn;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      let om = wf[t + s];
      let oi = wu[t + s];
      if (om > wf[t] || (om == wf[t] && oi < wu[t])) {
        wf[t] = om;
        wu[t] = oi;
      }
      let on = wf2[t + s];
      let oj = wu2[t + s];
      if (on < wf2[t] || (on == wf2[t] && oj < wu2[t])) {
        wf2[t] = on;
        wu2[t] = oj;
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    let ob = ms_p.o1 + wid.y * 4u;
    ms_s[ob] = wf[0];
    ms_s[ob + 1u] = wf2[0];
    ms_s[ob + 2u] = f32(wu[0]);
    ms_s[ob + 3u] = f32(wu2[0]);
  }
}

@group(0) @binding(0) var<storage, read> ma_x: array<f32>;
@group(0) @binding(1) var<storage, read> ma_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> ma_y: array<f32>;
@group(0) @binding(3) var<uniform> ma_p: SeamParams;

@compute @workgroup_size(WG)
fn mn_apply(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = ma_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let sb = ma_p.o1 + wid.y * 4u;
  let mx = ma_s[sb];
  let mn = ma_s[sb + 1u];
  let r = max(ma_x[ma_p.o0 + wid.y * HW + i], 0.0);
  ma_y[ma_p.o2 + wid.y * HW + i] = max(r - mn - E, 0.0) / (mx - mn + E);
}

@group(0) @binding(0) var<storage, read> mb_x: array<f32>;
@group(0) @binding(1) var<storage, read> mb_s: array<f32>;
@group(0) @binding(2) var<storage, read> mb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> mb_g: array<f32>;
@group(0) @binding(4) var<uniform> mb_p: SeamParams;

// Per plane: g_min = Σ_{u>0} dy (u/D² - 1/D), g_max = -Σ_{u>0} dy u/D² (u = r - min - e,
// D = max - min + e).
@compute @workgroup_size(RWG)
fn mn_bstats(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let t = lid.x;
  let HW = mb_p.HW;
  let sb = mb_p.o1 + wid.y * 4u;
  let mx = mb_s[sb];
  let mn = mb_s[sb + 1u];
  let D = mx - mn + E;
  var a = 0.0;
  var b = 0.0;
  for (var i = t; i < HW; i += RWG) {
    let u = max(mb_x[mb_p.o0 + wid.y * HW + i], 0.0) - mn - E;
    if (u > 0.0) {
      let dy = mb_dy[mb_p.o2 + wid.y * HW + i];
      a += dy * (u / (D * D) - 1.0 / D);
      b -= dy * u / (D * D);
    }
  }
  wf[t] = a;
  wf2[t] = b;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      wf[t] += wf[t + s];
      wf2[t] += wf2[t + s];
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    mb_g[mb_p.o3 + wid.y * 2u] = wf[0];
    mb_g[mb_p.o3 + wid.y * 2u + 1u] = wf2[0];
  }
}

@group(0) @binding(0) var<storage, read> md_x: array<f32>;
@group(0) @binding(1) var<storage, read> md_s: array<f32>;
@group(0) @binding(2) var<storage, read> md_g: array<f32>;
@group(0) @binding(3) var<storage, read> md_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> md_dx: array<f32>;
@group(0) @binding(5) var<uniform> md_p: SeamParams;

@compute @workgroup_size(WG)
fn mn_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = md_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let sb = md_p.o1 + wid.y * 4u;
  let mx = md_s[sb];
  let mn = md_s[sb + 1u];
  let imx = u32(md_s[sb + 2u]);
  let imn = u32(md_s[sb + 3u]);
  let x = md_x[md_p.o0 + wid.y * HW + i];
  let u = max(x, 0.0) - mn - E;
  var d = 0.0;
  if (u > 0.0) { d = md_dy[md_p.o3 + wid.y * HW + i] / (mx - mn + E); }
  let gb = md_p.o2 + wid.y * 2u;
  if (i == imn) { d += md_g[gb]; }
  if (i == imx) { d += md_g[gb + 1u]; }
  md_dx[md_p.o4 + wid.y * HW + i] = select(0.0, d, x > 0.0);
}

// ---- top-k sums ----

// Order-preserving u32 key of an f32 (negative values below positive ones).
fn okey(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}

fn tkey(v: f32, smallest: bool) -> u32 {
  let o = okey(v);
  return select(o, ~o, smallest);
}

fn unkey(k: u32, smallest: bool) -> f32 {
  let o = select(k, ~k, smallest);
  if ((o & 0x80000000u) != 0u) { return bitcast<f32>(o & 0x7fffffffu); }
  return bitcast<f32>(~o);
}

fn tk_f(v: f32, relu: bool) -> f32 {
  return select(v, max(v, 0.0), relu);
}

@group(0) @binding(0) var<storage, read> ts_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> ts_s: array<f32>;
@group(0) @binding(2) var<uniform> ts_p: SeamParams;

// Per row: stats [sum, k-th value, take (tied picks), neq (values equal to the k-th)].
@compute @workgroup_size(RWG)
fn tk_select(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let t = lid.x;
  let L = ts_p.L;
  let xb = ts_p.o0 + wid.y * L;
  let smallest = (ts_p.flags & FLAG_SMALLEST) != 0u;
  let relu = (ts_p.flags & FLAG_RELU) != 0u;
  var prefix = 0u;
  var mask = 0u;
  var rem = ts_p.k;
  var neq = 0u;
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    atomicStore(&hist[t], 0u);
    workgroupBarrier();
    for (var i = t; i < L; i += RWG) {
      let kk = tkey(ts_x[xb + i], smallest);
      if ((kk & mask) == prefix) { atomicAdd(&hist[(kk >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (t == 0u) {
      var cum = 0u;
      var b = 255u;
      loop {
        let h = atomicLoad(&hist[b]);
        if (cum + h >= rem || b == 0u) {
          sel = vec3u(b, rem - cum, h);
          break;
        }
        cum += h;
        b -= 1u;
      }
    }
    workgroupBarrier();
    let s = sel;
    prefix |= s.x << shift;
    mask |= 255u << shift;
    rem = s.y;
    neq = s.z;
    workgroupBarrier();
  }
  var acc = 0.0;
  for (var i = t; i < L; i += RWG) {
    let v = ts_x[xb + i];
    if (tkey(v, smallest) > prefix) { acc += tk_f(v, relu); }
  }
  wf[t] = acc;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { wf[t] += wf[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) {
    let thr = unkey(prefix, smallest);
    let ob = ts_p.o1 + wid.y * 4u;
    ts_s[ob] = wf[0] + f32(rem) * tk_f(thr, relu);
    ts_s[ob + 1u] = thr;
    ts_s[ob + 2u] = f32(rem);
    ts_s[ob + 3u] = f32(neq);
  }
}

@group(0) @binding(0) var<storage, read> tf_s: array<f32>;
@group(0) @binding(1) var<storage, read_write> tf_loss: array<f32>;
@group(0) @binding(2) var<uniform> tf_p: SeamParams;

@compute @workgroup_size(RWG)
fn tk_finish(@builtin(local_invocation_id) lid: vec3u) {
  let t = lid.x;
  var acc = 0.0;
  for (var r = t; r < tf_p.R; r += RWG) { acc += tf_s[r * 4u]; }
  wf[t] = acc;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { wf[t] += wf[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) { tf_loss[0] = wf[0] * tf_p.scale; }
}

@group(0) @binding(0) var<storage, read> tb_x: array<f32>;
@group(0) @binding(1) var<storage, read> tb_s: array<f32>;
@group(0) @binding(2) var<storage, read> tb_dl: array<f32>;
@group(0) @binding(3) var<storage, read_write> tb_dx: array<f32>;
@group(0) @binding(4) var<uniform> tb_p: SeamParams;

@compute @workgroup_size(WG)
fn tk_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let L = tb_p.L;
  let i = gid.x;
  if (i >= L) { return; }
  let smallest = (tb_p.flags & FLAG_SMALLEST) != 0u;
  let relu = (tb_p.flags & FLAG_RELU) != 0u;
  let sb = tb_p.o1 + wid.y * 4u;
  let thr = tkey(tb_s[sb + 1u], smallest);
  let v = tb_x[tb_p.o0 + wid.y * L + i];
  let kk = tkey(v, smallest);
  var w = 0.0;
  if (kk > thr) {
    w = 1.0;
  } else if (kk == thr) {
    w = tb_s[sb + 2u] / tb_s[sb + 3u];
  }
  if (relu && !(v > 0.0)) { w = 0.0; }
  tb_dx[tb_p.o2 + wid.y * L + i] = w * tb_dl[0] * tb_p.scale;
}

// ---- per-pixel element maps ----

@group(0) @binding(0) var<storage, read> gf_x: array<f32>;
@group(0) @binding(1) var<storage, read> gf_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> gf_m: array<f32>;
@group(0) @binding(3) var<uniform> gf_p: SeamParams;

// The tagged foreground channel of the largest tag_c·x_c (first on ties).
fn fg_arg(xb: u32, tb: u32, i: u32) -> u32 {
  var best = 1u;
  var bv = gf_t[tb] * gf_x[xb + gf_p.HW + i];
  for (var c = 2u; c < gf_p.C1; c++) {
    let v = gf_t[tb + c - 1u] * gf_x[xb + c * gf_p.HW + i];
    if (v > bv) {
      bv = v;
      best = c;
    }
  }
  return best;
}

@compute @workgroup_size(WG)
fn fgmax_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = gf_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let xb = gf_p.o0 + wid.y * gf_p.C1 * HW;
  let tb = gf_p.o1 + wid.y * (gf_p.C1 - 1u);
  let c = fg_arg(xb, tb, i);
  gf_m[gf_p.o2 + wid.y * HW + i] = gf_t[tb + c - 1u] * gf_x[xb + c * HW + i];
}

@group(0) @binding(0) var<storage, read> gb_x: array<f32>;
@group(0) @binding(1) var<storage, read> gb_t: array<f32>;
@group(0) @binding(2) var<storage, read> gb_dm: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb_dx: array<f32>;
@group(0) @binding(4) var<uniform> gb_p: SeamParams;

@compute @workgroup_size(WG)
fn fgmax_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = gb_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C1 = gb_p.C1;
  let xb = gb_p.o0 + wid.y * C1 * HW;
  let tb = gb_p.o1 + wid.y * (C1 - 1u);
  var best = 1u;
  var bv = gb_t[tb] * gb_x[xb + HW + i];
  for (var c = 2u; c < C1; c++) {
    let v = gb_t[tb + c - 1u] * gb_x[xb + c * HW + i];
    if (v > bv) {
      bv = v;
      best = c;
    }
  }
  let dm = gb_dm[gb_p.o2 + wid.y * HW + i];
  let ob = gb_p.o3 + wid.y * C1 * HW + i;
  gb_dx[ob] = 0.0;
  for (var c = 1u; c < C1; c++) {
    gb_dx[ob + c * HW] = select(0.0, dm * gb_t[tb + c - 1u], c == best);
  }
}

@group(0) @binding(0) var<storage, read> ef_a: array<f32>;
@group(0) @binding(1) var<storage, read> ef_b: array<f32>;
@group(0) @binding(2) var<storage, read> ef_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> ef_v: array<f32>;
@group(0) @binding(4) var<uniform> ef_p: SeamParams;

@compute @workgroup_size(WG)
fn er_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = ef_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C1 = ef_p.C1;
  for (var c = 1u; c < C1; c++) {
    let tg = ef_t[ef_p.o2 + wid.y * (C1 - 1u) + c - 1u];
    let d = tg * (ef_a[ef_p.o0 + (wid.y * C1 + c) * HW + i] - ef_b[ef_p.o1 + (wid.y * C1 + c) * HW + i]);
    ef_v[ef_p.o3 + (wid.y * (C1 - 1u) + c - 1u) * HW + i] = abs(d);
  }
}

@group(0) @binding(0) var<storage, read> eb_a: array<f32>;
@group(0) @binding(1) var<storage, read> eb_b: array<f32>;
@group(0) @binding(2) var<storage, read> eb_t: array<f32>;
@group(0) @binding(3) var<storage, read> eb_dv: array<f32>;
@group(0) @binding(4) var<storage, read_write> eb_da: array<f32>;
@group(0) @binding(5) var<storage, read_write> eb_db: array<f32>;
@group(0) @binding(6) var<uniform> eb_p: SeamParams;

@compute @workgroup_size(WG)
fn er_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = eb_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C1 = eb_p.C1;
  eb_da[eb_p.o4 + wid.y * C1 * HW + i] = 0.0;
  eb_db[eb_p.o5 + wid.y * C1 * HW + i] = 0.0;
  for (var c = 1u; c < C1; c++) {
    let tg = eb_t[eb_p.o2 + wid.y * (C1 - 1u) + c - 1u];
    let e = (wid.y * C1 + c) * HW + i;
    let d = tg * (eb_a[eb_p.o0 + e] - eb_b[eb_p.o1 + e]);
    let g = eb_dv[eb_p.o3 + (wid.y * (C1 - 1u) + c - 1u) * HW + i] * sign(d) * tg;
    eb_da[eb_p.o4 + e] = g;
    eb_db[eb_p.o5 + e] = -g;
  }
}

@group(0) @binding(0) var<storage, read> cf_t: array<f32>;
@group(0) @binding(1) var<storage, read> cf_y: array<f32>;
@group(0) @binding(2) var<storage, read> cf_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> cf_v: array<f32>;
@group(0) @binding(4) var<uniform> cf_p: SeamParams;

// The max_onehot target of channel c at pixel i (see the header).
fn ecr_target(tb: u32, gb: u32, c: u32, i: u32) -> f32 {
  let HW = cf_p.HW;
  var m = 0.0;
  for (var k = 1u; k < cf_p.C1; k++) {
    let v = cf_g[gb + k - 1u] * cf_t[tb + k * HW + i];
    if (k == 1u || v > m) { m = v; }
  }
  if (c == 0u) { return 1.0 - m; }
  let v = cf_g[gb + c - 1u] * cf_t[tb + c * HW + i];
  return select(0.0, v, v == m);
}

@compute @workgroup_size(WG)
fn ecr_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = cf_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C1 = cf_p.C1;
  let tb = cf_p.o0 + wid.y * C1 * HW;
  let gb = cf_p.o2 + wid.y * (C1 - 1u);
  for (var c = 0u; c < C1; c++) {
    var lab = 1.0;
    if (c > 0u) { lab = cf_g[gb + c - 1u]; }
    let pr = lab * cf_y[cf_p.o1 + (wid.y * C1 + c) * HW + i];
    cf_v[cf_p.o3 + (wid.y * C1 + c) * HW + i] = abs(ecr_target(tb, gb, c, i) - pr);
  }
}

@group(0) @binding(0) var<storage, read> cb_t: array<f32>;
@group(0) @binding(1) var<storage, read> cb_y: array<f32>;
@group(0) @binding(2) var<storage, read> cb_g: array<f32>;
@group(0) @binding(3) var<storage, read> cb_dv: array<f32>;
@group(0) @binding(4) var<storage, read_write> cb_dy: array<f32>;
@group(0) @binding(5) var<uniform> cb_p: SeamParams;

@compute @workgroup_size(WG)
fn ecr_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = cb_p.HW;
  let i = gid.x;
  if (i >= HW) { return; }
  let C1 = cb_p.C1;
  let tb = cb_p.o0 + wid.y * C1 * HW;
  let gb = cb_p.o2 + wid.y * (C1 - 1u);
  var m = 0.0;
  for (var k = 1u; k < C1; k++) {
    let v = cb_g[gb + k - 1u] * cb_t[tb + k * HW + i];
    if (k == 1u || v > m) { m = v; }
  }
  for (var c = 0u; c < C1; c++) {
    var lab = 1.0;
    var tgt = 1.0 - m;
    if (c > 0u) {
      lab = cb_g[gb + c - 1u];
      let v = lab * cb_t[tb + c * HW + i];
      tgt = select(0.0, v, v == m);
    }
    let e = (wid.y * C1 + c) * HW + i;
    let pr = lab * cb_y[cb_p.o1 + e];
    cb_dy[cb_p.o4 + e] = cb_dv[cb_p.o3 + e] * sign(pr - tgt) * lab;
  }
}

// ---- drop_bg: y = x[:, 1:] (per sample, S = elements per channel) and its backward ----

@group(0) @binding(0) var<storage, read> df_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> df_y: array<f32>;
@group(0) @binding(2) var<uniform> df_p: SeamParams;

@compute @workgroup_size(WG)
fn drop_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let S = df_p.HW;
  let n = (df_p.C1 - 1u) * S;
  let i = gid.x;
  if (i >= n) { return; }
  df_y[df_p.o1 + wid.y * n + i] = df_x[df_p.o0 + wid.y * df_p.C1 * S + S + i];
}

@group(0) @binding(0) var<storage, read> db_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> db_dx: array<f32>;
@group(0) @binding(2) var<uniform> db_p: SeamParams;

@compute @workgroup_size(WG)
fn drop_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let S = db_p.HW;
  let n = db_p.C1 * S;
  let i = gid.x;
  if (i >= n) { return; }
  var v = 0.0;
  if (i >= S) { v = db_dy[db_p.o0 + wid.y * (n - S) + i - S]; }
  db_dx[db_p.o1 + wid.y * n + i] = v;
}
