// Pixel-wise softmax cross-entropy with ignore index 255 (PyTorch's
// F.cross_entropy(logits, target, ignore_index=255, reduction="mean")):
//   L = 1/V Σ_{valid pixels p} [ log Σ_k exp(x_{k,p}) - x_{y_p,p} ],   V = number of valid pixels
// and L = 0 (zero gradient) when no pixel is valid. Logits [B, K, H, W]; labels [B, H, W] as f32
// values: a class 0..K-1, 255 (ignored), anything else is an invalid label: treated as ignored
// here (never used as an index) and counted, so the host can report it.
//
//   ce_pixel   one invocation per pixel on the plane grid (x: pixel, workgroup y: image of the
//              chunk): writes (nll, valid, invalid) of the pixel into a scratch buffer [B·H·W, 3].
//   ce_reduce  one workgroup over a chunk of scratch triples: fixed-order register sums, one
//              barrier, invocation 0 sums the 256 partials in order into stats = (Σ nll, V,
//              invalid count) (written on the first chunk, added after); on the last chunk it
//              also writes L = V > 0 ? Σ/V : 0.
//   ce_bwd     per pixel: dx_k = (dy / V)·(softmax_k - [k == y]) for valid pixels, 0 otherwise
//              (0 everywhere when V = 0); V and dy are read from the device, nothing is read back.

override WG: u32 = 64u;
const RWG: u32 = 256u;

var<workgroup> red: array<vec3f, 256>;

{{struct:SegCeParams}}

// The class of a label value: 0..K-1, K for ignored (255), K + 1 for an invalid value.
fn ce_class(v: f32, K: u32) -> u32 {
  if (v == 255.0) {
    return K;
  }
  if (v >= 0.0 && v < f32(K) && v == floor(v)) {
    return min(u32(v), K - 1u);
  }
  return K + 1u;
}

// ---- ce_pixel ----

@group(0) @binding(0) var<storage, read> cp_x: array<f32>;
@group(0) @binding(1) var<storage, read> cp_l: array<f32>;
@group(0) @binding(2) var<storage, read_write> cp_out: array<f32>;
@group(0) @binding(3) var<uniform> cp_p: SegCeParams;

@compute @workgroup_size(WG)
fn ce_pixel(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = cp_p.HW;
  if (gid.x >= HW) { return; }
  let K = cp_p.K;
  let xb = cp_p.xoff + wid.y * K * HW + gid.x;
  let y = ce_class(cp_l[cp_p.loff + wid.y * HW + gid.x], K);
  let ob = cp_p.ooff + 3u * (wid.y * HW + gid.x);
  if (y >= K) {
    cp_out[ob] = 0.0;
    cp_out[ob + 1u] = 0.0;
    cp_out[ob + 2u] = select(0.0, 1.0, y > K);
    return;
  }
  var m = cp_x[xb];
  for (var k = 1u; k < K; k++) {
    m = max(m, cp_x[xb + k * HW]);
  }
  var z = 0.0;
  for (var k = 0u; k < K; k++) {
    z += exp(cp_x[xb + k * HW] - m);
  }
  cp_out[ob] = log(z) + m - cp_x[xb + y * HW];
  cp_out[ob + 1u] = 1.0;
  cp_out[ob + 2u] = 0.0;
}

// ---- ce_reduce ----

@group(0) @binding(0) var<storage, read> cr_t: array<f32>;
@group(0) @binding(1) var<storage, read_write> cr_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> cr_loss: array<f32>;
@group(0) @binding(3) var<uniform> cr_p: SegCeParams;

@compute @workgroup_size(RWG)
fn ce_reduce(@builtin(local_invocation_index) lid: u32) {
  var s = vec3f(0.0);
  for (var i = lid; i < cr_p.n; i += RWG) {
    s += vec3f(cr_t[3u * i], cr_t[3u * i + 1u], cr_t[3u * i + 2u]);
  }
  red[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    var tot = vec3f(0.0);
    for (var k = 0u; k < RWG; k++) {
      tot += red[k];
    }
    if (cr_p.accumulate != 0u) {
      tot += vec3f(cr_stats[0], cr_stats[1], cr_stats[2]);
    }
    cr_stats[0] = tot.x;
    cr_stats[1] = tot.y;
    cr_stats[2] = tot.z;
    if (cr_p.last != 0u) {
      cr_loss[0] = select(0.0, tot.x / tot.y, tot.y > 0.0);
    }
  }
}

// ---- ce_bwd ----

@group(0) @binding(0) var<storage, read> cb_x: array<f32>;
@group(0) @binding(1) var<storage, read> cb_l: array<f32>;
@group(0) @binding(2) var<storage, read> cb_stats: array<f32>;
@group(0) @binding(3) var<storage, read> cb_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> cb_dx: array<f32>;
@group(0) @binding(5) var<uniform> cb_p: SegCeParams;

@compute @workgroup_size(WG)
fn ce_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let HW = cb_p.HW;
  if (gid.x >= HW) { return; }
  let K = cb_p.K;
  let xb = cb_p.xoff + wid.y * K * HW + gid.x;
  let db = cb_p.ooff + wid.y * K * HW + gid.x;
  let y = ce_class(cb_l[cb_p.loff + wid.y * HW + gid.x], K);
  let v = cb_stats[1];
  if (y >= K || !(v > 0.0)) {
    for (var k = 0u; k < K; k++) {
      cb_dx[db + k * HW] = 0.0;
    }
    return;
  }
  let g = cb_dy[0] / v;
  var m = cb_x[xb];
  for (var k = 1u; k < K; k++) {
    m = max(m, cb_x[xb + k * HW]);
  }
  var z = 0.0;
  for (var k = 0u; k < K; k++) {
    z += exp(cb_x[xb + k * HW] - m);
  }
  let iz = 1.0 / z;
  for (var k = 0u; k < K; k++) {
    let sm = exp(cb_x[xb + k * HW] - m) * iz;
    cb_dx[db + k * HW] = g * (sm - select(0.0, 1.0, k == y));
  }
}
