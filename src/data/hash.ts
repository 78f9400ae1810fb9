/**
 * Seed mixing for derived random streams (per image, per epoch, per sample), so any item's
 * randomness can be recreated from (seed, ...indices) alone, which makes resume exact.
 * @module
 */

/** Mixes integers into a 32-bit seed (FNV-style with avalanche steps). */
export function mixSeed(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  return h >>> 0;
}
