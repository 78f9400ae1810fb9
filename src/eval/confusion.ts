/**
 * Confusion matrix and OC-error counts of predicted label maps (docs/evaluation.md), on the GPU with
 * atomics (shaders/eval.wgsl `confusion`) and as a plain TypeScript reference.
 *
 * Conventions: C foreground classes, K = C + 1 with index 0 = background. Label maps are u8,
 * row-major H×W; ground truth holds 0..C or 255 (ignore), predictions 0..C. On the GPU they
 * are packed 4 pixels per u32 word (pixel i = byte i of the buffer). The matrix has rows =
 * ground truth, columns = prediction; ground-truth ignore pixels are kept in an extra row K
 * so that the OC-error rate (which needs no ground truth) counts every predicted pixel.
 *
 * OC-error rate of predicted masks: among pixels predicted foreground, the fraction whose
 * class is not in the image's tags; `ocPairs` counts those pixels by (ground-truth row,
 * predicted OC class).
 * @module
 */
import type { BufferRange, GpuContext } from "../gpu/context.ts";
import {
  checkNumClasses,
  GpuCounters,
  MaskParams,
  pixelChunks,
  tagWords,
  u8Range,
} from "./counters.ts";

/** A u8 label map (the shape `decodeLabelPng` returns). */
export interface LabelMap {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** One label per pixel, row-major, width·height bytes. */
  data: Uint8Array;
}

/** One image to score. */
export interface MaskSample {
  /** Image id (named in errors). */
  id: string;
  /** Ground truth: 0..C, 255 = ignore. */
  gt: LabelMap;
  /** Prediction: 0..C; must have the ground truth's size. */
  pred: LabelMap;
  /** The image's tags (0-based foreground classes; empty when it has none). */
  tags: readonly number[];
}

/** Accumulated counts of a mask evaluation (all exact integers stored as f64). */
export interface MaskCounts {
  /** C. */
  numClasses: number;
  /** Images added. */
  nImages: number;
  /** K×K, rows = ground truth, cols = prediction (ignore pixels excluded). */
  confusion: Float64Array;
  /** (K+1)×K: predictions on ground-truth ignore pixels are row K. */
  extended: Float64Array;
  /** (K+1)×K: OC pixels by ground-truth row (K = ignore) and predicted class. */
  ocPairs: Float64Array;
  /** Pixels predicted foreground: the OC rate's denominator. */
  fgPixels: number;
  /** Pixels predicted as a class not among the image's tags. */
  ocPixels: number;
}

/** Throws unless a label map has `width*height` bytes. */
function checkMap(m: LabelMap, what: string, id: string): void {
  if (
    !Number.isInteger(m.width) || !Number.isInteger(m.height) || m.width < 1 || m.height < 1
  ) {
    throw new RangeError(`${id}: ${what} has bad size ${m.width}x${m.height}`);
  }
  if (m.data.length !== m.width * m.height) {
    throw new RangeError(
      `${id}: ${what} has ${m.data.length} values for ${m.width}x${m.height}`,
    );
  }
}

/**
 * Validates a sample: sizes agree (an error naming the id and both sizes otherwise), ground
 * truth in 0..C or 255, predictions in 0..C, tags in range.
 */
export function validateMaskSample(s: MaskSample, numClasses: number): void {
  checkMap(s.gt, "ground truth", s.id);
  checkMap(s.pred, "prediction", s.id);
  if (s.gt.width !== s.pred.width || s.gt.height !== s.pred.height) {
    throw new RangeError(
      `${s.id}: prediction is ${s.pred.width}x${s.pred.height} but the ground truth is ` +
        `${s.gt.width}x${s.gt.height} (predictions are not resized)`,
    );
  }
  checkLabels(s.gt.data, numClasses, true, `${s.id}: ground truth`, s.gt.width);
  checkLabels(s.pred.data, numClasses, false, `${s.id}: prediction`, s.pred.width);
  tagWords(s.tags, numClasses, `${s.id}: tags`);
}

/**
 * Throws naming the first pixel whose label is outside 0..C (or 255 when allowed). Scans four
 * labels at a time (a word whose bytes are all ≤ C passes with one test), so validation costs
 * little beside the GPU work.
 */
export function checkLabels(
  data: Uint8Array,
  numClasses: number,
  allowIgnore: boolean,
  what: string,
  width: number,
): void {
  const bad = (i: number) => data[i] > numClasses && !(allowIgnore && data[i] === 255);
  let start = 0;
  if (numClasses < 128 && data.byteOffset % 4 === 0) {
    // SWAR: byte b > C  <=>  b >= 128 or (b + 127 - C) >= 128.
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length >> 2);
    const add = (127 - numClasses) * 0x01010101;
    for (let w = 0; w < words.length; w++) {
      const v = words[w];
      if ((((v + add) | v) & 0x80808080) !== 0) {
        for (let i = 4 * w; i < 4 * w + 4; i++) if (bad(i)) fail(i);
      }
    }
    start = words.length * 4;
  }
  for (let i = start; i < data.length; i++) if (bad(i)) fail(i);

  function fail(i: number): never {
    throw new RangeError(
      `${what}: label ${data[i]} at (x ${i % width}, y ${Math.floor(i / width)}) is out of ` +
        `range 0..${numClasses}${allowIgnore ? " or 255" : ""}`,
    );
  }
}

/** Empty counts for C classes. */
export function emptyMaskCounts(numClasses: number): MaskCounts {
  checkNumClasses(numClasses);
  const k = numClasses + 1;
  return {
    numClasses,
    nImages: 0,
    confusion: new Float64Array(k * k),
    extended: new Float64Array((k + 1) * k),
    ocPairs: new Float64Array((k + 1) * k),
    fgPixels: 0,
    ocPixels: 0,
  };
}

/** Fills the derived fields (confusion, fgPixels, ocPixels) from `extended` and `ocPairs`. */
function deriveMaskCounts(c: MaskCounts): MaskCounts {
  const k = c.numClasses + 1;
  c.confusion = c.extended.slice(0, k * k);
  let fg = 0;
  for (let g = 0; g <= k; g++) for (let p = 1; p < k; p++) fg += c.extended[g * k + p];
  c.fgPixels = fg;
  c.ocPixels = c.ocPairs.reduce((a, b) => a + b, 0);
  return c;
}

/**
 * TypeScript reference: adds one sample to `counts` (validating it like the GPU path).
 */
export function accumulateMaskCounts(counts: MaskCounts, s: MaskSample): void {
  const C = counts.numClasses;
  validateMaskSample(s, C);
  const k = C + 1;
  const tagged = new Uint8Array(k);
  for (const t of s.tags) tagged[t + 1] = 1;
  const gt = s.gt.data;
  const pred = s.pred.data;
  for (let i = 0; i < gt.length; i++) {
    const g = gt[i] === 255 ? k : gt[i];
    const p = pred[i];
    counts.extended[g * k + p]++;
    if (p > 0 && !tagged[p]) counts.ocPairs[g * k + p]++;
  }
  counts.nImages++;
  deriveMaskCounts(counts);
}

/** Options of {@link MaskEvaluator}. */
export interface MaskEvaluatorOptions {
  /** Pixels per invocation (multiple of 4, default 64). */
  pixelsPerInvocation?: number;
  /** Drain the u32 counters before this many pixels accumulate (tests lower it). */
  drainPixels?: number;
}

/**
 * GPU accumulator of {@link MaskCounts}: `add` records an upload and a dispatch per image (no
 * readback); `result` reads the counts once.
 */
export class MaskEvaluator {
  /** Labels counted: numClasses + 1 (background). */
  readonly k: number;
  /** Pixels per invocation of the counting kernel (a multiple of 4). */
  readonly per: number;
  #counters: GpuCounters;
  #nImages = 0;

  /** Allocates the counters for `numClasses` foreground classes; throws RangeError on bad opts. */
  constructor(
    readonly gpu: GpuContext,
    readonly numClasses: number,
    opts: MaskEvaluatorOptions = {},
  ) {
    checkNumClasses(numClasses);
    this.k = numClasses + 1;
    this.per = opts.pixelsPerInvocation ?? 64;
    if (!Number.isInteger(this.per) || this.per < 4 || this.per % 4) {
      throw new RangeError(`pixelsPerInvocation must be a positive multiple of 4, got ${this.per}`);
    }
    this.#counters = new GpuCounters(gpu, 2 * (this.k + 1) * this.k, opts.drainPixels);
  }

  /** Validates, uploads and counts one sample. */
  async add(s: MaskSample): Promise<void> {
    validateMaskSample(s, this.numClasses);
    const n = s.gt.data.length;
    const bytes = Math.ceil(n / 4) * 4;
    const pool = this.gpu.pool;
    const pred = pool.acquire(bytes, "eval-pred");
    const gt = pool.acquire(bytes, "eval-gt");
    try {
      this.gpu.upload(pred, s.pred.data);
      this.gpu.upload(gt, s.gt.data);
      await this.addPacked(s.id, n, { buffer: pred }, { buffer: gt }, s.tags);
    } finally {
      // Whoever reuses these buffers next records an ordered copy (gpu.upload) or dispatch,
      // which runs after this one.
      pool.release(pred);
      pool.release(gt);
    }
  }

  /**
   * Counts `n` pixels of GPU-resident packed u8 maps (starting at each range's offset, which
   * must be a multiple of `minStorageBufferOffsetAlignment`). Values are not checked here:
   * predictions must be 0..C and ground truth 0..C or 255 (use {@link add} for untrusted
   * data).
   */
  async addPacked(
    id: string,
    n: number,
    pred: BufferRange,
    gt: BufferRange,
    tags: readonly number[],
  ): Promise<void> {
    const tw = tagWords(tags, this.numClasses, `${id}: tags`);
    for (const [start, count] of pixelChunks(this.gpu, n, 1, this.#counters.drainPixels)) {
      await this.#counters.reserve(count);
      this.gpu.dispatch1d(
        {
          name: `eval.confusion(${id})`,
          shader: "eval",
          entry: "confusion",
          inputs: [
            u8Range(pred.buffer, (pred.offset ?? 0) + start, count),
            u8Range(gt.buffer, (gt.offset ?? 0) + start, count),
          ],
          outputs: [this.#counters.binding()],
          params: MaskParams.pack({
            n: count,
            k: this.k,
            per: this.per,
            tag_lo: tw.slice(0, 4),
            tag_hi: tw.slice(4, 8),
          }),
        },
        Math.ceil(count / this.per),
        64,
      );
    }
    this.#nImages++;
  }

  /** The counts so far (one readback). */
  async result(): Promise<MaskCounts> {
    const k = this.k;
    const all = await this.#counters.read();
    const c = emptyMaskCounts(this.numClasses);
    c.extended = all.slice(0, (k + 1) * k);
    c.ocPairs = all.slice((k + 1) * k);
    c.nImages = this.#nImages;
    return deriveMaskCounts(c);
  }

  /** Releases the GPU counters. */
  dispose(): void {
    this.#counters.dispose();
  }
}
