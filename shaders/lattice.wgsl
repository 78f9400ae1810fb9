// Permutohedral lattice for the dense CRF's bilateral kernel (src/ops/permutohedral.ts,
// docs/crf.md), built and applied on the GPU without hashing or float atomics: d = 5 features
// (x/sxy, y/sxy, r/srgb, g/srgb, b/srgb), D1 = 6 simplex corners per pixel.
//
// Build (once per image):
//   lat_keys       per pixel: pydensecrf's elevation, closest 0-coloured point, rank,
//                  barycentric weights (corner[e].y); entry e = p·6 + j gets (key of corner
//                  j, e) with the key's first five coordinates packed as 16-bit fields
//                  (+32768) in x, y, z
//   sort_runs      sorts each run of 16 entries (insertion sort in registers)
//   merge_pass     merges sorted runs of width k pairwise (merge path: 16 outputs per
//                  invocation, no workgroup memory), until one run holds all nreal entries
//   vert_count     per chunk of 128 sorted entries: how many start a new key
//   vert_offsets   one invocation: the chunk counts scanned serially into offsets
//   vert_write     per chunk: vertex v of each entry (the running count - 1): seg[i] = v + 1,
//                  uniq[v] = (key, first entry) at a segment start, corner[e].x = v,
//                  sent[i] = (pixel | start << 31, weight bits) for the splat; count[0] = M,
//                  uniq[M].w = nreal (the last segment's end)
//   lat_neighbors  per vertex and direction j = 0..5: the keys ±(1,..,1) ∓ 6·e_j found by
//                  binary search in uniq (0xffffffff when absent)
// Filter (per message): lat_splat (per chunk of 64 sorted entries, label groups of 4 in
// turn: each vertex's sum over its entries in the chunk, in entry order = pixel order;
// segments inside the chunk are written, the chunk's first and last vertex kept as partials),
// lat_splat_combine (per vertex reaching a chunk's end and label group: its partials in chunk
// order), lat_blur (v + 0.5·(n1 + n2), one direction per dispatch), lat_slice (per pixel:
// alpha·Σ_j bary·A[off]; mode 1 writes 1/sqrt(· + 1e-20); the CRF's update kernel fuses it,
// shaders/crf_gauss.wgsl). Vertex kernels loop over the vertices with a stride (M is on the
// GPU only). No invocation runs long serial loops: llvmpipe ends an invocation's loops
// silently after 65535 iterations in all. Lattice values are vertex-major
// [Mmax, L]; corner[e] = (vertex, bits of the barycentric weight) per entry.

{{struct:LatParams}}

const D: u32 = 5u;
const D1: u32 = 6u;
const NONE: u32 = 0xffffffffu;
const KOFF: i32 = 32768;

fn key_less(a: vec4u, b: vec4u) -> bool {
  if (a.x != b.x) { return a.x < b.x; }
  if (a.y != b.y) { return a.y < b.y; }
  if (a.z != b.z) { return a.z < b.z; }
  return a.w < b.w;
}

fn pack_key(c: array<i32, 5>) -> vec3u {
  let u0 = u32(c[0] + KOFF);
  let u1 = u32(c[1] + KOFF);
  let u2 = u32(c[2] + KOFF);
  let u3 = u32(c[3] + KOFF);
  let u4 = u32(c[4] + KOFF);
  return vec3u((u0 << 16u) | u1, (u2 << 16u) | u3, u4 << 16u);
}

fn unpack_key(k: vec4u) -> array<i32, 5> {
  return array<i32, 5>(
    i32(k.x >> 16u) - KOFF,
    i32(k.x & 0xffffu) - KOFF,
    i32(k.y >> 16u) - KOFF,
    i32(k.y & 0xffffu) - KOFF,
    i32(k.z >> 16u) - KOFF,
  );
}

// ---- lat_keys ----

@group(0) @binding(0) var<storage, read> lk_img: array<f32>;
@group(0) @binding(1) var<storage, read_write> lk_ent: array<vec4u>;
@group(0) @binding(2) var<storage, read_write> lk_corner: array<vec2u>;
@group(0) @binding(3) var<uniform> lk_p: LatParams;

@compute @workgroup_size(64)
fn lat_keys(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = lk_p.N;
  if (p >= N) { return; }
  var f: array<f32, 5>;
  f[0] = f32(p % lk_p.W) / lk_p.sxy;
  f[1] = f32(p / lk_p.W) / lk_p.sxy;
  f[2] = clamp(lk_img[p], 0.0, 255.0) / lk_p.srgb;
  f[3] = clamp(lk_img[N + p], 0.0, 255.0) / lk_p.srgb;
  f[4] = clamp(lk_img[2u * N + p], 0.0, 255.0) / lk_p.srgb;
  // Elevation (pydensecrf: scale_factor[i] = inv_std_dev / sqrt((i+2)(i+1))).
  let inv_std = sqrt(2.0 / 3.0) * f32(D1);
  var el: array<f32, 6>;
  var sm = 0.0;
  for (var j = D; j > 0u; j--) {
    let cf = f[j - 1u] * (inv_std / sqrt(f32((j + 1u) * j)));
    el[j] = sm - f32(j) * cf;
    sm += cf;
  }
  el[0] = sm;
  // The closest 0-coloured lattice point.
  var rem0: array<i32, 6>;
  var sum = 0;
  for (var i = 0u; i <= D; i++) {
    let v = el[i] / f32(D1);
    let up = ceil(v) * f32(D1);
    let down = floor(v) * f32(D1);
    var r = down;
    if (up - el[i] < el[i] - down) { r = up; }
    rem0[i] = i32(r);
    sum += rem0[i] / i32(D1);
  }
  var rank: array<i32, 6>;
  for (var i = 0u; i < D; i++) {
    let di = el[i] - f32(rem0[i]);
    for (var j = i + 1u; j <= D; j++) {
      if (di < el[j] - f32(rem0[j])) {
        rank[i] += 1;
      } else {
        rank[j] += 1;
      }
    }
  }
  for (var i = 0u; i <= D; i++) {
    rank[i] += sum;
    if (rank[i] < 0) {
      rank[i] += i32(D1);
      rem0[i] += i32(D1);
    } else if (rank[i] > i32(D)) {
      rank[i] -= i32(D1);
      rem0[i] -= i32(D1);
    }
  }
  var b: array<f32, 7>;
  for (var i = 0u; i <= D; i++) {
    let v = (el[i] - f32(rem0[i])) / f32(D1);
    let k = i32(D) - rank[i];
    b[k] += v;
    b[k + 1] -= v;
  }
  b[0] += 1.0 + b[D1];
  for (var r = 0u; r <= D; r++) {
    var c: array<i32, 5>;
    for (var i = 0u; i < D; i++) {
      var o = i32(r);
      if (rank[i] > i32(D - r)) { o = i32(r) - i32(D1); }
      c[i] = rem0[i] + o;
    }
    let e = p * D1 + r;
    lk_ent[e] = vec4u(pack_key(c), e);
    lk_corner[e] = vec2u(0u, bitcast<u32>(b[r]));
  }
}

// ---- merge sort (stable; keys are unique anyway: the entry index breaks ties) ----

const MS_RUN: u32 = 16u;
const MS_OUT: u32 = 32u;

@group(0) @binding(0) var<storage, read_write> mr_ent: array<vec4u>;
@group(0) @binding(1) var<uniform> mr_p: LatParams;

// Insertion sort of each run of MS_RUN entries [t·MS_RUN, ..) of [0, nreal), in place.
@compute @workgroup_size(64)
fn sort_runs(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, 64u);
  let n = mr_p.nreal;
  let base = t * MS_RUN;
  if (base >= n) { return; }
  let cnt = min(MS_RUN, n - base);
  var r: array<vec4u, MS_RUN>;
  for (var i = 0u; i < cnt; i++) {
    let x = mr_ent[base + i];
    var j = i;
    loop {
      if (j == 0u) { break; }
      if (!key_less(x, r[j - 1u])) { break; }
      r[j] = r[j - 1u];
      j--;
    }
    r[j] = x;
  }
  for (var i = 0u; i < cnt; i++) { mr_ent[base + i] = r[i]; }
}

@group(0) @binding(0) var<storage, read> mg_src: array<vec4u>;
@group(0) @binding(1) var<storage, read_write> mg_dst: array<vec4u>;
@group(0) @binding(2) var<uniform> mg_p: LatParams;

// One merge pass: sorted runs of width k (2k a multiple of MS_OUT) pairwise into runs of 2k; each
// invocation finds its MS_OUT outputs' split by a merge-path binary search, then merges them.
@compute @workgroup_size(64)
fn merge_pass(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, 64u);
  let n = mg_p.nreal;
  let out0 = t * MS_OUT;
  if (out0 >= n) { return; }
  let w = mg_p.k;
  let blk = out0 - out0 % (2u * w);
  let a0 = blk;
  let a1 = min(blk + w, n);
  let b1 = min(blk + 2u * w, n);
  let la = a1 - a0;
  let lb = b1 - a1;
  let d = out0 - blk;
  // The number i of outputs before out0 taken from A: the first i with B[d-i-1] < A[i].
  var lo = select(0u, d - lb, d > lb);
  var hi = min(d, la);
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (key_less(mg_src[a1 + d - mid - 1u], mg_src[a0 + mid])) { hi = mid; } else { lo = mid + 1u; }
  }
  var i = lo;
  var j = d - lo;
  let cnt = min(MS_OUT, n - out0);
  var va = vec4u(NONE);
  var vb = vec4u(NONE);
  if (i < la) { va = mg_src[a0 + i]; }
  if (j < lb) { vb = mg_src[a1 + j]; }
  for (var c = 0u; c < cnt; c++) {
    let take_b = j < lb && (i >= la || key_less(vb, va));
    if (take_b) {
      mg_dst[out0 + c] = vb;
      j++;
      if (j < lb) { vb = mg_src[a1 + j]; }
    } else {
      mg_dst[out0 + c] = va;
      i++;
      if (i < la) { va = mg_src[a0 + i]; }
    }
  }
}

// ---- vertex numbering: a three-pass scan of the "new key" flags, in registers ----

const SCC: u32 = 128u;

fn new_key(ent_prev: vec4u, ent_i: vec4u) -> bool {
  return any(ent_prev.xyz != ent_i.xyz);
}

@group(0) @binding(0) var<storage, read> vc_ent: array<vec4u>;
@group(0) @binding(1) var<storage, read_write> vc_sums: array<u32>;
@group(0) @binding(2) var<uniform> vc_p: LatParams;

// Per chunk of SCC sorted entries: how many start a new key.
@compute @workgroup_size(64)
fn vert_count(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = flat_index(gid, nwg, 64u);
  let n = vc_p.nreal;
  let i0 = c * SCC;
  if (i0 >= n) { return; }
  var cnt = 0u;
  var prev = vec4u(NONE);
  if (i0 > 0u) { prev = vc_ent[i0 - 1u]; }
  for (var j = 0u; j < SCC; j++) {
    let i = i0 + j;
    if (i >= n) { break; }
    let e = vc_ent[i];
    if (i == 0u || new_key(prev, e)) { cnt++; }
    prev = e;
  }
  vc_sums[c] = cnt;
}

@group(0) @binding(0) var<storage, read_write> vs_sums: array<u32>;
@group(0) @binding(1) var<uniform> vs_p: LatParams;

// One invocation: the chunk counts become exclusive offsets (serial, in order).
@compute @workgroup_size(1)
fn vert_offsets() {
  let nch = (vs_p.nreal + SCC - 1u) / SCC;
  var acc = 0u;
  for (var c = 0u; c < nch; c++) {
    let v = vs_sums[c];
    vs_sums[c] = acc;
    acc += v;
  }
}

@group(0) @binding(0) var<storage, read> vw_ent: array<vec4u>;
@group(0) @binding(1) var<storage, read> vw_sums: array<u32>;
@group(0) @binding(2) var<storage, read_write> vw_seg: array<u32>;
@group(0) @binding(3) var<storage, read_write> vw_uniq: array<vec4u>;
@group(0) @binding(4) var<storage, read_write> vw_corner: array<vec2u>;
@group(0) @binding(5) var<storage, read_write> vw_count: array<u32>;
@group(0) @binding(6) var<storage, read_write> vw_sent: array<vec2u>;
@group(0) @binding(7) var<uniform> vw_p: LatParams;

// Per chunk: each entry's vertex v = (inclusive count) - 1: seg[i] = v + 1, uniq[v] = (key,
// first entry) at a segment start, corner[e].x = v, sent[i] = (pixel | start << 31, weight
// bits); the last entry writes count[0] = M and uniq[M].w = nreal (the last segment's end).
@compute @workgroup_size(64)
fn vert_write(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = flat_index(gid, nwg, 64u);
  let n = vw_p.nreal;
  let i0 = c * SCC;
  if (i0 >= n) { return; }
  var s = vw_sums[c];
  var prev = vec4u(NONE);
  if (i0 > 0u) { prev = vw_ent[i0 - 1u]; }
  for (var j = 0u; j < SCC; j++) {
    let i = i0 + j;
    if (i >= n) { break; }
    let en = vw_ent[i];
    let start = i == 0u || new_key(prev, en);
    prev = en;
    if (start) { s++; }
    let v = s - 1u;
    vw_seg[i] = s;
    if (start) { vw_uniq[v] = vec4u(en.xyz, i); }
    let e = en.w;
    let cr = vw_corner[e];
    vw_corner[e] = vec2u(v, cr.y);
    vw_sent[i] = vec2u((e / D1) | select(0u, 0x80000000u, start), cr.y);
    if (i == n - 1u) {
      vw_count[0] = s;
      vw_uniq[s] = vec4u(NONE, NONE, NONE, n);
    }
  }
}

// ---- lat_neighbors ----

@group(0) @binding(0) var<storage, read> ln_uniq: array<vec4u>;
@group(0) @binding(1) var<storage, read> ln_count: array<u32>;
@group(0) @binding(2) var<storage, read_write> ln_nbr: array<u32>;
@group(0) @binding(3) var<uniform> ln_p: LatParams;

// Index of key k among uniq[0, m) (sorted), or NONE.
fn ln_find(k: vec3u, m: u32) -> u32 {
  var lo = 0u;
  var hi = m;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    let u = ln_uniq[mid];
    if (key_less(vec4u(u.xyz, 0u), vec4u(k, 0u))) { lo = mid + 1u; } else { hi = mid; }
  }
  if (lo < m && all(ln_uniq[lo].xyz == k)) { return lo; }
  return NONE;
}

@compute @workgroup_size(64)
fn lat_neighbors(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let m = ln_count[0];
  for (var v = flat_index(gid, nwg, 64u); v < m; v += ln_p.stride) {
  let key = unpack_key(ln_uniq[v]);
  for (var j = 0u; j <= D; j++) {
    var c1: array<i32, 5>;
    var c2: array<i32, 5>;
    for (var k = 0u; k < D; k++) {
      c1[k] = key[k] - 1;
      c2[k] = key[k] + 1;
    }
    if (j < D) {
      c1[j] = key[j] + i32(D);
      c2[j] = key[j] - i32(D);
    }
    ln_nbr[(j * ln_p.mmax + v) * 2u] = ln_find(pack_key(c1), m);
    ln_nbr[(j * ln_p.mmax + v) * 2u + 1u] = ln_find(pack_key(c2), m);
  }
  }
}

// ---- lat_splat (chunks of SPC sorted entries, then a per-vertex combine) ----

const SPC: u32 = 64u;

@group(0) @binding(0) var<storage, read> sp_sent: array<vec2u>;
@group(0) @binding(1) var<storage, read> sp_seg: array<u32>;
@group(0) @binding(2) var<storage, read> sp_vals: array<f32>;
@group(0) @binding(3) var<storage, read> sp_vals4: array<vec4f>;
@group(0) @binding(4) var<storage, read> sp_norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> sp_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> sp_part: array<f32>;
@group(0) @binding(7) var<uniform> sp_p: LatParams;

fn sp_store(v: u32, c: u32, first: u32, last: u32, l0: u32, s: vec4f) {
  let L = sp_p.L;
  let nch = (sp_p.nreal + SPC - 1u) / SPC;
  for (var k = 0u; k < 4u; k++) {
    let l = l0 + k;
    if (l >= L) { break; }
    if (v == first) { sp_part[c * L + l] = s[k]; }
    if (v == last) { sp_part[(nch + c) * L + l] = s[k]; }
    if (v != first && v != last) { sp_a[v * L + l] = s[k]; }
  }
}

// Per chunk c, for each group of 4 labels in turn (the chunk's values stay in cache): the
// in-order sum of each vertex's entries in the chunk; the chunk's first and last vertices go
// to the partials (head [c], tail [nch + c]), the vertices between (whole segments) straight
// to the lattice values. Values: mode 0 norm[p]·vals[l·N + p], mode 1 ones, mode 2
// vals4[p·G + g] (pixel-major, labels padded to G groups of 4, from element voff).
@compute @workgroup_size(64)
fn lat_splat(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = flat_index(gid, nwg, 64u);
  let n = sp_p.nreal;
  let i0 = c * SPC;
  if (i0 >= n) { return; }
  let i1 = min(i0 + SPC, n);
  let L = sp_p.L;
  let G = (L + 3u) / 4u;
  let N = sp_p.N;
  let mode = sp_p.mode;
  let v4off = sp_p.voff / 4u;
  let first = sp_seg[i0] - 1u;
  let last = sp_seg[i1 - 1u] - 1u;
  for (var g = 0u; g < G; g++) {
    let l0 = g * 4u;
    var cur = first;
    var s = vec4f(0.0);
    for (var j = 0u; j < SPC; j++) {
      let i = i0 + j;
      if (i >= i1) { break; }
      let se = sp_sent[i];
      let p = se.x & 0x7fffffffu;
      if (j > 0u && (se.x >> 31u) != 0u) {
        sp_store(cur, c, first, last, l0, s);
        cur++;
        s = vec4f(0.0);
      }
      let b = bitcast<f32>(se.y);
      var x: vec4f;
      if (mode == 2u) {
        x = sp_vals4[v4off + p * G + g];
      } else {
        x = sp_value(mode, p, l0);
      }
      s += b * x;
    }
    sp_store(cur, c, first, last, l0, s);
  }
}

// Mode 1: ones; mode 0: norm[p]·vals[l·N + p] for the labels l0 .. l0 + 3 (clamped to L - 1).
fn sp_value(mode: u32, p: u32, l0: u32) -> vec4f {
  if (mode == 1u) { return vec4f(1.0); }
  let L = sp_p.L;
  let N = sp_p.N;
  let nm = sp_norm[p];
  return nm * vec4f(
    sp_vals[min(l0, L - 1u) * N + p],
    sp_vals[min(l0 + 1u, L - 1u) * N + p],
    sp_vals[min(l0 + 2u, L - 1u) * N + p],
    sp_vals[min(l0 + 3u, L - 1u) * N + p],
  );
}

@group(0) @binding(0) var<storage, read> sc2_uniq: array<vec4u>;
@group(0) @binding(1) var<storage, read> sc2_count: array<u32>;
@group(0) @binding(2) var<storage, read> sc2_part: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc2_a: array<f32>;
@group(0) @binding(4) var<uniform> sc2_p: LatParams;

// Per vertex whose segment touches a chunk's end and group of 4 labels (gid.y): its chunks'
// partials in chunk order. One invocation's loops stay within llvmpipe's budget of 65535 loop
// iterations per invocation (shared by all its loops; past it loops end silently): it walks
// at most nreal / SPC chunks in all.
@compute @workgroup_size(64)
fn lat_splat_combine(@builtin(global_invocation_id) gid: vec3u) {
  let m = sc2_count[0];
  let n = sc2_p.nreal;
  let L = sc2_p.L;
  let l0 = gid.y * 4u;
  let nk = min(4u, L - l0);
  let nch = (n + SPC - 1u) / SPC;
  for (var v = gid.x; v < m; v += sc2_p.stride) {
    let start = sc2_uniq[v].w;
    let end = sc2_uniq[v + 1u].w;
    let c0 = start / SPC;
    let c1 = (end - 1u) / SPC;
    var s: vec4f;
    if (c0 == c1) {
      if (start == c0 * SPC) {
        s = sc2_read(c0, l0, L);
      } else if (end == min(c0 * SPC + SPC, n)) {
        s = sc2_read(nch + c0, l0, L);
      } else {
        continue;
      }
    } else {
      s = sc2_read(nch + c0, l0, L);
      for (var c = c0 + 1u; c <= c1; c++) { s += sc2_read(c, l0, L); }
    }
    sc2_a[v * L + l0] = s.x;
    if (nk > 1u) { sc2_a[v * L + l0 + 1u] = s.y; }
    if (nk > 2u) { sc2_a[v * L + l0 + 2u] = s.z; }
    if (nk > 3u) { sc2_a[v * L + l0 + 3u] = s.w; }
  }
}

// The partial row r's labels l0 .. l0 + 3 (clamped to L - 1).
fn sc2_read(r: u32, l0: u32, L: u32) -> vec4f {
  let o = r * L;
  return vec4f(
    sc2_part[o + l0],
    sc2_part[o + min(l0 + 1u, L - 1u)],
    sc2_part[o + min(l0 + 2u, L - 1u)],
    sc2_part[o + min(l0 + 3u, L - 1u)],
  );
}

// ---- lat_blur ----

@group(0) @binding(0) var<storage, read> bl_a: array<f32>;
@group(0) @binding(1) var<storage, read> bl_nbr: array<u32>;
@group(0) @binding(2) var<storage, read> bl_count: array<u32>;
@group(0) @binding(3) var<storage, read_write> bl_b: array<f32>;
@group(0) @binding(4) var<uniform> bl_p: LatParams;

@compute @workgroup_size(64)
fn lat_blur(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let m = bl_count[0];
  let L = bl_p.L;
  for (var v = flat_index(gid, nwg, 64u); v < m; v += bl_p.stride) {
    let n1 = bl_nbr[(bl_p.dir * bl_p.mmax + v) * 2u];
    let n2 = bl_nbr[(bl_p.dir * bl_p.mmax + v) * 2u + 1u];
    for (var l = 0u; l < L; l++) {
      var a1 = 0.0;
      var a2 = 0.0;
      if (n1 != NONE) { a1 = bl_a[n1 * L + l]; }
      if (n2 != NONE) { a2 = bl_a[n2 * L + l]; }
      bl_b[v * L + l] = bl_a[v * L + l] + 0.5 * (a1 + a2);
    }
  }
}

// ---- lat_slice ----

@group(0) @binding(0) var<storage, read> sl_a: array<f32>;
@group(0) @binding(1) var<storage, read> sl_corner: array<vec2u>;
@group(0) @binding(2) var<storage, read_write> sl_out: array<f32>;
@group(0) @binding(3) var<uniform> sl_p: LatParams;

@compute @workgroup_size(64)
fn lat_slice(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let p = flat_index(gid, nwg, 64u);
  let N = sl_p.N;
  if (p >= N) { return; }
  let L = sl_p.L;
  let alpha = 1.0 / (1.0 + exp2(-f32(D)));
  var off: array<u32, 6>;
  var bary: array<f32, 6>;
  for (var j = 0u; j < D1; j++) {
    let c = sl_corner[p * D1 + j];
    off[j] = c.x * L;
    bary[j] = bitcast<f32>(c.y);
  }
  for (var l = 0u; l < L; l++) {
    var s = 0.0;
    for (var j = 0u; j < D1; j++) {
      s += bary[j] * sl_a[off[j] + l];
    }
    s *= alpha;
    if (sl_p.mode == 1u) { s = 1.0 / sqrt(s + 1e-20); }
    sl_out[l * N + p] = s;
  }
}
