/**
 * SEAM's pixel correlation module (PCM; Wang et al., CVPR 2020, `Net.PCM` of the official
 * resnet38_SEAM.py) and the no-grad CAM normalisation it refines (`cam_d_norm`): WGSL kernels
 * (shaders/pcm.wgsl), f64 references, op units.
 *
 * Per sample, with `f` [D, h, w] the projected features (the output of SEAM's `f9`) and `x`
 * [C, h, w] the normalised CAM (a constant: no gradient flows into it):
 *   fn_i = f_i / (‖f_i‖₂ + 1e-5) over channels,  a_ij = relu(fn_i · fn_j),
 *   A_ij = a_ij / (Σ_i' a_i'j + 1e-5)  (column sums: torch's `sum(aff, dim=1)` of [n, i, j]),
 *   y_cj = Σ_i x_ci A_ij               (`cam_rv = matmul(cam, aff)`).
 * The HW x HW affinity is never materialised: the forward and both backward passes recompute
 * the dot products they need (O(HW²·(D + C)) per pass), so only a sample's features and maps
 * are bound at a time; the work is split over samples past the binding limit. Each pass walks
 * the pixels in ranges, one dispatch per range in order, so that no invocation outruns
 * llvmpipe's loop budget ({@link PCM_LOOP_BUDGET}; shaders/pcm.wgsl).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw, type PlaneChunk, type PlaneDispatch } from "./planes.ts";
import { asShape, bytesOf, defineOpUnit, type OpCase, type OpUnit, uniformValues } from "./unit.ts";

/** Most CAM channels the PCM kernels take (private arrays). */
export const PCM_MAX_CHANNELS = 64;
/** Most feature channels the PCM backward takes (a private accumulator per pixel). */
export const PCM_MAX_FEATURES = 256;
const EPS = 1e-5;

/**
 * Most loop trips one PCM invocation runs, all its loops together (inner ones included):
 * llvmpipe ends an invocation's loops silently past 65535 (a shared loop limiter; real GPUs
 * have none), so {@link pcmRanges} cuts each pass's pixel loop into ranges, one dispatch each,
 * that keep every invocation within this (with a margin).
 */
export const PCM_LOOP_BUDGET = 60000;

/** The PCM kernels that loop over pixel pairs. */
export type PcmPairKernel = "pcm_fwd" | "pcm_bwd_col" | "pcm_bwd_feat";

/** Trips of a channel loop of n unrolled by 4 with its tail, each loop's exit test included. */
const unrolled = (n: number) => Math.floor(n / 4) + 5;

/**
 * One invocation's loop trips in `kernel` (the counts stated at each kernel in shaders/pcm.wgsl)
 * outside its pixel loop (`fixed`) and per pixel of its range (`perPixel`).
 */
export function pcmLoopTrips(
  kernel: PcmPairKernel,
  C: number,
  D: number,
): { fixed: number; perPixel: number } {
  switch (kernel) {
    case "pcm_fwd":
      return { fixed: 2 * (C + 1) + 1, perPixel: 1 + unrolled(D) + unrolled(C) };
    case "pcm_bwd_col":
      return { fixed: C + 2, perPixel: 1 + unrolled(D) + unrolled(C) };
    case "pcm_bwd_feat":
      return { fixed: C + 3 * D + 5, perPixel: 1 + 2 * unrolled(D) + unrolled(C) };
  }
}

/**
 * The pixel ranges [i0, i1) that `kernel` walks, one dispatch each, in order: as long as
 * {@link PCM_LOOP_BUDGET} allows (at the maxima C = 64, D = 256: 657 pixels for pcm_fwd, 658
 * for pcm_bwd_col, 369 for pcm_bwd_feat, each at most 60,000 trips; one range for SEAM's `tiny`
 * 16x16 maps), all of equal length but the last.
 */
export function pcmRanges(
  kernel: PcmPairKernel,
  C: number,
  D: number,
  HW: number,
): [number, number][] {
  const { fixed, perPixel } = pcmLoopTrips(kernel, C, D);
  const len = Math.max(1, Math.floor((PCM_LOOP_BUDGET - fixed) / perPixel));
  const out: [number, number][] = [];
  for (let i0 = 0; i0 < HW; i0 += len) out.push([i0, Math.min(i0 + len, HW)]);
  return out;
}

/**
 * The uniform block of shaders/pcm.wgsl (o0..o6: element offsets, in binding order; i0, i1:
 * the pixel range of a pair kernel's dispatch).
 */
export const { PcmParams } = declareParams("pcm", {
  PcmParams: {
    C: "u32",
    D: "u32",
    HW: "u32",
    o0: "u32",
    o1: "u32",
    o2: "u32",
    o3: "u32",
    o4: "u32",
    o5: "u32",
    o6: "u32",
    i0: "u32",
    i1: "u32",
  },
});

function params(
  C: number,
  D: number,
  HW: number,
  ch: PlaneChunk,
  range: readonly [number, number] = [0, HW],
): Uint32Array {
  const o = ch.offsets;
  return PcmParams.pack({
    C,
    D,
    HW,
    o0: o[0] ?? 0,
    o1: o[1] ?? 0,
    o2: o[2] ?? 0,
    o3: o[3] ?? 0,
    o4: o[4] ?? 0,
    o5: o[5] ?? 0,
    o6: o[6] ?? 0,
    i0: range[0],
    i1: range[1],
  });
}

function check(op: string, feat: Tensor, cam: Tensor): [number, number, number, number] {
  const [N, D, h, w] = nchw(op, feat);
  const [n2, C, h2, w2] = nchw(op, cam);
  if (n2 !== N || h2 !== h || w2 !== w) {
    throw new RangeError(`${op}: cam [${cam.shape}] does not match features [${feat.shape}]`);
  }
  if (C > PCM_MAX_CHANNELS) {
    throw new RangeError(`${op}: ${C} CAM channels, at most ${PCM_MAX_CHANNELS}`);
  }
  if (D > PCM_MAX_FEATURES) {
    throw new RangeError(`${op}: ${D} feature channels, at most ${PCM_MAX_FEATURES}`);
  }
  return [N, C, D, h * w];
}

/** The normalised features fn = f / (‖f‖ + 1e-5) over channels (shape of `feat`). */
function normalise(gpu: GpuContext, feat: Tensor, C: number, D: number, HW: number): Tensor {
  const N = feat.shape[0];
  const fn = Tensor.empty(gpu, feat.shape);
  dispatchPlanes(gpu, N, {
    name: "pcm.norm",
    shader: "pcm",
    entry: "pcm_norm",
    inputs: [{ tensor: feat, planeSize: D * HW }],
    outputs: [{ tensor: fn, planeSize: D * HW }],
    itemsPerPlane: HW,
    params: (ch) => params(C, D, HW, ch),
  });
  return fn;
}

/**
 * Records `d` (a pair kernel over N samples) once per pixel range of {@link pcmRanges}, in
 * order: each dispatch continues the running sums the previous one left in its outputs.
 */
function dispatchRanges(
  gpu: GpuContext,
  N: number,
  C: number,
  D: number,
  HW: number,
  d: Omit<PlaneDispatch, "params" | "itemsPerPlane" | "entry"> & { entry: PcmPairKernel },
): void {
  for (const range of pcmRanges(d.entry, C, D, HW)) {
    dispatchPlanes(gpu, N, {
      ...d,
      itemsPerPlane: HW,
      params: (ch) => params(C, D, HW, ch, range),
    });
  }
}

/** What {@link pcmForward} returns. */
export interface PcmForward {
  /** The refined CAM y [N, C, h, w]. */
  y: Tensor;
  /** The normalised features (saved for the backward). */
  fn: Tensor;
  /** The column sums s_j [N, h·w] (saved for the backward). */
  s: Tensor;
}

/**
 * Records the PCM forward of features `feat` [N, D, h, w] and the CAM `cam` [N, C, h, w]
 * (module doc); C <= 64, D <= 256.
 */
export function pcmForward(gpu: GpuContext, feat: Tensor, cam: Tensor): PcmForward {
  const op = "pcm.forward";
  const [N, C, D, HW] = check(op, feat, cam);
  const fn = normalise(gpu, feat, C, D, HW);
  const y = Tensor.empty(gpu, cam.shape);
  const s = Tensor.empty(gpu, [N, HW]);
  dispatchRanges(gpu, N, C, D, HW, {
    name: op,
    shader: "pcm",
    entry: "pcm_fwd",
    inputs: [{ tensor: fn, planeSize: D * HW }, { tensor: cam, planeSize: C * HW }],
    outputs: [{ tensor: y, planeSize: C * HW }, { tensor: s, planeSize: HW }],
  });
  return { y, fn, s };
}

/** Records the PCM refinement y of `feat` and `cam` (module doc); see {@link pcmForward}. */
export function pcm(gpu: GpuContext, feat: Tensor, cam: Tensor): Tensor {
  const r = pcmForward(gpu, feat, cam);
  r.fn.dispose();
  r.s.dispose();
  return r.y;
}

/**
 * Records the gradient of the PCM output into the features, given the forward's saved `fn`
 * and `s` and the upstream gradient `dy` [N, C, h, w]; returns dFeat with `feat`'s shape.
 */
export function pcmBackward(
  gpu: GpuContext,
  feat: Tensor,
  cam: Tensor,
  fn: Tensor,
  s: Tensor,
  dy: Tensor,
): Tensor {
  const op = "pcm.backward";
  const [N, C, D, HW] = check(op, feat, cam);
  checkShape(op, "fn", fn, feat.shape);
  checkShape(op, "s", s, [N, HW]);
  if (dy.size !== cam.size) {
    throw new RangeError(`${op}: dy has shape [${dy.shape}], expected [${cam.shape}]`);
  }
  const t = Tensor.empty(gpu, [N, HW]);
  dispatchRanges(gpu, N, C, D, HW, {
    name: `${op}.col`,
    shader: "pcm",
    entry: "pcm_bwd_col",
    inputs: [
      { tensor: fn, planeSize: D * HW },
      { tensor: cam, planeSize: C * HW },
      { tensor: dy, planeSize: C * HW },
      { tensor: s, planeSize: HW },
    ],
    outputs: [{ tensor: t, planeSize: HW }],
  });
  const df = Tensor.empty(gpu, feat.shape);
  dispatchRanges(gpu, N, C, D, HW, {
    name: `${op}.feat`,
    shader: "pcm",
    entry: "pcm_bwd_feat",
    inputs: [
      { tensor: feat, planeSize: D * HW },
      { tensor: fn, planeSize: D * HW },
      { tensor: cam, planeSize: C * HW },
      { tensor: dy, planeSize: C * HW },
      { tensor: s, planeSize: HW },
      { tensor: t, planeSize: HW },
    ],
    outputs: [{ tensor: df, planeSize: D * HW }],
  });
  t.dispose();
  return df;
}

/**
 * Records SEAM's `cam_d_norm` of `cam` [N, C, h, w] (channel 0 = background; no gradient):
 * v_c = relu(relu(cam_c) - 1e-5) / (max_pixels relu(cam_c) + 1e-5); channel 0 becomes
 * 1 - max_{c>=1} v_c, and a foreground channel is zeroed where it is below that maximum.
 */
export function camDNorm(gpu: GpuContext, cam: Tensor): Tensor {
  const op = "pcm.cam_d_norm";
  const [N, C, h, w] = nchw(op, cam);
  const HW = h * w;
  const m = Tensor.empty(gpu, [N, C]);
  dispatchPlanes(gpu, N, {
    name: `${op}.max`,
    shader: "pcm",
    entry: "cdn_max",
    inputs: [{ tensor: cam, planeSize: C * HW }],
    outputs: [{ tensor: m, planeSize: C }],
    itemsPerPlane: C,
    params: (ch) => params(C, 0, HW, ch),
  });
  const y = Tensor.empty(gpu, cam.shape);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "pcm",
    entry: "cdn_apply",
    inputs: [{ tensor: cam, planeSize: C * HW }, { tensor: m, planeSize: C }],
    outputs: [{ tensor: y, planeSize: C * HW }],
    itemsPerPlane: HW,
    params: (ch) => params(C, 0, HW, ch),
  });
  m.dispose();
  return y;
}

// ---------------------------------------------------------------------------------------------
// f64 references (one sample: feat [D, HW], cam [C, HW] flat).

function normRef(f: ArrayLike<number>, D: number, HW: number): Float64Array {
  const fn = new Float64Array(D * HW);
  for (let i = 0; i < HW; i++) {
    let ss = 0;
    for (let d = 0; d < D; d++) ss += f[d * HW + i] ** 2;
    const inv = 1 / (Math.sqrt(ss) + EPS);
    for (let d = 0; d < D; d++) fn[d * HW + i] = f[d * HW + i] * inv;
  }
  return fn;
}

function gramRef(fn: Float64Array, D: number, HW: number): Float64Array {
  const g = new Float64Array(HW * HW);
  for (let i = 0; i < HW; i++) {
    for (let j = 0; j < HW; j++) {
      let v = 0;
      for (let d = 0; d < D; d++) v += fn[d * HW + i] * fn[d * HW + j];
      g[i * HW + j] = v;
    }
  }
  return g;
}

/** f64 reference of the PCM forward of one sample (module doc). */
export function pcmRef(
  feat: ArrayLike<number>,
  cam: ArrayLike<number>,
  C: number,
  D: number,
  HW: number,
): Float64Array {
  const g = gramRef(normRef(feat, D, HW), D, HW);
  const y = new Float64Array(C * HW);
  for (let j = 0; j < HW; j++) {
    let s = 0;
    for (let i = 0; i < HW; i++) s += Math.max(g[i * HW + j], 0);
    for (let c = 0; c < C; c++) {
      let acc = 0;
      for (let i = 0; i < HW; i++) acc += cam[c * HW + i] * Math.max(g[i * HW + j], 0);
      y[c * HW + j] = acc / (s + EPS);
    }
  }
  return y;
}

/**
 * f64 reference of the PCM backward of one sample: the gradient into `feat` for the upstream
 * gradient `dy` [C, HW] (straight chain rule over the materialised affinity).
 */
export function pcmBackwardRef(
  feat: ArrayLike<number>,
  cam: ArrayLike<number>,
  dy: ArrayLike<number>,
  C: number,
  D: number,
  HW: number,
): Float64Array {
  const fn = normRef(feat, D, HW);
  const g = gramRef(fn, D, HW);
  const s = new Float64Array(HW);
  for (let j = 0; j < HW; j++) for (let i = 0; i < HW; i++) s[j] += Math.max(g[i * HW + j], 0);
  // dA_ij = Σ_c x_ci dy_cj; A_ij = a_ij / (s_j + eps).
  const dg = new Float64Array(HW * HW);
  for (let j = 0; j < HW; j++) {
    const se = s[j] + EPS;
    let ds = 0;
    const dA = new Float64Array(HW);
    for (let i = 0; i < HW; i++) {
      for (let c = 0; c < C; c++) dA[i] += cam[c * HW + i] * dy[c * HW + j];
      ds -= dA[i] * Math.max(g[i * HW + j], 0) / (se * se);
    }
    for (let i = 0; i < HW; i++) {
      dg[i * HW + j] = g[i * HW + j] > 0 ? dA[i] / se + ds : 0;
    }
  }
  const dfn = new Float64Array(D * HW);
  for (let i = 0; i < HW; i++) {
    for (let j = 0; j < HW; j++) {
      const v = dg[i * HW + j];
      if (v === 0) continue;
      for (let d = 0; d < D; d++) {
        dfn[d * HW + i] += v * fn[d * HW + j];
        dfn[d * HW + j] += v * fn[d * HW + i];
      }
    }
  }
  const df = new Float64Array(D * HW);
  for (let i = 0; i < HW; i++) {
    let ss = 0;
    for (let d = 0; d < D; d++) ss += feat[d * HW + i] ** 2;
    const r = Math.sqrt(ss);
    const re = r + EPS;
    // fn_d = f_d / re; d fn_d / d f_e = δ_de / re - f_d f_e / (r re²).
    let fd = 0;
    for (let d = 0; d < D; d++) fd += feat[d * HW + i] * dfn[d * HW + i];
    const q = r > 0 ? fd / (r * re * re) : 0;
    for (let d = 0; d < D; d++) df[d * HW + i] = dfn[d * HW + i] / re - feat[d * HW + i] * q;
  }
  return df;
}

/** f64 reference of {@link camDNorm} for one sample (cam [C, HW] flat). */
export function camDNormRef(cam: ArrayLike<number>, C: number, HW: number): Float64Array {
  const v = new Float64Array(C * HW);
  for (let c = 0; c < C; c++) {
    let m = 0;
    for (let i = 0; i < HW; i++) m = Math.max(m, cam[c * HW + i]);
    for (let i = 0; i < HW; i++) {
      v[c * HW + i] = Math.max(Math.max(cam[c * HW + i], 0) - EPS, 0) / (m + EPS);
    }
  }
  const y = new Float64Array(C * HW);
  for (let i = 0; i < HW; i++) {
    let fg = 0;
    for (let c = 1; c < C; c++) fg = Math.max(fg, v[c * HW + i]);
    y[i] = 1 - fg;
    for (let c = 1; c < C; c++) y[c * HW + i] = v[c * HW + i] >= fg ? v[c * HW + i] : 0;
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Op units.

/** Parameters of a {@link pcmUnit} case: N samples, C maps, D features, an h x w grid. */
export interface PcmCase {
  N: number;
  C: number;
  D: number;
  h: number;
  w: number;
}

const pcmCase = (N: number, C: number, D: number, h: number, w: number, split = true) =>
  ({
    name: `N${N} C${C} D${D} ${h}x${w}`,
    params: { N, C, D, h, w },
    split,
  }) as OpCase<PcmCase>;

function perSample<T extends ArrayLike<number>>(
  N: number,
  parts: { v: T; size: number }[],
  fn: (...xs: Float64Array[]) => Float64Array,
): Float64Array {
  const outs: Float64Array[] = [];
  for (let n = 0; n < N; n++) {
    outs.push(fn(...parts.map((p) =>
      Float64Array.from(
        { length: p.size },
        (_, i) => p.v[n * p.size + i],
      )
    )));
  }
  const total = outs.reduce((a, o) => a + o.length, 0);
  const out = new Float64Array(total);
  let k = 0;
  for (const o of outs) {
    out.set(o, k);
    k += o.length;
  }
  return out;
}

/**
 * The PCM as an op unit: features in [-1, 1] (most pairs correlate positively after a shift of
 * +0.3, some negatively, so the relu matters), the CAM in [0, 1]. The backward recomputes the
 * forward's saved tensors.
 */
export const pcmUnit: OpUnit<PcmCase> = defineOpUnit<PcmCase>({
  name: "pcm",
  description: "SEAM's PCM: y = x · colnorm(relu(fnᵀ fn)), fn = f / ‖f‖ over channels",
  bound: "compute",
  inputs: ["feat", "cam"],
  outputs: ["y"],
  differentiable: ["feat"],
  cases: [
    pcmCase(2, 3, 4, 3, 5),
    pcmCase(1, 5, 7, 4, 4),
    pcmCase(3, 2, 3, 2, 7),
    pcmCase(12, 4, 6, 3, 3),
  ],
  benchShapes: [pcmCase(2, 21, 192, 56, 56)],
  tolerance: { forward: { rtol: 1e-4, atol: 1e-6 }, backward: { maxRel: 1e-4, atol: 1e-6 } },
  inputShapes: (p) => ({ feat: [p.N, p.D, p.h, p.w], cam: [p.N, p.C, p.h, p.w] }),
  outputShapes: (p) => ({ y: [p.N, p.C, p.h, p.w] }),
  makeInputs: (p, seed) => {
    const HW = p.h * p.w;
    return {
      feat: uniformValues(p.N * p.D * HW, seed).map((v) => v + 0.3),
      cam: uniformValues(p.N * p.C * HW, seed + 1, 0, 1),
    };
  },
  validateInputs: (p, x) => {
    // No dot product within finite-difference reach of the relu kink.
    const HW = p.h * p.w;
    for (let n = 0; n < p.N; n++) {
      const f = Float64Array.from({ length: p.D * HW }, (_, i) => x.feat[n * p.D * HW + i]);
      const g = gramRef(normRef(f, p.D, HW), p.D, HW);
      if (g.some((v) => Math.abs(v) < 1e-4)) throw new Error("pcm: a dot product near 0");
    }
  },
  refForward: (p, x) => {
    const HW = p.h * p.w;
    return {
      y: perSample(
        p.N,
        [{ v: x.feat, size: p.D * HW }, { v: x.cam, size: p.C * HW }],
        (f, c) => pcmRef(f, c, p.C, p.D, HW),
      ),
    };
  },
  refBackward: (p, x, d) => {
    const HW = p.h * p.w;
    return {
      feat: perSample(
        p.N,
        [{ v: x.feat, size: p.D * HW }, { v: x.cam, size: p.C * HW }, {
          v: d.y,
          size: p.C * HW,
        }],
        (f, c, dy) => pcmBackwardRef(f, c, dy, p.C, p.D, HW),
      ),
    };
  },
  cost: (p) => {
    const HW = p.h * p.w;
    const f = [p.N, p.D, p.h, p.w];
    const c = [p.N, p.C, p.h, p.w];
    return {
      forward: { flops: 2 * p.N * HW * HW * (p.D + p.C), bytes: bytesOf(f, c, c) },
      backward: { flops: 4 * p.N * HW * HW * (p.D + p.C), bytes: bytesOf(f, c, c, f) },
    };
  },
  gpu: {
    name: "recomputing kernels",
    forward: (gpu, _p, { tensors: t }) => ({ y: pcm(gpu, t.feat, t.cam) }),
    backward: (gpu, _p, { tensors: t }, { tensors: d }) => {
      const r = pcmForward(gpu, t.feat, t.cam);
      const feat = pcmBackward(gpu, t.feat, t.cam, r.fn, r.s, asShape(d.y, t.cam.shape));
      r.y.dispose();
      r.fn.dispose();
      r.s.dispose();
      return { feat };
    },
  },
});

/** Parameters of a {@link camDNormUnit} case: cam [N, C, h, w]. */
export interface CamDNormCase {
  N: number;
  C: number;
  h: number;
  w: number;
}

/**
 * SEAM's `cam_d_norm` as a forward-only op unit: CAM values in [-1, 1.5], each channel's
 * maximum (2) at its own pixel where the grid allows, so that no two normalised maxima (both
 * within 1e-5 of 1) meet at a pixel, where f32 could order them otherwise than f64.
 */
export const camDNormUnit: OpUnit<CamDNormCase> = defineOpUnit<CamDNormCase>({
  name: "seam_cam_d_norm",
  description: "SEAM's cam_d_norm: max-normalised relu CAM, bg = 1 - max fg, non-max fg zeroed",
  bound: "memory",
  inputs: ["cam"],
  outputs: ["y"],
  differentiable: [],
  cases: [
    { name: "2x4x5x7", params: { N: 2, C: 4, h: 5, w: 7 } },
    { name: "3x16x5x5", params: { N: 3, C: 16, h: 5, w: 5 } },
    { name: "1x1x3x3", params: { N: 1, C: 1, h: 3, w: 3 } },
  ],
  benchShapes: [{ name: "8x21x56x56", params: { N: 8, C: 21, h: 56, w: 56 } }],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: {} },
  inputShapes: (p) => ({ cam: [p.N, p.C, p.h, p.w] }),
  outputShapes: (p) => ({ y: [p.N, p.C, p.h, p.w] }),
  makeInputs: (p, seed) => {
    const HW = p.h * p.w;
    const cam = uniformValues(p.N * p.C * HW, seed, -1, 1.5);
    for (let n = 0; n < p.N; n++) {
      for (let c = 0; c < p.C; c++) cam[(n * p.C + c) * HW + ((c * 7 + n) % HW)] = 2;
    }
    return { cam };
  },
  refForward: (p, x) => {
    const HW = p.h * p.w;
    return {
      y: perSample(p.N, [{ v: x.cam, size: p.C * HW }], (c) => camDNormRef(c, p.C, HW)),
    };
  },
  cost: (p) => {
    const s = [p.N, p.C, p.h, p.w];
    return { forward: { flops: 8 * s.reduce((a, b) => a * b, 1), bytes: bytesOf(s, s, s) } };
  },
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, _p, { tensors: t }) => ({ y: camDNorm(gpu, t.cam) }),
  },
});
