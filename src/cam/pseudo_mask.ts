/**
 * The psa/SEAM pseudo-mask rule on normalised tag CAMs.
 * @module
 */

/**
 * psa/SEAM pseudo mask from normalised tagged CAMs `norm` [T, n]: label tags[t]+1 where the
 * largest normalised score exceeds `bg` (the lower class on ties), else 0.
 */
export function pseudoMaskFromNormalized(
  norm: Float32Array,
  tags: readonly number[],
  n: number,
  bg: number,
): Uint8Array {
  if (norm.length !== tags.length * n) {
    throw new RangeError(`pseudo mask: ${norm.length} CAM values for ${tags.length}x${n}`);
  }
  const out = new Uint8Array(n);
  const t = Math.fround(bg);
  for (let i = 0; i < n; i++) {
    let best = t;
    for (let k = 0; k < tags.length; k++) {
      const s = norm[k * n + i];
      if (s > best) {
        best = s;
        out[i] = tags[k] + 1;
      }
    }
  }
  return out;
}
