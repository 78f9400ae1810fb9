/**
 * GPU count buffers for evaluation: u32 atomics on the GPU, f64 totals on the CPU. Work is
 * accumulated without readback; before the pixels recorded since the last read could make a
 * u32 cell wrap (each pixel adds at most 1 to a cell), the buffer is read, added to the f64
 * totals and cleared. So the counts are exact for any number of images.
 * @module
 */
import type { BufferRange, GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { elementChunks } from "../gpu/split.ts";

/**
 * The uniform blocks of shaders/eval.wgsl: MaskParams of the confusion kernel (./confusion.ts),
 * CamParams of the CAM kernels (./cam.ts). `tag_lo` / `tag_hi` hold {@link tagWords}.
 */
export const { MaskParams, CamParams } = declareParams("eval", {
  MaskParams: {
    /** Pixels in this chunk. */
    n: "u32",
    /** K = C + 1. */
    k: "u32",
    /** Pixels per invocation (multiple of 4). */
    per: "u32",
    tag_lo: "vec4u",
    tag_hi: "vec4u",
  },
  CamParams: {
    /** CAM size. */
    h: "u32",
    w: "u32",
    /** Image (output) size. */
    hh: "u32",
    ww: "u32",
    /** Class chunk [c0, c0 + cc); the CAM binding starts `base` elements before class c0. */
    c0: "u32",
    cc: "u32",
    base: "u32",
    ncls: "u32",
    /** Pixel chunk [p0, p0 + np). */
    p0: "u32",
    np: "u32",
    per: "u32",
    /**
     * bit 0: first class chunk (initialise state); bit 1: ground truth bound; bit 2: ReLU the
     * CAM values before interpolating.
     */
    flags: "u32",
    /** Source-index scales h / H, w / W. */
    sy: "f32",
    sx: "f32",
    /** tau (cam_oc) or background threshold (cam_pseudo). */
    thr: "f32",
    /** Number of sweep thresholds. */
    nt: "u32",
    tag_lo: "vec4u",
    tag_hi: "vec4u",
  },
});

/** Most pixels a u32 cell can count. */
export const U32_MAX = 0xffffffff;

/** A block of u32 atomic counters on the GPU with exact f64 totals. */
export class GpuCounters {
  /** The u32 counters (a pool buffer of at least `bytes` bytes). */
  readonly buffer: GPUBuffer;
  #totals: Float64Array;
  #pending = 0;
  #disposed = false;

  /**
   * Allocates `size` zeroed counters.
   * @param gpu the context
   * @param size number of u32 counters
   * @param drainPixels read + clear before more than this many pixels accumulate (default
   *   2^32-1; tests set a small value to exercise draining)
   */
  constructor(
    readonly gpu: GpuContext,
    readonly size: number,
    readonly drainPixels = U32_MAX,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`bad counter count ${size}`);
    if (size * 4 > gpu.maxBindingBytes) {
      throw new RangeError(
        `${size} counters (${size * 4} bytes) exceed the binding limit ${gpu.maxBindingBytes}`,
      );
    }
    this.buffer = gpu.pool.acquire(size * 4, "eval-counters");
    gpu.clear(this.buffer, 0, this.bytes);
    this.#totals = new Float64Array(size);
  }

  /** Bytes of the counters, rounded up to a multiple of 16 (the cleared span). */
  get bytes(): number {
    return Math.ceil(this.size * 4 / 16) * 16;
  }

  /** The storage binding of the counters. */
  binding(): BufferRange {
    this.#check();
    return { buffer: this.buffer, offset: 0, size: this.size * 4 };
  }

  /**
   * Declares that `pixels` more pixels are about to be counted; drains first when they could
   * overflow a cell. Call before recording the work.
   */
  async reserve(pixels: number): Promise<void> {
    this.#check();
    if (pixels > this.drainPixels) {
      throw new RangeError(
        `${pixels} pixels in one step exceed the drain limit ${this.drainPixels}`,
      );
    }
    if (this.#pending + pixels > this.drainPixels) await this.#drain();
    this.#pending += pixels;
  }

  async #drain(): Promise<void> {
    const words = new Uint32Array(await this.gpu.readBytes(this.buffer, 0, this.size * 4));
    for (let i = 0; i < words.length; i++) this.#totals[i] += words[i];
    this.gpu.clear(this.buffer, 0, this.bytes);
    this.#pending = 0;
  }

  /** Exact totals (reads the GPU once). The counters keep accumulating afterwards. */
  async read(): Promise<Float64Array> {
    this.#check();
    await this.#drain();
    return this.#totals.slice();
  }

  /** Returns the buffer to the pool. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.gpu.pool.release(this.buffer);
  }

  #check(): void {
    if (this.#disposed) throw new Error("evaluation counters used after dispose");
  }
}

/**
 * Pixel ranges [start, start+count) for chunked dispatches: each start is a multiple of the
 * storage offset alignment (in pixels) and each chunk spans at most `maxBindingBytes` for
 * `bytesPerPixel` bytes per pixel, and at most `maxPixels` pixels.
 */
export function pixelChunks(
  gpu: GpuContext,
  n: number,
  bytesPerPixel: number,
  maxPixels = Infinity,
): [number, number][] {
  // Pixel starts aligned for the packed u8 maps bound at the same pixels (1 byte per pixel).
  return elementChunks(gpu, n, {
    elementBytes: bytesPerPixel,
    align: gpu.limits.minStorageBufferOffsetAlignment,
    maxCount: maxPixels,
    unit: "pixels",
  }).map((c) => [c.start, c.count]);
}

/** A binding of `count` packed u8 labels from pixel `start` (word-padded). */
export function u8Range(buffer: GPUBuffer, start: number, count: number): BufferRange {
  return { buffer, offset: start, size: Math.max(4, Math.ceil(count / 4) * 4) };
}

/**
 * Tag bit set over K indices as 8 u32 words (bit c+1 = foreground class c, 0-based), the
 * layout of the shaders' `tag_lo`/`tag_hi`.
 */
export function tagWords(tags: readonly number[], numClasses: number, what = "tags"): number[] {
  const w = new Array<number>(8).fill(0);
  for (const t of tags) {
    if (!Number.isInteger(t) || t < 0 || t >= numClasses) {
      throw new RangeError(`${what}: tag ${t} out of range 0..${numClasses - 1}`);
    }
    const k = t + 1;
    w[k >> 5] = (w[k >> 5] | (1 << (k & 31))) >>> 0;
  }
  return w;
}

/** Checks a class count fits the u8 label maps (values 0..C, 255 = ignore). */
export function checkNumClasses(numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > 254) {
    throw new RangeError(`numClasses must be an integer in 1..254, got ${numClasses}`);
  }
}
