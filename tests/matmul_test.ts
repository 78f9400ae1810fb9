import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  gemm,
  matmul,
  MATMUL_VARIANTS,
  matmulRef,
  matmulVariant,
  pickRbBlock,
  setMatmulVariant,
  tuneMatmul,
} from "../src/ops/matmul.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  finiteDiff,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

interface Case {
  M: number;
  N: number;
  K: number;
  /** Batch of A and of B (0: a 2-D operand). */
  ba: number;
  bb: number;
  transA?: boolean;
  transB?: boolean;
}

// Odd sizes (K % 4 remainders, M / N not multiples of any block), vec4-aligned sizes (k4 / m4 /
// n4 load modes), transposed B large enough for the transpose-copy path, batch and broadcast.
const CASES: Case[] = [
  { M: 13, N: 17, K: 7, ba: 0, bb: 0 },
  { M: 1, N: 1, K: 1, ba: 0, bb: 0 },
  { M: 32, N: 20, K: 12, ba: 3, bb: 3, transA: true },
  { M: 9, N: 8, K: 16, ba: 2, bb: 2, transB: true },
  { M: 16, N: 16, K: 9, ba: 0, bb: 0, transA: true, transB: true },
  { M: 37, N: 24, K: 40, ba: 0, bb: 0, transB: true },
  { M: 20, N: 33, K: 29, ba: 3, bb: 0 },
  { M: 24, N: 28, K: 36, ba: 0, bb: 2, transA: true },
  { M: 70, N: 65, K: 67, ba: 0, bb: 0 },
];

function shapes(c: Case): { a: number[]; b: number[] } {
  const a = c.transA ? [c.K, c.M] : [c.M, c.K];
  const b = c.transB ? [c.N, c.K] : [c.K, c.N];
  return { a: c.ba ? [c.ba, ...a] : a, b: c.bb ? [c.bb, ...b] : b };
}

const size = (s: number[]) => s.reduce((x, y) => x * y, 1);

async function checkCase(gpu: GpuContext, c: Case, variant: (typeof MATMUL_VARIANTS)[number]) {
  const s = shapes(c);
  const a = randArray(size(s.a), 11 + c.M);
  const b = randArray(size(s.b), 23 + c.N);
  const ta = Tensor.fromArray(gpu, a, s.a);
  const tb = Tensor.fromArray(gpu, b, s.b);
  const want = matmulRef(a, s.a, b, s.b, c);
  const y = matmul(gpu, ta, tb, { transA: c.transA, transB: c.transB, variant });
  const batch = Math.max(c.ba, c.bb);
  assertEquals(y.shape, batch ? [batch, c.M, c.N] : [c.M, c.N]);
  // f32 products of K values in [-1, 1): error well below 1e-5 · K.
  assertClose(
    await y.read(),
    want,
    { rtol: 1e-4, atol: 2e-6 * c.K },
    `${variant} ${JSON.stringify(c)}`,
  );
  // Accumulate with alpha into the same output: y + 0.5 · AB.
  matmul(gpu, ta, tb, { ...c, variant, out: y, accumulate: true, alpha: 0.5 });
  assertClose(
    await y.read(),
    want.map((v) => 1.5 * v),
    { rtol: 1e-4, atol: 3e-6 * c.K },
    `${variant} accumulate ${JSON.stringify(c)}`,
  );
  for (const t of [ta, tb, y]) t.dispose();
}

Deno.test("matmul variants match the f64 reference (odd sizes, transposes, batch)", async (t) => {
  const gpu = await testGpu();
  for (const variant of MATMUL_VARIANTS) {
    await t.step(variant, async () => {
      for (const c of CASES) await checkCase(gpu, c, variant);
    });
  }
});

Deno.test("matmul splits past an artificial binding limit (batch, rows, columns, K)", async () => {
  // 2 KiB bindings = 512 floats: every operand below needs several windows, K included.
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const cases: Case[] = [
      { M: 40, N: 36, K: 30, ba: 3, bb: 3 },
      { M: 33, N: 45, K: 70, ba: 0, bb: 0, transA: true },
      { M: 18, N: 64, K: 50, ba: 2, bb: 0, transB: true },
    ];
    for (const variant of MATMUL_VARIANTS) {
      const before = gpu.dispatchCount;
      for (const c of cases) await checkCase(gpu, c, variant);
      if (gpu.dispatchCount - before < 2 * cases.length * 4) {
        throw new Error(`${variant}: expected the work to be split into many dispatches`);
      }
    }
    // Operand rows longer than a binding (1000 floats > 512): the inner dimension is split
    // and the partial sums accumulated. Random values against the f64 reference, every
    // variant, plain and accumulating (a split that drops, repeats or overwrites a K chunk
    // is off by O(1) here).
    for (const variant of MATMUL_VARIANTS) {
      const before = gpu.dispatchCount;
      for (
        const c of [
          { M: 1, N: 1, K: 1000, ba: 0, bb: 0 },
          { M: 3, N: 2, K: 1000, ba: 0, bb: 0, transB: true },
          { M: 2, N: 3, K: 777, ba: 2, bb: 0, transA: true },
        ]
      ) await checkCase(gpu, c, variant);
      if (gpu.dispatchCount - before < 3 * 2 * 2) {
        throw new Error(`${variant}: expected the long dot products to be split along K`);
      }
    }
  } finally {
    gpu.destroy();
  }
});

Deno.test("matmul gradients: transposed variants give dA = G·Bᵀ and dB = Aᵀ·G", async () => {
  const gpu = await testGpu();
  const [M, K, N] = [5, 7, 6];
  const a = randArray(M * K, 1);
  const b = randArray(K * N, 2);
  const g = randArray(M * N, 3);
  // L(A, B) = sum(G ⊙ A·B) in f64; central differences against the analytic formulas.
  const loss = (av: ArrayLike<number>, bv: ArrayLike<number>) => {
    const y = matmulRef(av, [M, K], bv, [K, N]);
    return y.reduce((s, v, i) => s + v * g[i], 0);
  };
  const a64 = Float64Array.from(a);
  const b64 = Float64Array.from(b);
  const fdA = finiteDiff((x) => loss(x, b64), a64);
  const fdB = finiteDiff((x) => loss(a64, x), b64);
  const refA = matmulRef(g, [M, N], b, [K, N], { transB: true });
  const refB = matmulRef(a, [M, K], g, [M, N], { transA: true });
  // The CPU analytic gradient agrees with finite differences to f64 rounding.
  if (maxRelError(fdA, refA) > 1e-7 || maxRelError(fdB, refB) > 1e-7) {
    throw new Error("analytic matmul gradient disagrees with finite differences");
  }
  const tg = Tensor.fromArray(gpu, g, [M, N]);
  const ta = Tensor.fromArray(gpu, a, [M, K]);
  const tb = Tensor.fromArray(gpu, b, [K, N]);
  for (const variant of MATMUL_VARIANTS) {
    const da = await matmul(gpu, tg, tb, { transB: true, variant }).read();
    const db = await matmul(gpu, ta, tg, { transA: true, variant }).read();
    // GPU vs CPU analytic: relative error below 1e-5.
    if (maxRelError(da, refA) > 1e-5 || maxRelError(db, refB) > 1e-5) {
      throw new Error(`${variant}: GPU gradient differs from the CPU analytic gradient`);
    }
  }
});

Deno.test("matmul rejects bad shapes and aliasing with clear errors", async () => {
  const gpu = await testGpu();
  const a = Tensor.zeros(gpu, [3, 4]);
  const b = Tensor.zeros(gpu, [5, 2]);
  assertThrows(() => matmul(gpu, a, b), RangeError, "inner dimensions differ");
  const c = Tensor.zeros(gpu, [2, 4, 2]);
  const d = Tensor.zeros(gpu, [3, 2, 4]);
  assertThrows(() => matmul(gpu, c, d), RangeError, "batch sizes differ");
  assertThrows(() => matmul(gpu, Tensor.zeros(gpu, [4]), a), RangeError, "2-D or 3-D");
  const e = Tensor.zeros(gpu, [4, 3]);
  assertThrows(() => matmul(gpu, a, e, { out: Tensor.zeros(gpu, [3, 4]) }), RangeError, "out");
  assertThrows(
    () =>
      gemm(gpu, {
        M: 3,
        N: 3,
        K: 4,
        batch: 1,
        a: { buffer: a.buffer, off: 0, sB: 0, sM: 4, sK: 1 },
        b: { buffer: e.buffer, off: 0, sB: 0, sK: 3, sN: 1 },
        c: { buffer: a.buffer, off: 0, sB: 0, sM: 3 },
      }),
    RangeError,
    "must not share a buffer",
  );
  assertThrows(() => setMatmulVariant(gpu, "fast" as "rb"), RangeError, "unknown matmul variant");
});

Deno.test("matmul autotune measures, caches per adapter and yields to an override", async () => {
  const gpu = await testGpu();
  const t1 = await tuneMatmul(gpu, { size: 128 });
  assertEquals(t1.measured, true);
  if (!(t1.variant === "rb" || t1.variant === "tiled")) throw new Error(`bad ${t1.variant}`);
  for (const v of ["rb", "tiled"] as const) {
    if (!((t1.gflops[v] ?? 0) > 0)) throw new Error(`no measurement for ${v}`);
  }
  const t2 = await tuneMatmul(gpu);
  assertEquals(t2, t1, "second call returns the cached result");
  assertEquals(matmulVariant(gpu), t1.variant);
  setMatmulVariant(gpu, "naive");
  assertEquals(matmulVariant(gpu), "naive");
  setMatmulVariant(gpu, null);
  assertEquals(matmulVariant(gpu), t1.variant);
});

Deno.test("rb block choice avoids waste on small and odd problems", () => {
  assertEquals(pickRbBlock(1024, 1024), { rm: 16, rn: 16 });
  const b = pickRbBlock(20, 4);
  if (b.rn !== 4) throw new Error(`narrow N should get a narrow block, got ${JSON.stringify(b)}`);
});

interface SumCase {
  M: number;
  N: number;
  K: number;
  /** Products summed into each C. */
  count: number;
  batch: number;
  /** B stored [N, K] (k-contiguous) per product. */
  transB: boolean;
  /** Extra elements between consecutive products of A and B (breaks vec4 alignment). */
  pad: number;
}

// k4 B read in place, an unaligned transposed B (the copy path, one copy for all products),
// scalar loads (odd sizes and steps), n4, batch with sum.
const SUM_CASES: SumCase[] = [
  { M: 20, N: 16, K: 36, count: 4, batch: 2, transB: true, pad: 0 },
  { M: 20, N: 12, K: 30, count: 5, batch: 1, transB: true, pad: 0 },
  { M: 9, N: 8, K: 13, count: 3, batch: 2, transB: false, pad: 1 },
  { M: 33, N: 24, K: 40, count: 6, batch: 1, transB: false, pad: 0 },
];

/**
 * gemm with `sum` against `count` accumulating GEMMs recorded in turn: bit for bit, every
 * variant, overwriting and accumulating with alpha. Returns the dispatches of the summing call.
 */
async function checkSum(
  gpu: GpuContext,
  c: SumCase,
  variant: (typeof MATMUL_VARIANTS)[number],
  accumulate: boolean,
): Promise<number> {
  const stepA = c.batch * c.M * c.K + c.pad, stepB = c.batch * c.K * c.N + c.pad;
  const a = Tensor.fromArray(gpu, randArray(c.count * stepA, 3 + c.M), [c.count * stepA]);
  const b = Tensor.fromArray(gpu, randArray(c.count * stepB, 5 + c.N), [c.count * stepB]);
  const c0 = randArray(c.batch * c.M * c.N, 7);
  const want = Tensor.fromArray(gpu, c0, [c0.length]);
  const got = Tensor.fromArray(gpu, c0, [c0.length]);
  const spec = (si: number, out: Tensor) => ({
    M: c.M,
    N: c.N,
    K: c.K,
    batch: c.batch,
    a: { buffer: a.buffer, off: si * stepA, sB: c.M * c.K, sM: c.K, sK: 1 },
    b: c.transB
      ? { buffer: b.buffer, off: si * stepB, sB: c.N * c.K, sK: 1, sN: c.K }
      : { buffer: b.buffer, off: si * stepB, sB: c.K * c.N, sK: c.N, sN: 1 },
    c: { buffer: out.buffer, off: 0, sB: c.M * c.N, sM: c.N },
    alpha: accumulate ? 0.5 : 1,
    variant,
  });
  for (let si = 0; si < c.count; si++) {
    gemm(gpu, { ...spec(si, want), accumulate: accumulate || si > 0 });
  }
  const before = gpu.dispatchCount;
  gemm(gpu, { ...spec(0, got), accumulate, sum: { count: c.count, a: stepA, b: stepB } });
  const dispatches = gpu.dispatchCount - before;
  const [w, g] = [await want.read(), await got.read()];
  assertEquals(
    Array.from(new Uint32Array(g.buffer)),
    Array.from(new Uint32Array(w.buffer)),
    `${variant} ${JSON.stringify(c)} accumulate ${accumulate}`,
  );
  for (const t of [a, b, want, got]) t.dispose();
  return dispatches;
}

Deno.test("gemm sum: the products added in one dispatch give the bits of one GEMM per product", async (t) => {
  const gpu = await testGpu();
  for (const variant of MATMUL_VARIANTS) {
    await t.step(variant, async () => {
      for (const c of SUM_CASES) {
        for (const acc of [false, true]) {
          const d = await checkSum(gpu, c, variant, acc);
          // rb: one dispatch (plus one copy of B for every product when it is copied).
          const want = variant !== "rb" ? c.count : c.transB && c.K % 4 !== 0 ? 2 : 1;
          assertEquals(d, want, `${variant} dispatches ${JSON.stringify(c)}`);
        }
      }
    });
  }
  // Past an artificial binding limit (2 KiB = 512 floats) the products and K are split, and
  // the pieces still follow one product at a time.
  const small = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    for (
      const c of [...SUM_CASES, { M: 3, N: 2, K: 700, count: 3, batch: 1, transB: true, pad: 0 }]
    ) {
      const d = await checkSum(small, c, "rb", true);
      if (d < 2) throw new Error(`${JSON.stringify(c)}: expected a split, got ${d} dispatch`);
    }
  } finally {
    small.destroy();
  }
});
