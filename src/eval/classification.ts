/**
 * Classification metrics of image-level predictions: per-class average precision and mAP
 * (non-interpolated AP, as scikit-learn's average_precision_score: mean precision at each
 * positive's rank, ties broken pessimistically by processing tied scores as one block).
 * @module
 */

/** Average precision of one class from scores and binary labels; NaN without positives. */
export function averagePrecision(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let positives = 0;
  for (let i = 0; i < n; i++) if (labels[i] > 0.5) positives++;
  if (positives === 0) return NaN;
  let tp = 0;
  let fp = 0;
  let ap = 0;
  let prevRecall = 0;
  for (let i = 0; i < n;) {
    // A block of tied scores counts as one threshold.
    let j = i;
    while (j < n && scores[idx[j]] === scores[idx[i]]) {
      if (labels[idx[j]] > 0.5) tp++;
      else fp++;
      j++;
    }
    const recall = tp / positives;
    const precision = tp / (tp + fp);
    ap += (recall - prevRecall) * precision;
    prevRecall = recall;
    i = j;
  }
  return ap;
}

/**
 * Mean average precision over classes that have at least one positive.
 * @param scores [N, C] row-major scores.
 * @param labels [N, C] row-major 0/1 labels.
 */
export function meanAveragePrecision(
  scores: ArrayLike<number>,
  labels: ArrayLike<number>,
  numClasses: number,
): { map: number; perClass: number[] } {
  const n = scores.length / numClasses;
  const perClass: number[] = [];
  for (let c = 0; c < numClasses; c++) {
    const s = new Float64Array(n);
    const l = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = scores[i * numClasses + c];
      l[i] = labels[i * numClasses + c];
    }
    perClass.push(averagePrecision(s, l));
  }
  const valid = perClass.filter((v) => !Number.isNaN(v));
  return { map: valid.length ? valid.reduce((a, b) => a + b, 0) / valid.length : NaN, perClass };
}
