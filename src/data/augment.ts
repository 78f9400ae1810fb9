/**
 * The psa/SEAM training augmentations, done in one pass that writes only the output crop:
 * random rescale of the long side, horizontal flip, colour jitter (brightness, contrast,
 * saturation, hue — in that order), random crop with padding (image-mean fill, which is 0
 * after normalisation; label 255), and ImageNet mean/std normalisation to CHW f32.
 *
 * Resampling: the image bilinearly with half-pixel centres (align_corners = false), with
 * n×n supersampling when shrinking by more than 2× (n = ceil(1/scale), at most 4) so that
 * downscaling does not alias; the mask by nearest neighbour (value at the pixel centre).
 * @module
 */
import type { Rng } from "../rng.ts";

/** ImageNet channel means (RGB, 0..1). */
export const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
/** ImageNet channel standard deviations (RGB, 0..1). */
export const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];

// RGB -> YIQ and its exact inverse (so a zero or full-turn hue rotation is the identity).
const YIQ = [0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312];
const YIQ_INV = (() => {
  const [a, b, c, d, e, f, g, h, i] = YIQ;
  const A = e * i - f * h, B = -(d * i - f * g), Cc = d * h - e * g;
  const det = a * A + b * B + c * Cc;
  return [
    A,
    -(b * i - c * h),
    b * f - c * e,
    B,
    a * i - c * g,
    -(a * f - c * d),
    Cc,
    -(a * h - b * g),
    a * e - b * d,
  ]
    .map((v) => v / det);
})();

/** Colour jitter strengths: factors drawn from [1-x, 1+x]; hue shift from [-hue, hue] turns. */
export interface ColorJitter {
  /** In [0, 1): scales the pixel values (default 0: off). */
  brightness?: number;
  /** In [0, 1): scales the distance from the image's mean grey (default 0: off). */
  contrast?: number;
  /** In [0, 1): scales each pixel's distance from its own grey (default 0: off). */
  saturation?: number;
  /** In [0, 0.5]: fraction of a full turn of the hue circle. */
  hue?: number;
}

/** Training augmentation. Omit (or pass null to `batches`) for plain resize + center pad. */
export interface AugmentOptions {
  /** Long side after rescaling, drawn uniformly from the integers [lo, hi]. Default [S, S]. */
  scaleRange?: [number, number];
  /** Random horizontal flip with probability 0.5. Default false. */
  flip?: boolean;
  /** A number x means brightness = contrast = saturation = x and hue = 0. Default none. */
  colorJitter?: number | ColorJitter;
  /** Where the S×S window goes: uniformly random (default) or centred. */
  crop?: "random" | "center";
}

/** The random choices for one sample. */
export interface AugParams {
  /** Size after rescaling. */
  width: number;
  height: number;
  flip: boolean;
  /** Window origin in the rescaled image; negative = the image sits inside padding. */
  offX: number;
  offY: number;
  brightness: number;
  contrast: number;
  saturation: number;
  /** Hue rotation in turns. */
  hue: number;
}

function jitterOf(j: AugmentOptions["colorJitter"]): Required<ColorJitter> {
  if (j === undefined) return { brightness: 0, contrast: 0, saturation: 0, hue: 0 };
  if (typeof j === "number") return { brightness: j, contrast: j, saturation: j, hue: 0 };
  return {
    brightness: j.brightness ?? 0,
    contrast: j.contrast ?? 0,
    saturation: j.saturation ?? 0,
    hue: j.hue ?? 0,
  };
}

/** Checks augmentation options; throws RangeError naming the bad field. */
export function checkAugment(a: AugmentOptions, cropSize: number): void {
  if (a.scaleRange) {
    const [lo, hi] = a.scaleRange;
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 1 && hi >= lo)) {
      throw new RangeError(`augment.scaleRange [${lo}, ${hi}]: need integers 1 <= lo <= hi`);
    }
  }
  const j = jitterOf(a.colorJitter);
  for (const k of ["brightness", "contrast", "saturation"] as const) {
    if (!(j[k] >= 0 && j[k] < 1)) {
      throw new RangeError(`augment.colorJitter.${k} must be in [0, 1)`);
    }
  }
  if (!(j.hue >= 0 && j.hue <= 0.5)) {
    throw new RangeError("augment.colorJitter.hue must be in [0, 0.5]");
  }
  if (a.crop !== undefined && a.crop !== "random" && a.crop !== "center") {
    throw new RangeError(`augment.crop must be "random" or "center", got ${a.crop}`);
  }
  if (!(Number.isInteger(cropSize) && cropSize >= 1)) {
    throw new RangeError(`cropSize must be a positive integer, got ${cropSize}`);
  }
}

/**
 * Draws the augmentation of one w×h image into an S×S window (fixed draw order: scale, flip,
 * crop, brightness, contrast, saturation, hue). With `aug` null: long side S, no flip or jitter,
 * centred.
 */
export function sampleAugParams(
  rng: Rng,
  w: number,
  h: number,
  S: number,
  aug: AugmentOptions | null,
): AugParams {
  const [lo, hi] = aug?.scaleRange ?? [S, S];
  const long = lo + rng.int(hi - lo + 1);
  const k = long / Math.max(w, h);
  const rw = Math.max(1, Math.round(w * k));
  const rh = Math.max(1, Math.round(h * k));
  const flip = aug?.flip ? rng.next() < 0.5 : false;
  const random = aug !== null && aug.crop !== "center";
  const place = (r: number) => {
    if (!random) return Math.floor((r - S) / 2);
    return r >= S ? rng.int(r - S + 1) : -rng.int(S - r + 1);
  };
  const offX = place(rw);
  const offY = place(rh);
  const j = jitterOf(aug?.colorJitter);
  const f = (x: number) => (x > 0 ? rng.uniform(1 - x, 1 + x) : 1);
  const brightness = f(j.brightness);
  const contrast = f(j.contrast);
  const saturation = f(j.saturation);
  const hue = j.hue > 0 ? rng.uniform(-j.hue, j.hue) : 0;
  return { width: rw, height: rh, flip, offX, offY, brightness, contrast, saturation, hue };
}

interface Taps {
  i0: Int32Array;
  i1: Int32Array;
  f: Float32Array;
  n: number;
}

/** Bilinear taps for S output positions (window start `off`) with n sub-samples each. */
function taps(src: number, dst: number, S: number, off: number, flip: boolean, n: number): Taps {
  const i0 = new Int32Array(S * n), i1 = new Int32Array(S * n), f = new Float32Array(S * n);
  const ratio = src / dst;
  for (let o = 0; o < S; o++) {
    let x = o + off;
    if (x < 0 || x >= dst) {
      i0[o * n] = -1;
      continue;
    }
    if (flip) x = dst - 1 - x;
    for (let s = 0; s < n; s++) {
      let p = (x + (s + 0.5) / n) * ratio - 0.5;
      if (p < 0) p = 0;
      if (p > src - 1) p = src - 1;
      const a = Math.floor(p);
      i0[o * n + s] = a;
      i1[o * n + s] = Math.min(a + 1, src - 1);
      f[o * n + s] = p - a;
    }
  }
  return { i0, i1, f, n };
}

/** Nearest source index per output position (-1 = padding). */
function nearest(src: number, dst: number, S: number, off: number, flip: boolean): Int32Array {
  const out = new Int32Array(S);
  for (let o = 0; o < S; o++) {
    let x = o + off;
    if (x < 0 || x >= dst) {
      out[o] = -1;
      continue;
    }
    if (flip) x = dst - 1 - x;
    out[o] = Math.min(src - 1, Math.floor(((x + 0.5) * src) / dst));
  }
  return out;
}

/**
 * Applies `p` to an RGB image (HWC bytes, w×h) and its optional mask, writing the normalised
 * CHW image to `outImg[outOff .. outOff + 3·S·S)` and labels to `outMask[maskOff .. + S·S)`
 * (255 in padding; all 255 when `mask` is null).
 */
export function applyAugment(
  rgb: Uint8Array,
  mask: Uint8Array | null,
  w: number,
  h: number,
  S: number,
  p: AugParams,
  outImg: Float32Array,
  outOff: number,
  outMask: Uint8Array | null,
  maskOff: number,
): void {
  const scale = Math.min(p.width / w, p.height / h);
  const n = scale < 0.5 ? Math.min(4, Math.ceil(1 / scale)) : 1;
  const tx = taps(w, p.width, S, p.offX, p.flip, n);
  const ty = taps(h, p.height, S, p.offY, false, n);
  const txi0 = tx.i0, txi1 = tx.i1, txf = tx.f, tyi0 = ty.i0, tyi1 = ty.i1, tyf = ty.f;
  const SS = S * S;
  const R = outOff, G = outOff + SS, B = outOff + 2 * SS;
  // Pass 1: resample (+ brightness, clip to [0, 1]) into the output planes; padding = -1.
  let greySum = 0, count = 0;
  const kb = p.brightness / (n * n * 255);
  let x0 = 0;
  while (x0 < S && tx.i0[x0 * n] < 0) x0++;
  let x1 = x0;
  while (x1 < S && tx.i0[x1 * n] >= 0) x1++;
  for (let oy = 0; oy < S; oy++) {
    const row = oy * S;
    if (ty.i0[oy * n] < 0 || x0 === x1) {
      outImg.fill(-1, R + row, R + row + S);
      continue;
    }
    outImg.fill(-1, R + row, R + row + x0);
    outImg.fill(-1, R + row + x1, R + row + S);
    const ya1 = tyi0[oy * n] * w, yb1 = tyi1[oy * n] * w, fy1 = tyf[oy * n];
    for (let ox = x0; ox < x1; ox++) {
      let r = 0, g = 0, b = 0;
      if (n === 1) {
        // The common case, unrolled: one bilinear sample.
        const xa = txi0[ox], xb = txi1[ox], fx = txf[ox];
        const a = (ya1 + xa) * 3, bq = (ya1 + xb) * 3, c = (yb1 + xa) * 3, d = (yb1 + xb) * 3;
        const gx = 1 - fx;
        r = (rgb[a] * gx + rgb[bq] * fx) * (1 - fy1) + (rgb[c] * gx + rgb[d] * fx) * fy1;
        g = (rgb[a + 1] * gx + rgb[bq + 1] * fx) * (1 - fy1) +
          (rgb[c + 1] * gx + rgb[d + 1] * fx) * fy1;
        b = (rgb[a + 2] * gx + rgb[bq + 2] * fx) * (1 - fy1) +
          (rgb[c + 2] * gx + rgb[d + 2] * fx) * fy1;
      } else {
        for (let sy = 0; sy < n; sy++) {
          const ya = ty.i0[oy * n + sy] * w, yb = ty.i1[oy * n + sy] * w, fy = ty.f[oy * n + sy];
          for (let sx = 0; sx < n; sx++) {
            const t = ox * n + sx;
            const xa = tx.i0[t], xb = tx.i1[t], fx = tx.f[t];
            const a = (ya + xa) * 3, bq = (ya + xb) * 3, c = (yb + xa) * 3, d = (yb + xb) * 3;
            const top = 1 - fy;
            const w00 = (1 - fx) * top, w01 = fx * top, w10 = (1 - fx) * fy, w11 = fx * fy;
            r += rgb[a] * w00 + rgb[bq] * w01 + rgb[c] * w10 + rgb[d] * w11;
            g += rgb[a + 1] * w00 + rgb[bq + 1] * w01 + rgb[c + 1] * w10 + rgb[d + 1] * w11;
            b += rgb[a + 2] * w00 + rgb[bq + 2] * w01 + rgb[c + 2] * w10 + rgb[d + 2] * w11;
          }
        }
      }
      r *= kb;
      g *= kb;
      b *= kb;
      if (r > 1) r = 1;
      if (g > 1) g = 1;
      if (b > 1) b = 1;
      const q = row + ox;
      outImg[R + q] = r;
      outImg[G + q] = g;
      outImg[B + q] = b;
      greySum += 0.299 * r + 0.587 * g + 0.114 * b;
      count++;
    }
  }
  // Pass 2: contrast, saturation, hue, then normalisation (padding -> 0, the mean).
  const meanGrey = count ? greySum / count : 0;
  const con = p.contrast, sat = p.saturation;
  const hueOn = p.hue !== 0;
  const cosH = Math.cos(2 * Math.PI * p.hue), sinH = Math.sin(2 * Math.PI * p.hue);
  const M = YIQ, N = YIQ_INV;
  const clip = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);
  const [m0, m1, m2] = IMAGENET_MEAN;
  const i0 = 1 / IMAGENET_STD[0], i1 = 1 / IMAGENET_STD[1], i2 = 1 / IMAGENET_STD[2];
  for (let q = 0; q < SS; q++) {
    let r = outImg[R + q];
    if (r < 0) {
      outImg[R + q] = 0;
      outImg[G + q] = 0;
      outImg[B + q] = 0;
      continue;
    }
    let g = outImg[G + q], b = outImg[B + q];
    if (con !== 1) {
      r = clip((r - meanGrey) * con + meanGrey);
      g = clip((g - meanGrey) * con + meanGrey);
      b = clip((b - meanGrey) * con + meanGrey);
    }
    if (sat !== 1) {
      const grey = 0.299 * r + 0.587 * g + 0.114 * b;
      r = clip((r - grey) * sat + grey);
      g = clip((g - grey) * sat + grey);
      b = clip((b - grey) * sat + grey);
    }
    if (hueOn) {
      // Rotate the chroma plane of YIQ (a close stand-in for an HSV hue shift).
      const Y = M[0] * r + M[1] * g + M[2] * b;
      const I = M[3] * r + M[4] * g + M[5] * b;
      const Q = M[6] * r + M[7] * g + M[8] * b;
      const I2 = I * cosH - Q * sinH, Q2 = I * sinH + Q * cosH;
      r = clip(N[0] * Y + N[1] * I2 + N[2] * Q2);
      g = clip(N[3] * Y + N[4] * I2 + N[5] * Q2);
      b = clip(N[6] * Y + N[7] * I2 + N[8] * Q2);
    }
    outImg[R + q] = (r - m0) * i0;
    outImg[G + q] = (g - m1) * i1;
    outImg[B + q] = (b - m2) * i2;
  }
  if (!outMask) return;
  if (!mask) {
    outMask.fill(255, maskOff, maskOff + SS);
    return;
  }
  const mx = nearest(w, p.width, S, p.offX, p.flip);
  const my = nearest(h, p.height, S, p.offY, false);
  for (let oy = 0; oy < S; oy++) {
    const sy = my[oy];
    for (let ox = 0; ox < S; ox++) {
      const sx = mx[ox];
      outMask[maskOff + oy * S + ox] = sy < 0 || sx < 0 ? 255 : mask[sy * w + sx];
    }
  }
}
