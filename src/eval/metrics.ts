/**
 * Segmentation scores from a confusion matrix, OC breakdowns, and the `metrics.json` file.
 *
 * Scores over K = C + 1 classes (background first), from a K×K matrix with rows = ground
 * truth and columns = prediction (ignore pixels never counted):
 * - IoU_k = TP / (TP + FP + FN); **NaN** when the class occurs in neither the ground truth
 *   nor the predictions (0/0); such classes are left out of the mean (written as `null`).
 * - mIoU = mean of the IoUs that are not NaN.
 * - pixel accuracy = trace / total; mean class accuracy = mean over classes present in the
 *   ground truth of TP / (ground-truth pixels of the class).
 *
 * @module
 */
import type { MaskCounts } from "./confusion.ts";
import type { CamCounts } from "./cam.ts";

/** Scores of one confusion matrix. */
export interface SegScores {
  /** Per class (K), NaN for classes absent from ground truth and prediction. */
  iou: number[];
  /** Mean over classes whose IoU is defined (NaN when none is). */
  miou: number;
  /** Correct / all counted pixels (NaN without pixels). */
  pixelAcc: number;
  /** Mean over classes present in the ground truth of their recall (NaN when none). */
  meanAcc: number;
}

/** Scores of a K×K confusion matrix (rows = ground truth, columns = prediction). */
export function segScores(confusion: ArrayLike<number>, k: number): SegScores {
  if (confusion.length !== k * k) {
    throw new RangeError(`confusion matrix has ${confusion.length} cells, expected ${k}x${k}`);
  }
  const row = new Float64Array(k);
  const col = new Float64Array(k);
  let total = 0;
  let trace = 0;
  for (let g = 0; g < k; g++) {
    for (let p = 0; p < k; p++) {
      const v = confusion[g * k + p];
      row[g] += v;
      col[p] += v;
      total += v;
      if (g === p) trace += v;
    }
  }
  const iou: number[] = [];
  const acc: number[] = [];
  for (let c = 0; c < k; c++) {
    const tp = confusion[c * k + c];
    const union = row[c] + col[c] - tp;
    iou.push(union > 0 ? tp / union : NaN);
    if (row[c] > 0) acc.push(tp / row[c]);
  }
  const defined = iou.filter((x) => !Number.isNaN(x));
  return {
    iou,
    miou: mean(defined),
    pixelAcc: total > 0 ? trace / total : NaN,
    meanAcc: mean(acc),
  };
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** One entry of the OC breakdown. */
export interface OcPair {
  /** Ground-truth class the OC prediction covers ("ignore" for ignore / no ground truth). */
  true: string;
  /** The OC class predicted there. */
  pred: string;
  /** Pixels. */
  count: number;
}

/**
 * The largest cells of an OC pair matrix `(K+1)×K` (row K = ignore / no ground truth),
 * sorted by count (descending, then by row and column), zeros dropped.
 */
export function topOcPairs(
  pairs: ArrayLike<number>,
  names: readonly string[],
  limit = 20,
): OcPair[] {
  const k = names.length;
  if (pairs.length !== (k + 1) * k) {
    throw new RangeError(`OC pair matrix has ${pairs.length} cells, expected ${(k + 1)}x${k}`);
  }
  const cells: [number, number][] = [];
  for (let i = 0; i < pairs.length; i++) if (pairs[i] > 0) cells.push([i, pairs[i]]);
  cells.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  return cells.slice(0, limit).map(([i, count]) => ({
    true: Math.floor(i / k) === k ? "ignore" : names[Math.floor(i / k)],
    pred: names[i % k],
    count,
  }));
}

/**
 * The contents of `metrics.json` (schema `ocr-wsss/metrics@1`). Keys are stable; numbers that
 * are undefined (no pixels, class absent) are `null`.
 */
export interface Metrics {
  /** Always "ocr-wsss/metrics@1". */
  schema: string;
  /** What was evaluated, e.g. "masks:out/pseudo" or "cam:runs/a/last.safetensors". */
  source: string;
  /** Dataset split, e.g. "val". */
  split: string;
  /** Images evaluated. */
  n_images: number;
  /** Images with ground truth (those in the segmentation scores). */
  n_gt_images: number;
  /** K = C + 1 (background included). */
  num_classes: number;
  /** K class names, "background" first. */
  class_names: string[];
  /** Mean IoU over the classes whose IoU is defined (at `bg_threshold` for CAMs). */
  miou: number | null;
  /** Pixel accuracy. */
  pixel_acc: number | null;
  /** Mean class accuracy (recall) over classes present in the ground truth. */
  mean_acc: number | null;
  /** IoU per class name; null = class in neither ground truth nor prediction. */
  per_class: Record<string, number | null>;
  /**
   * "mask": OC rate of the predicted masks (OC ÷ foreground-predicted pixels);
   * "cam": unrestricted-CAM OC rate (OC ÷ active pixels, tau below).
   */
  oc_kind: "mask" | "cam";
  /** OC-error rate; null when the denominator is 0. */
  oc_rate: number | null;
  /** OC pixels (numerator). */
  oc_pixels: number;
  /** Denominator: foreground-predicted pixels (mask) or active pixels (cam). */
  oc_denominator: number;
  /** Top OC pairs (ground-truth class replaced by OC class), by count. */
  oc_pairs: OcPair[];
  /** CAM activation ratio (cam) or null. */
  tau: number | null;
  /** Background threshold of the pseudo masks scored (cam) or null. */
  bg_threshold: number | null;
  /** mIoU per swept threshold (cam, more than one threshold) or null. */
  sweep: { t: number; miou: number | null }[] | null;
  /** K×K pixel counts, rows = ground truth, columns = prediction. */
  confusion: number[][];
}

/** Description of an evaluation run for {@link maskMetrics} / {@link camMetrics}. */
export interface MetricsInfo {
  /** The C foreground class names (default "class1".."classC"). */
  classNames?: readonly string[];
  /** Split name. */
  split: string;
  /** What was evaluated. */
  source: string;
  /** How many OC pairs to list (default 20). */
  topPairs?: number;
}

/** Names of the K classes: "background" then the C names. */
export function allClassNames(numClasses: number, classNames?: readonly string[]): string[] {
  if (classNames && classNames.length !== numClasses) {
    throw new RangeError(`${classNames.length} class names for ${numClasses} classes`);
  }
  return ["background", ...(classNames ?? [...Array(numClasses)].map((_, i) => `class${i + 1}`))];
}

function num(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

function matrix(m: ArrayLike<number>, k: number): number[][] {
  return [...Array(k)].map((_, g) => Array.from({ length: k }, (_, p) => m[g * k + p]));
}

function scoreFields(confusion: ArrayLike<number>, names: string[]) {
  const s = segScores(confusion, names.length);
  return {
    miou: num(s.miou),
    pixel_acc: num(s.pixelAcc),
    mean_acc: num(s.meanAcc),
    per_class: Object.fromEntries(names.map((n, i) => [n, num(s.iou[i])])),
  };
}

/** Metrics of a mask evaluation (predicted masks, OC rate of the masks). */
export function maskMetrics(c: MaskCounts, info: MetricsInfo): Metrics {
  const names = allClassNames(c.numClasses, info.classNames);
  return {
    schema: "ocr-wsss/metrics@1",
    source: info.source,
    split: info.split,
    n_images: c.nImages,
    n_gt_images: c.nImages,
    num_classes: names.length,
    class_names: names,
    ...scoreFields(c.confusion, names),
    oc_kind: "mask",
    oc_rate: c.fgPixels > 0 ? c.ocPixels / c.fgPixels : null,
    oc_pixels: c.ocPixels,
    oc_denominator: c.fgPixels,
    oc_pairs: topOcPairs(c.ocPairs, names, info.topPairs),
    tau: null,
    bg_threshold: null,
    sweep: null,
    confusion: matrix(c.confusion, names.length),
  };
}

/**
 * Metrics of a CAM evaluation: pseudo-mask scores at `bgThreshold` (which must be one of the
 * evaluated thresholds) or, by default, at the threshold with the best mIoU (the lowest on
 * ties); the unrestricted-CAM OC rate; the sweep when several thresholds were evaluated.
 */
export function camMetrics(
  c: CamCounts,
  info: MetricsInfo & { bgThreshold?: number },
): Metrics {
  const names = allClassNames(c.numClasses, info.classNames);
  const k = names.length;
  const mious = c.confusions.map((m) => segScores(m, k).miou);
  let best = 0;
  if (info.bgThreshold !== undefined) {
    best = c.thresholds.indexOf(info.bgThreshold);
    if (best < 0) {
      throw new RangeError(
        `background threshold ${info.bgThreshold} was not evaluated (${c.thresholds.join(", ")})`,
      );
    }
  } else {
    for (let i = 1; i < mious.length; i++) {
      if (mious[i] > mious[best] || (Number.isNaN(mious[best]) && !Number.isNaN(mious[i]))) {
        best = i;
      }
    }
  }
  return {
    schema: "ocr-wsss/metrics@1",
    source: info.source,
    split: info.split,
    n_images: c.nImages,
    n_gt_images: c.nGtImages,
    num_classes: k,
    class_names: names,
    ...scoreFields(c.confusions[best], names),
    oc_kind: "cam",
    oc_rate: c.activePixels > 0 ? c.ocPixels / c.activePixels : null,
    oc_pixels: c.ocPixels,
    oc_denominator: c.activePixels,
    oc_pairs: topOcPairs(c.ocPairs, names, info.topPairs),
    tau: c.tau,
    bg_threshold: c.thresholds[best],
    sweep: c.thresholds.length > 1
      ? c.thresholds.map((t, i) => ({ t, miou: num(mious[i]) }))
      : null,
    confusion: matrix(c.confusions[best], k),
  };
}

/**
 * Parses a sweep spec "start:stop:step" (inclusive of stop, values rounded to 1e-6), or a
 * comma-separated list "0.1,0.2". Errors name the spec.
 */
export function parseSweep(spec: string): number[] {
  const bad = (why: string) => new RangeError(`bad threshold sweep "${spec}": ${why}`);
  const round = (x: number) => Math.round(x * 1e6) / 1e6;
  let out: number[];
  if (spec.includes(":")) {
    const parts = spec.split(":").map((p) => Number(p.trim()));
    if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p))) {
      throw bad("expected start:stop:step with three numbers");
    }
    const [a, b, s] = parts;
    if (!(s > 0)) throw bad("step must be positive");
    if (b < a) throw bad("stop is below start");
    const n = Math.floor((b - a) / s + 1e-9);
    if (n > 1000) throw bad("more than 1000 thresholds");
    out = [...Array(n + 1)].map((_, i) => round(a + i * s));
  } else {
    out = spec.split(",").map((p) => Number(p.trim()));
    if (out.some((p) => !Number.isFinite(p)) || out.length === 0) throw bad("not a number list");
  }
  return [...new Set(out)].sort((x, y) => x - y);
}
