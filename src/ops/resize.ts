/**
 * Bilinear resize of NCHW tensors with PyTorch's semantics (`F.interpolate(mode="bilinear")`,
 * `align_corners` false or true, output size or scale factor, up or down), with a
 * deterministic gather-style backward. Kernels: `shaders/resize.wgsl`; work past the binding
 * limit is split over (n, c) planes.
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
  type OpUnit,
  shapeOptsCase,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** Options of {@link resizeBilinear}: give exactly one of `size` and `scaleFactor`. */
export interface ResizeOptions {
  /** Output [height, width]. */
  size?: readonly [number, number];
  /**
   * Scale factor (one for both axes or [h, w]); output = floor(in·factor). As in PyTorch with
   * `recompute_scale_factor` unset, the source map then uses 1/factor, not in/out.
   */
  scaleFactor?: number | readonly [number, number];
  /** PyTorch's `align_corners` (default false). */
  alignCorners?: boolean;
}

/** Resolved geometry of a resize along both axes. */
export interface ResizeGeometry {
  outH: number;
  outW: number;
  /** Source-coordinate scales as f32 values (what the kernels use). */
  scaleH: number;
  scaleW: number;
  alignCorners: boolean;
}

/**
 * Output size and source scales of a resize from [inH, inW] (PyTorch's
 * `area_pixel_compute_scale`, rounded to f32 as PyTorch's float kernels do).
 */
export function resizeGeometry(inH: number, inW: number, opts: ResizeOptions): ResizeGeometry {
  const op = "resize";
  const ac = opts.alignCorners ?? false;
  checkResizeOptions(opts);
  let factors: [number, number] | null = null;
  let out: [number, number];
  if (opts.size) {
    out = [opts.size[0], opts.size[1]];
  } else {
    const f = opts.scaleFactor!;
    factors = typeof f === "number" ? [f, f] : [f[0], f[1]];
    if (!factors.every((v) => Number.isFinite(v) && v > 0)) {
      throw new RangeError(`${op}: bad scale factor [${factors}]`);
    }
    out = [Math.floor(inH * factors[0]), Math.floor(inW * factors[1])];
  }
  if (!out.every((v) => Number.isInteger(v) && v > 0)) {
    throw new RangeError(`${op}: bad output size [${out}] from input [${inH}, ${inW}]`);
  }
  const scale = (i: number, o: number, f: number | undefined) =>
    Math.fround(ac ? (o > 1 ? (i - 1) / (o - 1) : 0) : f !== undefined ? 1 / f : i / o);
  return {
    outH: out[0],
    outW: out[1],
    scaleH: scale(inH, out[0], factors?.[0]),
    scaleW: scale(inW, out[1], factors?.[1]),
    alignCorners: ac,
  };
}

/** Validates resize options (exactly one of size and scale, positive values). */
export function checkResizeOptions(opts: ResizeOptions): void {
  if ((opts.size === undefined) === (opts.scaleFactor === undefined)) {
    throw new RangeError(`resize: give exactly one of size and scaleFactor`);
  }
}

/**
 * The uniform block of shaders/resize.wgsl: ioff / ooff are the element offsets of the chunk's
 * first plane in the input / output binding; `items` is not read by the kernels.
 */
const { ResizeParams } = declareParams("resize", {
  ResizeParams: {
    IH: "u32",
    IW: "u32",
    OH: "u32",
    OW: "u32",
    sh: "f32",
    sw: "f32",
    align: "u32",
    items: "u32",
    ioff: "u32",
    ooff: "u32",
  },
});

function resizeParams(
  IH: number,
  IW: number,
  g: ResizeGeometry,
  n: number,
  offs: number[],
): Uint32Array {
  return ResizeParams.pack({
    IH,
    IW,
    OH: g.outH,
    OW: g.outW,
    sh: g.scaleH,
    sw: g.scaleW,
    align: g.alignCorners ? 1 : 0,
    items: n,
    ioff: offs[0],
    ooff: offs[1],
  });
}

/** Records a bilinear resize of `x` [N, C, H, W] to [N, C, outH, outW]. */
export function resizeBilinear(gpu: GpuContext, x: Tensor, opts: ResizeOptions): Tensor {
  const op = "resize.forward";
  const [n, c, H, W] = nchw(op, x);
  const g = resizeGeometry(H, W, opts);
  const y = Tensor.empty(gpu, [n, c, g.outH, g.outW]);
  dispatchPlanes(gpu, n * c, {
    name: op,
    shader: "resize",
    entry: "fwd",
    inputs: [{ tensor: x, planeSize: H * W }],
    outputs: [{ tensor: y, planeSize: g.outH * g.outW }],
    itemsPerPlane: g.outH * g.outW,
    params: (ch, items) => resizeParams(H, W, g, items, ch.offsets),
  });
  return y;
}

/**
 * Records the backward of {@link resizeBilinear}: dy [N, C, outH, outW] → dx `inputShape`.
 * `opts` must be the forward's.
 */
export function resizeBilinearBackward(
  gpu: GpuContext,
  dy: Tensor,
  inputShape: readonly number[],
  opts: ResizeOptions,
): Tensor {
  const op = "resize.backward";
  const [n, c, H, W] = shape4(op, inputShape);
  const g = resizeGeometry(H, W, opts);
  checkShape(op, "dy", dy, [n, c, g.outH, g.outW]);
  const dx = Tensor.empty(gpu, inputShape);
  dispatchPlanes(gpu, n * c, {
    name: op,
    shader: "resize",
    entry: "bwd",
    inputs: [{ tensor: dy, planeSize: g.outH * g.outW }],
    outputs: [{ tensor: dx, planeSize: H * W }],
    itemsPerPlane: H * W,
    params: (ch, items) => resizeParams(H, W, g, items, ch.offsets),
  });
  return dx;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/**
 * Per-axis taps of PyTorch's bilinear map in f64, independent of {@link resizeGeometry}:
 * source rows/columns i0, i1 and the weight l of i1, for each output index.
 */
function taps(inS: number, outS: number, ac: boolean, factor?: number) {
  const s = ac ? (outS > 1 ? (inS - 1) / (outS - 1) : 0) : factor ? 1 / factor : inS / outS;
  return Array.from({ length: outS }, (_, d) => {
    const r = ac ? s * d : Math.max(s * (d + 0.5) - 0.5, 0);
    const i0 = Math.floor(r);
    return { i0, i1: i0 < inS - 1 ? i0 + 1 : i0, l: r - i0 };
  });
}

/** Output size and per-axis taps of a resize of [H, W] (see {@link ResizeOptions}). */
function refTaps(H: number, W: number, opts: ResizeOptions) {
  checkResizeOptions(opts);
  const ac = opts.alignCorners ?? false;
  const f = opts.scaleFactor === undefined
    ? undefined
    : typeof opts.scaleFactor === "number"
    ? [opts.scaleFactor, opts.scaleFactor]
    : [opts.scaleFactor[0], opts.scaleFactor[1]];
  const OH = opts.size ? opts.size[0] : Math.floor(H * f![0]);
  const OW = opts.size ? opts.size[1] : Math.floor(W * f![1]);
  return { OH, OW, th: taps(H, OH, ac, f?.[0]), tw: taps(W, OW, ac, f?.[1]) };
}

/** CPU reference of {@link resizeBilinear} (f64, PyTorch's bilinear map). */
export function resizeBilinearRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  opts: ResizeOptions,
): Float64Array {
  const [n, c, H, W] = shape4("resizeBilinearRef", shape);
  const { OH, OW, th, tw } = refTaps(H, W, opts);
  const y = new Float64Array(n * c * OH * OW);
  for (let q = 0; q < n * c; q++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const { i0: h0, i1: h1, l: lh } = th[oh];
        const { i0: w0, i1: w1, l: lw } = tw[ow];
        const v = (h: number, w: number) => x[q * H * W + h * W + w];
        y[(q * OH + oh) * OW + ow] = (1 - lh) * ((1 - lw) * v(h0, w0) + lw * v(h0, w1)) +
          lh * ((1 - lw) * v(h1, w0) + lw * v(h1, w1));
      }
    }
  }
  return y;
}

/** CPU reference of {@link resizeBilinearBackward} (f64, the scatter transpose). */
export function resizeBilinearBackwardRef(
  dy: ArrayLike<number>,
  inputShape: readonly number[],
  opts: ResizeOptions,
): Float64Array {
  const [n, c, H, W] = shape4("resizeBilinearBackwardRef", inputShape);
  const { OH, OW, th, tw } = refTaps(H, W, opts);
  const dx = new Float64Array(n * c * H * W);
  for (let q = 0; q < n * c; q++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const g = dy[(q * OH + oh) * OW + ow];
        const { i0: h0, i1: h1, l: lh } = th[oh];
        const { i0: w0, i1: w1, l: lw } = tw[ow];
        const b = q * H * W;
        dx[b + h0 * W + w0] += g * (1 - lh) * (1 - lw);
        dx[b + h0 * W + w1] += g * (1 - lh) * lw;
        dx[b + h1 * W + w0] += g * lh * (1 - lw);
        dx[b + h1 * W + w1] += g * lh * lw;
      }
    }
  }
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link resizeUnit} case. */
export interface ResizeCase {
  shape: readonly [number, number, number, number];
  opts: ResizeOptions;
}

function resizeOutShape(p: ResizeCase): number[] {
  const g = resizeGeometry(p.shape[2], p.shape[3], p.opts);
  return [p.shape[0], p.shape[1], g.outH, g.outW];
}

const resizeCase = (
  shape: [number, number, number, number],
  opts: ResizeOptions,
  split = true,
) => shapeOptsCase(shape, opts, split);

/**
 * Bilinear resize as an op unit: up and down, both align_corners, sizes and scale factors,
 * 1x1 inputs and outputs, odd shapes.
 */
export const resizeUnit: OpUnit<ResizeCase> = defineOpUnit<ResizeCase>({
  name: "resize_bilinear",
  description: "bilinear resize (F.interpolate mode bilinear), gather backward",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [
    resizeCase([3, 5, 7, 7], { size: [13, 17] }),
    resizeCase([3, 5, 7, 7], { size: [13, 17], alignCorners: true }),
    resizeCase([2, 3, 13, 17], { size: [7, 7] }),
    resizeCase([2, 3, 13, 17], { size: [7, 7], alignCorners: true }),
    resizeCase([1, 2, 5, 9], { scaleFactor: 2.5 }),
    resizeCase([1, 2, 6, 7], { scaleFactor: [0.7, 0.45] }),
    resizeCase([2, 3, 1, 1], { size: [4, 3] }),
    resizeCase([1, 2, 6, 6], { size: [1, 1], alignCorners: true }),
    resizeCase([1, 2, 6, 6], { size: [1, 1] }),
    resizeCase([1, 2, 4, 5], { size: [33, 37] }, false),
    resizeCase([1, 2, 4, 5], { size: [33, 37], alignCorners: true }, false),
    resizeCase([3, 5, 13, 17], { size: [9, 11] }),
    // Planes over 4096 pixels: the wide-workgroup path.
    resizeCase([1, 1, 8, 9], { size: [70, 71] }, false),
  ],
  benchShapes: [resizeCase([8, 21, 32, 32], { size: [256, 256] })],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-5 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => ({ y: resizeOutShape(p) }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.shape), seed) }),
  refForward: (p, x) => ({ y: resizeBilinearRef(x.x, p.shape, p.opts) }),
  refBackward: (p, _x, d) => ({ x: resizeBilinearBackwardRef(d.y, p.shape, p.opts) }),
  cost: (p) => {
    const out = resizeOutShape(p);
    return {
      forward: { flops: 7 * sizeOf(out), bytes: bytesOf(p.shape, out) },
      backward: { flops: 7 * sizeOf(out), bytes: bytesOf(out, p.shape) },
    };
  },
  gpu: {
    name: "gather",
    forward: (gpu, p, { tensors: t }) => ({ y: resizeBilinear(gpu, t.x, p.opts) }),
    backward: (gpu, p, _x, { tensors: d }) => ({
      x: resizeBilinearBackward(gpu, asShape(d.y, resizeOutShape(p)), p.shape, p.opts),
    }),
  },
});
