/**
 * Softmax over the last dimension of row-major tensors [..., L] (attention rows), of
 * `scale · x`, forward and backward from the output. Kernels: `shaders/rows.wgsl`, one
 * invocation per row; rows are chunked past the binding limit (one row must fit one binding).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes } from "./planes.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** The uniform block of shaders/rows.wgsl (offsets: the chunk's first row in each binding). */
const { RowsParams } = declareParams("rows", {
  RowsParams: {
    L: "u32",
    rows: "u32",
    ioff: "u32",
    ioff2: "u32",
    ooff: "u32",
    scale: "f32",
  },
});

/**
 * Longest row: an invocation loops 3·L times, under llvmpipe's budget of 65,535 loop
 * iterations per invocation (docs/architecture.md).
 */
export const SOFTMAX_ROWS_MAX = 16384;

function rowDims(op: string, x: Tensor, scale: number) {
  if (x.shape.length < 1 || x.size === 0) {
    throw new RangeError(`${op}: x must be [..., L] with L > 0, got [${x.shape}]`);
  }
  const L = x.shape[x.shape.length - 1];
  if (L > SOFTMAX_ROWS_MAX) {
    throw new RangeError(`${op}: rows of ${L} exceed ${SOFTMAX_ROWS_MAX} (the loop budget)`);
  }
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: bad scale ${scale}`);
  return { rows: x.size / L, L };
}

/** Records y = softmax over the last dim of scale·x, for x [..., L] (the row max subtracted). */
export function softmaxRows(gpu: GpuContext, x: Tensor, scale = 1): Tensor {
  const op = "softmaxRows";
  const { rows, L } = rowDims(op, x, scale);
  const y = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, rows, {
    name: op,
    shader: "rows",
    entry: "softmax_rows_fwd",
    inputs: [{ tensor: x, planeSize: L }],
    outputs: [{ tensor: y, planeSize: L }],
    itemsPerPlane: 1,
    grid: "flat",
    params: (ch) =>
      RowsParams.pack({
        L,
        rows: ch.count,
        ioff: ch.offsets[0],
        ioff2: 0,
        ooff: ch.offsets[1],
        scale,
      }),
  });
  return y;
}

/** Records the backward of {@link softmaxRows} from its output y: dx = scale·y·(dy - Σ y·dy). */
export function softmaxRowsBackward(gpu: GpuContext, y: Tensor, dy: Tensor, scale = 1): Tensor {
  const op = "softmaxRowsBackward";
  const { rows, L } = rowDims(op, y, scale);
  checkShape(op, "dy", dy, y.shape);
  const dx = Tensor.empty(gpu, y.shape);
  dispatchPlanes(gpu, rows, {
    name: op,
    shader: "rows",
    entry: "softmax_rows_bwd",
    inputs: [{ tensor: y, planeSize: L }, { tensor: dy, planeSize: L }],
    outputs: [{ tensor: dx, planeSize: L }],
    itemsPerPlane: 1,
    grid: "flat",
    params: (ch) =>
      RowsParams.pack({
        L,
        rows: ch.count,
        ioff: ch.offsets[0],
        ioff2: ch.offsets[1],
        ooff: ch.offsets[2],
        scale,
      }),
  });
  return dx;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** CPU reference of {@link softmaxRows}: rows of L. */
export function softmaxRowsRef(x: ArrayLike<number>, L: number, scale = 1): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / L; r++) {
    let m = -Infinity;
    for (let i = 0; i < L; i++) m = Math.max(m, scale * x[r * L + i]);
    let z = 0;
    for (let i = 0; i < L; i++) z += Math.exp(scale * x[r * L + i] - m);
    for (let i = 0; i < L; i++) y[r * L + i] = Math.exp(scale * x[r * L + i] - m) / z;
  }
  return y;
}

/** CPU reference of {@link softmaxRowsBackward} from the output y. */
export function softmaxRowsBackwardRef(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  L: number,
  scale = 1,
): Float64Array {
  const dx = new Float64Array(y.length);
  for (let r = 0; r < y.length / L; r++) {
    let dot = 0;
    for (let i = 0; i < L; i++) dot += y[r * L + i] * dy[r * L + i];
    for (let i = 0; i < L; i++) {
      dx[r * L + i] = scale * y[r * L + i] * (dy[r * L + i] - dot);
    }
  }
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link softmaxRowsUnit} case: x [...lead, L]. */
export interface SoftmaxRowsCase {
  lead: readonly number[];
  L: number;
  scale: number;
}

const smCase = (lead: number[], L: number, scale = 1, split = true): OpCase<SoftmaxRowsCase> => ({
  name: `[${lead}]x${L} scale=${scale}`,
  params: { lead, L, scale },
  split,
});

/**
 * Row softmax as an op unit. Cases: odd sizes, L = 1, scales, attention-like [B, H, T, T]
 * rows that the small binding cap splits, and one row of 1100 (not split: it exceeds the cap).
 * Bench: DeiT-S attention at 197 tokens, 6 heads, batch 8.
 */
export const softmaxRowsUnit: OpUnit<SoftmaxRowsCase> = defineOpUnit<SoftmaxRowsCase>({
  name: "softmax_rows",
  description: "softmax over the last dim of scale·x (attention rows), backward from the output",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [
    smCase([3, 5], 7),
    smCase([4], 1),
    smCase([2, 3, 13], 13, 0.125),
    smCase([1, 2, 17], 17, 3),
    smCase([2], 1100, 0.5, false),
  ],
  benchShapes: [smCase([8, 6, 197], 197, 0.125)],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ x: [...p.lead, p.L] }),
  outputShapes: (p) => ({ y: [...p.lead, p.L] }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.lead) * p.L, seed, -4, 4) }),
  refForward: (p, x) => ({ y: softmaxRowsRef(x.x, p.L, p.scale) }),
  refBackward: (p, x, d) => ({
    x: softmaxRowsBackwardRef(softmaxRowsRef(x.x, p.L, p.scale), d.y, p.L, p.scale),
  }),
  cost: (p) => {
    const s = [...p.lead, p.L];
    return {
      forward: { flops: 5 * sizeOf(s), bytes: bytesOf(s, s) },
      backward: { flops: 4 * sizeOf(s), bytes: bytesOf(s, s, s) },
    };
  },
  gpu: {
    name: "per-row kernel",
    forward: (gpu, p, { tensors: t }) => ({ y: softmaxRows(gpu, t.x, p.scale) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const y = softmaxRows(gpu, t.x, p.scale);
      const dx = softmaxRowsBackward(gpu, y, asShape(d.y, t.x.shape), p.scale);
      y.dispose();
      return { x: dx };
    },
  },
});
