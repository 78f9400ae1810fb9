/**
 * Layer normalisation over the last dimension (PyTorch's `nn.LayerNorm(D)`: biased variance,
 * affine weight and bias [D]) of row-major tensors [..., D], forward and backward. Kernels:
 * `shaders/layernorm.wgsl`, one invocation per row (forward, input gradient) or per column
 * (weight and bias gradients, summed over the rows in a fixed order). Rows are chunked past the
 * binding limit (one row must fit one binding) and, for the column sums, under llvmpipe's loop
 * budget, the chunks accumulated in order.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { planeChunks } from "../gpu/split.ts";
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

/**
 * The uniform block of shaders/layernorm.wgsl: `rows` of the chunk, offsets of its first row
 * in the x, dy, statistics and output bindings, and whether the weight / bias gradients add
 * into their outputs.
 */
const { LayerNormParams } = declareParams("layernorm", {
  LayerNormParams: {
    D: "u32",
    rows: "u32",
    xOff: "u32",
    dOff: "u32",
    sOff: "u32",
    yOff: "u32",
    eps: "f32",
    accW: "u32",
    accB: "u32",
  },
});

/**
 * Largest D: a row's invocation loops 3·D times, under llvmpipe's budget of 65,535 loop
 * iterations per invocation (docs/architecture.md).
 */
export const LAYERNORM_MAX_DIM = 16384;

/** Rows per column-sum pass of the weight / bias gradients (loop iterations per invocation). */
const ROWS_PER_PASS = 16384;

/** Rows M and size D of x [..., D]; throws naming `op` on bad shapes. */
function lnDims(op: string, x: Tensor, weight: Tensor, bias?: Tensor) {
  if (x.shape.length < 1 || x.size === 0) {
    throw new RangeError(`${op}: x must be [..., D] with D > 0, got [${x.shape}]`);
  }
  const D = x.shape[x.shape.length - 1];
  if (D > LAYERNORM_MAX_DIM) {
    throw new RangeError(`${op}: D = ${D} exceeds ${LAYERNORM_MAX_DIM} (the loop budget)`);
  }
  checkShape(op, "weight", weight, [D]);
  if (bias) checkShape(op, "bias", bias, [D]);
  return { M: x.size / D, D };
}

/** Result of {@link layerNormForward}. */
export interface LayerNormResult {
  /** The normalised output, x's shape. */
  y: Tensor;
  /** Per row (mean, 1/√(var + eps)): [M, 2], for the backward. */
  stats: Tensor;
}

/** Records y = (x - mean)/√(var + eps)·weight + bias over the last dim of x [..., D]. */
export function layerNormForward(
  gpu: GpuContext,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  eps = 1e-6,
): LayerNormResult {
  const op = "layerNorm";
  if (!(Number.isFinite(eps) && eps >= 0)) throw new RangeError(`${op}: bad eps ${eps}`);
  const { M, D } = lnDims(op, x, weight, bias);
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [M, 2]);
  dispatchPlanes(gpu, M, {
    name: op,
    shader: "layernorm",
    entry: "ln_fwd",
    inputs: [{ tensor: x, planeSize: D }],
    shared: [weight.binding(), bias.binding()],
    outputs: [{ tensor: y, planeSize: D }, { tensor: stats, planeSize: 2 }],
    itemsPerPlane: 1,
    grid: "flat",
    params: (ch) =>
      LayerNormParams.pack({
        D,
        rows: ch.count,
        xOff: ch.offsets[0],
        dOff: 0,
        sOff: ch.offsets[2],
        yOff: ch.offsets[1],
        eps,
        accW: 0,
        accB: 0,
      }),
  });
  return { y, stats };
}

/** Records dx of {@link layerNormForward} for upstream gradient dy (x's shape). */
export function layerNormGradInput(
  gpu: GpuContext,
  x: Tensor,
  dy: Tensor,
  weight: Tensor,
  stats: Tensor,
): Tensor {
  const op = "layerNormGradInput";
  const { M, D } = lnDims(op, x, weight);
  checkShape(op, "dy", dy, x.shape);
  checkShape(op, "stats", stats, [M, 2]);
  const dx = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, M, {
    name: op,
    shader: "layernorm",
    entry: "ln_bwd_x",
    inputs: [
      { tensor: x, planeSize: D },
      { tensor: dy, planeSize: D },
      { tensor: stats, planeSize: 2 },
    ],
    shared: [weight.binding()],
    outputs: [{ tensor: dx, planeSize: D }],
    itemsPerPlane: 1,
    grid: "flat",
    params: (ch) =>
      LayerNormParams.pack({
        D,
        rows: ch.count,
        xOff: ch.offsets[0],
        dOff: ch.offsets[1],
        sOff: ch.offsets[2],
        yOff: ch.offsets[3],
        eps: 0,
        accW: 0,
        accB: 0,
      }),
  });
  return dx;
}

/** Where {@link layerNormGradParams} writes one gradient (`accumulate`: add into `out`). */
export interface LayerNormGradOut {
  out: Tensor;
  accumulate: boolean;
}

/**
 * Records the weight and bias gradients of {@link layerNormForward}: dweight (+)= Σ_rows dy·x̂,
 * dbias (+)= Σ_rows dy, sums over the rows in order (chunks accumulated in order).
 */
export function layerNormGradParams(
  gpu: GpuContext,
  x: Tensor,
  dy: Tensor,
  stats: Tensor,
  out: { weight: LayerNormGradOut; bias: LayerNormGradOut },
): void {
  const op = "layerNormGradParams";
  const { M, D } = lnDims(op, x, out.weight.out, out.bias.out);
  checkShape(op, "dy", dy, x.shape);
  checkShape(op, "stats", stats, [M, 2]);
  if (out.weight.out.buffer === out.bias.out.buffer) {
    throw new RangeError(`${op}: the weight and bias gradients must be different tensors`);
  }
  const specs = [
    { tensor: x, planeSize: D },
    { tensor: dy, planeSize: D },
    { tensor: stats, planeSize: 2 },
  ];
  for (const ch of planeChunks(gpu, op, M, specs, ROWS_PER_PASS)) {
    gpu.dispatch({
      name: op,
      shader: "layernorm",
      entry: "ln_bwd_wb",
      constants: { WG: 64 },
      inputs: ch.ranges,
      outputs: [out.weight.out.binding(), out.bias.out.binding()],
      params: LayerNormParams.pack({
        D,
        rows: ch.count,
        xOff: ch.offsets[0],
        dOff: ch.offsets[1],
        sOff: ch.offsets[2],
        yOff: 0,
        eps: 0,
        accW: out.weight.accumulate || ch.index > 0 ? 1 : 0,
        accB: out.bias.accumulate || ch.index > 0 ? 1 : 0,
      }),
      workgroups: [Math.ceil(D / 64)],
    });
  }
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** CPU reference of {@link layerNormForward} over rows of D (M = x.length / D). */
export function layerNormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  D: number,
  eps = 1e-6,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; r++) {
    const { mean, rstd } = rowStats(x, r, D, eps);
    for (let d = 0; d < D; d++) {
      y[r * D + d] = (x[r * D + d] - mean) * rstd * weight[d] + bias[d];
    }
  }
  return y;
}

function rowStats(x: ArrayLike<number>, r: number, D: number, eps: number) {
  let s = 0;
  for (let d = 0; d < D; d++) s += x[r * D + d];
  const mean = s / D;
  let v = 0;
  for (let d = 0; d < D; d++) v += (x[r * D + d] - mean) ** 2;
  return { mean, rstd: 1 / Math.sqrt(v / D + eps) };
}

/** CPU reference of the backward of {@link layerNormForward}: dx, dweight, dbias. */
export function layerNormBackwardRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  dy: ArrayLike<number>,
  D: number,
  eps = 1e-6,
): { x: Float64Array; weight: Float64Array; bias: Float64Array } {
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(D);
  const db = new Float64Array(D);
  for (let r = 0; r < x.length / D; r++) {
    const { mean, rstd } = rowStats(x, r, D, eps);
    let sg = 0;
    let sgx = 0;
    for (let d = 0; d < D; d++) {
      const i = r * D + d;
      const xh = (x[i] - mean) * rstd;
      const g = dy[i] * weight[d];
      sg += g;
      sgx += g * xh;
      dw[d] += dy[i] * xh;
      db[d] += dy[i];
    }
    for (let d = 0; d < D; d++) {
      const i = r * D + d;
      const xh = (x[i] - mean) * rstd;
      dx[i] = rstd * (dy[i] * weight[d] - sg / D - xh * sgx / D);
    }
  }
  return { x: dx, weight: dw, bias: db };
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link layerNormUnit} case: x [...lead, D]. */
export interface LayerNormCase {
  lead: readonly number[];
  D: number;
  eps: number;
}

const lnCase = (lead: number[], D: number, eps = 1e-6, split = true): OpCase<LayerNormCase> => ({
  name: `[${lead}]x${D} eps=${eps}`,
  params: { lead, D, eps },
  split,
});

/**
 * Layer normalisation as an op unit. Cases: odd sizes, D = 1 (x̂ = 0), a larger eps, and rows
 * that the small binding cap splits; bench: DeiT-S tokens (8 x 197 x 384).
 */
export const layerNormUnit: OpUnit<LayerNormCase> = defineOpUnit<LayerNormCase>({
  name: "layernorm",
  description: "layer normalisation over the last dim (nn.LayerNorm), affine",
  bound: "memory",
  inputs: ["x", "weight", "bias"],
  outputs: ["y"],
  differentiable: ["x", "weight", "bias"],
  cases: [
    lnCase([3, 5], 7),
    lnCase([4], 1),
    lnCase([2, 13], 33, 1e-5),
    lnCase([70], 24),
    lnCase([5], 300),
  ],
  benchShapes: [lnCase([8, 197], 384)],
  tolerance: { forward: { atol: 2e-5, rtol: 1e-5 }, backward: { maxRel: 5e-5, atol: 1e-6 } },
  inputShapes: (p) => ({ x: [...p.lead, p.D], weight: [p.D], bias: [p.D] }),
  outputShapes: (p) => ({ y: [...p.lead, p.D] }),
  makeInputs: (p, seed) => {
    const x = uniformValues(sizeOf(p.lead) * p.D, seed, -2, 2);
    // A per-row offset, so that the mean matters.
    for (let i = 0; i < x.length; i++) x[i] += (Math.floor(i / p.D) % 5) - 2;
    return {
      x,
      weight: uniformValues(p.D, seed + 1, 0.5, 1.5),
      bias: uniformValues(p.D, seed + 2),
    };
  },
  refForward: (p, x) => ({ y: layerNormRef(x.x, x.weight, x.bias, p.D, p.eps) }),
  refBackward: (p, x, d) => layerNormBackwardRef(x.x, x.weight, d.y, p.D, p.eps),
  cost: (p) => {
    const s = [...p.lead, p.D];
    return {
      forward: { flops: 8 * sizeOf(s), bytes: bytesOf(s, s) },
      backward: { flops: 14 * sizeOf(s), bytes: bytesOf(s, s, s, s, s) },
    };
  },
  gpu: {
    name: "per-row kernel",
    forward: (gpu, p, { tensors: t }) => {
      const { y, stats } = layerNormForward(gpu, t.x, t.weight, t.bias, p.eps);
      stats.dispose();
      return { y };
    },
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const { y, stats } = layerNormForward(gpu, t.x, t.weight, t.bias, p.eps);
      y.dispose();
      const dy = asShape(d.y, t.x.shape);
      const dx = layerNormGradInput(gpu, t.x, dy, t.weight, stats);
      const weight = Tensor.empty(gpu, [p.D]);
      const bias = Tensor.empty(gpu, [p.D]);
      layerNormGradParams(gpu, t.x, dy, stats, {
        weight: { out: weight, accumulate: false },
        bias: { out: bias, accumulate: false },
      });
      stats.dispose();
      return { x: dx, weight, bias };
    },
  },
});
