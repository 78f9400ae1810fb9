// Softmax over the last dim L of row-major [rows, L] tensors (attention rows), one invocation
// per row on a flat grid. Rows are chunked past the binding limit; `ioff` / `ioff2` / `ooff`
// are the element offsets of the chunk's first row in the input, second input and output.
//
//   softmax_rows_fwd   y = softmax(scale·x), the row max subtracted (3·L loop iterations; the
//                      host keeps L under llvmpipe's loop budget)
//   softmax_rows_bwd   dx = scale·y·(dy - Σ y·dy), from the output

override WG: u32 = 256u;

{{struct:RowsParams}}

@group(0) @binding(0) var<storage, read> rf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rf_y: array<f32>;
@group(0) @binding(2) var<uniform> rf_p: RowsParams;

@compute @workgroup_size(WG)
fn softmax_rows_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = flat_index(gid, nwg, WG);
  if (r >= rf_p.rows) { return; }
  let L = rf_p.L;
  let xb = rf_p.ioff + r * L;
  let yb = rf_p.ooff + r * L;
  let s = rf_p.scale;
  var m = rf_x[xb] * s;
  for (var i = 1u; i < L; i++) {
    m = max(m, rf_x[xb + i] * s);
  }
  var z = 0.0;
  for (var i = 0u; i < L; i++) {
    z += exp(rf_x[xb + i] * s - m);
  }
  let iz = 1.0 / z;
  for (var i = 0u; i < L; i++) {
    rf_y[yb + i] = exp(rf_x[xb + i] * s - m) * iz;
  }
}

@group(0) @binding(0) var<storage, read> rb_y: array<f32>;
@group(0) @binding(1) var<storage, read> rb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> rb_dx: array<f32>;
@group(0) @binding(3) var<uniform> rb_p: RowsParams;

@compute @workgroup_size(WG)
fn softmax_rows_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = flat_index(gid, nwg, WG);
  if (r >= rb_p.rows) { return; }
  let L = rb_p.L;
  let yb = rb_p.ioff + r * L;
  let db = rb_p.ioff2 + r * L;
  var dot = 0.0;
  for (var i = 0u; i < L; i++) {
    dot += rb_y[yb + i] * rb_dy[db + i];
  }
  let ob = rb_p.ooff + r * L;
  for (var i = 0u; i < L; i++) {
    rb_dx[ob + i] = rb_p.scale * rb_y[yb + i] * (rb_dy[db + i] - dot);
  }
}
