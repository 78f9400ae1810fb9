// Multilabel soft-margin loss (PyTorch's MultiLabelSoftMarginLoss, reduction "mean"):
//   L = -1/(N·C) Σ_{n,c} [ t·logσ(x) + (1 - t)·logσ(-x) ]
// with logσ(x) = min(x, 0) - log(1 + exp(-|x|)) (stable), so the bracket is
//   t·min(x, 0) + (1 - t)·min(-x, 0) - log(1 + exp(-|x|)).
//
//   mlsm_fwd   one workgroup: register sums over a chunk of rows, one barrier, invocation 0
//              adds the chunk's share to L[0] (written on the first chunk, added after).
//   mlsm_bwd   elementwise dx = scale·(σ(x) - t), scale = upstream gradient / (N·C).

override WG: u32 = 256u;
const RWG: u32 = 64u;

var<workgroup> red: array<f32, 64>;

{{struct:MlsmParams}}

// ---- mlsm_fwd ----

@group(0) @binding(0) var<storage, read> lf_x: array<f32>;
@group(0) @binding(1) var<storage, read> lf_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> lf_loss: array<f32>;
@group(0) @binding(3) var<uniform> lf_p: MlsmParams;

@compute @workgroup_size(RWG)
fn mlsm_fwd(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < lf_p.n; i += RWG) {
    let x = lf_x[lf_p.xoff + i];
    let t = lf_t[lf_p.toff + i];
    s += t * min(x, 0.0) + (1.0 - t) * min(-x, 0.0) - log(1.0 + exp(-abs(x)));
  }
  red[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    var tot = 0.0;
    for (var k = 0u; k < RWG; k++) {
      tot += red[k];
    }
    let part = -tot * lf_p.scale;
    if (lf_p.accumulate != 0u) {
      lf_loss[0] += part;
    } else {
      lf_loss[0] = part;
    }
  }
}

// ---- mlsm_bwd ----

@group(0) @binding(0) var<storage, read> lb_x: array<f32>;
@group(0) @binding(1) var<storage, read> lb_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> lb_dx: array<f32>;
@group(0) @binding(3) var<uniform> lb_p: MlsmParams;

@compute @workgroup_size(WG)
fn mlsm_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, WG);
  if (i >= lb_p.n) { return; }
  let x = lb_x[i];
  let e = exp(-abs(x));
  let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
  lb_dx[i] = lb_p.scale * (sig - lb_t[i]);
}
