/**
 * Max pooling (PyTorch `MaxPool2d`, dilation 1, ceil_mode false) and global average pooling,
 * each with explicit forward and a deterministic gather-style backward (no float atomics).
 * Kernels: `shaders/pool.wgsl`; work past the binding limit is split over (n, c) planes.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw, shape4 } from "./planes.ts";

/** A size given for both axes or as [height, width]. */
export type Size2 = number | readonly [number, number];

function pair(v: Size2): [number, number] {
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

/** Options of {@link maxPool2d}: kernel (default 3), stride (default 2), padding (default 1). */
export interface MaxPoolOptions {
  kernel?: Size2;
  stride?: Size2;
  padding?: Size2;
}

/** Validated geometry and output size of a max pool over an H x W input. */
export interface PoolGeom {
  k: [number, number];
  s: [number, number];
  p: [number, number];
  OH: number;
  OW: number;
}

/** Validates max-pool options (and computes the output size of an H x W input). */
export function poolGeometry(op: string, opts: MaxPoolOptions, H = 1, W = 1): PoolGeom {
  const k = pair(opts.kernel ?? 3);
  const s = pair(opts.stride ?? 2);
  const p = pair(opts.padding ?? 1);
  for (let a = 0; a < 2; a++) {
    if (![k[a], s[a], p[a]].every(Number.isInteger) || k[a] < 1 || s[a] < 1 || p[a] < 0) {
      throw new RangeError(`${op}: bad kernel/stride/padding ${k[a]}/${s[a]}/${p[a]}`);
    }
    if (2 * p[a] > k[a]) {
      throw new RangeError(`${op}: padding ${p[a]} should be at most half of kernel size ${k[a]}`);
    }
  }
  const OH = poolOutSize(H, k[0], s[0], p[0]);
  const OW = poolOutSize(W, k[1], s[1], p[1]);
  return { k, s, p, OH, OW };
}

/** Output size of a max pool along one axis (PyTorch, ceil_mode false). */
export function poolOutSize(size: number, k: number, s: number, p: number): number {
  return Math.floor((size + 2 * p - k) / s) + 1;
}

/** Uniform words of pool.wgsl's PoolParams for a chunk. */
/**
 * The uniform block of shaders/pool.wgsl: n = planes of the chunk (gap_fwd), off0..off2 the
 * element offsets of the chunk's first plane in the bindings (in binding order).
 */
const { PoolParams } = declareParams("pool", {
  PoolParams: {
    H: "u32",
    W: "u32",
    OH: "u32",
    OW: "u32",
    kh: "u32",
    kw: "u32",
    sh: "u32",
    sw: "u32",
    ph: "u32",
    pw: "u32",
    n: "u32",
    off0: "u32",
    off1: "u32",
    off2: "u32",
  },
});

function words(H: number, W: number, g: PoolGeom, n: number, offs: number[]): Uint32Array {
  return PoolParams.pack({
    H,
    W,
    OH: g.OH,
    OW: g.OW,
    kh: g.k[0],
    kw: g.k[1],
    sh: g.s[0],
    sw: g.s[1],
    ph: g.p[0],
    pw: g.p[1],
    n,
    off0: offs[0],
    off1: offs[1],
    off2: offs[2] ?? 0,
  });
}

/** Result of {@link maxPool2d}. */
export interface MaxPoolResult {
  /** Pooled values [N, C, OH, OW]. */
  y: Tensor;
  /**
   * Argmax per output [N, C, OH, OW]: its buffer holds **u32** values ih·W + iw (the index
   * within the input plane, as PyTorch's `return_indices`); read as
   * `new Uint32Array((await indices.read()).buffer)`.
   */
  indices: Tensor;
}

/** Records max pooling of `x` [N, C, H, W], saving the argmax indices. */
export function maxPool2d(gpu: GpuContext, x: Tensor, opts: MaxPoolOptions = {}): MaxPoolResult {
  const name = "maxpool.forward";
  const [n, c, H, W] = nchw(name, x);
  const g = poolGeometry(name, opts, H, W);
  if (g.OH < 1 || g.OW < 1) {
    throw new RangeError(`${name}: input [${x.shape}] is too small for kernel ${g.k}`);
  }
  const y = Tensor.empty(gpu, [n, c, g.OH, g.OW]);
  const indices = Tensor.empty(gpu, [n, c, g.OH, g.OW]);
  const out = g.OH * g.OW;
  dispatchPlanes(gpu, n * c, {
    name,
    shader: "pool",
    entry: "max_fwd",
    inputs: [{ tensor: x, planeSize: H * W }],
    outputs: [{ tensor: y, planeSize: out }, { tensor: indices, planeSize: out }],
    itemsPerPlane: out,
    params: (ch, items) => words(H, W, g, items, ch.offsets),
  });
  return { y, indices };
}

/**
 * Records max-pool backward: dx [N, C, H, W] (`inputShape`) from dy and the forward's indices.
 * `opts` must be the forward's.
 */
export function maxPool2dBackward(
  gpu: GpuContext,
  dy: Tensor,
  indices: Tensor,
  inputShape: readonly number[],
  opts: MaxPoolOptions = {},
): Tensor {
  const name = "maxpool.backward";
  const [n, c, H, W] = shape4(name, inputShape);
  const g = poolGeometry(name, opts, H, W);
  checkShape(name, "dy", dy, [n, c, g.OH, g.OW]);
  checkShape(name, "indices", indices, [n, c, g.OH, g.OW]);
  const dx = Tensor.empty(gpu, inputShape);
  const out = g.OH * g.OW;
  dispatchPlanes(gpu, n * c, {
    name,
    shader: "pool",
    entry: "max_bwd",
    inputs: [{ tensor: dy, planeSize: out }, { tensor: indices, planeSize: out }],
    outputs: [{ tensor: dx, planeSize: H * W }],
    itemsPerPlane: H * W,
    params: (ch, items) => words(H, W, g, items, ch.offsets),
  });
  return dx;
}

const UNIT: PoolGeom = { k: [1, 1], s: [1, 1], p: [0, 0], OH: 1, OW: 1 };

/** Records global average pooling: [N, C, H, W] → [N, C]. */
export function globalAvgPool(gpu: GpuContext, x: Tensor): Tensor {
  const name = "gap.forward";
  const [n, c, H, W] = nchw(name, x);
  const y = Tensor.empty(gpu, [n, c]);
  dispatchPlanes(gpu, n * c, {
    name,
    shader: "pool",
    entry: "gap_fwd",
    inputs: [{ tensor: x, planeSize: H * W }],
    outputs: [{ tensor: y, planeSize: 1 }],
    itemsPerPlane: 1,
    params: (ch, items) => words(H, W, UNIT, items, ch.offsets),
    grid: "flat",
    wgSize: 64,
  });
  return y;
}

/** Records global-average-pool backward: dy [N, C] → dx `inputShape` (dy / (H·W) everywhere). */
export function globalAvgPoolBackward(
  gpu: GpuContext,
  dy: Tensor,
  inputShape: readonly number[],
  opts: { out?: Tensor; accumulate?: boolean } = {},
): Tensor {
  const name = "gap.backward";
  const [n, c, H, W] = shape4(name, inputShape);
  checkShape(name, "dy", dy, [n, c]);
  const dx = opts.out ?? Tensor.empty(gpu, inputShape);
  checkShape(name, "out", dx, inputShape);
  dispatchPlanes(gpu, n * c, {
    name,
    shader: "pool",
    entry: "gap_bwd",
    constants: opts.accumulate ? { ACC: 1 } : undefined,
    inputs: [{ tensor: dy, planeSize: 1 }],
    outputs: [{ tensor: dx, planeSize: H * W }],
    itemsPerPlane: H * W,
    params: (ch, items) => words(H, W, UNIT, items, ch.offsets),
  });
  return dx;
}
