/**
 * AffinityNet building blocks (psa, Ahn & Kwak, CVPR 2018): affinity labels from CAMs, the
 * pairwise affinity op (WGSL forward/backward, shaders/affinity.wgsl) and psa's affinity loss.
 *
 * Pairs follow psa's `get_indices_of_pairs(radius, (H, W))`: the "from" pixels are the crop
 * rows `[0, H-radius+1)`, columns `[radius-1, W-radius+1)` (so every partner lies inside the
 * map), each paired with the offsets of {@link affinityOffsets}. Per sample, pair arrays are
 * laid out `[P, nFrom]`: index `k·nFrom + i` for offset k and crop pixel i (row-major).
 * @module
 */
import { f32bits, type GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { checkShape, dispatchPlanes, elementChunks } from "../../ops/planes.ts";

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
 * The uniform words of the pair kernels (struct PairParams in shaders/affinity.wgsl):
 * channels, grid, the four offsets and beta.
 */
export function pairParams(g: PairGrid, C: number, offs: number[], beta = 0): number[] {
  const o = [...offs, 0, 0, 0, 0].slice(0, 4);
  return [C, g.h, g.w, g.radius, g.offsets.length, g.cropH, g.cropW, ...o, f32bits(beta)];
}

/** The two background exponents of psa's label scheme. */
export interface AffinityLabelOptions {
  /** Low alpha (default 4): larger background score, so its foreground is confident. */
  loAlpha?: number;
  /** High alpha (default 24): smaller background score, so its background is confident. */
  hiAlpha?: number;
}

/**
 * psa's confident label map (the CRF-free variant of its la/ha scheme) from normalised
 * tagged-class CAMs `cams` [T, h, w] (values in [0, 1]) of the classes `classes` (0-based).
 *
 * With m(p) = max_t cams[t, p] and t*(p) its first argmax:
 * - the high-alpha map says background where `(1 - m)^hiAlpha >= m` (bg first on ties): label 0;
 * - else the low-alpha map says foreground where `m > (1 - m)^loAlpha`: label classes[t*] + 1;
 * - otherwise the maps disagree (low alpha: background, high alpha: foreground): 255, ignored.
 *
 * This is psa's `label = la; label[la == 0] = 255; label[ha == 0] = 0` without the CRF (the
 * foreground class is the same in both maps since they share the CAMs). An image without tags
 * is all background. Returns a Uint8Array of h·w labels.
 */
export function affinityLabelMap(
  cams: ArrayLike<number>,
  classes: readonly number[],
  h: number,
  w: number,
  opts: AffinityLabelOptions = {},
): Uint8Array {
  const lo = opts.loAlpha ?? 4;
  const hi = opts.hiAlpha ?? 24;
  if (!(lo > 0 && hi > 0)) throw new RangeError(`affinity labels: bad alphas ${lo}, ${hi}`);
  const n = h * w;
  if (cams.length !== classes.length * n) {
    throw new RangeError(
      `affinity labels: ${cams.length} CAM values for ${classes.length} classes of ${h}x${w}`,
    );
  }
  for (const c of classes) {
    if (!Number.isInteger(c) || c < 0 || c > 253) {
      throw new RangeError(`affinity labels: bad class index ${c}`);
    }
  }
  const out = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    let m = -Infinity;
    let best = -1;
    for (let t = 0; t < classes.length; t++) {
      const v = cams[t * n + p];
      if (Number.isNaN(v)) throw new RangeError(`affinity labels: NaN CAM at class ${t}, ${p}`);
      if (v > m) {
        m = v;
        best = t;
      }
    }
    if (best < 0) continue;
    const r = Math.max(0, 1 - m);
    if (r ** hi >= m) out[p] = 0;
    else if (m > r ** lo) out[p] = classes[best] + 1;
    else out[p] = AFFINITY_IGNORE;
  }
  return out;
}

/** Pair labels of one image, in the pair layout `[P, nFrom]`. */
export interface PairLabels {
  /** The pair layout. */
  grid: PairGrid;
  /**
   * Per pair: 0 ignored (an end labelled 255), 1 background-positive (both ends 0),
   * 2 foreground-positive (same class, not 0), 3 negative (different labels).
   */
  codes: Uint8Array;
  /** Number of background-positive pairs. */
  bg: number;
  /** Number of foreground-positive pairs. */
  fg: number;
  /** Number of negative pairs. */
  neg: number;
}

/** Pair code of {@link PairLabels}. */
export const PAIR_IGNORE = 0;
/** Pair code: both ends background. */
export const PAIR_BG = 1;
/** Pair code: both ends the same foreground class. */
export const PAIR_FG = 2;
/** Pair code: ends with different labels. */
export const PAIR_NEG = 3;

/**
 * psa's `ExtractAffinityLabelInRadius` on a label map (0 bg, 1.. classes, 255 ignored) of an
 * h x w grid: pairs with an ignored end are dropped, equal labels are bg- or fg-positive,
 * different labels negative.
 */
export function affinityPairLabels(
  labels: ArrayLike<number>,
  h: number,
  w: number,
  radius = AFFINITY_RADIUS,
): PairLabels {
  const grid = pairGrid(h, w, radius);
  if (labels.length !== h * w) {
    throw new RangeError(`affinity pairs: ${labels.length} labels for a ${h}x${w} grid`);
  }
  const codes = new Uint8Array(grid.offsets.length * grid.nFrom);
  let bg = 0, fg = 0, neg = 0;
  forEachPair(grid, (j, p, q) => {
    const a = labels[p];
    const b = labels[q];
    if (a === AFFINITY_IGNORE || b === AFFINITY_IGNORE) return;
    if (a !== b) {
      codes[j] = PAIR_NEG;
      neg++;
    } else if (a === 0) {
      codes[j] = PAIR_BG;
      bg++;
    } else {
      codes[j] = PAIR_FG;
      fg++;
    }
  });
  return { grid, codes, bg, fg, neg };
}

// ---------------------------------------------------------------------------------------------
// Pairwise affinity.

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
// Affinity loss.

/** Pair counts of a batch (the denominators of psa's loss, before its +1e-5). */
export interface PairCounts {
  /** Background-positive pairs. */
  bg: number;
  /** Foreground-positive pairs. */
  fg: number;
  /** Negative pairs. */
  neg: number;
}

/** Uploads the pair codes of a batch's images as an f32 tensor [N, P, nFrom]. */
export function uploadPairCodes(gpu: GpuContext, labels: readonly PairLabels[]): Tensor {
  if (labels.length === 0) throw new RangeError("affinity loss: no images");
  const n = labels[0].codes.length;
  const { h, w, radius } = labels[0].grid;
  for (const l of labels) {
    if (l.grid.h !== h || l.grid.w !== w || l.grid.radius !== radius) {
      throw new RangeError(
        `affinity loss: pair grids differ (${l.grid.h}x${l.grid.w} r${l.grid.radius} vs ` +
          `${h}x${w} r${radius})`,
      );
    }
  }
  const data = new Float32Array(labels.length * n);
  labels.forEach((l, b) => data.set(l.codes, b * n));
  return Tensor.fromArray(gpu, data, [
    labels.length,
    labels[0].grid.offsets.length,
    labels[0].grid.nFrom,
  ]);
}

/** Sums the pair counts of a batch. */
export function pairCounts(labels: readonly PairLabels[]): PairCounts {
  return labels.reduce((a, l) => ({ bg: a.bg + l.bg, fg: a.fg + l.fg, neg: a.neg + l.neg }), {
    bg: 0,
    fg: 0,
    neg: 0,
  });
}

/** Output of {@link affinityLoss}. */
export interface AffinityLossResult {
  /** [8]: total, bg term, fg term, neg term, then the raw sums of the three terms and 0. */
  loss: Tensor;
  /** d total / d aff, shape of `aff`. */
  grad: Tensor;
}

/**
 * Records psa's affinity loss over a batch of affinities `aff` [N, P, nFrom] with pair
 * `codes` (same shape, {@link uploadPairCodes}) and the batch's pair `counts`:
 * `bg = Σ_bg -log(aff + 1e-5) / (n_bg + 1e-5)`, `fg` likewise over fg-positive pairs,
 * `neg = Σ_neg -log(1 + 1e-5 - aff) / (n_neg + 1e-5)`, `total = bg/4 + fg/4 + neg/2`; and its
 * gradient into `aff`. Deterministic (fixed-order reductions).
 */
export function affinityLoss(
  gpu: GpuContext,
  aff: Tensor,
  codes: Tensor,
  counts: PairCounts,
): AffinityLossResult {
  const op = "affinity.loss";
  checkShape(op, "codes", codes, aff.shape);
  for (const [k, v] of Object.entries(counts)) {
    if (!(Number.isInteger(v) && v >= 0)) throw new RangeError(`${op}: bad ${k} count ${v}`);
  }
  const cnt = [counts.bg, counts.fg, counts.neg].map((v) => f32bits(v + 1e-5));
  const loss = Tensor.empty(gpu, [8]);
  const grad = Tensor.empty(gpu, aff.shape);
  const chunks = elementChunks(gpu, aff.size);
  chunks.forEach((c, idx) => {
    const params = [c.count, idx > 0 ? 1 : 0, ...cnt, 0, 0, 0];
    const inputs = [aff.slice(c.start, c.count), codes.slice(c.start, c.count)];
    gpu.dispatch1d(
      {
        name: `${op}.grad`,
        shader: "affinity",
        entry: "loss_grad",
        inputs,
        outputs: [grad.slice(c.start, c.count)],
        params,
      },
      c.count,
      256,
    );
    gpu.dispatch({
      name: `${op}.forward`,
      shader: "affinity",
      entry: "loss_fwd",
      inputs,
      outputs: [loss.binding()],
      params,
      workgroups: [1],
    });
  });
  return { loss, grad };
}

/** CPU reference of {@link affinityLoss} in f64: `[total, bg, fg, neg]` and the gradient. */
export function affinityLossRef(
  aff: ArrayLike<number>,
  codes: ArrayLike<number>,
  counts: PairCounts,
): { loss: [number, number, number, number]; grad: Float64Array } {
  const eps = 1e-5;
  const nb = counts.bg + eps, nf = counts.fg + eps, nn = counts.neg + eps;
  let sb = 0, sf = 0, sn = 0;
  const grad = new Float64Array(aff.length);
  for (let i = 0; i < aff.length; i++) {
    const a = aff[i];
    if (codes[i] === PAIR_BG) {
      sb -= Math.log(a + eps);
      grad[i] = -0.25 / (nb * (a + eps));
    } else if (codes[i] === PAIR_FG) {
      sf -= Math.log(a + eps);
      grad[i] = -0.25 / (nf * (a + eps));
    } else if (codes[i] === PAIR_NEG) {
      sn -= Math.log(1 + eps - a);
      grad[i] = 0.5 / (nn * (1 + eps - a));
    }
  }
  const bg = sb / nb, fg = sf / nf, neg = sn / nn;
  return { loss: [bg / 4 + fg / 4 + neg / 2, bg, fg, neg], grad };
}
