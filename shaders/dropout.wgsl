// Dropout with a mask recomputed from a hash, so nothing but the seed is stored:
//   y_i = x_i · m_i / (1 - p),   m_i = [hash(seed, i) >= threshold],  threshold = floor(p · 2^32)
// where i is the element's index in the whole tensor (`start` + index in the chunk), so the
// mask does not depend on how the work is split. Dropout is linear in x, so the backward is
// the same kernel applied to dy with the same seed. The hash is Chris Wellons' lowbias32,
// written out again in src/ops/dropout.ts (hash32) for the reference.

override WG: u32 = 256u;

{{struct:DropoutParams}}

fn lowbias32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

// The keep test's hash of element i under a seed.
fn dropout_hash(seed: u32, i: u32) -> u32 {
  return lowbias32(i ^ lowbias32(seed));
}

@group(0) @binding(0) var<storage, read> d_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> d_y: array<f32>;
@group(0) @binding(2) var<uniform> d_p: DropoutParams;

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= d_p.n) { return; }
  let keep = dropout_hash(d_p.seed, d_p.start + i) >= d_p.threshold;
  d_y[i] = select(0.0, d_x[i] * d_p.scale, keep);
}
