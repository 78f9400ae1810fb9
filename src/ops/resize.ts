/**
 * Bilinear and bicubic resize of NCHW tensors with PyTorch's semantics
 * (`F.interpolate(mode="bilinear" | "bicubic")`, `align_corners` false or true, output size or
 * scale factor, up or down; bicubic: A = -0.75, border taps clamped, no antialias), with
 * deterministic gather-style backwards. Kernels: `shaders/resize.wgsl`; work past the binding
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
const { ResizeParams, CubicAxisParams } = declareParams("resize", {
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
  // One axis of the bicubic backward: dy [outer, ON, inner] → dx [outer, IN, inner] per plane.
  CubicAxisParams: {
    IN: "u32",
    ON: "u32",
    outer: "u32",
    inner: "u32",
    s: "f32",
    align: "u32",
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

/**
 * Longest gather of one invocation of the bicubic backward (outputs that read one input along
 * an axis, about 4·out/in): under llvmpipe's budget of 65,535 loop iterations per invocation
 * (docs/architecture.md "Loop budget") with room for the binary search that finds the first.
 */
export const BICUBIC_MAX_GATHER = 32768;

/**
 * Records a bicubic resize of `x` [N, C, H, W] to [N, C, outH, outW], PyTorch's
 * `F.interpolate(mode="bicubic")` (A = -0.75, the 4x4 taps clamped to the border, no
 * antialias). One invocation per output pixel (16 taps, no loop over the input).
 */
export function resizeBicubic(gpu: GpuContext, x: Tensor, opts: ResizeOptions): Tensor {
  const op = "resizeBicubic";
  const [n, c, H, W] = nchw(op, x);
  const g = resizeGeometry(H, W, opts);
  const y = Tensor.empty(gpu, [n, c, g.outH, g.outW]);
  dispatchPlanes(gpu, n * c, {
    name: op,
    shader: "resize",
    entry: "cubic_fwd",
    inputs: [{ tensor: x, planeSize: H * W }],
    outputs: [{ tensor: y, planeSize: g.outH * g.outW }],
    itemsPerPlane: g.outH * g.outW,
    params: (ch, items) => resizeParams(H, W, g, items, ch.offsets),
  });
  return y;
}

/** Outputs along an axis that may read one input (see {@link BICUBIC_MAX_GATHER}). */
function cubicGather(outS: number, s: number): number {
  // Interior inputs are read by outputs whose first tap lies in [i - 2, i + 1] (4 input
  // steps, 1/s outputs each); a border input also by those clamped onto it (2.5 steps).
  return s > 0 ? Math.min(outS, Math.ceil(4 / s) + 2) : outS;
}

/**
 * Records the backward of {@link resizeBicubic}: dy [N, C, outH, outW] → dx `inputShape`,
 * separably (the transpose along the width into [N, C, outH, W], then along the height), each
 * invocation gathering in a fixed order the outputs that read its input (deterministic, no
 * atomics, a loop of about 4·out/in). `opts` must be the forward's.
 */
export function resizeBicubicBackward(
  gpu: GpuContext,
  dy: Tensor,
  inputShape: readonly number[],
  opts: ResizeOptions,
): Tensor {
  const op = "resizeBicubicBackward";
  const [n, c, H, W] = shape4(op, inputShape);
  const g = resizeGeometry(H, W, opts);
  checkShape(op, "dy", dy, [n, c, g.outH, g.outW]);
  for (const [inS, outS, s] of [[W, g.outW, g.scaleW], [H, g.outH, g.scaleH]]) {
    const loops = cubicGather(outS, s);
    if (loops > BICUBIC_MAX_GATHER) {
      throw new RangeError(
        `${op}: ${inS} → ${outS} needs ${loops} iterations per invocation, over the loop ` +
          `budget (${BICUBIC_MAX_GATHER}); resize in steps`,
      );
    }
  }
  const axis = (
    src: Tensor,
    dst: Tensor,
    inS: number,
    outS: number,
    outer: number,
    inner: number,
    s: number,
  ) =>
    dispatchPlanes(gpu, n * c, {
      name: op,
      shader: "resize",
      entry: "cubic_bwd_axis",
      inputs: [{ tensor: src, planeSize: outer * outS * inner }],
      outputs: [{ tensor: dst, planeSize: outer * inS * inner }],
      itemsPerPlane: outer * inS * inner,
      params: (ch) =>
        CubicAxisParams.pack({
          IN: inS,
          ON: outS,
          outer,
          inner,
          s,
          align: g.alignCorners ? 1 : 0,
          ioff: ch.offsets[0],
          ooff: ch.offsets[1],
        }),
    });
  const t = Tensor.empty(gpu, [n, c, g.outH, W]);
  axis(dy, t, W, g.outW, g.outH, 1, g.scaleW);
  const dx = Tensor.empty(gpu, inputShape);
  axis(t, dx, H, g.outH, 1, W, g.scaleH);
  t.dispose();
  return dx;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** PyTorch's source step per output index along an axis, in f64 (`area_pixel_compute_scale`). */
function refScale(inS: number, outS: number, ac: boolean, factor?: number): number {
  return ac ? (outS > 1 ? (inS - 1) / (outS - 1) : 0) : factor ? 1 / factor : inS / outS;
}

/**
 * Per-axis taps of PyTorch's bilinear map in f64, independent of {@link resizeGeometry}:
 * source rows/columns i0, i1 and the weight l of i1, for each output index.
 */
function taps(inS: number, outS: number, ac: boolean, factor?: number) {
  const s = refScale(inS, outS, ac, factor);
  return Array.from({ length: outS }, (_, d) => {
    const r = ac ? s * d : Math.max(s * (d + 0.5) - 0.5, 0);
    const i0 = Math.floor(r);
    return { i0, i1: i0 < inS - 1 ? i0 + 1 : i0, l: r - i0 };
  });
}

/** Output size, align_corners and per-axis scale factors of a resize of [H, W], in f64. */
function refSizes(H: number, W: number, opts: ResizeOptions) {
  checkResizeOptions(opts);
  const ac = opts.alignCorners ?? false;
  const f = opts.scaleFactor === undefined
    ? undefined
    : typeof opts.scaleFactor === "number"
    ? [opts.scaleFactor, opts.scaleFactor]
    : [opts.scaleFactor[0], opts.scaleFactor[1]];
  const OH = opts.size ? opts.size[0] : Math.floor(H * f![0]);
  const OW = opts.size ? opts.size[1] : Math.floor(W * f![1]);
  return { OH, OW, ac, f };
}

/** Output size and per-axis taps of a resize of [H, W] (see {@link ResizeOptions}). */
function refTaps(H: number, W: number, opts: ResizeOptions) {
  const { OH, OW, ac, f } = refSizes(H, W, opts);
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

/** PyTorch's cubic convolution weights (A = -0.75) of the 4 taps at fraction t, in f64. */
function cubicWeights(t: number): [number, number, number, number] {
  const A = -0.75;
  const near = (s: number) => ((A + 2) * s - (A + 3)) * s * s + 1; // |s| <= 1
  const far = (s: number) => ((A * s - 5 * A) * s + 8 * A) * s - 4 * A; // 1 < |s| < 2
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/**
 * The 4 taps (clamped to the border) and weights of each output index along an axis, as
 * PyTorch's `upsample_bicubic2d` computes them in f64: source src = s·d (align_corners) or
 * s·(d + 0.5) - 0.5 (not clamped at 0, unlike bilinear), i0 = min(floor(src), in - 1),
 * fraction clamped to [0, 1], taps i0 - 1 .. i0 + 2.
 */
function cubicAxis(inS: number, outS: number, ac: boolean, factor?: number) {
  const s = refScale(inS, outS, ac, factor);
  return Array.from({ length: outS }, (_, d) => {
    const src = ac ? s * d : (d + 0.5) * s - 0.5;
    const i0 = Math.min(Math.floor(src), inS - 1);
    const t = Math.min(Math.max(src - i0, 0), 1);
    const idx = [i0 - 1, i0, i0 + 1, i0 + 2].map((j) => Math.min(Math.max(j, 0), inS - 1));
    return { idx, w: cubicWeights(t) };
  });
}

/**
 * CPU reference of {@link resizeBicubic} (f64): PyTorch's
 * `F.interpolate(mode="bicubic", align_corners=...)` of x [N, C, H, W], each row of 4 taps
 * interpolated first, then the 4 rows (PyTorch's order). The one bicubic reference of the
 * project (the MCTformer reference's position-embedding resize calls it).
 */
export function resizeBicubicRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  opts: ResizeOptions,
): Float64Array {
  const [N, C, H, W] = shape4("resizeBicubicRef", shape);
  const { OH, OW, ac, f } = refSizes(H, W, opts);
  const ys = cubicAxis(H, OH, ac, f?.[0]);
  const xs = cubicAxis(W, OW, ac, f?.[1]);
  const y = new Float64Array(N * C * OH * OW);
  for (let p = 0; p < N * C; p++) {
    const src = p * H * W;
    for (let i = 0; i < OH; i++) {
      const { idx: yi, w: yw } = ys[i];
      for (let j = 0; j < OW; j++) {
        const { idx: xi, w: xw } = xs[j];
        let s = 0;
        for (let a = 0; a < 4; a++) {
          let r = 0;
          for (let b = 0; b < 4; b++) r += xw[b] * x[src + yi[a] * W + xi[b]];
          s += yw[a] * r;
        }
        y[(p * OH + i) * OW + j] = s;
      }
    }
  }
  return y;
}

/** CPU reference of {@link resizeBicubicBackward} (f64, the scatter transpose). */
export function resizeBicubicBackwardRef(
  dy: ArrayLike<number>,
  inputShape: readonly number[],
  opts: ResizeOptions,
): Float64Array {
  const [N, C, H, W] = shape4("resizeBicubicBackwardRef", inputShape);
  const { OH, OW, ac, f } = refSizes(H, W, opts);
  const ys = cubicAxis(H, OH, ac, f?.[0]);
  const xs = cubicAxis(W, OW, ac, f?.[1]);
  const dx = new Float64Array(N * C * H * W);
  for (let p = 0; p < N * C; p++) {
    for (let i = 0; i < OH; i++) {
      for (let j = 0; j < OW; j++) {
        const g = dy[(p * OH + i) * OW + j];
        for (let a = 0; a < 4; a++) {
          for (let b = 0; b < 4; b++) {
            dx[p * H * W + ys[i].idx[a] * W + xs[j].idx[b]] += g * ys[i].w[a] * xs[j].w[b];
          }
        }
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

/**
 * Bicubic resize as an op unit: up and down, both align_corners, sizes and scale factors
 * (MCTformer's official (h + 0.1)/g position-embedding factor), 1x1 inputs and outputs, a
 * large upscale (long gathers, border clamping), odd shapes. Bench: DeiT-S's 14x14 position
 * grid of 384 channels to 28x28 (448 px images).
 */
export const resizeBicubicUnit: OpUnit<ResizeCase> = defineOpUnit<ResizeCase>({
  name: "resize_bicubic",
  description: "bicubic resize (F.interpolate mode bicubic, A = -0.75), separable gather backward",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [
    resizeCase([3, 5, 7, 7], { size: [13, 17] }),
    resizeCase([3, 5, 7, 7], { size: [13, 17], alignCorners: true }),
    resizeCase([2, 3, 13, 17], { size: [7, 7] }),
    resizeCase([2, 3, 13, 17], { size: [5, 9], alignCorners: true }),
    resizeCase([1, 2, 5, 9], { scaleFactor: 2.5 }),
    resizeCase([1, 2, 6, 7], { scaleFactor: [0.7, 0.45] }),
    resizeCase([1, 4, 3, 3], { scaleFactor: [4.1 / 3, 3.1 / 3] }),
    resizeCase([2, 3, 1, 1], { size: [4, 3] }),
    resizeCase([1, 2, 6, 6], { size: [1, 1], alignCorners: true }),
    resizeCase([1, 2, 6, 6], { size: [1, 1] }),
    resizeCase([1, 2, 2, 3], { size: [3, 2] }),
    resizeCase([1, 3, 14, 14], { size: [4, 3] }),
    resizeCase([1, 2, 3, 2], { size: [41, 37] }, false),
    resizeCase([1, 1, 3, 2], { size: [41, 37], alignCorners: true }, false),
    // Planes over 4096 pixels: the wide-workgroup path.
    resizeCase([1, 1, 8, 9], { size: [70, 71] }, false),
  ],
  benchShapes: [resizeCase([1, 384, 14, 14], { size: [28, 28] })],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-5 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => ({ y: resizeOutShape(p) }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.shape), seed) }),
  refForward: (p, x) => ({ y: resizeBicubicRef(x.x, p.shape, p.opts) }),
  refBackward: (p, _x, d) => ({ x: resizeBicubicBackwardRef(d.y, p.shape, p.opts) }),
  cost: (p) => {
    const out = resizeOutShape(p);
    const [n, c, , W] = p.shape;
    const mid = n * c * out[2] * W;
    return {
      forward: { flops: 40 * sizeOf(out), bytes: bytesOf(p.shape, out) },
      backward: {
        flops: 8 * sizeOf(out) + 8 * mid,
        bytes: bytesOf(out, p.shape) + 8 * mid,
      },
    };
  },
  gpu: {
    name: "gather",
    forward: (gpu, p, { tensors: t }) => ({ y: resizeBicubic(gpu, t.x, p.opts) }),
    backward: (gpu, p, _x, { tensors: d }) => ({
      x: resizeBicubicBackward(gpu, asShape(d.y, resizeOutShape(p)), p.shape, p.opts),
    }),
  },
});
