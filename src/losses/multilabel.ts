/**
 * Multilabel soft-margin classification loss, PyTorch's `MultiLabelSoftMarginLoss`
 * (reduction "mean", no class weights): the mean over classes of the binary cross-entropy
 * with logits, then the mean over the batch. Kernels: `shaders/loss.wgsl`.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, elementChunks, planeChunks } from "../ops/planes.ts";
import { defineOpUnit, type OpCase, type OpUnit, uniformValues } from "../ops/unit.ts";
import { Rng } from "../rng.ts";

/**
 * The uniform block of shaders/loss.wgsl: n values, element offsets of the logits and targets
 * in their bindings (mlsm_fwd), accumulate onto earlier chunks, scale.
 */
const { MlsmParams } = declareParams("loss", {
  MlsmParams: { n: "u32", xoff: "u32", toff: "u32", accumulate: "u32", scale: "f32" },
});

function check(op: string, logits: Tensor, targets: Tensor): [number, number] {
  if (logits.shape.length !== 2) {
    throw new RangeError(`${op}: logits must be [N, C], got [${logits.shape}]`);
  }
  checkShape(op, "targets", targets, logits.shape);
  return [logits.shape[0], logits.shape[1]];
}

/**
 * Records the loss of `logits` [N, C] against `targets` [N, C] (1 = tagged, 0 = not; values
 * in between act as soft targets by the same formula):
 * L = -1/(N·C) Σ [t·logσ(x) + (1-t)·logσ(-x)]. Returns a 1-element tensor; nothing is read
 * back.
 */
export function multilabelSoftMarginLoss(
  gpu: GpuContext,
  logits: Tensor,
  targets: Tensor,
): Tensor {
  const op = "multilabel_soft_margin.forward";
  const [n, c] = check(op, logits, targets);
  const loss = Tensor.empty(gpu, [1]);
  const chunks = planeChunks(gpu, op, n, [
    { tensor: logits, planeSize: c },
    { tensor: targets, planeSize: c },
  ]);
  for (const ch of chunks) {
    gpu.dispatch({
      name: op,
      shader: "loss",
      entry: "mlsm_fwd",
      inputs: [ch.ranges[0], ch.ranges[1]],
      outputs: [loss],
      params: MlsmParams.pack({
        n: ch.count * c,
        xoff: ch.offsets[0],
        toff: ch.offsets[1],
        accumulate: ch.index > 0 ? 1 : 0,
        scale: 1 / (n * c),
      }),
      workgroups: [1],
    });
  }
  return loss;
}

/**
 * Records the gradient of {@link multilabelSoftMarginLoss} with respect to the logits,
 * times `scale` (the upstream gradient, default 1): dx = scale·(σ(x) - t)/(N·C).
 */
export function multilabelSoftMarginLossBackward(
  gpu: GpuContext,
  logits: Tensor,
  targets: Tensor,
  scale = 1,
): Tensor {
  const op = "multilabel_soft_margin.backward";
  const [n, c] = check(op, logits, targets);
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: bad scale ${scale}`);
  const dx = Tensor.empty(gpu, logits.shape);
  for (const { start, count } of elementChunks(gpu, n * c)) {
    gpu.dispatch1d({
      name: op,
      shader: "loss",
      entry: "mlsm_bwd",
      inputs: [logits.slice(start, count), targets.slice(start, count)],
      outputs: [dx.slice(start, count)],
      params: MlsmParams.pack({
        n: count,
        xoff: 0,
        toff: 0,
        accumulate: 0,
        scale: scale / (n * c),
      }),
    }, count);
  }
  return dx;
}

/**
 * CPU reference of {@link multilabelSoftMarginLoss} and its gradient (f64):
 * L = -1/(N·C) Σ [t·logσ(x) + (1-t)·logσ(-x)] (the mean over classes, then over the batch),
 * dL/dx = (σ(x) - t)/(N·C).
 */
export function multilabelSoftMarginLossRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
): { loss: number; grad: Float64Array } {
  if (logits.length !== targets.length) {
    throw new RangeError(
      `multilabelSoftMarginLossRef: ${logits.length} logits, ${targets.length} targets`,
    );
  }
  const m = logits.length;
  const logSig = (v: number) => Math.min(v, 0) - Math.log1p(Math.exp(-Math.abs(v)));
  let loss = 0;
  const grad = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    const x = logits[i];
    const t = targets[i];
    loss -= t * logSig(x) + (1 - t) * logSig(-x);
    grad[i] = (1 / (1 + Math.exp(-x)) - t) / m;
  }
  return { loss: loss / m, grad };
}

/** Parameters of a {@link multilabelUnit} case: logits [n, c]. */
export interface MultilabelCase {
  n: number;
  c: number;
}

const mlCase = (n: number, c: number, split = true): OpCase<MultilabelCase> => ({
  name: `${n}x${c}`,
  params: { n, c },
  split,
});

/** The multilabel soft-margin loss as an op unit (0/1 targets, 30% tagged). */
export const multilabelUnit: OpUnit<MultilabelCase> = defineOpUnit<MultilabelCase>({
  name: "multilabel_soft_margin",
  description: "MultiLabelSoftMarginLoss (mean reduction) of logits [N, C]",
  bound: "memory",
  inputs: ["logits", "targets"],
  outputs: ["loss"],
  differentiable: ["logits"],
  // 40x21: several chunks of rows on the generic test's small-binding context.
  cases: [mlCase(3, 20), mlCase(7, 13), mlCase(1, 1), mlCase(16, 80, false), mlCase(40, 21)],
  benchShapes: [mlCase(256, 1000)],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ logits: [p.n, p.c], targets: [p.n, p.c] }),
  outputShapes: () => ({ loss: [1] }),
  makeInputs: (p, seed) => {
    const r = new Rng(seed + 1);
    return {
      logits: uniformValues(p.n * p.c, seed, -6, 6),
      targets: Float32Array.from({ length: p.n * p.c }, () => (r.next() < 0.3 ? 1 : 0)),
    };
  },
  refForward: (_p, x) => ({
    loss: Float64Array.of(multilabelSoftMarginLossRef(x.logits, x.targets).loss),
  }),
  refBackward: (_p, x, d) => ({
    logits: multilabelSoftMarginLossRef(x.logits, x.targets).grad.map((g) => g * d.loss[0]),
  }),
  cost: (p) => ({
    forward: { flops: 6 * p.n * p.c, bytes: 8 * p.n * p.c + 4 },
    backward: { flops: 4 * p.n * p.c, bytes: 12 * p.n * p.c },
  }),
  gpu: {
    name: "row reduction",
    forward: (gpu, _p, { tensors: t }) => ({
      loss: multilabelSoftMarginLoss(gpu, t.logits, t.targets),
    }),
    backward: (gpu, _p, { tensors: t }, dy) => ({
      logits: multilabelSoftMarginLossBackward(gpu, t.logits, t.targets, dy.host.loss[0]),
    }),
  },
});
