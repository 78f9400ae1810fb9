/**
 * psa's affinity labels: the confident label map from CAMs (its two-alpha scheme, with the
 * dense CRF as psa does or without it) and the pair codes of a label map.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { argmaxChannels } from "../../ops/channel.ts";
import { DenseCrf, type DenseCrfOptions } from "../../ops/crf.ts";
import { AFFINITY_IGNORE, AFFINITY_RADIUS, forEachPair, pairGrid } from "../../ops/affinity.ts";
import { PAIR_BG, PAIR_FG, PAIR_NEG, type PairLabels } from "../../losses/affinity.ts";

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

/**
 * The score maps [T + 1, h, w] of one background exponent: psa's `(1 - max_t cams)^alpha`
 * background, then the CAMs (the input of its CRF).
 */
export function camsWithBackgroundScore(
  cams: ArrayLike<number>,
  T: number,
  n: number,
  alpha: number,
): Float32Array {
  const out = new Float32Array((T + 1) * n);
  for (let p = 0; p < n; p++) {
    let m = 0;
    for (let t = 0; t < T; t++) m = Math.max(m, cams[t * n + p]);
    out[p] = Math.max(0, 1 - m) ** alpha;
  }
  for (let i = 0; i < T * n; i++) out[n + i] = cams[i];
  return out;
}

/**
 * The per-pixel argmax (first maximum on ties) of each of several score maps [L, H, W] of one
 * image `image` [3, H, W] after the dense CRF: one CRF build for all maps, one readback.
 */
export async function crfArgmax(
  gpu: GpuContext,
  image: Tensor,
  maps: readonly Float32Array[],
  L: number,
  crf: DenseCrfOptions = {},
): Promise<Float32Array[]> {
  const [, h, w] = image.shape;
  const field = new DenseCrf(gpu, image, crf);
  const arg = maps.map((m) => {
    const scores = Tensor.fromArray(gpu, m, [L, h, w]);
    const q = field.run(scores);
    scores.dispose();
    const a = argmaxChannels(gpu, q.reshape([1, L, h, w]));
    q.dispose();
    return a;
  });
  field.dispose();
  const read = await gpu.readRanges(arg.map((a) => a.binding()));
  for (const a of arg) a.dispose();
  return read.map((b) => new Float32Array(b));
}

/**
 * psa's confident label map with its dense CRF (`infer_cls.py`'s `_crf_with_alpha` and
 * `data.py`'s label rule): the score maps of the low and the high alpha
 * ({@link camsWithBackgroundScore}) each refined by the CRF on the image, la and ha their
 * argmax; then `label = la; label[la == 0] = 255; label[ha == 0] = 0` (foreground labels are
 * la's class + 1). `image`: [3, h, w] RGB planes 0..255 on the GPU; `cams` as
 * {@link affinityLabelMap}'s. One readback. An image without tags is all background.
 */
export async function crfAffinityLabelMap(
  gpu: GpuContext,
  image: Tensor,
  cams: ArrayLike<number>,
  classes: readonly number[],
  h: number,
  w: number,
  opts: AffinityLabelOptions & { crf?: DenseCrfOptions } = {},
): Promise<Uint8Array> {
  const lo = opts.loAlpha ?? 4;
  const hi = opts.hiAlpha ?? 24;
  const n = h * w;
  const T = classes.length;
  if (cams.length !== T * n) {
    throw new RangeError(
      `affinity labels: ${cams.length} CAM values for ${T} classes of ${h}x${w}`,
    );
  }
  if (T === 0) return new Uint8Array(n);
  const [la, ha] = await crfArgmax(
    gpu,
    image,
    [lo, hi].map((alpha) => camsWithBackgroundScore(cams, T, n, alpha)),
    T + 1,
    opts.crf,
  );
  const out = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    if (ha[p] === 0) out[p] = 0;
    else if (la[p] === 0) out[p] = AFFINITY_IGNORE;
    else out[p] = classes[la[p] - 1] + 1;
  }
  return out;
}

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
