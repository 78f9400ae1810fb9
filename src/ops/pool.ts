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
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  shapeOptsCase,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** A size given for both axes or as [height, width]. */
export type Size2 = number | readonly [number, number];

function pair(v: Size2): [number, number] {
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

/** Options of {@link maxPool2d}: kernel (default 3), stride (default 2), padding (default 1). */
export interface MaxPoolOptions {
  /** Window size (default 3). */
  kernel?: Size2;
  /** Step between windows (default 2). */
  stride?: Size2;
  /** Padding on each side, never picked by the max (default 1; at most half the kernel). */
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

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/**
 * CPU reference of {@link maxPool2d} (f64): the first maximum in row-major window order wins,
 * a NaN wins its window (PyTorch). Indices are within the input plane (ih·W + iw).
 */
export function maxPool2dRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  opts: MaxPoolOptions = {},
): { y: Float64Array; indices: Uint32Array; shape: [number, number, number, number] } {
  const [n, c, H, W] = shape4("maxPool2dRef", shape);
  const { k, s, p, OH, OW } = poolGeometry("maxPool2dRef", opts, H, W);
  const y = new Float64Array(n * c * OH * OW);
  const idx = new Uint32Array(y.length);
  for (let q = 0; q < n * c; q++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity;
        let bi = -1;
        for (let ih = oh * s[0] - p[0]; ih < oh * s[0] - p[0] + k[0]; ih++) {
          for (let iw = ow * s[1] - p[1]; iw < ow * s[1] - p[1] + k[1]; iw++) {
            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
            const v = x[q * H * W + ih * W + iw];
            if (bi < 0 || v > best || Number.isNaN(v)) {
              best = v;
              bi = ih * W + iw;
            }
          }
        }
        const o = (q * OH + oh) * OW + ow;
        y[o] = best;
        idx[o] = bi;
      }
    }
  }
  return { y, indices: idx, shape: [n, c, OH, OW] };
}

/** CPU reference of {@link maxPool2dBackward} (f64): dy scattered to the argmax positions. */
export function maxPool2dBackwardRef(
  dy: ArrayLike<number>,
  indices: ArrayLike<number>,
  inputShape: readonly number[],
): Float64Array {
  const [n, c, H, W] = shape4("maxPool2dBackwardRef", inputShape);
  const dx = new Float64Array(n * c * H * W);
  const per = indices.length / (n * c);
  for (let o = 0; o < indices.length; o++) dx[Math.floor(o / per) * H * W + indices[o]] += dy[o];
  return dx;
}

/** CPU reference of {@link globalAvgPool} (f64): [N, C, H, W] → [N, C] plane means. */
export function globalAvgPoolRef(x: ArrayLike<number>, shape: readonly number[]): Float64Array {
  const [n, c, H, W] = shape4("globalAvgPoolRef", shape);
  const y = new Float64Array(n * c);
  for (let q = 0; q < n * c; q++) {
    for (let i = 0; i < H * W; i++) y[q] += x[q * H * W + i];
    y[q] /= H * W;
  }
  return y;
}

/** CPU reference of {@link globalAvgPoolBackward} (f64): dy [N, C] → dy / (H·W) per plane. */
export function globalAvgPoolBackwardRef(
  dy: ArrayLike<number>,
  inputShape: readonly number[],
): Float64Array {
  const [n, c, h, w] = shape4("globalAvgPoolBackwardRef", inputShape);
  if (dy.length !== n * c) {
    throw new RangeError(
      `globalAvgPoolBackwardRef: ${dy.length} gradients for input [${inputShape}]`,
    );
  }
  const out = new Float64Array(n * c * h * w);
  for (let i = 0; i < out.length; i++) out[i] = dy[Math.floor(i / (h * w))] / (h * w);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Op units (tests and benchmark: ./unit.ts).

/** Parameters of a {@link maxPoolUnit} case. */
export interface MaxPoolCase {
  shape: readonly [number, number, number, number];
  opts: MaxPoolOptions;
}

const poolCase = (
  shape: [number, number, number, number],
  opts: MaxPoolOptions = {},
  split = true,
) => shapeOptsCase(shape, opts, split);

/** Max pooling as an op unit (forward values and argmax indices, gather backward). */
export const maxPoolUnit: OpUnit<MaxPoolCase> = defineOpUnit<MaxPoolCase>({
  name: "maxpool",
  description: "MaxPool2d (dilation 1, ceil_mode false) with argmax indices",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y", "indices"],
  gradOutputs: ["y"],
  u32Outputs: ["indices"],
  differentiable: ["x"],
  // The last case has planes over 4096 pixels (the wide-workgroup path).
  cases: [
    poolCase([3, 5, 7, 7]),
    poolCase([2, 3, 13, 17]),
    poolCase([2, 3, 13, 17], { kernel: 2, stride: 2, padding: 0 }),
    poolCase([1, 6, 9, 8], { kernel: 3, stride: 1, padding: 1 }),
    poolCase([2, 2, 11, 10], { kernel: [3, 2], stride: [2, 1], padding: [1, 0] }),
    poolCase([3, 5, 13, 17]),
    poolCase([1, 2, 67, 65], {}, false),
  ],
  benchShapes: [poolCase([8, 64, 112, 112])],
  tolerance: { forward: {}, backward: { maxRel: 1e-6 } },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => {
    const [n, c, H, W] = p.shape;
    const g = poolGeometry("maxPoolUnit", p.opts, H, W);
    return { y: [n, c, g.OH, g.OW], indices: [n, c, g.OH, g.OW] };
  },
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.shape), seed, -2, 2) }),
  refForward: (p, x) => {
    const r = maxPool2dRef(x.x, p.shape, p.opts);
    return { y: r.y, indices: Float64Array.from(r.indices) };
  },
  refBackward: (p, x, d) => ({
    x: maxPool2dBackwardRef(d.y, maxPool2dRef(x.x, p.shape, p.opts).indices, p.shape),
  }),
  cost: (p) => {
    const [n, c, H, W] = p.shape;
    const g = poolGeometry("maxPoolUnit", p.opts, H, W);
    const out = [n, c, g.OH, g.OW];
    const taps = g.k[0] * g.k[1];
    return {
      forward: { flops: sizeOf(out) * taps, bytes: bytesOf(p.shape, out, out) },
      backward: { flops: sizeOf(p.shape), bytes: bytesOf(out, out, p.shape) },
    };
  },
  gpu: {
    name: "gather",
    forward: (gpu, p, { tensors: t }) => ({ ...maxPool2d(gpu, t.x, p.opts) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const { y, indices } = maxPool2d(gpu, t.x, p.opts);
      const dx = maxPool2dBackward(gpu, asShape(d.y, y.shape), indices, p.shape, p.opts);
      y.dispose();
      indices.dispose();
      return { x: dx };
    },
  },
});

/** Parameters of a {@link globalAvgPoolUnit} case: the input shape. */
export interface GapCase {
  shape: readonly [number, number, number, number];
}

const gapCase = (shape: [number, number, number, number]): OpCase<GapCase> => ({
  name: shape.join("x"),
  params: { shape },
});

/** Global average pooling as an op unit. */
export const globalAvgPoolUnit: OpUnit<GapCase> = defineOpUnit<GapCase>({
  name: "global_avg_pool",
  description: "global average pooling [N, C, H, W] → [N, C]",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [
    gapCase([3, 5, 7, 7]),
    gapCase([2, 3, 13, 17]),
    gapCase([1, 7, 1, 1]),
    gapCase([3, 5, 13, 17]),
  ],
  benchShapes: [gapCase([8, 2048, 14, 14])],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { rtol: 1e-6, atol: 1e-7 } },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => ({ y: [p.shape[0], p.shape[1]] }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.shape), seed) }),
  refForward: (p, x) => ({ y: globalAvgPoolRef(x.x, p.shape) }),
  refBackward: (p, _x, d) => ({ x: globalAvgPoolBackwardRef(d.y, p.shape) }),
  cost: (p) => {
    const out = [p.shape[0], p.shape[1]];
    return {
      forward: { flops: sizeOf(p.shape), bytes: bytesOf(p.shape, out) },
      backward: { flops: sizeOf(p.shape), bytes: bytesOf(out, p.shape) },
    };
  },
  gpu: {
    name: "plane reduction",
    forward: (gpu, _p, { tensors: t }) => ({ y: globalAvgPool(gpu, t.x) }),
    backward: (gpu, p, _x, { tensors: d }) => ({
      x: globalAvgPoolBackward(gpu, asShape(d.y, [p.shape[0], p.shape[1]]), p.shape),
    }),
  },
});
