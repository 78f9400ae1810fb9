/**
 * Splitting work past the storage-binding limit (`gpu.maxBindingBytes`): the one mechanism every
 * op uses. A binding of a part of a buffer must start at a multiple of
 * `minStorageBufferOffsetAlignment`, so a piece of work is bound through a *window*: the range
 * from its first element rounded down to the alignment, and the kernel is told the element
 * offset (`shift`) of its data inside the window.
 *
 * - {@link planeChunks}: tensors seen as runs of equally sized planes (an (n, c) plane, a
 *   sample, a row of a matrix); chunks of whole planes, grown greedily while every tensor's
 *   window fits. Most ops dispatch through it (`dispatchPlanes` in src/ops/planes.ts).
 * - {@link elementChunks}: flat aligned element ranges (elementwise kernels, which need no
 *   in-binding offset).
 * - {@link bindingWindow}, {@link windowFits}, {@link spans}: the pieces for ops whose work is
 *   split over several dimensions at once (conv2d over images and channels, GEMM over batch,
 *   rows, columns and the inner dimension with partial sums accumulated); each such op keeps
 *   only its plan (which dimension to shrink first) on top of these.
 * @module
 */
import type { BufferRange, GpuContext } from "./context.ts";
import type { Tensor } from "./tensor.ts";

/** The storage-offset alignment in elements of `elementBytes` bytes. */
export function alignElements(gpu: GpuContext, elementBytes = 4): number {
  return gpu.limits.minStorageBufferOffsetAlignment / elementBytes;
}

/** A binding window: `range` starts at an aligned offset, `shift` elements before the data. */
export interface BindingWindow {
  range: BufferRange;
  shift: number;
}

/**
 * The window of f32 elements [lo, lo + count) of `buffer`: aligned start, size rounded up to
 * 16 bytes (vec4 views) and clamped to the buffer. See {@link windowFits}.
 */
export function bindingWindow(
  gpu: GpuContext,
  buffer: GPUBuffer,
  lo: number,
  count: number,
): BindingWindow {
  const align = alignElements(gpu);
  const start = Math.floor(lo / align) * align;
  const shift = lo - start;
  let size = Math.ceil((shift + Math.max(1, count)) / 4) * 16;
  size = Math.min(size, buffer.size - start * 4);
  return { range: { buffer, offset: start * 4, size }, shift };
}

/**
 * The most elements a {@link bindingWindow} may cover so that it fits one binding wherever it
 * starts (room for the alignment shift and the 16-byte rounding).
 */
export function windowCapacity(gpu: GpuContext): number {
  return Math.floor(gpu.maxBindingBytes / 4) - alignElements(gpu) - 4;
}

/** Whether a {@link bindingWindow} of `count` elements fits one binding wherever it starts. */
export function windowFits(gpu: GpuContext, count: number): boolean {
  return count <= windowCapacity(gpu);
}

/** Splits [0, total) into spans of `size` (the last one shorter): [start, count] pairs. */
export function* spans(total: number, size: number): Generator<[number, number]> {
  for (let s = 0; s < total; s += size) yield [s, Math.min(size, total - s)];
}

/** Something bound by element ranges: a tensor or a raw buffer of f32 values. */
export type Sliceable = Tensor | { buffer: GPUBuffer; size: number; shape?: undefined };

/**
 * A run of planes in a tensor: plane q spans elements [base + q·planeSize, base + (q+1)·planeSize)
 * (base default 0).
 */
export interface PlaneSpec {
  /** The tensor or buffer holding the planes. */
  tensor: Sliceable;
  /** Elements per plane. */
  planeSize: number;
  /** Element index of plane 0 (default 0). */
  base?: number;
}

/** One chunk of whole planes: bindings and in-binding element offsets, one per spec. */
export interface PlaneChunk {
  /** Index of the chunk (0, 1, ...). */
  index: number;
  /** First plane of the chunk. */
  first: number;
  /** Number of planes in the chunk. */
  count: number;
  /** Per spec, the binding covering the chunk's planes. */
  ranges: BufferRange[];
  /** Per spec, the element offset of plane `first` inside its binding. */
  offsets: number[];
}

function slice(t: Sliceable, start: number, count: number): BufferRange {
  if (t.shape !== undefined) return t.slice(start, count);
  return { buffer: t.buffer, offset: start * 4, size: Math.max(4, count * 4) };
}

/**
 * Splits `planes` planes into chunks whose windows stay within `gpu.maxBindingBytes` for every
 * spec, with at most `maxCount` planes per chunk. Throws naming `op` when a tensor holds fewer
 * planes or a single plane does not fit one binding.
 */
export function planeChunks(
  gpu: GpuContext,
  op: string,
  planes: number,
  specs: PlaneSpec[],
  maxCount = Infinity,
): PlaneChunk[] {
  const maxEl = Math.floor(gpu.maxBindingBytes / 4);
  const align = alignElements(gpu);
  for (const s of specs) {
    const base = s.base ?? 0;
    if (s.tensor.size < base + planes * s.planeSize) {
      const t = s.tensor.shape ? `[${s.tensor.shape}]` : `a buffer of ${s.tensor.size}`;
      throw new RangeError(
        `${op}: ${t} holds fewer than ${planes} planes of ${s.planeSize}` +
          (base ? ` from element ${base}` : ""),
      );
    }
  }
  const out: PlaneChunk[] = [];
  let first = 0;
  while (first < planes) {
    let count = Math.min(planes - first, maxCount);
    const lo = specs.map((s) => (s.base ?? 0) + first * s.planeSize);
    const starts = lo.map((l) => Math.floor(l / align) * align);
    const offsets = lo.map((l, i) => l - starts[i]);
    specs.forEach((s, i) => {
      if (s.planeSize > 0) count = Math.min(count, Math.floor((maxEl - offsets[i]) / s.planeSize));
    });
    if (count < 1) {
      const big = specs.reduce((a, s) => Math.max(a, s.planeSize), 0);
      throw new RangeError(
        `${op}: one plane of ${big * 4} bytes does not fit the storage binding limit ` +
          `(${gpu.maxBindingBytes} bytes)`,
      );
    }
    out.push({
      index: out.length,
      first,
      count,
      ranges: specs.map((s, i) =>
        slice(s.tensor, starts[i], Math.max(1, offsets[i] + count * s.planeSize))
      ),
      offsets,
    });
    first += count;
  }
  return out;
}

/** An aligned flat element range (no in-binding offset needed). */
export interface ElementChunk {
  /** First element of the chunk. */
  start: number;
  /** Elements in the chunk. */
  count: number;
}

/** Options of {@link elementChunks}. */
export interface ElementChunkOptions {
  /** Bytes per element (default 4). */
  elementBytes?: number;
  /**
   * Chunk starts are multiples of this many elements (default: the storage offset alignment in
   * elements; ranges of other element sizes bound at the same start need their own).
   */
  align?: number;
  /** At most this many elements per chunk. */
  maxCount?: number;
  /** What an element is, for errors (default "elements"). */
  unit?: string;
}

/** Splits `n` elements into aligned ranges that fit one storage binding. */
export function elementChunks(
  gpu: GpuContext,
  n: number,
  opts: ElementChunkOptions = {},
): ElementChunk[] {
  const bytes = opts.elementBytes ?? 4;
  const align = opts.align ?? alignElements(gpu, bytes);
  const chunk =
    Math.floor(Math.min(gpu.maxBindingBytes / bytes, opts.maxCount ?? Infinity) / align) *
    align;
  if (chunk < align) {
    const max = opts.maxCount ?? Infinity;
    throw new RangeError(
      `chunks of ${align} ${opts.unit ?? "elements"} (${bytes} bytes each) exceed the binding ` +
        `limit ${gpu.maxBindingBytes}` +
        (max < Infinity ? ` or the limit of ${max} per chunk` : ""),
    );
  }
  const out: ElementChunk[] = [];
  for (let start = 0; start < n; start += chunk) {
    out.push({ start, count: Math.min(chunk, n - start) });
  }
  return out;
}
