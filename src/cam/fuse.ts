/**
 * GPU ops of CAM inference (kernels in `shaders/cam.wgsl`) and their TypeScript references:
 *
 * - {@link flipHorizontal}: `y[n, c, r, x] = x[n, c, r, W-1-x]`, optionally written into a
 *   tensor at an element offset (e.g. the second half of an [original, flipped] pair).
 * - {@link accumulateCam}: `acc[c] (+)= up(relu(cam[b, c]))`, the class maps of batch entry b
 *   ReLU'd, bilinearly resized to the accumulator's size (PyTorch `align_corners=false`) and,
 *   for the CAMs of a flipped image, mirrored back; overwrite or add. One call per scale and
 *   batch entry fuses psa's "upsample, flip back, sum" without temporaries.
 * - {@link normalizeTagged}: `out[t] = acc[tags[t]] / (max(acc[tags[t]]) + 1e-5)`, the
 *   psa/SEAM per-class max normalisation of the tagged classes' maps.
 *
 * Work past the storage-binding limit is split over whole planes (a plane must fit one binding).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { resizeGeometry } from "../ops/resize.ts";
import { type PlaneChunk, planeChunks } from "../gpu/split.ts";
import { dispatchPlanes, nchw } from "../ops/planes.ts";

/**
 * The uniform blocks of shaders/cam.wgsl; `ioff` / `ooff` are the element offsets of the
 * chunk's first plane in the input / output binding.
 */
const P = declareParams("cam", {
  FlipParams: { H: "u32", W: "u32", ioff: "u32", ooff: "u32" },
  AccParams: {
    h: "u32",
    w: "u32",
    H: "u32",
    W: "u32",
    sh: "f32",
    sw: "f32",
    /** bit 0: add to y (else overwrite); bit 1: mirror (read column W-1-x). */
    flags: "u32",
    ioff: "u32",
    ooff: "u32",
  },
  NormParams: { n: "u32", ioff: "u32", ooff: "u32" },
});

/** Options of {@link flipHorizontal}. */
export interface FlipOptions {
  /** Write into this tensor (default: a new tensor shaped like x). */
  out?: Tensor;
  /** Element offset in `out` where the flipped x starts (default 0). */
  outOffset?: number;
}

/**
 * Records a horizontal flip of x [N, C, H, W] (the last axis reversed). Returns `out` (or a
 * new tensor). `out` must not be x.
 */
export function flipHorizontal(gpu: GpuContext, x: Tensor, opts: FlipOptions = {}): Tensor {
  const op = "cam.flip";
  const [n, c, H, W] = nchw(op, x);
  const base = opts.outOffset ?? 0;
  if (!Number.isInteger(base) || base < 0) throw new RangeError(`${op}: bad outOffset ${base}`);
  const out = opts.out ?? Tensor.empty(gpu, x.shape);
  if (out.buffer === x.buffer) throw new RangeError(`${op}: out must not alias x`);
  if (base + x.size > out.size) {
    throw new RangeError(
      `${op}: [${x.shape}] at offset ${base} does not fit the output [${out.shape}]`,
    );
  }
  dispatchPlanes(gpu, n * c, {
    name: op,
    shader: "cam",
    entry: "flip_w",
    inputs: [{ tensor: x, planeSize: H * W }],
    outputs: [{ tensor: out, base, planeSize: H * W }],
    itemsPerPlane: H * W,
    params: (ch) => P.FlipParams.pack({ H, W, ioff: ch.offsets[0], ooff: ch.offsets[1] }),
  });
  return out;
}

/** Options of {@link accumulateCam}. */
export interface AccumulateOptions {
  /** Batch entry of `cam` to read (default 0). */
  index?: number;
  /** Add to `acc` (default) or overwrite it. */
  add?: boolean;
  /** Mirror the resized maps horizontally (the CAMs of a flipped image). Default false. */
  mirror?: boolean;
}

/**
 * Records `acc (+)= up(relu(cam[index]))`: the class maps [C, h, w] of one batch entry of
 * `cam` [B, C, h, w], ReLU'd, bilinearly resized to acc's [C, H, W] (align_corners=false; an
 * identity when the sizes agree) and optionally mirrored. Returns `acc`.
 */
export function accumulateCam(
  gpu: GpuContext,
  cam: Tensor,
  acc: Tensor,
  opts: AccumulateOptions = {},
): Tensor {
  const op = "cam.accumulate";
  const [B, C, h, w] = nchw(op, cam);
  if (acc.shape.length !== 3 || acc.shape[0] !== C) {
    throw new RangeError(`${op}: accumulator [${acc.shape}] is not [${C}, H, W]`);
  }
  const [, H, W] = acc.shape;
  const b = opts.index ?? 0;
  if (!Number.isInteger(b) || b < 0 || b >= B) {
    throw new RangeError(`${op}: batch index ${b} outside 0..${B - 1}`);
  }
  const g = resizeGeometry(h, w, { size: [H, W] });
  const flags = (opts.add ?? true ? 1 : 0) | (opts.mirror ? 2 : 0);
  dispatchPlanes(gpu, C, {
    name: op,
    shader: "cam",
    entry: "accum",
    inputs: [{ tensor: cam, base: b * C * h * w, planeSize: h * w }],
    outputs: [{ tensor: acc, planeSize: H * W }],
    itemsPerPlane: H * W,
    params: (ch: PlaneChunk) =>
      P.AccParams.pack({
        h,
        w,
        H,
        W,
        sh: g.scaleH,
        sw: g.scaleW,
        flags,
        ioff: ch.offsets[0],
        ooff: ch.offsets[1],
      }),
  });
  return acc;
}

/** Checks tags against C classes: integers in 0..C-1, strictly increasing. */
export function checkTags(tags: readonly number[], numClasses: number, what = "tags"): void {
  tags.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= numClasses) {
      throw new RangeError(`${what}: class ${t} outside 0..${numClasses - 1}`);
    }
    if (i > 0 && t <= tags[i - 1]) {
      throw new RangeError(`${what}: [${tags}] must be sorted without repeats`);
    }
  });
}

/**
 * Records the per-class max normalisation of the tagged classes' maps of `acc` [C, H, W]:
 * `out[t] = relu(acc[tags[t]]) / (max(relu(acc[tags[t]])) + 1e-5)`, a new [T, H, W] tensor
 * (T ≥ 1; tags sorted, distinct).
 */
export function normalizeTagged(gpu: GpuContext, acc: Tensor, tags: readonly number[]): Tensor {
  const op = "cam.normalize";
  if (acc.shape.length !== 3) throw new RangeError(`${op}: expected [C, H, W], got [${acc.shape}]`);
  const [C, H, W] = acc.shape;
  checkTags(tags, C, `${op}: tags`);
  if (tags.length === 0) throw new RangeError(`${op}: no tags`);
  const n = H * W;
  const out = Tensor.empty(gpu, [tags.length, H, W]);
  tags.forEach((c, t) => {
    const [ch] = planeChunks(gpu, op, 1, [
      { tensor: acc, base: c * n, planeSize: n },
      { tensor: out, base: t * n, planeSize: n },
    ]);
    gpu.dispatch({
      name: op,
      shader: "cam",
      entry: "tag_norm",
      inputs: [ch.ranges[0]],
      outputs: [ch.ranges[1]],
      params: P.NormParams.pack({ n, ioff: ch.offsets[0], ooff: ch.offsets[1] }),
      workgroups: [1],
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// TypeScript references.

/** Reference of {@link flipHorizontal} on CPU values of shape [N, C, H, W]. */
export function flipHorizontalRef(x: ArrayLike<number>, shape: readonly number[]): Float32Array {
  const [n, c, H, W] = shape;
  const y = new Float32Array(n * c * H * W);
  for (let r = 0; r < n * c * H; r++) {
    for (let i = 0; i < W; i++) y[r * W + i] = x[r * W + W - 1 - i];
  }
  return y;
}

/** f32 taps of PyTorch's align_corners=false bilinear map along one axis. */
function axisTaps(inS: number, outS: number, scale: number) {
  const f = Math.fround;
  return Array.from({ length: outS }, (_, d) => {
    const r = Math.max(f(f(scale * f(d + 0.5)) - 0.5), 0);
    const i0 = Math.min(Math.floor(r), inS - 1);
    return { i0, i1: Math.min(i0 + 1, inS - 1), l: Math.min(Math.max(f(r - i0), 0), 1) };
  });
}

/**
 * Reference of {@link accumulateCam}: `acc` [C, H, W] (modified and returned) gets
 * `up(relu(cam[index]))` (mirrored when asked) added, or overwritten with it.
 */
export function accumulateCamRef(
  cam: ArrayLike<number>,
  camShape: readonly number[],
  acc: Float32Array,
  accShape: readonly number[],
  opts: AccumulateOptions = {},
): Float32Array {
  const [, C, h, w] = camShape;
  const [, H, W] = accShape;
  const g = resizeGeometry(h, w, { size: [H, W] });
  const ty = axisTaps(h, H, g.scaleH);
  const tx = axisTaps(w, W, g.scaleW);
  const base = (opts.index ?? 0) * C * h * w;
  const add = opts.add ?? true;
  const f = Math.fround;
  const v = (i: number) => Math.max(cam[i], 0);
  for (let c = 0; c < C; c++) {
    const pb = base + c * h * w;
    for (let y = 0; y < H; y++) {
      const { i0: y0, i1: y1, l: ly } = ty[y];
      for (let x = 0; x < W; x++) {
        const { i0: x0, i1: x1, l: lx } = tx[opts.mirror ? W - 1 - x : x];
        const r0 = pb + y0 * w, r1 = pb + y1 * w;
        const top = f(f(f(1 - lx) * v(r0 + x0)) + f(lx * v(r0 + x1)));
        const bot = f(f(f(1 - lx) * v(r1 + x0)) + f(lx * v(r1 + x1)));
        const val = f(f(f(1 - ly) * top) + f(ly * bot));
        const o = (c * H + y) * W + x;
        acc[o] = add ? f(acc[o] + val) : val;
      }
    }
  }
  return acc;
}

/** Reference of {@link normalizeTagged}: [T, H·W] from acc [C, H·W]. */
export function normalizeTaggedRef(
  acc: ArrayLike<number>,
  n: number,
  tags: readonly number[],
): Float32Array {
  const out = new Float32Array(tags.length * n);
  tags.forEach((c, t) => {
    let m = 0;
    for (let i = 0; i < n; i++) m = Math.max(m, acc[c * n + i]);
    const d = Math.fround(m + Math.fround(1e-5));
    for (let i = 0; i < n; i++) out[t * n + i] = Math.fround(Math.max(acc[c * n + i], 0) / d);
  });
  return out;
}
