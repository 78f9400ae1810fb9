// Pointwise op family. One template; kernels are generated from the op table in
// src/ops/pointwise.ts by substituting {{EXPR}}, an expression over a, b, c (inputs at the same
// index) and p.alpha, p.beta (scalars). `main` writes y = op(a, b, c); `inplace` updates
// y = op(y, b, c) (binding 0 is then unused). Flat index over x and y workgroups.

{{struct:PointwiseParams}}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read> C: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<uniform> p: PointwiseParams;

override WG: u32 = 256u;

fn op(a: f32, b: f32, c: f32) -> f32 {
  return {{EXPR}};
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) { return; }
  Y[i] = op(A[i], B[i], C[i]);
}

@compute @workgroup_size(WG)
fn inplace(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) { return; }
  Y[i] = op(Y[i], B[i], C[i]);
}
