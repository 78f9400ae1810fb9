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
import { defineOpUnit, type OpCase, type OpUnit, uniformValues } from "./unit.ts";

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
  /**
   * Exact (erf) GELU, PyTorch's `nn.GELU()`: a·Φ(a) = a/2·(1 + erf(a/√2)); the kernel's Φ has
   * a relative error below about 2e-7 (shaders/elementwise.wgsl).
   */
  gelu: { arity: 1, wgsl: "a * norm_cdf(a)", ref: (a) => a * normCdf(a) },
  /** a = forward input x, b = dy: dy·(Φ(x) + x·φ(x)). */
  gelu_bwd: {
    arity: 2,
    wgsl: "b * (norm_cdf(a) + a * norm_pdf(a))",
    ref: (a, b) => b * (normCdf(a) + a * Math.exp(-0.5 * a * a) / Math.sqrt(2 * Math.PI)),
  },
} as const satisfies Record<string, PointwiseOp>;

/**
 * erf in f64 for the references (JavaScript has none): for |x| < 6 the series
 * erf(x) = 2/√π·e^(-x²)·Σ_n 2^n·x^(2n+1)/(1·3·…·(2n+1)), whose terms are all positive (no
 * cancellation; relative error about 1e-15); ±1 beyond (erfc(6) ≈ 2e-17).
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (Number.isNaN(a)) return NaN;
  if (a >= 6) return Math.sign(x);
  let term = a;
  let sum = a;
  for (let n = 1; n < 1000 && term > 1e-17 * sum; n++) {
    term *= (2 * a * a) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
}

/** The standard normal CDF Φ(x) = (1 + erf(x/√2))/2 in f64. */
export function normCdf(x: number): number {
  return 0.5 * (1 + erf(x / Math.SQRT2));
}

/** Name of a table entry. */
export type PointwiseName = keyof typeof POINTWISE;

/** Options of {@link pointwise}. */
export interface PointwiseOptions {
  /** The op's first scalar, `p.alpha` (e.g. the factor of `scale`); default 0. */
  alpha?: number;
  /** The op's second scalar, `p.beta` (e.g. b's factor in `axpby`); default 0. */
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

// ---------------------------------------------------------------------------------------------
// CPU reference (f64) and op units (tests and benchmark: ./unit.ts).

/** The table entry `name` applied elementwise in f64 (the CPU reference of {@link pointwise}). */
export function pointwiseRef(
  name: PointwiseName,
  inputs: ArrayLike<number>[],
  opts: { alpha?: number; beta?: number } = {},
): Float64Array {
  const op: PointwiseOp = POINTWISE[name];
  if (inputs.length !== op.arity) {
    throw new RangeError(`${name}: expects ${op.arity} inputs, got ${inputs.length}`);
  }
  const [a, b, c] = inputs;
  const al = opts.alpha ?? 0;
  const be = opts.beta ?? 0;
  return Float64Array.from(
    { length: a.length },
    (_, i) => op.ref(a[i], b?.[i] ?? 0, c?.[i] ?? 0, al, be),
  );
}

/** Input names of the table's operands. */
const OPERANDS = ["a", "b", "c"] as const;

/**
 * One term of a pointwise gradient: the table entry `op` applied to operands (`a`, `b`, `c`:
 * the forward inputs, `y`: its output, `dy`: the upstream gradient) with scalar `alpha`
 * (`"alpha"`/`"beta"`: the forward's scalars).
 */
interface GradTerm {
  op: PointwiseName;
  args: ("a" | "b" | "y" | "dy")[];
  alpha?: number | "alpha" | "beta";
}

const scaleDy = (alpha: GradTerm["alpha"]): GradTerm => ({ op: "scale", args: ["dy"], alpha });

/**
 * The gradient of each table entry per differentiable input, itself in table entries (so the
 * GPU backward runs the same kernels). A `*_bwd` entry op(a, dy) is linear in its dy operand
 * `b`, whose gradient is the same entry op(a, dy'); `fill` has no gradient.
 */
const POINTWISE_GRADS: Record<PointwiseName, Partial<Record<"a" | "b", GradTerm>>> = {
  add: { a: scaleDy(1), b: scaleDy(1) },
  sub: { a: scaleDy(1), b: scaleDy(-1) },
  mul: { a: { op: "mul", args: ["dy", "b"] }, b: { op: "mul", args: ["dy", "a"] } },
  scale: { a: scaleDy("alpha") },
  axpby: { a: scaleDy("alpha"), b: scaleDy("beta") },
  fill: {},
  relu: { a: { op: "relu_bwd", args: ["y", "dy"] } },
  relu_bwd: { b: { op: "relu_bwd", args: ["a", "dy"] } },
  sigmoid: { a: { op: "sigmoid_bwd", args: ["y", "dy"] } },
  sigmoid_bwd: { b: { op: "sigmoid_bwd", args: ["a", "dy"] } },
  elu: { a: { op: "elu_bwd", args: ["y", "dy"] } },
  elu_bwd: { b: { op: "elu_bwd", args: ["a", "dy"] } },
  add_relu: { a: { op: "relu_bwd", args: ["y", "dy"] }, b: { op: "relu_bwd", args: ["y", "dy"] } },
  gelu: { a: { op: "gelu_bwd", args: ["a", "dy"] } },
  gelu_bwd: { b: { op: "gelu_bwd", args: ["a", "dy"] } },
};

/** Parameters of a pointwise unit case: the element count and the scalars. */
export interface PointwiseCase {
  n: number;
  alpha: number;
  beta: number;
}

function termAlpha(t: GradTerm, p: PointwiseCase): number {
  return t.alpha === "alpha" ? p.alpha : t.alpha === "beta" ? p.beta : t.alpha ?? 0;
}

function pointwiseUnit(name: PointwiseName): OpUnit<PointwiseCase> {
  const op: PointwiseOp = POINTWISE[name];
  const inputs = OPERANDS.slice(0, op.arity);
  const grads = POINTWISE_GRADS[name];
  const differentiable = Object.keys(grads);
  const pwCase = (n: number): OpCase<PointwiseCase> => ({
    name: `n${n}`,
    params: { n, alpha: 0.7, beta: -1.3 },
  });
  const shapes = (p: PointwiseCase) => Object.fromEntries(inputs.map((k) => [k, [p.n]]));
  const needsY = Object.values(grads).some((t) => t.args.includes("y"));
  return defineOpUnit<PointwiseCase>({
    name: `pointwise.${name}`,
    description: `pointwise table entry ${name}: ${op.wgsl}`,
    bound: "memory",
    inputs,
    outputs: ["y"],
    differentiable,
    // 1037 elements: several chunks on the generic test's small-binding context.
    cases: [pwCase(1037), pwCase(1)],
    benchShapes: [pwCase(1 << 22)],
    tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { rtol: 1e-5, atol: 1e-6 } },
    inputShapes: shapes,
    outputShapes: (p) => ({ y: [p.n] }),
    makeInputs: (p, seed) =>
      Object.fromEntries(inputs.map((k, i) => [k, uniformValues(p.n, seed + 17 * i, -2, 2)])),
    refForward: (p, x) => ({ y: pointwiseRef(name, inputs.map((k) => x[k]), p) }),
    refBackward: (p, x, d) => {
      const y = needsY ? pointwiseRef(name, inputs.map((k) => x[k]), p) : null;
      const val = (k: GradTerm["args"][number]) => (k === "y" ? y! : k === "dy" ? d.y : x[k]);
      return Object.fromEntries(
        Object.entries(grads).map(([k, t]) => [
          k,
          pointwiseRef(t.op, t.args.map(val), { alpha: termAlpha(t, p) }),
        ]),
      );
    },
    cost: (p) => ({
      forward: { flops: p.n, bytes: 4 * p.n * (op.arity + 1) },
      backward: { flops: p.n * differentiable.length, bytes: 4 * p.n * 3 * differentiable.length },
    }),
    gpu: {
      name: "table kernel",
      forward: (gpu, p, { tensors: t }) => ({
        y: pointwise(gpu, name, inputs.map((k) => t[k]), p),
      }),
      backward: (gpu, p, { tensors: t }, { tensors: d }) => {
        const y = needsY ? pointwise(gpu, name, inputs.map((k) => t[k]), p) : null;
        const val = (k: GradTerm["args"][number]) => (k === "y" ? y! : k === "dy" ? d.y : t[k]);
        const out = Object.fromEntries(
          Object.entries(grads).map(([k, g]) => [
            k,
            pointwise(gpu, g.op, g.args.map(val), { alpha: termAlpha(g, p) }),
          ]),
        );
        y?.dispose();
        return out;
      },
    },
  });
}

/** Every entry of the pointwise table as an op unit (`pointwise.<entry>`), in table order. */
export const pointwiseUnits: readonly OpUnit<PointwiseCase>[] = (
  Object.keys(POINTWISE) as PointwiseName[]
).map(pointwiseUnit);
