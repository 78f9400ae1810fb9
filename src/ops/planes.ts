/**
 * Splitting work past the storage-binding limit for ops that treat a tensor as a sequence of
 * independent "planes" (an (n, c) image plane, a sample, a row) or as a flat element range.
 *
 * A chunk binds, per tensor, a byte range that starts at an offset aligned to
 * `minStorageBufferOffsetAlignment` (rounded down from the chunk's first plane) and passes the
 * element offset of that first plane inside the binding to the shader, so planes of any size
 * can be chunked; the chunk is grown greedily while every tensor's binding fits.
 * @module
 */
import type { Bindable, BufferRange, GpuContext } from "../gpu/context.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** One chunk of whole planes: bindings and in-binding element offsets, one per tensor. */
export interface PlaneChunk {
  /** Index of the chunk (0, 1, ...). */
  index: number;
  /** First plane of the chunk. */
  first: number;
  /** Number of planes in the chunk. */
  count: number;
  /** Per tensor, the binding covering the chunk's planes. */
  ranges: BufferRange[];
  /** Per tensor, the element offset of plane `first` inside its binding. */
  offsets: number[];
}

/** A tensor split into planes of `planeSize` elements (plane q spans [q·size, (q+1)·size)). */
export interface PlaneSpec {
  tensor: Tensor;
  planeSize: number;
}

/**
 * Splits `planes` planes into chunks whose bindings stay within `gpu.maxBindingBytes` for every
 * tensor, with at most `maxCount` planes per chunk. Throws naming `op` when a single plane does
 * not fit one binding.
 */
export function planeChunks(
  gpu: GpuContext,
  op: string,
  planes: number,
  specs: PlaneSpec[],
  maxCount = Infinity,
): PlaneChunk[] {
  const maxEl = Math.floor(gpu.maxBindingBytes / 4);
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  for (const s of specs) {
    if (s.tensor.size < planes * s.planeSize) {
      throw new RangeError(
        `${op}: tensor [${s.tensor.shape}] holds fewer than ${planes} planes of ${s.planeSize}`,
      );
    }
  }
  const out: PlaneChunk[] = [];
  let first = 0;
  while (first < planes) {
    let count = Math.min(planes - first, maxCount);
    const starts = specs.map((s) => Math.floor((first * s.planeSize) / align) * align);
    specs.forEach((s, i) => {
      if (s.planeSize > 0) {
        const off = first * s.planeSize - starts[i];
        count = Math.min(count, Math.floor((maxEl - off) / s.planeSize));
      }
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
        s.tensor.slice(starts[i], Math.max(1, (first + count) * s.planeSize - starts[i]))
      ),
      offsets: specs.map((s, i) => first * s.planeSize - starts[i]),
    });
    first += count;
  }
  return out;
}

/** An aligned flat element range for elementwise kernels (no in-binding offset needed). */
export interface ElementChunk {
  start: number;
  count: number;
}

/** Splits `n` elements into aligned ranges that fit one storage binding. */
export function elementChunks(gpu: GpuContext, n: number): ElementChunk[] {
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const chunk = Math.max(align, Math.floor(gpu.maxBindingBytes / 4 / align) * align);
  const out: ElementChunk[] = [];
  for (let start = 0; start < n; start += chunk) {
    out.push({ start, count: Math.min(chunk, n - start) });
  }
  return out;
}

/** Checks that a shape is 4-D NCHW with positive integer sizes and returns it. */
export function shape4(op: string, shape: readonly number[]): [number, number, number, number] {
  if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`${op}: expected an NCHW shape of positive sizes, got [${shape}]`);
  }
  return [shape[0], shape[1], shape[2], shape[3]];
}

/** Checks that a tensor is 4-D NCHW and returns its dimensions. */
export function nchw(op: string, x: Tensor): [number, number, number, number] {
  return shape4(op, x.shape);
}

/** Throws naming `op` when a tensor's shape differs from the expected one. */
export function checkShape(op: string, what: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(`${op}: ${what} has shape [${t.shape}], expected [${shape}]`);
  }
}

/** What {@link dispatchPlanes} dispatches: one kernel per chunk of planes. */
export interface PlaneDispatch {
  /** Op name for errors. */
  name: string;
  shader: string;
  entry: string;
  /** Extra override constants (WG is set by dispatchPlanes). */
  constants?: Record<string, number>;
  /** Read-only tensors split into planes (bound first, in order). */
  inputs: PlaneSpec[];
  /** Read-only bindings passed whole (bound after `inputs`, e.g. per-channel tensors). */
  shared?: Bindable[];
  /** Written tensors split into planes (bound after the read-only ones). */
  outputs: PlaneSpec[];
  /** Kernel invocations per plane (e.g. output pixels per plane). */
  itemsPerPlane: number;
  /**
   * `"planes"` (default): a 2-D grid, x over the items of a plane (`global_invocation_id.x`),
   * y over the chunk's planes (`workgroup_id.y`), so kernels need no division to find their
   * plane. `"flat"`: a 1-D grid over chunk planes · itemsPerPlane items
   * (`gid.x + gid.y·nwg.x·WG`), for one item per plane.
   */
  grid?: "planes" | "flat";
  /** Workgroup width on the "flat" grid (default 256). */
  wgSize?: number;
  /** Uniform words for a chunk; `items` = chunk planes · itemsPerPlane. */
  params: (chunk: PlaneChunk, items: number) => ArrayLike<number>;
}

/**
 * Workgroup width for kernels over the items of a plane: 64 keeps small planes (7x7 = 49)
 * from idling most invocations; 256 for large planes keeps x within the workgroup limit.
 */
export function planeWg(itemsPerPlane: number): number {
  return itemsPerPlane <= 4096 ? 64 : 256;
}

/**
 * Splits `planes` planes into binding-sized chunks ({@link planeChunks}; at most 65535 planes
 * per chunk on the "planes" grid) and records one dispatch per chunk with the chunk's
 * bindings (split inputs, shared inputs, outputs); sets the kernel's `WG` override.
 */
export function dispatchPlanes(gpu: GpuContext, planes: number, d: PlaneDispatch): void {
  const k = d.inputs.length;
  const perPlane = (d.grid ?? "planes") === "planes";
  const lim = gpu.limits.maxComputeWorkgroupsPerDimension;
  const wg = perPlane ? planeWg(d.itemsPerPlane) : d.wgSize ?? 256;
  const specs = [...d.inputs, ...d.outputs];
  for (const ch of planeChunks(gpu, d.name, planes, specs, perPlane ? lim : Infinity)) {
    const items = ch.count * d.itemsPerPlane;
    const spec = {
      name: d.name,
      shader: d.shader,
      entry: d.entry,
      constants: { ...d.constants, WG: wg },
      inputs: [...ch.ranges.slice(0, k), ...(d.shared ?? [])],
      outputs: ch.ranges.slice(k),
      params: d.params(ch, items),
    };
    if (perPlane) {
      gpu.dispatch({ ...spec, workgroups: [Math.ceil(d.itemsPerPlane / wg), ch.count] });
    } else {
      gpu.dispatch1d(spec, items, wg);
    }
  }
}
