// Optimizer updates: one invocation per parameter element, parameter and state updated in
// place (PyTorch's single-tensor formulas, f32).
//
//   sgd     g = grad + wd·p; with momentum: buf = μ·buf + g, g = nesterov ? g + μ·buf : buf;
//           p -= lr·g. (PyTorch starts buf at g on the first step; buf starts at zero here,
//           which is the same with dampening 0.)
//   adamw   p *= 1 - lr·wd; m += (1 - β1)(g - m); v = β2·v + (1 - β2)·g²;
//           p -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps), bc_k = 1 - β_k^step.

override WG: u32 = 256u;

// ---- sgd ----

{{struct:SgdParams}}

@group(0) @binding(0) var<storage, read> sg_g: array<f32>;
@group(0) @binding(1) var<storage, read_write> sg_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> sg_buf: array<f32>;
@group(0) @binding(3) var<uniform> sg: SgdParams;

@compute @workgroup_size(WG)
fn sgd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= sg.n) { return; }
  let p = sg_p[i];
  var g = sg_g[i] + sg.wd * p;
  if (sg.momentum != 0.0) {
    let b = sg.momentum * sg_buf[i] + g;
    sg_buf[i] = b;
    g = select(b, g + sg.momentum * b, sg.nesterov != 0u);
  }
  sg_p[i] = p - sg.lr * g;
}

// ---- adamw ----

{{struct:AdamParams}}

@group(0) @binding(0) var<storage, read> ad_g: array<f32>;
@group(0) @binding(1) var<storage, read_write> ad_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> ad_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> ad_v: array<f32>;
@group(0) @binding(4) var<uniform> ad: AdamParams;

@compute @workgroup_size(WG)
fn adamw(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= ad.n) { return; }
  let g = ad_g[i];
  let p = ad_p[i] * (1.0 - ad.lr * ad.wd);
  let m = ad_m[i] + (1.0 - ad.beta1) * (g - ad_m[i]);
  let v = ad.beta2 * ad_v[i] + (1.0 - ad.beta2) * g * g;
  ad_m[i] = m;
  ad_v[i] = v;
  ad_p[i] = p - (ad.lr / ad.bc1) * (m / (sqrt(v) / ad.bc2_sqrt + ad.eps));
}
