/**
 * The pairwise affinity op of AffinityNet (psa, Ahn & Kwak, CVPR 2018): WGSL forward/backward
 * (shaders/affinity.wgsl), its f64 references, and the pair layout it works on.
 *
 * Pairs follow psa's `get_indices_of_pairs(radius, (H, W))`: the "from" pixels are the crop
 * rows `[0, H-radius+1)`, columns `[radius-1, W-radius+1)` (so every partner lies inside the
 * map), each paired with the offsets of {@link affinityOffsets}. Per sample, pair arrays are
 * laid out `[P, nFrom]`: index `k·nFrom + i` for offset k and crop pixel i (row-major).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes } from "./planes.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** psa's pair radius on the feature grid. */
export const AFFINITY_RADIUS = 5;

/** Label of an ignored pixel in an affinity label map. */
export const AFFINITY_IGNORE = 255;

/**
 * psa's pair offsets (dy, dx) for a radius: `(0, 1..r-1)`, then for `dy = 1..r-1` every
 * `dx = -(r-1)..r-1` with `dx² + dy² < r²` (34 offsets for r = 5), in that order.
 */
export function affinityOffsets(radius = AFFINITY_RADIUS): [number, number][] {
  if (!Number.isInteger(radius) || radius < 2) {
    throw new RangeError(`affinity: radius must be an integer >= 2, got ${radius}`);
  }
  const out: [number, number][] = [];
  for (let dx = 1; dx < radius; dx++) out.push([0, dx]);
  for (let dy = 1; dy < radius; dy++) {
    for (let dx = -radius + 1; dx < radius; dx++) {
      if (dx * dx + dy * dy < radius * radius) out.push([dy, dx]);
    }
  }
  return out;
}

/** The pair layout of an h x w feature grid (see the module doc). */
export interface PairGrid {
  /** Grid rows. */
  h: number;
  /** Grid columns. */
  w: number;
  /** Pair radius. */
  radius: number;
  /** The offsets (dy, dx), {@link affinityOffsets}. */
  offsets: [number, number][];
  /** Rows of the "from" crop: h - radius + 1. */
  cropH: number;
  /** Columns of the "from" crop: w - 2·(radius - 1); crop column 0 is grid column radius-1. */
  cropW: number;
  /** cropH · cropW. */
  nFrom: number;
}

/** The pair layout of an h x w grid; throws when the grid is too small for the radius. */
export function pairGrid(h: number, w: number, radius = AFFINITY_RADIUS): PairGrid {
  const offsets = affinityOffsets(radius);
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < radius || w < 2 * radius - 1) {
    throw new RangeError(
      `affinity: a ${h}x${w} grid is too small for radius ${radius} ` +
        `(need h >= ${radius}, w >= ${2 * radius - 1})`,
    );
  }
  const cropH = h - radius + 1;
  const cropW = w - 2 * (radius - 1);
  return { h, w, radius, offsets, cropH, cropW, nFrom: cropH * cropW };
}

/**
 * Calls `fn(j, p, q)` for every pair of a grid in layout order: j = k·nFrom + i is the pair's
 * index, p its "from" pixel and q = p + offset_k its partner (row-major pixel indices).
 */
export function forEachPair(g: PairGrid, fn: (j: number, p: number, q: number) => void): void {
  g.offsets.forEach(([dy, dx], k) => {
    for (let i = 0; i < g.nFrom; i++) {
      const p = Math.floor(i / g.cropW) * g.w + (i % g.cropW) + g.radius - 1;
      fn(k * g.nFrom + i, p, p + dy * g.w + dx);
    }
  });
}

/**
 * The uniform blocks of shaders/affinity.wgsl. PairParams, of every pair kernel: aff_fwd /
 * aff_bwd: off0..off3 are the element offsets of the chunk's first sample in their bindings (in
 * binding order); rw_dense: off0 = first row of the chunk, off1 = its offset in the output
 * binding; beta: rw_* only. AffinityLossParams, of psa's affinity loss (src/losses/affinity.ts):
 * n values, accumulate onto earlier chunks' sums, the three pair counts (+ 1e-5).
 */
export const { PairParams, AffinityLossParams } = declareParams("affinity", {
  PairParams: {
    C: "u32",
    H: "u32",
    W: "u32",
    R: "u32",
    P: "u32",
    cropH: "u32",
    cropW: "u32",
    off0: "u32",
    off1: "u32",
    off2: "u32",
    off3: "u32",
    beta: "f32",
  },
  AffinityLossParams: {
    n: "u32",
    accumulate: "u32",
    cnt_bg: "f32",
    cnt_fg: "f32",
    cnt_neg: "f32",
  },
});

/**
 * The uniform words of the pair kernels ({@link PairParams}): channels, grid, up to four
 * offsets (the rest 0) and beta.
 */
export function pairParams(g: PairGrid, C: number, offs: number[], beta = 0): Uint32Array {
  return PairParams.pack({
    C,
    H: g.h,
    W: g.w,
    R: g.radius,
    P: g.offsets.length,
    cropH: g.cropH,
    cropW: g.cropW,
    off0: offs[0] ?? 0,
    off1: offs[1] ?? 0,
    off2: offs[2] ?? 0,
    off3: offs[3] ?? 0,
    beta,
  });
}

function featShape(op: string, f: Tensor): [number, number, number, number] {
  const s = f.shape;
  if (s.length === 3) return [1, s[0], s[1], s[2]];
  if (s.length === 4) return [s[0], s[1], s[2], s[3]];
  throw new RangeError(`${op}: features must be [C, H, W] or [N, C, H, W], got [${s}]`);
}

/**
 * Records psa's pairwise affinities of features `feat` [N, C, H, W] (or [C, H, W]):
 * `aff[n, k, i] = exp(-mean_c |f[n, c, p_i] - f[n, c, p_i + offset_k]|)`, shape
 * [N, P, nFrom] (see {@link pairGrid}).
 */
export function pairwiseAffinity(gpu: GpuContext, feat: Tensor, radius = AFFINITY_RADIUS): Tensor {
  const op = "affinity.forward";
  const [N, C, H, W] = featShape(op, feat);
  const g = pairGrid(H, W, radius);
  const P = g.offsets.length;
  const aff = Tensor.empty(gpu, [N, P, g.nFrom]);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "affinity",
    entry: "aff_fwd",
    inputs: [{ tensor: feat, planeSize: C * H * W }],
    outputs: [{ tensor: aff, planeSize: P * g.nFrom }],
    itemsPerPlane: g.nFrom,
    params: (ch) => pairParams(g, C, ch.offsets),
  });
  return aff;
}

/**
 * Records the gradient into the features of {@link pairwiseAffinity} given its output `aff`
 * and the upstream gradient `dAff` (both [N, P, nFrom]); returns dFeat with `feat`'s shape.
 * Each pixel gathers its pairs in both directions (deterministic; |x|' = sign(x), 0 at 0).
 */
export function pairwiseAffinityBackward(
  gpu: GpuContext,
  feat: Tensor,
  aff: Tensor,
  dAff: Tensor,
  radius = AFFINITY_RADIUS,
): Tensor {
  const op = "affinity.backward";
  const [N, C, H, W] = featShape(op, feat);
  const g = pairGrid(H, W, radius);
  const P = g.offsets.length;
  checkShape(op, "aff", aff, [N, P, g.nFrom]);
  checkShape(op, "dAff", dAff, [N, P, g.nFrom]);
  const dFeat = Tensor.empty(gpu, feat.shape);
  const plane = P * g.nFrom;
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "affinity",
    entry: "aff_bwd",
    inputs: [
      { tensor: feat, planeSize: C * H * W },
      { tensor: aff, planeSize: plane },
      { tensor: dAff, planeSize: plane },
    ],
    outputs: [{ tensor: dFeat, planeSize: C * H * W }],
    itemsPerPlane: H * W,
    params: (ch) => pairParams(g, C, ch.offsets),
  });
  return dFeat;
}

/** CPU reference of {@link pairwiseAffinity} in f64 (one sample, feat [C, H, W] flat). */
export function pairwiseAffinityRef(
  feat: ArrayLike<number>,
  C: number,
  H: number,
  W: number,
  radius = AFFINITY_RADIUS,
): Float64Array {
  const g = pairGrid(H, W, radius);
  const out = new Float64Array(g.offsets.length * g.nFrom);
  const HW = H * W;
  forEachPair(g, (j, p, q) => {
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.abs(feat[c * HW + p] - feat[c * HW + q]);
    out[j] = Math.exp(-s / C);
  });
  return out;
}

/** CPU reference of {@link pairwiseAffinityBackward} in f64 (one sample; scatter form). */
export function pairwiseAffinityBackwardRef(
  feat: ArrayLike<number>,
  dAff: ArrayLike<number>,
  C: number,
  H: number,
  W: number,
  radius = AFFINITY_RADIUS,
): Float64Array {
  const g = pairGrid(H, W, radius);
  const aff = pairwiseAffinityRef(feat, C, H, W, radius);
  const HW = H * W;
  const out = new Float64Array(C * HW);
  forEachPair(g, (j, p, q) => {
    const ga = dAff[j] * aff[j] / C;
    for (let c = 0; c < C; c++) {
      const s = Math.sign(feat[c * HW + p] - feat[c * HW + q]);
      out[c * HW + p] -= ga * s;
      out[c * HW + q] += ga * s;
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of an {@link affinityUnit} case: features [N, C, H, W] and the pair radius. */
export interface AffinityCase {
  shape: readonly [number, number, number, number];
  radius: number;
}

function affinityOutShape(p: AffinityCase): number[] {
  const g = pairGrid(p.shape[2], p.shape[3], p.radius);
  return [p.shape[0], g.offsets.length, g.nFrom];
}

const affCase = (
  shape: [number, number, number, number],
  radius = AFFINITY_RADIUS,
  split = true,
): OpCase<AffinityCase> => ({
  name: `${shape.join("x")} r${radius}`,
  params: { shape, radius },
  split,
});

/**
 * The pairwise affinity op as an op unit. Features are random values rounded to a 1e-3 grid
 * plus distinct per-element offsets of at least 1e-5 (so that no channel difference lies
 * within the finite differences' reach of the |x| kink).
 */
export const affinityUnit: OpUnit<AffinityCase> = defineOpUnit<AffinityCase>({
  name: "affinity",
  description: "psa's pairwise affinities exp(-mean_c |f_i - f_j|) within a radius",
  bound: "memory",
  inputs: ["feat"],
  outputs: ["aff"],
  differentiable: ["feat"],
  cases: [
    affCase([2, 3, 7, 11]),
    affCase([1, 5, 6, 9]),
    affCase([3, 2, 9, 13], AFFINITY_RADIUS, false),
    affCase([2, 4, 5, 6], 3),
    affCase([9, 3, 6, 9]),
  ],
  benchShapes: [affCase([8, 448, 32, 32])],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-4 } },
  inputShapes: (p) => ({ feat: [...p.shape] }),
  outputShapes: (p) => ({ aff: affinityOutShape(p) }),
  makeInputs: (p, seed) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const u = uniformValues(n, seed);
    // Offsets 1e-5·(i mod 97): two values on the same 1e-3 grid point differ by >= 1e-5.
    return { feat: u.map((v, i) => Math.round(v * 1e3) / 1e3 + ((i % 97) + 1) * 1e-5) };
  },
  refForward: (p, x) => {
    const [N, C, H, W] = p.shape;
    const plane = C * H * W;
    const out: number[] = [];
    for (let n = 0; n < N; n++) {
      const f = Float64Array.from({ length: plane }, (_, i) => x.feat[n * plane + i]);
      out.push(...pairwiseAffinityRef(f, C, H, W, p.radius));
    }
    return { aff: Float64Array.from(out) };
  },
  refBackward: (p, x, d) => {
    const [N, C, H, W] = p.shape;
    const plane = C * H * W;
    const pp = d.aff.length / N;
    const out = new Float64Array(N * plane);
    for (let n = 0; n < N; n++) {
      const f = Float64Array.from({ length: plane }, (_, i) => x.feat[n * plane + i]);
      const da = Float64Array.from({ length: pp }, (_, i) => d.aff[n * pp + i]);
      out.set(pairwiseAffinityBackwardRef(f, da, C, H, W, p.radius), n * plane);
    }
    return { feat: out };
  },
  cost: (p) => {
    const out = affinityOutShape(p);
    const pairs = sizeOf(out);
    return {
      forward: { flops: 3 * pairs * p.shape[1], bytes: bytesOf(p.shape, out) },
      backward: { flops: 6 * pairs * p.shape[1], bytes: bytesOf(p.shape, out, out, p.shape) },
    };
  },
  gpu: {
    name: "per-pair kernel",
    forward: (gpu, p, { tensors: t }) => ({ aff: pairwiseAffinity(gpu, t.feat, p.radius) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const aff = pairwiseAffinity(gpu, t.feat, p.radius);
      const dAff = asShape(d.aff, aff.shape);
      const feat = pairwiseAffinityBackward(gpu, t.feat, aff, dAff, p.radius);
      aff.dispose();
      return { feat };
    },
  },
});
