// Dense CRF, exact path (src/ops/crf.ts, docs/crf.md): one mean-field iteration by brute
// force. Each invocation is one pixel p; it walks all pixels q in order (features,
// normalisers and Q read straight from storage: the same q in every invocation) and
// accumulates, for every label l in a fixed order,
//   acc_l = Σ_q (cg·ng_p·kg(p,q)·ng_q + cb·nb_p·kb(p,q)·nb_q)·Q_l(q)   (q = p included)
// then writes Q'_l(p) = softmax_l(lu_l(p) + acc_l). Templated on the label count NL (the
// private accumulator, its update unrolled into ACC_BODY). On llvmpipe, whose invocations run
// at most 65535 loop iterations in all, N + 3·NL must stay below that.

const NL: u32 = {{NL}}u;

{{struct:CrfExactParams}}

@group(0) @binding(0) var<storage, read> ex_lu: array<f32>;
@group(0) @binding(1) var<storage, read> ex_q: array<f32>;
@group(0) @binding(2) var<storage, read> ex_feat: array<vec4f>;
@group(0) @binding(3) var<storage, read> ex_ng: array<f32>;
@group(0) @binding(4) var<storage, read> ex_nb: array<f32>;
@group(0) @binding(5) var<storage, read_write> ex_out: array<f32>;
@group(0) @binding(6) var<uniform> ex_p: CrfExactParams;

// No workgroup memory: every invocation walks the same q, so those loads are uniform.
@compute @workgroup_size(64)
fn exact_step(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let N = ex_p.N;
  let p = flat_index(gid, nwg, 64u);
  if (p >= N) { return; }
  let fa = ex_feat[2u * p];
  let fc = ex_feat[2u * p + 1u];
  let wg = ex_p.cg * ex_ng[p];
  let wb = ex_p.cb * ex_nb[p];
  var acc: array<f32, NL>;
  for (var l = 0u; l < NL; l++) { acc[l] = 0.0; }
  for (var q = 0u; q < N; q++) {
    let da = fa - ex_feat[2u * q];
    let dc = fc - ex_feat[2u * q + 1u];
    var w = 0.0;
    if (ex_p.has_g != 0u) {
      w += wg * exp(-0.5 * dot(da.xy, da.xy)) * ex_ng[q];
    }
    if (ex_p.has_b != 0u) {
      w += wb * exp(-0.5 * (dot(da.zw, da.zw) + dot(dc.xyz, dc.xyz))) * ex_nb[q];
    }
    // acc[l] += w * Q_l(q) for every label, unrolled (src/ops/crf.ts): no inner loop, since
    // llvmpipe ends an invocation's loops silently after 65535 iterations in all.
{{ACC_BODY}}
  }
  var m = -3.0e38;
  for (var l = 0u; l < NL; l++) {
    acc[l] += ex_lu[l * N + p];
    m = max(m, acc[l]);
  }
  var z = 0.0;
  for (var l = 0u; l < NL; l++) {
    z += exp(acc[l] - m);
  }
  let iz = 1.0 / z;
  for (var l = 0u; l < NL; l++) {
    ex_out[l * N + p] = exp(acc[l] - m) * iz;
  }
}
