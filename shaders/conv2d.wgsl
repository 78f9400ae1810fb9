// conv2d family (NCHW activations, weights [O, I, KH, KW] as in PyTorch), implicit GEMM.
//
// Register-blocked kernels (bodies unrolled by src/ops/conv.ts into the {{...}} placeholders):
// - `fwd`: out[n, r, y, x] = sum_{q, ky, kx} Wt[q, ky, kx, r] · in[n, q, y·S + offY + ky·D,
//   x·S + offX + kx·D] (+ bias[r]) (+ out). Each invocation owns RO output channels x PY rows x
//   PX columns and loads every input value of its window once per input channel. Weights come
//   pre-permuted (`permute`) so that RO consecutive output channels are one vec4 load per tap.
//   The forward convolution is this kernel directly; the input gradient is the same kernel over
//   dY with flipped, transposed weights, once per stride phase (output written to a strided
//   sub-grid through ysY / ysX).
// - `wgrad`: partial weight gradients: part[split, o, c, ky, kx] = sum over the split's output
//   rows of dY[n, o, y, x] · in[n, c, y·S + offY + ky·D, x·S + offX + kx·D]; `reduce` sums
//   the splits.
// Plain kernels: `permute` (weight layouts), `reduce`, `bias_grad`, `bias_add`, and the naive
// one-output-per-invocation references `naive_fwd`, `naive_dgrad`, `naive_wgrad`.

// The uniform block, declared in src/ops/conv.ts (field meanings there).
{{struct:ConvParams}}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> Wt: array<{{W_T}}>;
@group(0) @binding(2) var<storage, read> Aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<uniform> p: ConvParams;

// ---------------------------------------------------------------------------------------------
// fwd: x: column block + nbx · row block, y: output-channel block, z: image.

@compute @workgroup_size({{WG_X}}, {{WG_Y}})
fn fwd(@builtin(global_invocation_id) gid: vec3u) {
  let bx = gid.x % p.nbx;
  let by = gid.x / p.nbx;
  let r0 = gid.y * {{RO}}u;
  let n = gid.z;
  if (by >= p.nby || r0 >= p.R) {
    return;
  }
  let ox0 = bx * {{PX}}u;
  let oy0 = by * {{PY}}u;
  let xB = p.xOff + n * p.xsN;
  let plane = p.H * p.W;
{{SETUP}}
  for (var q = 0u; q < p.C; q++) {
    let xq = xB + q * plane;
    let wq = (p.wOff + q * {{TAPS}}u * p.Rp + r0) >> 2u;
{{BODY}}
  }
  let yB = p.yOff + n * p.ysN;
{{STORE}}
}

fn put(i: u32, v: f32) {
  if ((p.flags & 1u) != 0u) {
    Y[i] = Y[i] + v;
  } else {
    Y[i] = v;
  }
}

fn biasOf(r: u32) -> f32 {
  if ((p.flags & 2u) != 0u) {
    return Aux[p.aOff + r];
  }
  return 0.0;
}

// ---------------------------------------------------------------------------------------------
// wgrad: x: o-block + nbx · c-block, y: split (a range of output rows (n, y)), z: tap-row block.
// X: input, Aux: dY (offset aOff, strides asN / asC, rows of OW), Y: partial sums
// [splits, R (=O), C, KH, KW] at yOff.

@compute @workgroup_size({{WG_X}}, 1)
fn wgrad(@builtin(global_invocation_id) gid: vec3u) {
  let ob = gid.x % p.nbx;
  let cb = gid.x / p.nbx;
  let split = gid.y;
  if (cb >= p.nby || split >= p.splits) {
    return;
  }
  let o0 = ob * {{RO}}u;
  let c0 = cb * {{RC}}u;
  let ky0 = gid.z * {{KHT}}u;
  let rowEnd = min((split + 1u) * p.rowsPerSplit, p.N * p.OH);
  let plane = p.H * p.W;
{{WSETUP}}
  for (var row = split * p.rowsPerSplit; row < rowEnd; row++) {
    let n = row / p.OH;
    let oy = row % p.OH;
    let dB = p.aOff + n * p.asN + oy * p.OW;
    let xB = p.xOff + n * p.xsN;
{{WROWS}}
    for (var ox0 = 0u; ox0 < p.OW; ox0 += {{PX}}u) {
{{WBODY}}
    }
  }
{{WSTORE}}
}

// ---------------------------------------------------------------------------------------------
// permute: Y[yOff + ((q·NTy + ty)·NTx + tx)·Rp + r] = Wsrc(o, c, kyA + ty·kyB, kxA + tx·kxB)
// with (o, c) = (r, q) when oMajor == 0 (forward layout) or (q, r) (input-gradient layout),
// zero for r >= R. Source weights [O, I, KH, KW] at X[xOff + ...]; offsets may wrap (u32) when
// the bindings are windows of the tensors. One chunk: q in [nbx, nbx + count / (N·taps)),
// r in [nby, nby + N). C: the source's input-channel count I; OH / OW: NTy / NTx.

@compute @workgroup_size(256)
fn permute(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  let taps = p.OH * p.OW;
  let r = p.nby + i % p.N;
  let t = (i / p.N) % taps;
  let q = p.nbx + i / (p.N * taps);
  let tx = t % p.OW;
  let ty = t / p.OW;
  var v = 0.0;
  if (r < p.R) {
    var o = r;
    var c = q;
    if (p.oMajor != 0u) {
      o = q;
      c = r;
    }
    let ky = u32(p.kyA + i32(ty) * p.kyB);
    let kx = u32(p.kxA + i32(tx) * p.kxB);
    v = X[p.xOff + ((o * p.C + c) * p.KH + ky) * p.KW + kx];
  }
  Y[p.yOff + (q * taps + t) * p.Rp + r] = v;
}

// reduce: Y[yOff + (i / W)·xsN + i % W] (+)= sum_s X[xOff + s·count + i] for i < count,
// s < splits (rows of W values land xsN apart: a sub-block of the weight gradient).
@compute @workgroup_size(256)
fn reduce(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  var s = 0.0;
  for (var k = 0u; k < p.splits; k++) {
    s += X[p.xOff + k * p.count + i];
  }
  put(p.yOff + (i / p.W) * p.xsN + i % p.W, s);
}

// bias_grad: Y[yOff + r] (+)= sum_{n, pixel} X[xOff + n·xsN + r·plane + pixel], plane = H·W.
@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x;
  if (r >= p.R) {
    return;
  }
  let plane = p.H * p.W;
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let b = p.xOff + n * p.xsN + r * plane;
    var t = 0.0;
    for (var i = 0u; i < plane; i++) {
      t += X[b + i];
    }
    s += t;
  }
  put(p.yOff + r, s);
}

// bias_add: Y[yOff + n·ysN + r·plane + pixel] += Aux[aOff + r] for n < N, r < R, pixel <
// plane = H·W (count = N·R·plane, flat index).
@compute @workgroup_size(256)
fn bias_add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  let per = p.R * p.H * p.W;
  let r = (i % per) / (p.H * p.W);
  let j = p.yOff + (i / per) * p.ysN + i % per;
  Y[j] = Y[j] + Aux[p.aOff + r];
}

// ---------------------------------------------------------------------------------------------
// Naive references, one output per invocation, flat index over x and y. Geometry: input
// [N, C, H, W], output [N, R, OH, OW], kernel KH x KW, stride S, dilation D, padding -offY /
// -offX. Weights [R, C, KH, KW] (as f32) in Wt at wOff.

fn wAt(i: u32) -> f32 {
  {{W_LOAD1}}
}

@compute @workgroup_size(256)
fn naive_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  let x = i % p.OW;
  let y = (i / p.OW) % p.OH;
  let r = (i / (p.OW * p.OH)) % p.R;
  let n = i / (p.OW * p.OH * p.R);
  var s = biasOf(r);
  for (var c = 0u; c < p.C; c++) {
    for (var ky = 0u; ky < p.KH; ky++) {
      let iy = i32(y * p.S + ky * p.D) + p.offY;
      if (iy < 0 || iy >= i32(p.H)) {
        continue;
      }
      for (var kx = 0u; kx < p.KW; kx++) {
        let ix = i32(x * p.S + kx * p.D) + p.offX;
        if (ix < 0 || ix >= i32(p.W)) {
          continue;
        }
        let xv = X[p.xOff + n * p.xsN + (c * p.H + u32(iy)) * p.W + u32(ix)];
        s = fma(wAt(p.wOff + ((r * p.C + c) * p.KH + ky) * p.KW + kx), xv, s);
      }
    }
  }
  put(p.yOff + i, s);
}

// naive_dgrad: dX [N, C, H, W] from dY (Aux, [N, R, OH, OW]) and weights.
@compute @workgroup_size(256)
fn naive_dgrad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  let ix = i % p.W;
  let iy = (i / p.W) % p.H;
  let c = (i / (p.W * p.H)) % p.C;
  let n = i / (p.W * p.H * p.C);
  var s = 0.0;
  for (var r = 0u; r < p.R; r++) {
    for (var ky = 0u; ky < p.KH; ky++) {
      let ty = i32(iy) - p.offY - i32(ky * p.D);
      if (ty < 0 || ty % i32(p.S) != 0 || ty / i32(p.S) >= i32(p.OH)) {
        continue;
      }
      for (var kx = 0u; kx < p.KW; kx++) {
        let tx = i32(ix) - p.offX - i32(kx * p.D);
        if (tx < 0 || tx % i32(p.S) != 0 || tx / i32(p.S) >= i32(p.OW)) {
          continue;
        }
        let d = Aux[p.aOff + n * p.asN + r * p.asC + u32(ty / i32(p.S)) * p.OW +
          u32(tx / i32(p.S))];
        s = fma(wAt(p.wOff + ((r * p.C + c) * p.KH + ky) * p.KW + kx), d, s);
      }
    }
  }
  put(p.yOff + i, s);
}

// naive_wgrad: dW [R, C, KH, KW] from the input and dY (Aux).
@compute @workgroup_size(256)
fn naive_wgrad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.count) {
    return;
  }
  let kx = i % p.KW;
  let ky = (i / p.KW) % p.KH;
  let c = (i / (p.KW * p.KH)) % p.C;
  let r = i / (p.KW * p.KH * p.C);
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    for (var y = 0u; y < p.OH; y++) {
      let iy = i32(y * p.S + ky * p.D) + p.offY;
      if (iy < 0 || iy >= i32(p.H)) {
        continue;
      }
      for (var x = 0u; x < p.OW; x++) {
        let ix = i32(x * p.S + kx * p.D) + p.offX;
        if (ix < 0 || ix >= i32(p.W)) {
          continue;
        }
        let xv = X[p.xOff + n * p.xsN + (c * p.H + u32(iy)) * p.W + u32(ix)];
        let d = Aux[p.aOff + n * p.asN + r * p.asC + y * p.OW + x];
        s = fma(d, xv, s);
      }
    }
  }
  put(p.yOff + i, s);
}
