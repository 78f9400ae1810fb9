/**
 * The prior annotation correlation of OCR (the co-occurrence prior `A` of src/losses/ocr.ts): `A[c,k] = n(c and k tagged
 * together) / n(c tagged)`, counted once over the training tags (src/train/cooccurrence.ts
 * caches it beside the dataset).
 * @module
 */

/**
 * Streaming co-occurrence counts: `add` one image's tags at a time, then read the matrix.
 * Repeated tags within one image count once.
 */
export class CooccurrenceCounts {
  /** `counts[c*C + k]` = images tagged with both c and k; the diagonal = images tagged c. */
  readonly counts: Float64Array;
  /** Images added so far. */
  images = 0;

  constructor(readonly numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 1) {
      throw new RangeError(
        `cooccurrence: numClasses must be a positive integer, got ${numClasses}`,
      );
    }
    this.counts = new Float64Array(numClasses * numClasses);
  }

  /** Counts one image's tags (class indices in [0, numClasses)). */
  add(tags: Iterable<number>): void {
    const C = this.numClasses;
    const set = new Set<number>();
    for (const t of tags) {
      if (!Number.isInteger(t) || t < 0 || t >= C) {
        throw new RangeError(
          `cooccurrence: image ${this.images} has tag ${t}, outside [0, ${C})`,
        );
      }
      set.add(t);
    }
    const ks = [...set];
    for (const c of ks) for (const k of ks) this.counts[c * C + k]++;
    this.images++;
  }

  /**
   * The C×C row-major matrix `A[c,k] = n(c,k) / n(c)`, diagonal 1. A class never tagged has
   * no evidence of co-occurring with anything: its row is the identity row (1 on the
   * diagonal, 0 elsewhere).
   */
  matrix(): Float32Array {
    const C = this.numClasses;
    const a = new Float32Array(C * C);
    for (let c = 0; c < C; c++) {
      const n = this.counts[c * C + c];
      for (let k = 0; k < C; k++) {
        a[c * C + k] = c === k ? 1 : n > 0 ? this.counts[c * C + k] / n : 0;
      }
    }
    return a;
  }
}

/**
 * The co-occurrence prior of a list of per-image tag lists (class indices): C×C row-major,
 * `A[c,k] = n(c and k together) / n(c)`, diagonal 1, identity rows for never-tagged classes.
 */
export function cooccurrence(tagLists: number[][], numClasses: number): Float32Array {
  const counts = new CooccurrenceCounts(numClasses);
  for (const t of tagLists) counts.add(t);
  return counts.matrix();
}
