// Matmul family: C[b] = alpha * A[b] · B[b] + beta * C[b] for a batch of matrices, where A is
// M x K and B is K x N, each stored with arbitrary (element) strides so that transposed operands
// need no copy. Three kernels share the bindings and the parameter block:
//
// - `naive`: one invocation per output element (the benchmark reference).
// - `tiled`: a workgroup computes a 128 x 128 tile from TK-deep slices staged in workgroup
//   memory; each invocation owns an 8 x 8 register block (meant for real GPUs).
// - `transpose`: copies B into a dense [batch · sumN, K, nPad] buffer (C), so that `rb` can read
//   unaligned B operands with vec4 loads along n; one dispatch for every product of a call.
// - `rb`: register blocking without workgroup memory. Each invocation computes an RM x RN block
//   with every operand value loaded once per block row/column and, where the layout allows,
//   four at a time (vec4 loads). The block body is unrolled by src/ops/matmul.ts, which fills the
//   {{...}} placeholders below (Mesa's compiler does not fully unroll loops over register
//   arrays, and an array-based body runs 3-5x slower on llvmpipe). The fast path on llvmpipe.
//   Its summing form (RB_SUM_OPEN = a loop over si < sumN) adds sumN products into one C, one
//   after another, each from fresh accumulators and stored as a separate dispatch would store
//   it: the same bits as sumN accumulating dispatches (src/ops/matmul.ts's GemmSpec.sum).
//
// Operands are bound as array<{{A_T}}> / array<{{B_T}}> (vec4f where the generated body uses
// vec4 loads, f32 otherwise); `lda(i)` / `ldb(i)` read one element by flat index either way.

// The uniform block, declared in src/ops/matmul.ts (field meanings there).
{{struct:GemmParams}}

@group(0) @binding(0) var<storage, read> A: array<{{A_T}}>;
@group(0) @binding(1) var<storage, read> B: array<{{B_T}}>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> p: GemmParams;

fn lda(i: u32) -> f32 {
  {{A_LOAD1}}
}

fn ldb(i: u32) -> f32 {
  {{B_LOAD1}}
}

fn store(ci: u32, v: f32) {
  if (p.beta != 0u) {
    C[ci] = p.alpha * v + C[ci];
  } else {
    C[ci] = p.alpha * v;
  }
}

// rb's store: product si > 0 of a sum adds to what product si - 1 stored (the same expression
// as store's, so a summing dispatch gives the bits of sumN accumulating ones).
fn store_sum(ci: u32, v: f32, si: u32) {
  if (p.beta != 0u || si > 0u) {
    C[ci] = p.alpha * v + C[ci];
  } else {
    C[ci] = p.alpha * v;
  }
}

// ---------------------------------------------------------------------------------------------
// naive: one output per invocation. x: n, y: m, z: batch.

@compute @workgroup_size(8, 8)
fn naive(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let m = gid.y;
  let b = gid.z;
  if (m >= p.M || n >= p.N) {
    return;
  }
  let a0 = p.aOff + b * p.aBatch + m * p.aSM;
  let b0 = p.bOff + b * p.bBatch + n * p.bSN;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    acc = fma(lda(a0 + k * p.aSK), ldb(b0 + k * p.bSK), acc);
  }
  store(p.cOff + b * p.cBatch + m * p.cSM + n, acc);
}

// ---------------------------------------------------------------------------------------------
// tiled: a 16 x 16 workgroup computes a 128 x 128 tile of C from TK-deep slices of A and B
// staged in workgroup memory; each invocation owns an 8 x 8 block whose rows and columns are
// strided by 16 (conflict-free reads). Staging reads consecutive addresses with consecutive
// invocations (along k for k-contiguous operands, along m / n otherwise); the A tile rows are
// padded by one so that k-fast stores do not collide in one bank.

const TM = 128u;
const TN = 128u;
const TK = 8u;
const TMP = 129u; // padded row of the A tile
var<workgroup> As: array<f32, 1032>; // TK * TMP, k-major
var<workgroup> Bs: array<f32, 1032>; // TK * (TN + 1), k-major

@compute @workgroup_size(16, 16)
fn tiled(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let b = wid.z;
  let mBase = wid.y * TM;
  let nBase = wid.x * TN;
  let aB = p.aOff + b * p.aBatch;
  let bB = p.bOff + b * p.bBatch;
  var acc: array<array<f32, 8>, 8>;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    // 1024 values per operand tile, 256 invocations: 4 each; out-of-range values are zero.
    for (var r = 0u; r < 4u; r++) {
      let e = li + r * 256u;
      var kk = e / TM;
      var mm = e % TM;
      if (p.aSK == 1u) {
        kk = e % TK;
        mm = e / TK;
      }
      let m = mBase + mm;
      var av = 0.0;
      if (m < p.M && k0 + kk < p.K) {
        av = lda(aB + m * p.aSM + (k0 + kk) * p.aSK);
      }
      As[kk * TMP + mm] = av;
      var kb = e / TN;
      var nn = e % TN;
      if (p.bSK == 1u) {
        kb = e % TK;
        nn = e / TK;
      }
      let n = nBase + nn;
      var bv = 0.0;
      if (n < p.N && k0 + kb < p.K) {
        bv = ldb(bB + (k0 + kb) * p.bSK + n * p.bSN);
      }
      Bs[kb * TMP + nn] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var av: array<f32, 8>;
      var bv: array<f32, 8>;
      for (var i = 0u; i < 8u; i++) {
        av[i] = As[kk * TMP + lid.y + 16u * i];
        bv[i] = Bs[kk * TMP + lid.x + 16u * i];
      }
      for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 8u; j++) {
          acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
      }
    }
    workgroupBarrier();
  }
  let cB = p.cOff + b * p.cBatch;
  for (var i = 0u; i < 8u; i++) {
    let m = mBase + lid.y + 16u * i;
    for (var j = 0u; j < 8u; j++) {
      let n = nBase + lid.x + 16u * j;
      if (m < p.M && n < p.N) {
        store(cB + m * p.cSM + n, acc[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// transpose: C[(t·K + k)·nPad + n] = B(k, n) of product t = b·sumN + si (batch b, summand
// si); one element per invocation (flat index over x and y of 256-wide workgroups).

@compute @workgroup_size(256)
fn transpose(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.batch * p.sumN * p.K * p.N) {
    return;
  }
  let n = i % p.N;
  let k = (i / p.N) % p.K;
  let t = i / (p.N * p.K);
  let src = p.bOff + (t / p.sumN) * p.bBatch + (t % p.sumN) * p.bSum + k * p.bSK + n * p.bSN;
  C[p.cOff + (t * p.K + k) * p.nPad + n] = ldb(src);
}

// ---------------------------------------------------------------------------------------------
// rb: register-blocked, RM x RN outputs per invocation; x: column block, y: row block,
// z: batch; k in steps of 4, then one at a time. Rows/columns past the edge are clamped for
// loading and skipped when storing. RB_SUM_OPEN is `let si = 0u; {` (one product) or
// `for (var si = 0u; si < p.sumN; si++) {` (sumN products added into C in order; the caller
// keeps sumN · (K / 4 + K % 4 + 1) under llvmpipe's loop budget).

@compute @workgroup_size({{WG_X}}, {{WG_Y}})
fn rb(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.z;
  let n0 = gid.x * {{RN}}u;
  let m0 = gid.y * {{RM}}u;
  if (m0 >= p.M || n0 >= p.N) {
    return;
  }
  {{RB_SUM_OPEN}}
  let aB = p.aOff + b * p.aBatch + si * p.aSum;
  let bB = p.bOff + b * p.bBatch + si * p.bSum;
{{RB_SETUP}}
  let K4 = p.K / 4u;
  for (var q = 0u; q < K4; q++) {
    let k = q * 4u;
{{RB_BODY4}}
  }
  for (var k = K4 * 4u; k < p.K; k++) {
{{RB_BODY1}}
  }
  let cB = p.cOff + b * p.cBatch;
{{RB_STORE}}
  }
}
