/**
 * Pointwise ops from one table: each entry holds its WGSL expression and a TypeScript
 * reference with the same meaning, so kernels and their tests are generated from the table
 * (in the style of webgpu-torch's op table). Expressions see `a`, `b`, `c` (inputs at the
 * same index) and `p.alpha`, `p.beta` (scalars).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { elementChunks } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";

/** The uniform block of shaders/elementwise.wgsl. */
export const { PointwiseParams } = declareParams("elementwise", {
  PointwiseParams: { n: "u32", alpha: "f32", beta: "f32" },
});

/** One pointwise op. */
export interface PointwiseOp {
  /** Number of tensor inputs (1–3). */
  arity: 1 | 2 | 3;
  /** WGSL expression. */
  wgsl: string;
  /** Reference: same meaning on the CPU. */
  ref: (a: number, b: number, c: number, alpha: number, beta: number) => number;
}

/** The table. Backward ops are entries of their own (`*_bwd`: a = saved value, b = dy). */
export const POINTWISE = {
  add: { arity: 2, wgsl: "a + b", ref: (a, b) => a + b },
  sub: { arity: 2, wgsl: "a - b", ref: (a, b) => a - b },
  mul: { arity: 2, wgsl: "a * b", ref: (a, b) => a * b },
  scale: { arity: 1, wgsl: "a * p.alpha", ref: (a, _b, _c, al) => a * al },
  axpby: {
    arity: 2,
    wgsl: "p.alpha * a + p.beta * b",
    ref: (a, b, _c, al, be) => al * a + be * b,
  },
  fill: { arity: 1, wgsl: "p.alpha", ref: (_a, _b, _c, al) => al },
  relu: { arity: 1, wgsl: "max(a, 0.0)", ref: (a) => Math.max(a, 0) },
  /** a = forward input x (or output y: same sign test), b = dy. */
  relu_bwd: { arity: 2, wgsl: "select(0.0, b, a > 0.0)", ref: (a, b) => (a > 0 ? b : 0) },
  sigmoid: { arity: 1, wgsl: "1.0 / (1.0 + exp(-a))", ref: (a) => 1 / (1 + Math.exp(-a)) },
  /** a = forward output y, b = dy. */
  sigmoid_bwd: { arity: 2, wgsl: "b * a * (1.0 - a)", ref: (a, b) => b * a * (1 - a) },
  /** ELU (alpha 1): a for a > 0, else exp(a) - 1. */
  elu: {
    arity: 1,
    wgsl: "select(exp(a) - 1.0, a, a > 0.0)",
    ref: (a) => (a > 0 ? a : Math.expm1(a)),
  },
  /** a = forward output y (elu'(x) = y + 1 where x <= 0), b = dy. */
  elu_bwd: {
    arity: 2,
    wgsl: "select(b * (a + 1.0), b, a > 0.0)",
    ref: (a, b) => (a > 0 ? b : b * (a + 1)),
  },
  /** Residual add with ReLU: relu(a + b). */
  add_relu: { arity: 2, wgsl: "max(a + b, 0.0)", ref: (a, b) => Math.max(a + b, 0) },
} as const satisfies Record<string, PointwiseOp>;

/** Name of a table entry. */
export type PointwiseName = keyof typeof POINTWISE;

/** Options of {@link pointwise}. */
export interface PointwiseOptions {
  alpha?: number;
  beta?: number;
  /** Write into this tensor (may be an input for `inplace` semantics: y = op(y, b, c)). */
  out?: Tensor;
}

/**
 * Records `out[i] = op(inputs[0][i], inputs[1][i], inputs[2][i])`. When `out` is the first
 * input the in-place kernel runs. Splits work that exceeds the storage binding limit.
 */
export function pointwise(
  gpu: GpuContext,
  name: PointwiseName,
  inputs: Tensor[],
  opts: PointwiseOptions = {},
): Tensor {
  const op: PointwiseOp = POINTWISE[name];
  if (inputs.length !== op.arity) {
    throw new RangeError(`${name}: expects ${op.arity} inputs, got ${inputs.length}`);
  }
  const n = inputs[0].size;
  for (const t of inputs) {
    if (t.size !== n) {
      throw new RangeError(
        `${name}: input sizes differ ([${inputs.map((t) => `[${t.shape}]`).join(", ")}])`,
      );
    }
  }
  const out = opts.out ?? Tensor.empty(gpu, inputs[0].shape);
  if (out.size !== n) throw new RangeError(`${name}: output [${out.shape}] size differs`);
  const inplace = out.buffer === inputs[0].buffer;
  for (const t of inputs.slice(1)) {
    if (t.buffer === out.buffer) throw new RangeError(`${name}: only input 0 may alias the output`);
  }
  for (const { start, count } of elementChunks(gpu, n)) {
    const src = inputs.map((t) => t.slice(start, count));
    while (src.length < 3) src.push(src[src.length - 1]);
    if (inplace) {
      // Binding 0 is unused in place; no read-only binding may alias the written buffer.
      for (let i = 0; i < 3; i++) if (src[i].buffer === out.buffer) src[i] = gpu.dummy;
    }
    gpu.dispatch1d({
      name: `pointwise.${name}`,
      shader: "elementwise",
      entry: inplace ? "inplace" : "main",
      defines: { EXPR: op.wgsl },
      inputs: src,
      outputs: [out.slice(start, count)],
      params: PointwiseParams.pack({ n: count, alpha: opts.alpha ?? 0, beta: opts.beta ?? 0 }),
    }, count);
  }
  return out;
}
