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
