/**
 * The fully connected layer (PyTorch's `nn.Linear`): y [..., N] = x [..., K] · wᵀ + b with the
 * weight [N, K] and bias [N], any leading dimensions flattened to M rows. No kernel of its own:
 * the products are the strided GEMM of ./matmul.ts (the weight read transposed in place, the
 * weight gradient accumulated into its sink), the bias add and the bias gradient are conv2d's
 * (./conv.ts) with the rows as images of 1x1 planes. Splitting past the binding limit and the
 * loop budget are theirs.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { gemm } from "./matmul.ts";
import { biasAdd, conv2dGradBias, type ConvOutOptions } from "./conv.ts";
import { asShape, bytesOf, defineOpUnit, type OpUnit, sizeOf, uniformValues } from "./unit.ts";

/** Rows M and inner size K of x [..., K] for a weight [N, K]; throws naming `op` on a mismatch. */
function linearDims(op: string, xShape: readonly number[], wShape: readonly number[]) {
  if (xShape.length < 1 || wShape.length !== 2) {
    throw new RangeError(
      `${op}: expected x [..., K] and w [N, K], got [${xShape}] and [${wShape}]`,
    );
  }
  const K = xShape[xShape.length - 1];
  const [N, Kw] = wShape;
  if (K !== Kw) {
    throw new RangeError(`${op}: x [${xShape}] has ${K} features, w [${wShape}] expects ${Kw}`);
  }
  const M = xShape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { M, N, K };
}

/** Records y [..., N] = x [..., K] · wᵀ + b for w [N, K] and b [N] (or null). */
export function linear(gpu: GpuContext, x: Tensor, w: Tensor, b: Tensor | null): Tensor {
  const op = "linear";
  const { M, N, K } = linearDims(op, x.shape, w.shape);
  if (b && (b.shape.length !== 1 || b.shape[0] !== N)) {
    throw new RangeError(`${op}: bias [${b.shape}] must be [${N}]`);
  }
  const y = Tensor.empty(gpu, [...x.shape.slice(0, -1), N]);
  gemm(gpu, {
    name: op,
    M,
    N,
    K,
    batch: 1,
    a: { buffer: x.buffer, off: 0, sB: 0, sM: K, sK: 1 },
    // wᵀ (k, n) = w[n, k].
    b: { buffer: w.buffer, off: 0, sB: 0, sK: 1, sN: K },
    c: { buffer: y.buffer, off: 0, sB: 0, sM: N },
  });
  if (b) biasAdd(gpu, y.reshape([M, N, 1, 1]), b);
  return y;
}

/** Records dx [..., K] = dy [..., N] · w for w [N, K] (`xShape`: x's shape). */
export function linearGradInput(
  gpu: GpuContext,
  dy: Tensor,
  w: Tensor,
  xShape: readonly number[],
): Tensor {
  const op = "linearGradInput";
  const { M, N, K } = linearDims(op, xShape, w.shape);
  if (dy.size !== M * N) throw new RangeError(`${op}: dy [${dy.shape}] does not hold ${M}x${N}`);
  const dx = Tensor.empty(gpu, xShape);
  gemm(gpu, {
    name: op,
    M,
    N: K,
    K: N,
    batch: 1,
    a: { buffer: dy.buffer, off: 0, sB: 0, sM: N, sK: 1 },
    b: { buffer: w.buffer, off: 0, sB: 0, sK: K, sN: 1 },
    c: { buffer: dx.buffer, off: 0, sB: 0, sM: K },
  });
  return dx;
}

/** Records dw [N, K] (+)= dyᵀ · x (the sum over rows), into `opts.out` when given. */
export function linearGradWeight(
  gpu: GpuContext,
  x: Tensor,
  dy: Tensor,
  opts: ConvOutOptions = {},
): Tensor {
  const op = "linearGradWeight";
  const K = x.shape[x.shape.length - 1];
  const M = x.size / Math.max(1, K);
  const N = dy.size / Math.max(1, M);
  if (!Number.isInteger(N) || dy.shape[dy.shape.length - 1] !== N) {
    throw new RangeError(`${op}: dy [${dy.shape}] does not match x [${x.shape}]`);
  }
  const dw = opts.out ?? Tensor.empty(gpu, [N, K]);
  if (dw.size !== N * K) throw new RangeError(`${op}: out [${dw.shape}] must be [${N}, ${K}]`);
  gemm(gpu, {
    name: op,
    M: N,
    N: K,
    K: M,
    batch: 1,
    // dyᵀ (n, m) = dy[m, n].
    a: { buffer: dy.buffer, off: 0, sB: 0, sM: 1, sK: N },
    b: { buffer: x.buffer, off: 0, sB: 0, sK: K, sN: 1 },
    c: { buffer: dw.buffer, off: 0, sB: 0, sM: K },
    accumulate: opts.accumulate,
  });
  return dw;
}

/** Records db [N] (+)= the column sums of dy [..., N] (fixed order, see conv2dGradBias). */
export function linearGradBias(gpu: GpuContext, dy: Tensor, opts: ConvOutOptions = {}): Tensor {
  const N = dy.shape[dy.shape.length - 1];
  return conv2dGradBias(gpu, dy.reshape([dy.size / N, N, 1, 1]), opts);
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** CPU reference of {@link linear}: y [M, N] = x [M, K] · wᵀ + b (b may be absent). */
export function linearRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | undefined,
  M: number,
  N: number,
  K: number,
): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** CPU reference of the backward of {@link linear}: dx = dy·w, dw = dyᵀ·x, db = Σ_rows dy. */
export function linearBackwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
): { x: Float64Array; w: Float64Array; b: Float64Array } {
  const dx = new Float64Array(M * K);
  const dw = new Float64Array(N * K);
  const db = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n];
      db[n] += g;
      for (let k = 0; k < K; k++) {
        dx[m * K + k] += g * w[n * K + k];
        dw[n * K + k] += g * x[m * K + k];
      }
    }
  }
  return { x: dx, w: dw, b: db };
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link linearUnit} case: x [...lead, K], w [N, K], b [N] when `bias`. */
export interface LinearCase {
  lead: readonly number[];
  K: number;
  N: number;
  bias: boolean;
}

const linCase = (lead: number[], K: number, N: number, bias = true) => ({
  name: `[${lead}]x${K} → ${N}${bias ? " +b" : ""}`,
  params: { lead, K, N, bias },
});
const rows = (p: LinearCase) => sizeOf(p.lead);

/**
 * linear as an op unit. Cases: odd sizes, leading dimensions of several ranks, with and
 * without bias; the last ones exceed the generic test's small binding cap. Bench shapes: a
 * DeiT-S block's projections at 197 tokens (qkv 384 → 1152, MLP 384 → 1536 → 384).
 */
export const linearUnit: OpUnit<LinearCase> = defineOpUnit<LinearCase>({
  name: "linear",
  description: "y = x·wᵀ + b over the last dim (nn.Linear), any leading dims",
  bound: "compute",
  inputs: ["x", "w", "b"],
  outputs: ["y"],
  differentiable: ["x", "w", "b"],
  cases: [
    linCase([5], 7, 3),
    linCase([1], 1, 1),
    linCase([13], 17, 9, false),
    linCase([2, 3, 4], 12, 20),
    linCase([3, 37], 24, 19),
  ],
  benchShapes: [
    linCase([8, 197], 384, 1152),
    linCase([8, 197], 384, 1536),
    linCase([8, 197], 1536, 384),
  ],
  tolerance: { forward: { maxRel: 1e-5 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({
    x: [...p.lead, p.K],
    w: [p.N, p.K],
    ...(p.bias ? { b: [p.N] } : {}),
  }),
  outputShapes: (p) => ({ y: [...p.lead, p.N] }),
  makeInputs: (p, seed) => ({
    x: uniformValues(rows(p) * p.K, seed),
    w: uniformValues(p.N * p.K, seed + 1),
    ...(p.bias ? { b: uniformValues(p.N, seed + 2) } : {}),
  }),
  refForward: (p, x) => ({ y: linearRef(x.x, x.w, x.b, rows(p), p.N, p.K) }),
  refBackward: (p, x, d) => {
    const g = linearBackwardRef(x.x, x.w, d.y, rows(p), p.N, p.K);
    return p.bias ? g : { x: g.x, w: g.w };
  },
  cost: (p) => {
    const M = rows(p);
    const flops = 2 * M * p.N * p.K;
    const s = { x: [M, p.K], w: [p.N, p.K], y: [M, p.N] };
    return {
      forward: { flops, bytes: bytesOf(s.x, s.w, s.y) },
      backward: { flops: 2 * flops, bytes: bytesOf(s.x, s.w, s.y, s.y, s.x, s.w) },
    };
  },
  gpu: {
    name: "gemm + bias",
    forward: (gpu, _p, { tensors: t }) => ({ y: linear(gpu, t.x, t.w, t.b ?? null) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const dy = asShape(d.y, [...p.lead, p.N]);
      const out: Record<string, Tensor> = {
        x: linearGradInput(gpu, dy, t.w, t.x.shape),
        w: linearGradWeight(gpu, t.x, dy),
      };
      if (p.bias) out.b = linearGradBias(gpu, dy);
      return out;
    },
  },
});
