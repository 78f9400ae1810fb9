/**
 * Matrix multiplication on the GPU: `C = alpha · op(A) · op(B) (+ C)`, batched, with transposed
 * operands read in place through strides. Three kernels (shaders/matmul.wgsl):
 *
 * - `naive`: one invocation per output (the benchmark reference);
 * - `rb`: register blocking without workgroup memory, vec4 loads where the layout allows (the
 *   fast path on CPU adapters such as llvmpipe, where barriers and workgroup memory are slow);
 * - `tiled`: workgroup-memory tiling (the fast path on real GPUs).
 *
 * The variant is chosen per adapter: a guess from the adapter description until
 * {@link tuneMatmul} has timed the variants on a mid-size problem (cached per adapter
 * description for the process), overridable with {@link setMatmulVariant} or per call.
 * Work whose operands exceed `gpu.maxBindingBytes` is split over batch, rows, columns and the
 * inner dimension (partial products accumulated) inside {@link gemm}.
 * @module
 */
import { type BufferRange, type GpuContext, grid1d } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { type BindingWindow, bindingWindow, windowCapacity } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpUnit,
  type RecordedOp,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** The matmul kernels. */
export type MatmulVariant = "naive" | "rb" | "tiled";

/** All variants, reference first. */
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ["naive", "rb", "tiled"];

/** One strided operand of {@link gemm}: element (i, j) of batch b is at `off + b·sB + i·s0 + j·s1`. */
export interface GemmOperand {
  /** The buffer holding the operand. */
  buffer: GPUBuffer;
  /** Offset in elements. */
  off: number;
  /** Batch stride in elements (0 broadcasts one matrix over the batch). */
  sB: number;
}

/**
 * Products summed into each C of a {@link GemmSpec}: product `si` reads A and B `si · a` and
 * `si · b` elements past product 0.
 */
export interface GemmSum {
  /** Number of products (at least 1). */
  count: number;
  /** Element step of A from one product to the next. */
  a: number;
  /** Element step of B from one product to the next. */
  b: number;
}

/** A strided batched GEMM: `C[b] = alpha · A[b] · B[b] (+ C[b])`, A: M x K, B: K x N. */
export interface GemmSpec {
  /** Op name for error messages. */
  name?: string;
  /** Rows of A and C. */
  M: number;
  /** Columns of B and C. */
  N: number;
  /** Columns of A, rows of B. */
  K: number;
  /** Number of products. */
  batch: number;
  /** A (m, k) at `off + b·sB + m·sM + k·sK`. */
  a: GemmOperand & { sM: number; sK: number };
  /** B (k, n) at `off + b·sB + k·sK + n·sN`. */
  b: GemmOperand & { sK: number; sN: number };
  /** C (m, n) at `off + b·sB + m·sM + n` (rows contiguous). */
  c: GemmOperand & { sM: number };
  /** Add into C instead of overwriting it. */
  accumulate?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Kernel; default: the adapter's choice (see {@link matmulVariant}). */
  variant?: MatmulVariant;
  /**
   * `C[b] (+)= Σ_si alpha · A_si[b] · B_si[b]`: the products added into C one after another in
   * `si` order, each a full dot product over K first, so the bits are those of `count` GEMMs
   * recorded in turn with `accumulate` from the second on (e.g. a weight gradient summed over
   * images), in one dispatch on `rb` while the products' operands are small (RB_SUM_BYTES; a
   * few past the binding limit or llvmpipe's loop budget; one per product on the other kernels
   * and for large products).
   */
  sum?: GemmSum;
}

/** A register block of the `rb` kernel: rm rows x rn columns per invocation. */
export interface RbBlock {
  /** Rows per invocation (4, 8 or 16). */
  rm: number;
  /** Columns per invocation (4, 8 or 16). */
  rn: number;
}

/** Workgroup shape of the `rb` kernel (x: column blocks, y: row blocks). */
const RB_WG: [number, number] = [8, 2];

// ---------------------------------------------------------------------------------------------
// Variant choice per adapter.

/** Result of {@link tuneMatmul}. */
export interface MatmulTuning {
  /** The chosen variant. */
  variant: MatmulVariant;
  /** Measured GFLOP/s per variant on the tuning problem (empty when guessed). */
  gflops: Partial<Record<MatmulVariant, number>>;
  /** The tuning problem size (M = N = K). */
  size: number;
  /** Whether the choice was measured (false: guessed from the adapter description). */
  measured: boolean;
}

const tuningCache = new Map<string, MatmulTuning>();
const overrides = new WeakMap<GpuContext, MatmulVariant>();

/** Whether the adapter is a CPU implementation (llvmpipe, lavapipe, SwiftShader, WARP...). */
export function isCpuAdapter(gpu: GpuContext): boolean {
  const info = gpu.adapter.info;
  return info.isFallbackAdapter ||
    /llvmpipe|lavapipe|swiftshader|software|warp|cpu/i.test(
      `${info.description} ${info.device} ${info.architecture} ${info.vendor}`,
    );
}

/**
 * The variant `gemm` uses on this context: the override if set, else the tuned choice for this
 * adapter description, else a guess (`rb` on CPU adapters, `tiled` otherwise).
 */
export function matmulVariant(gpu: GpuContext): MatmulVariant {
  return overrides.get(gpu) ?? tuningCache.get(gpu.describe())?.variant ??
    (isCpuAdapter(gpu) ? "rb" : "tiled");
}

/** Forces a variant for this context (`null` returns to the tuned/guessed choice). */
export function setMatmulVariant(gpu: GpuContext, variant: MatmulVariant | null): void {
  if (variant === null) overrides.delete(gpu);
  else if (!MATMUL_VARIANTS.includes(variant)) {
    throw new RangeError(`unknown matmul variant "${variant}" (${MATMUL_VARIANTS.join(", ")})`);
  } else overrides.set(gpu, variant);
}

/**
 * Times `rb` and `tiled` on a `size`³ problem (default 256) and remembers the faster one for
 * this adapter description (for the process). Returns the cached result unless `force`.
 * Costs a few hundred milliseconds on llvmpipe (two pipeline compilations, a few submits).
 */
export async function tuneMatmul(
  gpu: GpuContext,
  opts: { size?: number; force?: boolean } = {},
): Promise<MatmulTuning> {
  const key = gpu.describe();
  const cached = tuningCache.get(key);
  if (cached && !opts.force) return cached;
  const size = opts.size ?? 256;
  const a = Tensor.zeros(gpu, [size, size]);
  const b = Tensor.zeros(gpu, [size, size]);
  const c = Tensor.empty(gpu, [size, size]);
  const gflops: Partial<Record<MatmulVariant, number>> = {};
  try {
    for (const variant of ["rb", "tiled"] as const) {
      const run = () => matmul(gpu, a, b, { out: c, variant });
      // About 100 ms of work at 20 GFLOP/s.
      const reps = Math.max(2, Math.min(64, Math.round(2e9 / (2 * size ** 3))));
      const ms = await timeDispatches(gpu, run, reps);
      gflops[variant] = (2 * size ** 3) / ms / 1e6;
    }
  } finally {
    a.dispose();
    b.dispose();
    c.dispose();
  }
  const variant = (gflops.rb ?? 0) >= (gflops.tiled ?? 0) ? "rb" : "tiled";
  const result: MatmulTuning = { variant, gflops, size, measured: true };
  tuningCache.set(key, result);
  return result;
}

/**
 * Milliseconds per call of `record` (which records GPU work): one warm-up submit (pipeline
 * compilation), then `reps` calls in one submit and one wait, minus the fixed cost of a
 * submit + wait (the median of three empty ones). Choose `reps` so that the work takes well
 * over the ~11 ms of a wait on llvmpipe.
 */
export async function timeDispatches(
  gpu: GpuContext,
  record: () => void,
  reps: number,
): Promise<number> {
  return (await timeDispatchesDetailed(gpu, record, reps)).ms;
}

/**
 * {@link timeDispatches} plus the process CPU time per call (`cpuMs`, all threads; NaN without
 * `cpuClock`, the process CPU time in ms, e.g. src/bench/kernels.ts's from node:process). On a
 * CPU adapter the kernels run on this process's threads, so `cpuMs / cores` is a time that
 * other processes on a shared machine disturb less than the wall clock.
 */
export async function timeDispatchesDetailed(
  gpu: GpuContext,
  record: () => void,
  reps: number,
  cpuClock?: () => number,
): Promise<{ ms: number; cpuMs: number }> {
  record();
  await gpu.sync();
  const empty: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await gpu.sync();
    empty.push(performance.now() - t);
  }
  empty.sort((a, b) => a - b);
  const c0 = cpuClock?.() ?? NaN;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) record();
  await gpu.sync();
  const ms = Math.max(1e-3, (performance.now() - t0 - empty[1]) / reps);
  const c = (cpuClock?.() ?? NaN) - c0;
  return { ms, cpuMs: c / reps };
}

// ---------------------------------------------------------------------------------------------
// Code generation for the rb kernel.

type AMode = "k4" | "m4" | "s";
type BMode = "k4" | "n4" | "s";
const XYZW = ["x", "y", "z", "w"];

/**
 * The `{{...}}` values that turn shaders/matmul.wgsl's rb skeleton into a kernel; `sum`: the
 * form that adds `p.sumN` products into C ({@link GemmSpec.sum}).
 */
export function rbDefines(
  blk: RbBlock,
  aMode: AMode,
  bMode: BMode,
  sum = false,
): Record<string, string | number> {
  const { rm, rn } = blk;
  const setup: string[] = [];
  const body4: string[] = [];
  const body1: string[] = [];
  const store: string[] = [];
  // Row / column bases (clamped at the edge so loads stay in range).
  if (aMode === "m4") {
    for (let g = 0; g < rm / 4; g++) {
      setup.push(`let am${g} = aB + min(m0 + ${4 * g}u, p.mPad - 4u);`);
    }
  } else {
    for (let i = 0; i < rm; i++) {
      setup.push(`let am${i} = aB + min(m0 + ${i}u, p.M - 1u) * p.aSM;`);
    }
  }
  if (bMode === "n4") {
    for (let g = 0; g < rn / 4; g++) {
      setup.push(`let bn${g} = bB + min(n0 + ${4 * g}u, p.nPad - 4u);`);
    }
  } else {
    for (let j = 0; j < rn; j++) {
      setup.push(`let bn${j} = bB + min(n0 + ${j}u, p.N - 1u) * p.bSN;`);
    }
  }
  for (let i = 0; i < rm; i++) {
    setup.push(Array.from({ length: rn }, (_, j) => `var c${i}_${j} = 0.0;`).join(" "));
  }
  // Four k at a time.
  let aVal: (i: number, kk: number) => string;
  if (aMode === "k4") {
    for (let i = 0; i < rm; i++) body4.push(`let a${i} = A[(am${i} + k) >> 2u];`);
    aVal = (i, kk) => `a${i}.${XYZW[kk]}`;
  } else if (aMode === "m4") {
    for (let kk = 0; kk < 4; kk++) {
      for (let g = 0; g < rm / 4; g++) {
        body4.push(`let a${kk}_${g} = A[(am${g} + (k + ${kk}u) * p.aSK) >> 2u];`);
      }
    }
    aVal = (i, kk) => `a${kk}_${i >> 2}.${XYZW[i & 3]}`;
  } else {
    for (let kk = 0; kk < 4; kk++) {
      for (let i = 0; i < rm; i++) {
        body4.push(`let a${kk}_${i} = A[am${i} + (k + ${kk}u) * p.aSK];`);
      }
    }
    aVal = (i, kk) => `a${kk}_${i}`;
  }
  let bVal: (j: number, kk: number) => string;
  if (bMode === "k4") {
    for (let j = 0; j < rn; j++) body4.push(`let b${j} = B[(bn${j} + k) >> 2u];`);
    bVal = (j, kk) => `b${j}.${XYZW[kk]}`;
  } else if (bMode === "n4") {
    for (let kk = 0; kk < 4; kk++) {
      for (let g = 0; g < rn / 4; g++) {
        body4.push(`let b${kk}_${g} = B[(bn${g} + (k + ${kk}u) * p.bSK) >> 2u];`);
      }
    }
    bVal = (j, kk) => `b${kk}_${j >> 2}.${XYZW[j & 3]}`;
  } else {
    for (let kk = 0; kk < 4; kk++) {
      for (let j = 0; j < rn; j++) {
        body4.push(`let b${kk}_${j} = B[bn${j} + (k + ${kk}u) * p.bSK];`);
      }
    }
    bVal = (j, kk) => `b${kk}_${j}`;
  }
  for (let kk = 0; kk < 4; kk++) {
    for (let i = 0; i < rm; i++) {
      body4.push(
        Array.from(
          { length: rn },
          (_, j) => `c${i}_${j} = fma(${aVal(i, kk)}, ${bVal(j, kk)}, c${i}_${j});`,
        ).join(" "),
      );
    }
  }
  // One k at a time (the remainder K % 4).
  for (let i = 0; i < rm; i++) {
    const base = aMode === "m4" ? `am${i >> 2} + ${i & 3}u` : `am${i}`;
    body1.push(`let a${i} = lda(${base} + k * p.aSK);`);
  }
  for (let j = 0; j < rn; j++) {
    const base = bMode === "n4" ? `bn${j >> 2} + ${j & 3}u` : `bn${j}`;
    body1.push(`let b${j} = ldb(${base} + k * p.bSK);`);
  }
  for (let i = 0; i < rm; i++) {
    body1.push(
      Array.from({ length: rn }, (_, j) => `c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`).join(" "),
    );
  }
  for (let i = 0; i < rm; i++) {
    store.push(`if (m0 + ${i}u < p.M) {`);
    store.push(`  let r = cB + (m0 + ${i}u) * p.cSM + n0;`);
    for (let j = 0; j < rn; j++) {
      store.push(`  if (n0 + ${j}u < p.N) { store_sum(r + ${j}u, c${i}_${j}, si); }`);
    }
    store.push(`}`);
  }
  const ind = (lines: string[], n: number) => lines.map((l) => " ".repeat(n) + l).join("\n");
  return {
    ...operandDefines(aMode !== "s", bMode !== "s"),
    WG_X: RB_WG[0],
    WG_Y: RB_WG[1],
    RM: rm,
    RN: rn,
    RB_SETUP: ind(setup, 2),
    RB_BODY4: ind(body4, 4),
    RB_BODY1: ind(body1, 4),
    RB_STORE: ind(store, 2),
    // One product: si is the constant 0 (the compiler folds it away).
    RB_SUM_OPEN: sum ? "for (var si = 0u; si < p.sumN; si++) {" : "let si = 0u; {",
  };
}

function operandDefines(aVec: boolean, bVec: boolean): Record<string, string> {
  return {
    A_T: aVec ? "vec4f" : "f32",
    B_T: bVec ? "vec4f" : "f32",
    A_LOAD1: aVec ? "return A[i >> 2u][i & 3u];" : "return A[i];",
    B_LOAD1: bVec ? "return B[i >> 2u][i & 3u];" : "return B[i];",
  };
}

let plainDefinesCache: Record<string, string | number> | null = null;
/** Defines for the naive, tiled and transpose kernels (scalar operands, a minimal rb body). */
function plainDefines(): Record<string, string | number> {
  return plainDefinesCache ??= rbDefines({ rm: 1, rn: 1 }, "s", "s");
}

const rbCache = new Map<string, Record<string, string | number>>();
function rbDefinesCached(blk: RbBlock, aMode: AMode, bMode: BMode, sum: boolean) {
  const key = `${blk.rm}x${blk.rn}/${aMode}/${bMode}${sum ? "/sum" : ""}`;
  let d = rbCache.get(key);
  if (!d) {
    d = rbDefines(blk, aMode, bMode, sum);
    rbCache.set(key, d);
  }
  return d;
}

/**
 * The register block for an M x N (x batch) problem: as large as possible (fewer loads per
 * multiply-add) while keeping the padding waste small and enough invocations for the cores.
 */
export function pickRbBlock(M: number, N: number, batch = 1): RbBlock {
  let best: RbBlock = { rm: 4, rn: 4 };
  let bestScore = -Infinity;
  for (const rm of [16, 8, 4]) {
    for (const rn of [16, 8, 4]) {
      const pm = Math.ceil(M / rm) * rm;
      const pn = Math.ceil(N / rn) * rn;
      const useful = (M * N) / (pm * pn);
      const blocks = (pm / rm) * (pn / rn) * batch;
      // Loads per multiply-add fall as 1/rm + 1/rn; fewer than ~64 invocations idle cores.
      const eff = 1 / (1 + 8 * (1 / rm + 1 / rn));
      const par = Math.min(1, blocks / 64);
      const score = useful * eff * par;
      if (score > bestScore + 1e-9) {
        bestScore = score;
        best = { rm, rn };
      }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Dispatch with splitting past the binding limit.

interface Chunk {
  b: number;
  /** Summed products ({@link GemmSpec.sum}). */
  r: number;
  m: number;
  n: number;
  k: number;
}

/** The spec's sum, one product when it has none. */
const sumOf = (s: GemmSpec): GemmSum => s.sum ?? { count: 1, a: 0, b: 0 };

function extent(chunk: Chunk, s: GemmSpec): { a: number; b: number; c: number } {
  const { a, b, c } = s;
  const sum = sumOf(s);
  return {
    a: 1 + (chunk.b - 1) * a.sB + (chunk.r - 1) * sum.a + (chunk.m - 1) * a.sM +
      (chunk.k - 1) * a.sK,
    b: 1 + (chunk.b - 1) * b.sB + (chunk.r - 1) * sum.b + (chunk.k - 1) * b.sK +
      (chunk.n - 1) * b.sN,
    c: 1 + (chunk.b - 1) * c.sB + (chunk.m - 1) * c.sM + (chunk.n - 1),
  };
}

/**
 * Chunk sizes such that every operand's window fits the binding limit: the GEMM's plan over the
 * shared splitter (src/gpu/split.ts), halving the batch first, then the summed products, then
 * the dimension contributing most to the largest over-limit window. Chunks along K are
 * accumulated (see {@link gemm}); K is only split once a chunk holds one product, so every
 * product's partial sums are still added in the order of one product at a time.
 */
function planChunks(gpu: GpuContext, s: GemmSpec): Chunk {
  const limit = windowCapacity(gpu);
  const ch: Chunk = { b: s.batch, r: sumOf(s).count, m: s.M, n: s.N, k: s.K };
  for (let iter = 0; iter < 200; iter++) {
    const e = extent(ch, s);
    if (e.a <= limit && e.b <= limit && e.c <= limit) return ch;
    if (ch.b > 1) {
      ch.b = Math.ceil(ch.b / 2);
      continue;
    }
    if (ch.r > 1) {
      ch.r = Math.ceil(ch.r / 2);
      continue;
    }
    // Halve the dimension that contributes most to the largest over-limit window.
    const cand: [keyof Chunk, number][] = [];
    if (e.c > limit) cand.push(["m", (ch.m - 1) * s.c.sM], ["n", ch.n - 1]);
    if (e.a > limit) cand.push(["m", (ch.m - 1) * s.a.sM], ["k", (ch.k - 1) * s.a.sK]);
    if (e.b > limit) cand.push(["k", (ch.k - 1) * s.b.sK], ["n", (ch.n - 1) * s.b.sN]);
    cand.sort((x, y) => y[1] - x[1]);
    const [dim, contrib] = cand[0];
    if (contrib <= 0) break;
    ch[dim] = Math.ceil(ch[dim] / 2);
  }
  throw new RangeError(
    `${s.name ?? "gemm"}: cannot split ${s.M}x${s.K}·${s.K}x${s.N} (batch ${s.batch}) to fit ` +
      `maxBindingBytes ${gpu.maxBindingBytes}`,
  );
}

function validate(s: GemmSpec): void {
  const name = s.name ?? "gemm";
  for (const [k, v] of Object.entries({ M: s.M, N: s.N, K: s.K, batch: s.batch })) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name}: bad ${k} = ${v}`);
  }
  const nums = [s.a.off, s.a.sB, s.a.sM, s.a.sK, s.b.off, s.b.sB, s.b.sK, s.b.sN];
  for (const v of [...nums, s.c.off, s.c.sB, s.c.sM]) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name}: bad offset or stride ${v}`);
  }
  if (s.sum) {
    const { count, a, b } = s.sum;
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError(`${name}: bad sum count ${count}`);
    }
    if (!Number.isInteger(a) || a < 0 || !Number.isInteger(b) || b < 0) {
      throw new RangeError(`${name}: bad sum step ${a}, ${b}`);
    }
  }
  if (s.c.buffer === s.a.buffer || s.c.buffer === s.b.buffer) {
    throw new RangeError(`${name}: the output must not share a buffer with an input`);
  }
  const need = (o: GemmOperand, e: number) => (o.off + e) * 4 <= o.buffer.size;
  const full: Chunk = { b: s.batch, r: sumOf(s).count, m: s.M, n: s.N, k: s.K };
  const e = extent(full, s);
  if (s.M * s.N * s.batch > 0) {
    if (s.K > 0 && (!need(s.a, e.a) || !need(s.b, e.b))) {
      throw new RangeError(`${name}: an input is smaller than its shape and strides require`);
    }
    if (!need(s.c, e.c)) throw new RangeError(`${name}: the output buffer is too small`);
  }
}

/**
 * Records a strided batched GEMM. Splits past `gpu.maxBindingBytes`; K = 0 writes zeros (or
 * leaves C unchanged when accumulating).
 */
export function gemm(gpu: GpuContext, s: GemmSpec): void {
  validate(s);
  if (s.M === 0 || s.N === 0 || s.batch === 0) return;
  const variant = s.variant ?? matmulVariant(gpu);
  if (!MATMUL_VARIANTS.includes(variant)) {
    throw new RangeError(`${s.name ?? "gemm"}: unknown variant "${variant}"`);
  }
  const ch = planChunks(gpu, s);
  const zmax = gpu.limits.maxComputeWorkgroupsPerDimension;
  ch.b = Math.min(ch.b, zmax);
  // Only rb loops over summed products inside the kernel, and every loop iteration of one
  // llvmpipe invocation counts against its budget: sumN · (K / 4 + K % 4 + 1) iterations.
  // Products whose operands exceed RB_SUM_BYTES in all get a dispatch each instead.
  const productBytes = 4 * ch.b * ch.k * (ch.m + ch.n);
  ch.r = variant === "rb"
    ? Math.min(
      ch.r,
      Math.max(1, Math.floor(RB_LOOP_BUDGET / (rbLoopTrips(ch.k) + 1))),
      Math.max(1, Math.floor(RB_SUM_BYTES / productBytes)),
    )
    : 1;
  if (variant === "rb" && s.b.sN !== 1) {
    // A B that rb may copy n-contiguous (dispatchGemm) gets one copy of every product of a
    // piece: keep that copy within one binding too (fewer products per piece, same bits).
    const per = ch.b * ch.k * Math.ceil(ch.n / 4) * 4;
    ch.r = Math.max(1, Math.min(ch.r, Math.floor(windowCapacity(gpu) / per)));
  }
  const alpha = s.alpha ?? 1;
  const sum = sumOf(s);
  for (let b0 = 0; b0 < s.batch; b0 += ch.b) {
    const nb = Math.min(ch.b, s.batch - b0);
    // Products in order; K is split only when a chunk holds one product (planChunks), so each
    // product's K chunks follow one another as they would in separate GEMMs.
    for (let r0 = 0; r0 < sum.count; r0 += ch.r) {
      const nr = Math.min(ch.r, sum.count - r0);
      for (let m0 = 0; m0 < s.M; m0 += ch.m) {
        const nm = Math.min(ch.m, s.M - m0);
        for (let n0 = 0; n0 < s.N; n0 += ch.n) {
          const nn = Math.min(ch.n, s.N - n0);
          for (let k0 = 0; k0 < Math.max(1, s.K); k0 += ch.k) {
            const nk = Math.min(ch.k, s.K - k0);
            const acc = (s.accumulate ?? false) || r0 > 0 || k0 > 0;
            const sub: Chunk = { b: nb, r: nr, m: nm, n: nn, k: Math.max(1, nk) };
            const e = extent(sub, s);
            const wa = bindingWindow(
              gpu,
              s.a.buffer,
              s.a.off + b0 * s.a.sB + r0 * sum.a + m0 * s.a.sM + k0 * s.a.sK,
              e.a,
            );
            const wb = bindingWindow(
              gpu,
              s.b.buffer,
              s.b.off + b0 * s.b.sB + r0 * sum.b + k0 * s.b.sK + n0 * s.b.sN,
              e.b,
            );
            const wc = bindingWindow(
              gpu,
              s.c.buffer,
              s.c.off + b0 * s.c.sB + m0 * s.c.sM + n0,
              e.c,
            );
            dispatchGemm(gpu, s, variant, {
              M: nm,
              N: nn,
              K: nk,
              batch: nb,
              sum: nr,
              wa,
              wb,
              wc,
              acc,
              alpha,
            });
          }
        }
      }
    }
  }
}

/**
 * Loop iterations per invocation that llvmpipe allows with a margin below its ~65,535
 * (docs/architecture.md, "Loop budget"); bounds the products one summing rb dispatch adds.
 */
const RB_LOOP_BUDGET = 60000;

/**
 * Operand bytes (A and B, all products) up to which one rb dispatch sums products. A summing
 * invocation walks every product's operands before the next block starts, where one dispatch
 * per product lets all blocks share one product's operands in cache: measured on llvmpipe (1x1
 * weight gradients, CPU-time GFLOP/s, summing → one dispatch per image), 0.6 MB (`tiny`'s
 * classifier) 6.9 → 4.5, 3 MB 13.2 → 11.5, 4 MB 15.5 → 17.9, ResNet-50's (13-26 MB) 1-34%
 * slower summed; below the cut the dispatches saved count more.
 */
const RB_SUM_BYTES = 2 << 20;

/** Loop iterations of one rb product over K (the k4 loop, then the K % 4 remainder). */
const rbLoopTrips = (K: number) => Math.floor(K / 4) + (K % 4);

interface Piece {
  M: number;
  N: number;
  K: number;
  batch: number;
  /** Summed products (1: a plain GEMM). */
  sum: number;
  wa: BindingWindow;
  wb: BindingWindow;
  wc: BindingWindow;
  acc: boolean;
  alpha: number;
}

interface Strided {
  range: BufferRange;
  off: number;
  sB: number;
  s0: number;
  s1: number;
  /** Step from one summed product to the next. */
  sS: number;
}

/** The uniform block of shaders/matmul.wgsl. */
const { GemmParams } = declareParams("matmul", {
  GemmParams: {
    M: "u32",
    N: "u32",
    K: "u32",
    batch: "u32",
    // A element (m, k) of batch b: A[aOff + b * aBatch + m * aSM + k * aSK]
    aOff: "u32",
    aBatch: "u32",
    aSM: "u32",
    aSK: "u32",
    // B element (k, n): B[bOff + b * bBatch + k * bSK + n * bSN]
    bOff: "u32",
    bBatch: "u32",
    bSK: "u32",
    bSN: "u32",
    // C element (m, n): C[cOff + b * cBatch + m * cSM + n]
    cOff: "u32",
    cBatch: "u32",
    cSM: "u32",
    // 0: C is overwritten; otherwise C is accumulated into.
    beta: "u32",
    alpha: "f32",
    // rb: row / column counts rounded up to 4 for vec4 groups along m / n (clamping bound).
    mPad: "u32",
    nPad: "u32",
    // Products summed into C (rb, transpose; 1 otherwise) and A / B's step between them.
    sumN: "u32",
    aSum: "u32",
    bSum: "u32",
  },
});

function gemmParams(
  p: Piece,
  a: Strided,
  b: Strided,
  c: Strided,
  mPad: number,
  nPad: number,
): Uint32Array {
  return GemmParams.pack({
    M: p.M,
    N: p.N,
    K: p.K,
    batch: p.batch,
    aOff: a.off,
    aBatch: a.sB,
    aSM: a.s0,
    aSK: a.s1,
    bOff: b.off,
    bBatch: b.sB,
    bSK: b.s0,
    bSN: b.s1,
    cOff: c.off,
    cBatch: c.sB,
    cSM: c.s0,
    beta: p.acc ? 1 : 0,
    alpha: p.alpha,
    mPad,
    nPad,
    sumN: p.sum,
    aSum: a.sS,
    bSum: b.sS,
  });
}

function dispatchGemm(gpu: GpuContext, s: GemmSpec, variant: MatmulVariant, p: Piece): void {
  const name = `${s.name ?? "gemm"}.${variant}`;
  const sum = sumOf(s);
  const a: Strided = {
    range: p.wa.range,
    off: p.wa.shift,
    sB: s.a.sB,
    s0: s.a.sM,
    s1: s.a.sK,
    sS: sum.a,
  };
  let b: Strided = {
    range: p.wb.range,
    off: p.wb.shift,
    sB: s.b.sB,
    s0: s.b.sK,
    s1: s.b.sN,
    sS: sum.b,
  };
  const c: Strided = { range: p.wc.range, off: p.wc.shift, sB: s.c.sB, s0: s.c.sM, s1: 1, sS: 0 };
  if (variant !== "rb") {
    const tiled = variant === "tiled";
    gpu.dispatch({
      name,
      shader: "matmul",
      entry: variant,
      defines: plainDefines(),
      inputs: [a.range, b.range],
      outputs: [c.range],
      params: gemmParams(p, a, b, c, 0, 0),
      workgroups: tiled
        ? [Math.ceil(p.N / 128), Math.ceil(p.M / 128), p.batch]
        : [Math.ceil(p.N / 8), Math.ceil(p.M / 8), p.batch],
    });
    return;
  }
  const blk = pickRbBlock(p.M, p.N, p.batch);
  // vec4 loads need every product's operand start at a multiple of 4.
  const a4 = a.off % 4 === 0 && (p.batch === 1 || a.sB % 4 === 0) &&
    (p.sum === 1 || a.sS % 4 === 0);
  const aMode: AMode = a4 && a.s1 === 1 && a.s0 % 4 === 0
    ? "k4"
    : a4 && a.s0 === 1 && a.s1 % 4 === 0 && p.M % 4 === 0
    ? "m4"
    : "s";
  const b4 = b.off % 4 === 0 && (p.batch === 1 || b.sB % 4 === 0) &&
    (p.sum === 1 || b.sS % 4 === 0);
  // A k-contiguous B (a transposed operand, e.g. the images of a 1x1 convolution's weight
  // gradient) is read in place with vec4 loads along k: as fast as or faster than copying it
  // n-contiguous first at every shape measured on llvmpipe (CPU-time GFLOP/s, transpose then
  // n4 → k4: 512³ 15.5 → 19.9, 1024³ 15.2 → 20.9, ResNet-50's 1x1 weight gradients 4-26 →
  // 14-26), and the same bits (each output's fma chain runs over k in order either way).
  let bMode: BMode = b4 && b.s1 === 1 && b.s0 % 4 === 0 && p.N % 4 === 0
    ? "n4"
    : b4 && b.s0 === 1 && b.s1 % 4 === 0
    ? "k4"
    : "s";
  let temp: Tensor | null = null;
  if (bMode === "s" && p.M >= 16 && p.K >= 4) {
    // Lanes of the rb kernel walk along n: a B that cannot be read four at a time (unaligned)
    // is copied once into a padded n-contiguous buffer (cheap next to the product), every
    // product of the piece in one dispatch.
    const nPad = Math.ceil(p.N / 4) * 4;
    temp = Tensor.empty(gpu, [p.batch * p.sum * p.K * nPad]);
    const dst: Strided = {
      range: temp.binding(),
      off: 0,
      sB: p.sum * p.K * nPad,
      s0: nPad,
      s1: 1,
      sS: p.K * nPad,
    };
    const n = p.batch * p.sum * p.K * p.N;
    gpu.dispatch({
      name: `${name}.transpose`,
      shader: "matmul",
      entry: "transpose",
      defines: plainDefines(),
      inputs: [gpu.dummy, b.range],
      outputs: [dst.range],
      params: gemmParams(p, a, b, dst, 0, nPad),
      workgroups: grid1d(n, 256, gpu.limits.maxComputeWorkgroupsPerDimension),
    });
    b = dst;
    bMode = "n4";
  }
  gpu.dispatch({
    name,
    shader: "matmul",
    entry: "rb",
    defines: rbDefinesCached(blk, aMode, bMode, p.sum > 1),
    inputs: [a.range, b.range],
    outputs: [c.range],
    params: gemmParams(
      p,
      a,
      b,
      c,
      Math.ceil(p.M / 4) * 4,
      bMode === "n4" ? (temp ? b.s0 : p.N) : 0,
    ),
    workgroups: [
      Math.ceil(p.N / blk.rn / RB_WG[0]),
      Math.ceil(p.M / blk.rm / RB_WG[1]),
      p.batch,
    ],
  });
  temp?.dispose();
}

// ---------------------------------------------------------------------------------------------
// Tensor-level API.

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Use Aᵀ: `a` holds [K, M] (or [batch, K, M]). */
  transA?: boolean;
  /** Use Bᵀ: `b` holds [N, K] (or [batch, N, K]). */
  transB?: boolean;
  /** Write into this tensor (shape [M, N] or [batch, M, N]). */
  out?: Tensor;
  /** Add the product into `out` instead of overwriting it. */
  accumulate?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Kernel override for this call. */
  variant?: MatmulVariant;
}

/**
 * `op(A) · op(B)` for 2-D or batched 3-D tensors (a 2-D operand is broadcast over the other's
 * batch). Returns `out` or a new tensor of shape [M, N] / [batch, M, N].
 */
export function matmul(gpu: GpuContext, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const dims = (t: Tensor, what: string) => {
    if (t.shape.length === 2) return { batch: 0, r: t.shape[0], c: t.shape[1] };
    if (t.shape.length === 3) return { batch: t.shape[0], r: t.shape[1], c: t.shape[2] };
    throw new RangeError(`matmul: ${what} must be 2-D or 3-D, got [${t.shape}]`);
  };
  const da = dims(a, "A");
  const db = dims(b, "B");
  const [M, Ka] = opts.transA ? [da.c, da.r] : [da.r, da.c];
  const [Kb, N] = opts.transB ? [db.c, db.r] : [db.r, db.c];
  if (Ka !== Kb) {
    throw new RangeError(
      `matmul: inner dimensions differ: A [${a.shape}]${opts.transA ? "ᵀ" : ""} · B [${b.shape}]${
        opts.transB ? "ᵀ" : ""
      }`,
    );
  }
  if (da.batch && db.batch && da.batch !== db.batch) {
    throw new RangeError(`matmul: batch sizes differ: [${a.shape}] vs [${b.shape}]`);
  }
  const batch = Math.max(da.batch, db.batch);
  const outShape = batch ? [batch, M, N] : [M, N];
  const out = opts.out ?? Tensor.empty(gpu, outShape);
  if (out.size !== Math.max(1, batch) * M * N) {
    throw new RangeError(`matmul: out [${out.shape}] does not hold [${outShape}]`);
  }
  gemm(gpu, {
    name: "matmul",
    M,
    N,
    K: Ka,
    batch: Math.max(1, batch),
    a: {
      buffer: a.buffer,
      off: 0,
      sB: da.batch ? da.r * da.c : 0,
      sM: opts.transA ? 1 : da.c,
      sK: opts.transA ? da.c : 1,
    },
    b: {
      buffer: b.buffer,
      off: 0,
      sB: db.batch ? db.r * db.c : 0,
      sK: opts.transB ? 1 : db.c,
      sN: opts.transB ? db.c : 1,
    },
    c: { buffer: out.buffer, off: 0, sB: M * N, sM: N },
    accumulate: opts.accumulate,
    alpha: opts.alpha,
    variant: opts.variant,
  });
  return out;
}

/** CPU reference of {@link matmul} in f64 (row-major arrays, same transposes and batching). */
export function matmulRef(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  opts: { transA?: boolean; transB?: boolean } = {},
): Float64Array {
  const ab = aShape.length === 3 ? aShape[0] : 0;
  const bb = bShape.length === 3 ? bShape[0] : 0;
  const [ar, ac] = aShape.slice(-2);
  const [br, bc] = bShape.slice(-2);
  const M = opts.transA ? ac : ar;
  const K = opts.transA ? ar : ac;
  const N = opts.transB ? br : bc;
  const batch = Math.max(1, ab, bb);
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ao = ab ? z * ar * ac : 0;
    const bo = bb ? z * br * bc : 0;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[ao + (opts.transA ? k * ac + m : m * ac + k)];
          const bv = b[bo + (opts.transB ? n * bc + k : k * bc + n)];
          s += av * bv;
        }
        out[(z * M + m) * N + n] = s;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link matmulUnit} case: `op(A)·op(B)`, both 2-D or both batched. */
export interface MatmulCase {
  M: number;
  N: number;
  K: number;
  /** Batch of both operands (0: 2-D operands). */
  batch: number;
  transA?: boolean;
  transB?: boolean;
}

function matmulShapes(p: MatmulCase): { a: number[]; b: number[]; c: number[] } {
  const a = p.transA ? [p.K, p.M] : [p.M, p.K];
  const b = p.transB ? [p.N, p.K] : [p.K, p.N];
  const c = [p.M, p.N];
  return p.batch ? { a: [p.batch, ...a], b: [p.batch, ...b], c: [p.batch, ...c] } : { a, b, c };
}

/**
 * The gradients of `C = op(A)·op(B)` as products of the same kind, each `[x, y, transX,
 * transY]` for `op(x)·op(y)`: dA = G·op(B)ᵀ (transposed again when A is stored transposed),
 * dB = op(A)ᵀ·G likewise.
 */
function matmulGradTerms<T>(p: MatmulCase, a: T, b: T, g: T) {
  const ta = p.transA ?? false;
  const tb = p.transB ?? false;
  const dA: [T, T, boolean, boolean] = ta ? [b, g, tb, true] : [g, b, false, !tb];
  const dB: [T, T, boolean, boolean] = tb ? [g, a, true, ta] : [a, g, !ta, false];
  return { a: dA, b: dB };
}

function matmulUnitOp(variant: MatmulVariant | undefined, name: string): RecordedOp<MatmulCase> {
  return {
    name,
    forward: (gpu, p, { tensors: t }) => ({
      c: matmul(gpu, t.a, t.b, { transA: p.transA, transB: p.transB, variant }),
    }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const terms = matmulGradTerms(p, t.a, t.b, asShape(d.c, matmulShapes(p).c));
      const run = ([x, y, tx, ty]: [Tensor, Tensor, boolean, boolean]) =>
        matmul(gpu, x, y, { transA: tx, transB: ty, variant });
      return { a: run(terms.a), b: run(terms.b) };
    },
  };
}

const mmCase = (M: number, N: number, K: number, batch = 0, transA = false, transB = false) => ({
  name: `${batch ? `${batch}x` : ""}${M}x${N}x${K}${transA ? " Aᵀ" : ""}${transB ? " Bᵀ" : ""}`,
  params: { M, N, K, batch, transA, transB },
});

/**
 * matmul as an op unit. Cases: odd sizes (K % 4 remainders, M / N not multiples of any
 * block), vec4-aligned sizes (the k4 / m4 / n4 load modes), transposed operands (B large
 * enough for the transpose-copy path) and batches. The benchmark's reference is the naive
 * one-output-per-invocation kernel.
 */
export const matmulUnit: OpUnit<MatmulCase> = defineOpUnit<MatmulCase>({
  name: "matmul",
  description: "C = op(A)·op(B), 2-D or batched, operands transposed in place",
  bound: "compute",
  inputs: ["a", "b"],
  outputs: ["c"],
  differentiable: ["a", "b"],
  cases: [
    mmCase(13, 17, 7),
    mmCase(1, 1, 1),
    mmCase(32, 20, 12, 3, true),
    mmCase(9, 8, 16, 2, false, true),
    mmCase(16, 16, 9, 0, true, true),
    mmCase(37, 24, 40, 0, false, true),
    mmCase(40, 36, 30, 3),
    mmCase(33, 45, 70, 0, true),
  ],
  benchShapes: [mmCase(256, 256, 256), mmCase(512, 512, 512), mmCase(1024, 1024, 1024)],
  // f32 products of K values in [-1, 1): relative error well below 1e-5.
  tolerance: { forward: { maxRel: 1e-5 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => {
    const s = matmulShapes(p);
    return { a: s.a, b: s.b };
  },
  outputShapes: (p) => ({ c: matmulShapes(p).c }),
  makeInputs: (p, seed) => {
    const s = matmulShapes(p);
    return { a: uniformValues(sizeOf(s.a), seed), b: uniformValues(sizeOf(s.b), seed + 1) };
  },
  refForward: (p, x) => {
    const s = matmulShapes(p);
    return { c: matmulRef(x.a, s.a, x.b, s.b, p) };
  },
  refBackward: (p, x, d) => {
    const s = matmulShapes(p);
    const shapes = new Map<ArrayLike<number>, number[]>([[x.a, s.a], [x.b, s.b], [d.c, s.c]]);
    const terms = matmulGradTerms(p, x.a, x.b, d.c);
    const run = ([u, v, tu, tv]: [ArrayLike<number>, ArrayLike<number>, boolean, boolean]) =>
      matmulRef(u, shapes.get(u)!, v, shapes.get(v)!, { transA: tu, transB: tv });
    return { a: run(terms.a), b: run(terms.b) };
  },
  cost: (p) => {
    const s = matmulShapes(p);
    const flops = 2 * Math.max(1, p.batch) * p.M * p.N * p.K;
    return {
      forward: { flops, bytes: bytesOf(s.a, s.b, s.c) },
      backward: { flops: 2 * flops, bytes: bytesOf(s.a, s.b, s.c, s.c, s.a, s.b) },
    };
  },
  gpu: matmulUnitOp(undefined, "auto variant"),
  naive: matmulUnitOp("naive", "naive kernel"),
});
