/**
 * Pixel-wise softmax cross-entropy with ignore index 255, the segmenter's loss: PyTorch's
 * `F.cross_entropy(logits, target, ignore_index=255, reduction="mean")`, the mean over the
 * non-ignored pixels of `log Σ_k exp(x_k) - x_y`. When every pixel is ignored the loss is
 * defined as 0 with a zero gradient (PyTorch would give NaN). Kernels: `shaders/seg_loss.wgsl`.
 *
 * Labels are integer data stored as an f32 tensor (the project's convention for integer data
 * on the GPU, as argmax indices and psa's pair codes): values 0..K-1, or 255. Any other value is
 * an error: {@link checkSegLabels} reports it from host data (where the labels come from);
 * the kernels never use such a value as an index (they treat the pixel as ignored and count it
 * in the statistics, {@link SegCeResult.stats}).
 *
 * The reductions are fixed-order (no float atomics): a per-pixel pass writes (nll, valid,
 * invalid) triples, then one workgroup per binding-sized chunk of triples sums them in a fixed
 * order onto the previous chunks' totals. One image's K·H·W logits must fit a storage binding
 * (21 classes at 513x513 is 22 MB).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { alignElements } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, elementChunks, nchw } from "../ops/planes.ts";
import {
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  sizeOf,
  uniformValues,
} from "../ops/unit.ts";
import { Rng } from "../rng.ts";

/** The label value that marks an ignored pixel. */
export const IGNORE_LABEL = 255;

/**
 * The uniform block of shaders/seg_loss.wgsl: classes K, pixels per image HW, element offsets
 * of the chunk's first image in the logits / labels / output bindings, triples of a reduce
 * chunk, accumulate onto earlier chunks, last chunk.
 */
const { SegCeParams } = declareParams("seg_loss", {
  SegCeParams: {
    K: "u32",
    HW: "u32",
    xoff: "u32",
    loff: "u32",
    ooff: "u32",
    n: "u32",
    accumulate: "u32",
    last: "u32",
  },
});

/** Result of {@link softmaxCrossEntropyLoss}. */
export interface SegCeResult {
  /** [1]: the mean loss over valid pixels (0 when there is none). */
  loss: Tensor;
  /**
   * [3]: Σ nll over valid pixels, the valid-pixel count V, the count of invalid labels (values
   * other than 0..K-1 and 255; 0 for good data). The backward reads V from here.
   */
  stats: Tensor;
}

function check(op: string, logits: Tensor, labels: Tensor): [number, number, number] {
  const [b, k, h, w] = nchw(op, logits);
  if (labels.shape.length === 4) checkShape(op, "labels", labels, [b, 1, h, w]);
  else checkShape(op, "labels", labels, [b, h, w]);
  // Counts are exact integers in f32 sums up to 2^24.
  if (b * h * w > 1 << 24) {
    throw new RangeError(`${op}: ${b * h * w} pixels exceed the 2^24 the f32 counts hold exactly`);
  }
  return [b, k, h * w];
}

/**
 * Throws a RangeError naming `op` when a host label array holds a value other than an integer
 * in [0, numClasses) or {@link IGNORE_LABEL} (the cheap check of labels before upload).
 */
export function checkSegLabels(
  labels: ArrayLike<number>,
  numClasses: number,
  op = "softmax_cross_entropy",
): void {
  if (!(Number.isInteger(numClasses) && numClasses >= 1)) {
    throw new RangeError(`${op}: bad class count ${numClasses}`);
  }
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i];
    if (v !== IGNORE_LABEL && !(Number.isInteger(v) && v >= 0 && v < numClasses)) {
      throw new RangeError(
        `${op}: label ${v} at index ${i} is neither a class 0..${
          numClasses - 1
        } nor the ignore index ${IGNORE_LABEL}`,
      );
    }
  }
}

/**
 * Records the loss of `logits` [B, K, H, W] against `labels` [B, H, W] or [B, 1, H, W] (f32
 * class indices, 255 = ignored): the mean over valid pixels of `log Σ_k exp(x_k) - x_y` (0 when
 * none is valid). Returns the loss and the statistics the backward needs; nothing is read back.
 */
export function softmaxCrossEntropyLoss(
  gpu: GpuContext,
  logits: Tensor,
  labels: Tensor,
): SegCeResult {
  const op = "softmax_cross_entropy.forward";
  const [b, K, HW] = check(op, logits, labels);
  const scratch = Tensor.empty(gpu, [b * HW, 3]);
  dispatchPlanes(gpu, b, {
    name: `${op}.pixel`,
    shader: "seg_loss",
    entry: "ce_pixel",
    inputs: [{ tensor: logits, planeSize: K * HW }, { tensor: labels, planeSize: HW }],
    outputs: [{ tensor: scratch, planeSize: 3 * HW }],
    itemsPerPlane: HW,
    params: (ch) =>
      SegCeParams.pack({
        K,
        HW,
        xoff: ch.offsets[0],
        loff: ch.offsets[1],
        ooff: ch.offsets[2],
        n: 0,
        accumulate: 0,
        last: 0,
      }),
  });
  const stats = Tensor.empty(gpu, [3]);
  const loss = Tensor.empty(gpu, [1]);
  const chunks = elementChunks(gpu, 3 * b * HW, { align: 3 * alignElements(gpu) });
  chunks.forEach((c, i) => {
    gpu.dispatch({
      name: `${op}.reduce`,
      shader: "seg_loss",
      entry: "ce_reduce",
      inputs: [scratch.slice(c.start, c.count)],
      outputs: [stats, loss],
      params: SegCeParams.pack({
        K,
        HW,
        xoff: 0,
        loff: 0,
        ooff: 0,
        n: c.count / 3,
        accumulate: i > 0 ? 1 : 0,
        last: i === chunks.length - 1 ? 1 : 0,
      }),
      workgroups: [1],
    });
  });
  scratch.dispose();
  return { loss, stats };
}

/**
 * Records the gradient of {@link softmaxCrossEntropyLoss} with respect to the logits for the
 * upstream gradient `dy` (a [1] device tensor), with V from its `stats`:
 * dx = dy/V·(softmax(x) - onehot(y)) on valid pixels, 0 on ignored ones (0 everywhere if V = 0).
 */
export function softmaxCrossEntropyBackward(
  gpu: GpuContext,
  logits: Tensor,
  labels: Tensor,
  stats: Tensor,
  dy: Tensor,
): Tensor {
  const op = "softmax_cross_entropy.backward";
  const [b, K, HW] = check(op, logits, labels);
  if (stats.size !== 3) {
    throw new RangeError(`${op}: stats must hold 3 values, got [${stats.shape}]`);
  }
  if (dy.size !== 1) throw new RangeError(`${op}: dy must hold 1 value, got [${dy.shape}]`);
  const dx = Tensor.empty(gpu, logits.shape);
  dispatchPlanes(gpu, b, {
    name: op,
    shader: "seg_loss",
    entry: "ce_bwd",
    inputs: [{ tensor: logits, planeSize: K * HW }, { tensor: labels, planeSize: HW }],
    shared: [stats, dy],
    outputs: [{ tensor: dx, planeSize: K * HW }],
    itemsPerPlane: HW,
    params: (ch) =>
      SegCeParams.pack({
        K,
        HW,
        xoff: ch.offsets[0],
        loff: ch.offsets[1],
        ooff: ch.offsets[2],
        n: 0,
        accumulate: 0,
        last: 0,
      }),
  });
  return dx;
}

/**
 * CPU reference (f64) of {@link softmaxCrossEntropyLoss} and its gradient for logits of
 * `shape` [B, K, H, W] and labels [B, H, W] (checked with {@link checkSegLabels}):
 * L = 1/V Σ_valid (log Σ_k exp(x_k) - x_y), dL/dx = (softmax(x) - onehot(y))/V on valid
 * pixels, 0 elsewhere; L = 0 and a zero gradient when V = 0.
 */
export function softmaxCrossEntropyRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  shape: readonly number[],
): { loss: number; grad: Float64Array; valid: number } {
  const op = "softmaxCrossEntropyRef";
  if (shape.length !== 4) throw new RangeError(`${op}: expected [B, K, H, W], got [${shape}]`);
  const [b, K, h, w] = shape;
  const hw = h * w;
  if (logits.length !== b * K * hw || labels.length !== b * hw) {
    throw new RangeError(`${op}: ${logits.length} logits, ${labels.length} labels for [${shape}]`);
  }
  checkSegLabels(labels, K, op);
  const grad = new Float64Array(logits.length);
  let sum = 0;
  let valid = 0;
  const e = new Float64Array(K);
  for (let n = 0; n < b; n++) {
    for (let p = 0; p < hw; p++) {
      const y = labels[n * hw + p];
      if (y === IGNORE_LABEL) continue;
      const at = (k: number) => (n * K + k) * hw + p;
      let m = -Infinity;
      for (let k = 0; k < K; k++) m = Math.max(m, logits[at(k)]);
      let z = 0;
      for (let k = 0; k < K; k++) z += e[k] = Math.exp(logits[at(k)] - m);
      sum += Math.log(z) + m - logits[at(y)];
      valid++;
      for (let k = 0; k < K; k++) grad[at(k)] = e[k] / z - (k === y ? 1 : 0);
    }
  }
  if (valid > 0) { for (let i = 0; i < grad.length; i++) grad[i] /= valid; }
  return { loss: valid > 0 ? sum / valid : 0, grad, valid };
}

/** Parameters of a {@link segCrossEntropyUnit} case: logits [B, K, H, W]. */
export interface SegCeCase {
  shape: readonly [number, number, number, number];
  /** Fraction of pixels labelled 255 (1: all ignored). */
  ignored: number;
  /** Labels as [B, 1, H, W] rather than [B, H, W]. */
  channelDim?: boolean;
}

const ceCase = (
  shape: [number, number, number, number],
  ignored: number,
  split = true,
  channelDim = false,
): OpCase<SegCeCase> => ({
  name: `${shape.join("x")} ignored ${ignored}${channelDim ? " [B,1,H,W]" : ""}`,
  params: { shape, ignored, channelDim },
  split,
});

/** Seeded labels: classes 0..K-1 with a fraction `ignored` of 255. */
export function segLabels(p: SegCeCase, seed: number): Float32Array {
  const [b, K, h, w] = p.shape;
  const r = new Rng(seed);
  return Float32Array.from(
    { length: b * h * w },
    () => (r.next() < p.ignored ? IGNORE_LABEL : r.int(K)),
  );
}

/**
 * The segmentation cross-entropy as an op unit: ignored pixels, all ignored, K = 2 and 21,
 * non-square images, labels with and without the channel dimension; the small ones split over
 * images and reduce chunks on the generic test's small-binding context.
 */
export const segCrossEntropyUnit: OpUnit<SegCeCase> = defineOpUnit<SegCeCase>({
  name: "softmax_cross_entropy",
  description: "pixel-wise softmax cross-entropy, ignore index 255, mean over valid pixels",
  bound: "memory",
  inputs: ["logits", "labels"],
  outputs: ["loss"],
  differentiable: ["logits"],
  cases: [
    ceCase([2, 3, 5, 7], 0.2),
    ceCase([5, 2, 8, 9], 0.3),
    ceCase([2, 21, 3, 5], 0.25, true, true),
    ceCase([3, 4, 6, 4], 1),
    ceCase([1, 2, 4, 6], 0),
    ceCase([1, 21, 17, 23], 0.1, false),
    ceCase([2, 2, 70, 61], 0.5, false),
  ],
  benchShapes: [ceCase([10, 21, 321, 321], 0.1)],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-5, atol: 1e-7 } },
  inputShapes: (p) => {
    const [b, , h, w] = p.shape;
    return { logits: [...p.shape], labels: p.channelDim ? [b, 1, h, w] : [b, h, w] };
  },
  outputShapes: () => ({ loss: [1] }),
  makeInputs: (p, seed) => ({
    logits: uniformValues(sizeOf(p.shape), seed, -4, 4),
    labels: segLabels(p, seed + 1),
  }),
  refForward: (p, x) => ({
    loss: Float64Array.of(softmaxCrossEntropyRef(x.logits, x.labels, p.shape).loss),
  }),
  refBackward: (p, x, d) => ({
    logits: softmaxCrossEntropyRef(x.logits, x.labels, p.shape).grad.map((g) => g * d.loss[0]),
  }),
  cost: (p) => {
    const [b, , h, w] = p.shape;
    return {
      forward: { flops: 4 * sizeOf(p.shape), bytes: bytesOf(p.shape, [b, h, w], [3 * b * h * w]) },
      backward: { flops: 6 * sizeOf(p.shape), bytes: bytesOf(p.shape, p.shape, [b, h, w]) },
    };
  },
  gpu: {
    name: "per-pixel kernel + fixed-order reduction",
    forward: (gpu, p, { tensors: t, host }) => {
      checkSegLabels(host.labels, p.shape[1]);
      const { loss, stats } = softmaxCrossEntropyLoss(gpu, t.logits, t.labels);
      stats.dispose();
      return { loss };
    },
    backward: (gpu, p, { tensors: t, host }, dy) => {
      checkSegLabels(host.labels, p.shape[1]);
      const { loss, stats } = softmaxCrossEntropyLoss(gpu, t.logits, t.labels);
      const dx = softmaxCrossEntropyBackward(gpu, t.logits, t.labels, stats, dy.tensors.loss);
      loss.dispose();
      stats.dispose();
      return { logits: dx };
    },
  },
});
