// Dense CRF, exact path (src/ops/crf.ts, docs/crf.md): one mean-field iteration by brute
// force. Each invocation is one pixel p; the workgroup walks all pixels q in tiles of TILE
// (features, normalisers and Q of the tile staged in workgroup memory) and accumulates, for
// every label l in a fixed order,
//   acc_l = Σ_q (cg·ng_p·kg(p,q)·ng_q + cb·nb_p·kb(p,q)·nb_q)·Q_l(q)   (q = p included)
// then writes Q'_l(p) = softmax_l(lu_l(p) + acc_l). Templated on the label count {{NL}} (the
// private accumulator) and the tile {{TILE}} (= workgroup size).

const NL: u32 = {{NL}}u;
const TILE: u32 = {{TILE}}u;

{{struct:CrfExactParams}}

@group(0) @binding(0) var<storage, read> ex_lu: array<f32>;
@group(0) @binding(1) var<storage, read> ex_q: array<f32>;
@group(0) @binding(2) var<storage, read> ex_feat: array<vec4f>;
@group(0) @binding(3) var<storage, read> ex_ng: array<f32>;
@group(0) @binding(4) var<storage, read> ex_nb: array<f32>;
@group(0) @binding(5) var<storage, read_write> ex_out: array<f32>;
@group(0) @binding(6) var<uniform> ex_p: CrfExactParams;

var<workgroup> t_fa: array<vec4f, TILE>;
var<workgroup> t_fc: array<vec4f, TILE>;
var<workgroup> t_n: array<vec2f, TILE>;
var<workgroup> t_q: array<f32, NL * TILE>;

@compute @workgroup_size(TILE)
fn exact_step(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let N = ex_p.N;
  let p = wid.x * TILE + lid.x;
  let pp = min(p, N - 1u);
  let fa = ex_feat[2u * pp];
  let fc = ex_feat[2u * pp + 1u];
  let wg = ex_p.cg * ex_ng[pp];
  let wb = ex_p.cb * ex_nb[pp];
  var acc: array<f32, NL>;
  for (var base = 0u; base < N; base += TILE) {
    let q = base + lid.x;
    if (q < N) {
      t_fa[lid.x] = ex_feat[2u * q];
      t_fc[lid.x] = ex_feat[2u * q + 1u];
      t_n[lid.x] = vec2f(ex_ng[q], ex_nb[q]);
      for (var l = 0u; l < NL; l++) {
        t_q[l * TILE + lid.x] = ex_q[l * N + q];
      }
    }
    workgroupBarrier();
    let cnt = min(TILE, N - base);
    for (var j = 0u; j < cnt; j++) {
      let da = fa - t_fa[j];
      let dc = fc - t_fc[j];
      var w = 0.0;
      if (ex_p.has_g != 0u) {
        w += wg * exp(-0.5 * dot(da.xy, da.xy)) * t_n[j].x;
      }
      if (ex_p.has_b != 0u) {
        w += wb * exp(-0.5 * (dot(da.zw, da.zw) + dot(dc.xyz, dc.xyz))) * t_n[j].y;
      }
      for (var l = 0u; l < NL; l++) {
        acc[l] += w * t_q[l * TILE + j];
      }
    }
    workgroupBarrier();
  }
  if (p >= N) { return; }
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
