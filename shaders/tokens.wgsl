// Data movement of token tensors (src/ops/tokens.ts): one strided copy over up to six
// dimensions serves the head split / merge permutes, tokens ↔ feature maps, patchify and its
// inverse, concatenation and slicing along tokens, and broadcasting over the batch (a zero
// source stride). Flat index over x and y workgroups, one element per invocation, no loops.
//
//   copy6   dst[dOff + Σ_k c_k·t_k] = src[sOff + Σ_k c_k·s_k] for the coordinates c of the
//           element's flat index in the iteration shape d0..d5 (row-major, d5 fastest);
//           sOff / dOff are the windows' shifts (src/gpu/split.ts)

{{struct:CopyParams}}

@group(0) @binding(0) var<storage, read> cp_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> cp_dst: array<f32>;
@group(0) @binding(2) var<uniform> cp: CopyParams;

@compute @workgroup_size(256)
fn copy6(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= cp.n) { return; }
  var r = i;
  let c5 = r % cp.d5; r = r / cp.d5;
  let c4 = r % cp.d4; r = r / cp.d4;
  let c3 = r % cp.d3; r = r / cp.d3;
  let c2 = r % cp.d2; r = r / cp.d2;
  let c1 = r % cp.d1; r = r / cp.d1;
  let c0 = r;
  let s = cp.sOff + c0 * cp.s0 + c1 * cp.s1 + c2 * cp.s2 + c3 * cp.s3 + c4 * cp.s4 + c5 * cp.s5;
  let t = cp.dOff + c0 * cp.t0 + c1 * cp.t1 + c2 * cp.t2 + c3 * cp.t3 + c4 * cp.t4 + c5 * cp.t5;
  cp_dst[t] = cp_src[s];
}
