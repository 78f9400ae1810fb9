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

// The standard normal CDF Φ(x) = erfc(-x/√2)/2 for the GELU entries, with erfc from Numerical
// Recipes' erfcc (a Chebyshev fit, fractional error below 1.2e-7 for every z >= 0): the left
// tail comes straight from erfc instead of cancelling in 1 + erf, so Φ keeps its relative
// accuracy there too. WGSL has no erf.
fn erfc_pos(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let q = -1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277));
  let r = 0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * q));
  return t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * r)));
}

fn norm_cdf(x: f32) -> f32 {
  let c = 0.5 * erfc_pos(abs(x) * 0.70710678118654752);
  return select(c, 1.0 - c, x > 0.0);
}

// The standard normal density φ(x).
fn norm_pdf(x: f32) -> f32 {
  return 0.39894228040143268 * exp(-0.5 * x * x);
}

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
