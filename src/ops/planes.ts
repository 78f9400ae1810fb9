/**
 * Shape checks and {@link dispatchPlanes}, the dispatch of a kernel over chunks of whole planes
 * ("planes": (n, c) image planes, samples, rows) split past the storage-binding limit by the
 * shared splitter (src/gpu/split.ts).
 * @module
 */
import type { Bindable, GpuContext } from "../gpu/context.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { type PlaneChunk, planeChunks, type PlaneSpec } from "../gpu/split.ts";

// The splitter's plane and element chunks, for the ops that import them from here.
export {
  type ElementChunk,
  elementChunks,
  type PlaneChunk,
  planeChunks,
  type PlaneSpec,
} from "../gpu/split.ts";

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
