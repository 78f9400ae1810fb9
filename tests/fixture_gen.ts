/**
 * The deterministic tensor generator of the PyTorch fixtures, exactly as
 * tests/fixtures/make_fixtures.py documents and computes it (`fill`): the fixtures store inputs
 * and outputs, not weights, and both sides compute the weights from their names.
 *
 * For element i (row-major) of the tensor named `name`:
 * r = (lowbias32(fnv1a32(name) ^ lowbias32(i)) >> 9) / 2^23 in [0, 1), then by the name:
 * - scales (batchnorm weight, `*.running_var`, layer-norm weight: any 1-D `*.weight`): 0.5 + r;
 * - shifts (`*.bias`, `*.running_mean`, `cls_token`, `pos_embed`): (r - 0.5) / 2;
 * - images (`input`, `input.<anything>`): 2r - 1;
 * - weights (conv [O, I, KH, KW], linear [O, I]): f32(f32(sqrt(6 / fan_in)) · (2r - 1)) with
 *   fan_in the product of all dimensions but the first.
 * Every value but the weights is exact in float32; those are one correctly rounded product.
 * @module
 */

/** 32-bit FNV-1a of the UTF-8 bytes of `s`. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** The lowbias32 integer hash (Chris Wellons' constants). */
export function lowbias32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The generator's float32 values of the tensor `name` with `shape` (see the module doc). */
export function generated(name: string, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, d) => a * d, 1);
  const s = fnv1a32(name);
  const out = new Float32Array(n);
  const isScale = name.endsWith(".running_var") || (name.endsWith(".weight") && shape.length === 1);
  const isShift = name.endsWith(".running_mean") || name.endsWith(".bias") ||
    name === "cls_token" || name === "pos_embed";
  const isImage = name === "input" || name.startsWith("input.");
  const fanIn = shape.slice(1).reduce((a, d) => a * d, 1);
  const b = isImage ? 1 : Math.fround(Math.sqrt(6 / fanIn));
  for (let i = 0; i < n; i++) {
    const r = (lowbias32((s ^ lowbias32(i)) >>> 0) >>> 9) / 2 ** 23;
    out[i] = isScale ? 0.5 + r : isShift ? (r - 0.5) / 2 : Math.fround(b * (2 * r - 1));
  }
  return out;
}
