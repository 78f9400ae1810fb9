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
