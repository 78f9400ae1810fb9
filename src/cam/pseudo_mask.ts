/**
 * The pseudo-mask rule of psa/SEAM, the one definition every pseudo mask of this project goes
 * through (CAM folders, CAM evaluation's reference, the random walk's masks):
 *
 * per pixel p, with tag scores `s_k(p)` (k over the image's tags, in the given order) and a
 * background score `b(p)`, the label is `tags[k] + 1` for the first k with the largest score
 * when that score exceeds `b(p)`, else 0 (background). So background wins ties, then the
 * earlier tag. `b` is a constant threshold t (rounded to f32, as the GPU compares) or a
 * per-pixel background score plane (psa's random walk: `(1 - max cam)^alpha`, walked).
 *
 * The scores are normalised tag CAMs (src/cam/fuse.ts's `normalizeTagged`: each tagged class's
 * ReLU'd map divided by its maximum + 1e-5) or any other per-class scores. Its WGSL counterpart
 * is `cam_argmax` (the best tag score, lowest class on ties) with `cam_pseudo` (label where the
 * score exceeds the threshold) in shaders/eval.wgsl; tests/pseudo_mask_test.ts checks them
 * against {@link pseudoMask}.
 * @module
 */

/** Where the scores lie in a flat array: T tag planes, optionally inside a larger grid. */
export interface ScoreGrid {
  /** Mask width W. */
  width: number;
  /** Mask height H. */
  height: number;
  /** Values between the starts of two rows of a plane (default W; larger for a crop). */
  rowStride?: number;
  /** Values between the starts of two planes (default H · rowStride). */
  planeStride?: number;
  /** Index of the first tag plane's first value (default 0). */
  offset?: number;
}

/**
 * The pseudo mask (H·W labels, row-major) of tag score planes `scores` laid out as `grid`:
 * see the module doc. `background` is a constant threshold or `{ offset }`, the index of a
 * background score plane in `scores` (same row stride as the tag planes).
 */
export function pseudoMask(
  scores: ArrayLike<number>,
  tags: readonly number[],
  background: number | { offset: number },
  grid: ScoreGrid,
): Uint8Array {
  const { width: W, height: H } = grid;
  const row = grid.rowStride ?? W;
  const plane = grid.planeStride ?? H * row;
  const base = grid.offset ?? 0;
  const T = tags.length;
  const last = base + (T - 1) * plane + (H - 1) * row + W;
  if (T > 0 && H > 0 && W > 0 && last > scores.length) {
    throw new RangeError(`pseudo mask: ${scores.length} scores for ${T} planes of ${W}x${H}`);
  }
  const out = new Uint8Array(W * H);
  const t = typeof background === "number" ? Math.fround(background) : 0;
  const bg = typeof background === "number" ? -1 : background.offset;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const p = y * row + x;
      let best = bg < 0 ? t : scores[bg + p];
      let label = 0;
      for (let k = 0; k < T; k++) {
        const s = scores[base + k * plane + p];
        if (s > best) {
          best = s;
          label = tags[k] + 1;
        }
      }
      out[y * W + x] = label;
    }
  }
  return out;
}

/**
 * {@link pseudoMask} of normalised tagged CAMs `norm` [T, n] at background threshold `bg`:
 * label tags[t]+1 where the largest normalised score exceeds `bg` (the earlier tag on ties),
 * else 0.
 */
export function pseudoMaskFromNormalized(
  norm: ArrayLike<number>,
  tags: readonly number[],
  n: number,
  bg: number,
): Uint8Array {
  if (norm.length !== tags.length * n) {
    throw new RangeError(`pseudo mask: ${norm.length} CAM values for ${tags.length}x${n}`);
  }
  return pseudoMask(norm, tags, bg, { width: n, height: 1 });
}
