/**
 * The multi-scale + flip CAMs of one image, all on the GPU in one recording (psa/SEAM's
 * inference): the image and (with `flip`) its mirror image as a batch of two; per scale s the
 * pair bilinearly resized to round(s·H) × round(s·W) (align_corners=false); a forward pass in
 * eval mode (batchnorm running statistics); the class maps ReLU'd, bilinearly resized to
 * H × W, the flipped image's maps mirrored back, everything summed into one [C, H, W] map per
 * class ({@link accumulateCam}). These are the **unrestricted** fused CAMs (all C classes, not
 * normalised), what the OC-error rate is measured on; {@link normalizeTagged} and the
 * pseudo-mask rule (./pseudo_mask.ts) turn them into pseudo masks.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { CamOutputs } from "../models/cam_net.ts";
import { resizeBilinear } from "../ops/resize.ts";
import { accumulateCam, flipHorizontal } from "./fuse.ts";

/**
 * What CAM inference needs of a model: its class count and an inference forward giving the C
 * class maps (the CAM classifier; SEAM's network through its CAM view).
 */
export interface CamModel {
  /** `numClasses`: the C maps the forward returns. */
  readonly options: { readonly numClasses: number };
  /** Inference forward (tape null): class maps [B, C, h, w] and image logits [B, C]. */
  forward(x: Tensor, tape: null): CamOutputs;
  /** Frees the model's tensors. */
  dispose(): void;
}

/** The default CAM inference scales (psa/SEAM). */
export const DEFAULT_SCALES: readonly number[] = [0.5, 1, 1.5, 2];

/** Options of {@link recordImageCams}. */
export interface ImageCamOptions {
  /** Scales relative to the image size (default 0.5, 1, 1.5, 2). */
  scales?: readonly number[];
  /** Also run the horizontally flipped image (default true). */
  flip?: boolean;
  /** Size [H, W] of the fused maps (default: the image's). */
  size?: readonly [number, number];
}

/** Checks inference scales. */
function checkScales(scales: readonly number[]): void {
  if (scales.length === 0) throw new RangeError("at least one CAM scale");
  for (const s of scales) {
    if (!(Number.isFinite(s) && s > 0)) throw new RangeError(`bad CAM scale ${s}`);
  }
}

/**
 * Records the multi-scale (+ flip) fusion of one image `x` [1, 3, H, W] (normalised) that CAM
 * inference and the segmenter's inference share: the image and (with `flip`) its mirror image
 * as a batch of two, per scale resized, `mapsOf` of that batch (new [2 or 1, C, h, w] maps,
 * non-negative after the accumulator's ReLU), resized to `size` (default H×W), the mirrored
 * image's maps mirrored back, all summed into a new [C, H', W'] tensor.
 */
export function recordFusedMaps(
  gpu: GpuContext,
  x: Tensor,
  channels: number,
  opts: ImageCamOptions,
  mapsOf: (xs: Tensor) => Tensor,
  op = "recordFusedMaps",
): Tensor {
  if (x.shape.length !== 4 || x.shape[0] !== 1 || x.shape[1] !== 3) {
    throw new RangeError(`${op}: image must be [1, 3, H, W], got [${x.shape}]`);
  }
  const scales = opts.scales ?? DEFAULT_SCALES;
  checkScales(scales);
  const flip = opts.flip ?? true;
  const [, , H, W] = x.shape;
  const [oh, ow] = opts.size ?? [H, W];
  let pair = x;
  if (flip) {
    pair = Tensor.empty(gpu, [2, 3, H, W]);
    gpu.encoder().copyBufferToBuffer(x.buffer, 0, pair.buffer, 0, x.bytes);
    flipHorizontal(gpu, x, { out: pair, outOffset: x.size });
  }
  const acc = Tensor.empty(gpu, [channels, oh, ow]);
  scales.forEach((s, i) => {
    const sh = Math.max(1, Math.round(H * s));
    const sw = Math.max(1, Math.round(W * s));
    const xs = sh === H && sw === W ? pair : resizeBilinear(gpu, pair, { size: [sh, sw] });
    const maps = mapsOf(xs);
    if (xs !== pair) xs.dispose();
    accumulateCam(gpu, maps, acc, { index: 0, add: i > 0 });
    if (flip) accumulateCam(gpu, maps, acc, { index: 1, add: true, mirror: true });
    maps.dispose();
  });
  if (pair !== x) pair.dispose();
  return acc;
}

/**
 * Records the multi-scale (+ flip) fused CAMs of one image `x` [1, 3, H, W] (normalised):
 * returns a new [C, H', W'] tensor (H'×W' = `size`, default H×W) holding, per class, the sum
 * over scales (and the flipped image) of the ReLU'd class maps resized to H'×W'. Nothing is
 * submitted; read or evaluate the result after recording.
 */
export function recordImageCams(
  gpu: GpuContext,
  model: CamModel,
  x: Tensor,
  opts: ImageCamOptions = {},
): Tensor {
  return recordFusedMaps(gpu, x, model.options.numClasses, opts, (xs) => {
    const { cam, logits } = model.forward(xs, null);
    logits.dispose();
    return cam;
  }, "recordImageCams");
}
