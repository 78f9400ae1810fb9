/**
 * COCO mask encodings, following pycocotools' `maskApi.c`: run-length encoding over the
 * column-major (Fortran order) pixel sequence starting with a background run; the compressed
 * string form (LEB128-like, 5 bits per ASCII char 48..111, counts after the second stored as
 * differences to the count two places back); and polygon rasterisation with the same
 * upsample-by-5 boundary walk, so masks match pycocotools' `annToMask` pixel for pixel.
 * Masks here are row-major `Uint8Array`s (`y * width + x`), 1 = foreground.
 * @module
 */

/** Column-major run lengths of a binary mask, background run first (may be 0). */
export type RleCounts = number[];

/** Encodes a row-major binary mask (non-zero = foreground) as column-major RLE counts. */
export function rleEncode(mask: Uint8Array, height: number, width: number): RleCounts {
  if (mask.length !== height * width) {
    throw new RangeError(`rleEncode: ${mask.length} values for a ${height}x${width} mask`);
  }
  const counts: number[] = [];
  let prev = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== prev) {
        counts.push(run);
        run = 0;
        prev = v;
      }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

/** Checks that RLE counts are non-negative integers covering exactly height×width pixels. */
export function checkRle(counts: readonly number[], height: number, width: number): void {
  let sum = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (!Number.isInteger(c) || c < 0) throw new Error(`RLE count ${i} is ${c}, not a count`);
    sum += c;
  }
  if (sum !== height * width) {
    throw new Error(
      `RLE counts sum to ${sum}, but the mask is ${height}x${width} = ${height * width} pixels`,
    );
  }
}

/**
 * Paints the foreground of an RLE mask into a row-major `target` (height×width) with `value`.
 * Throws when the counts do not cover exactly height×width pixels.
 */
export function paintRle(
  counts: readonly number[],
  height: number,
  width: number,
  target: Uint8Array | Int16Array | Int32Array,
  value: number,
): void {
  checkRle(counts, height, width);
  let j = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (i & 1) {
      for (let k = j; k < j + c; k++) {
        const x = Math.floor(k / height);
        target[(k - x * height) * width + x] = value;
      }
    }
    j += c;
  }
}

/** Decodes RLE counts to a row-major binary mask. */
export function rleDecode(counts: readonly number[], height: number, width: number): Uint8Array {
  const m = new Uint8Array(height * width);
  paintRle(counts, height, width, m, 1);
  return m;
}

/** Foreground pixel count of an RLE mask. */
export function rleArea(counts: readonly number[]): number {
  let a = 0;
  for (let i = 1; i < counts.length; i += 2) a += counts[i];
  return a;
}

/** pycocotools' compressed string form of RLE counts (`rleToString`). */
export function rleToString(counts: readonly number[]): string {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32); // arithmetic shift, exact for any safe integer
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/** Decodes pycocotools' compressed RLE string (`rleFrString`); throws on a bad character. */
export function rleFromString(s: string): RleCounts {
  const counts: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      if (p >= s.length) throw new Error(`compressed RLE ends inside a number at char ${p}`);
      const code = s.charCodeAt(p);
      const c = code - 48;
      if (c < 0 || c > 63) {
        throw new Error(`compressed RLE has invalid character '${s[p]}' at position ${p}`);
      }
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    const m = counts.length;
    if (m > 2) x += counts[m - 2];
    counts.push(x);
  }
  return counts;
}

/**
 * Rasterises one polygon `[x0, y0, x1, y1, ...]` (pixel coordinates) to RLE counts exactly as
 * pycocotools' `rleFrPoly`: vertices scaled by 5 and truncated, the closed boundary walked
 * densely, the crossings of pixel-centre columns kept, and each column filled between them.
 */
export function polygonToRle(xy: readonly number[], height: number, width: number): RleCounts {
  if (xy.length % 2 !== 0) {
    throw new Error(`polygon has an odd number of coordinates (${xy.length})`);
  }
  const k = xy.length / 2;
  const h = height, w = width;
  if (k === 0) return [h * w];
  const scale = 5;
  const x = new Array<number>(k + 1), y = new Array<number>(k + 1);
  for (let j = 0; j < k; j++) {
    const vx = xy[2 * j], vy = xy[2 * j + 1];
    if (!Number.isFinite(vx) || !Number.isFinite(vy)) {
      throw new Error(`polygon vertex ${j} is not a finite number`);
    }
    x[j] = Math.trunc(scale * vx + 0.5);
    y[j] = Math.trunc(scale * vy + 0.5);
  }
  x[k] = x[0];
  y[k] = y[0];
  const u: number[] = [], v: number[] = [];
  for (let j = 0; j < k; j++) {
    let xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const dx = Math.abs(xe - xs), dy = Math.abs(ys - ye);
    const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      [xs, xe] = [xe, xs];
      [ys, ye] = [ye, ys];
    }
    const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
    if (dx >= dy) {
      for (let d = 0; d <= dx; d++) {
        const t = flip ? dx - d : d;
        u.push(t + xs);
        v.push(Math.trunc(ys + s * t + 0.5));
      }
    } else {
      for (let d = 0; d <= dy; d++) {
        const t = flip ? dy - d : d;
        v.push(t + ys);
        u.push(Math.trunc(xs + s * t + 0.5));
      }
    }
  }
  const a: number[] = [];
  for (let j = 1; j < u.length; j++) {
    if (u[j] === u[j - 1]) continue;
    let xd = u[j] < u[j - 1] ? u[j] : u[j] - 1;
    xd = (xd + 0.5) / scale - 0.5;
    if (Math.floor(xd) !== xd || xd < 0 || xd > w - 1) continue;
    let yd = v[j] < v[j - 1] ? v[j] : v[j - 1];
    yd = (yd + 0.5) / scale - 0.5;
    if (yd < 0) yd = 0;
    else if (yd > h) yd = h;
    yd = Math.ceil(yd);
    a.push(xd * h + yd);
  }
  a.push(h * w);
  a.sort((p, q) => p - q);
  let prev = 0;
  for (let j = 0; j < a.length; j++) {
    const t = a[j];
    a[j] -= prev;
    prev = t;
  }
  const b: number[] = [];
  let j = 0;
  b.push(a[j++]);
  while (j < a.length) {
    if (a[j] > 0) b.push(a[j++]);
    else {
      j++;
      if (j < a.length) b[b.length - 1] += a[j++];
    }
  }
  return b;
}

/** Bounding box `[x, y, w, h]` and area of a row-major binary mask (zeros when empty). */
export function maskBox(
  mask: Uint8Array,
  height: number,
  width: number,
): { bbox: [number, number, number, number]; area: number } {
  let x0 = width, y0 = height, x1 = -1, y1 = -1, area = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!mask[y * width + x]) continue;
      area++;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  if (area === 0) return { bbox: [0, 0, 0, 0], area: 0 };
  return { bbox: [x0, y0, x1 - x0 + 1, y1 - y0 + 1], area };
}
