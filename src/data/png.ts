/**
 * A small PNG codec for label masks. imagescript returns palette PNGs as RGBA colours, so
 * masks need their own decoder to keep the stored index values exactly: 8-bit (and 1/2/4-bit)
 * palette PNGs give palette indices, grey PNGs give grey values. CRCs are checked; zlib goes
 * through `DecompressionStream("deflate")`; all five row filters are handled. Every error
 * names the file and the problem.
 * @module
 */
import { DataError } from "./errors.ts";

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** The standard PASCAL VOC colour map (256 RGB triples; index 255 = (224,224,192)). */
export const VOC_PALETTE: Uint8Array = (() => {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    let r = 0, g = 0, b = 0, c = i;
    for (let j = 0; j < 8; j++) {
      r |= (c & 1) << (7 - j);
      g |= ((c >> 1) & 1) << (7 - j);
      b |= ((c >> 2) & 1) << (7 - j);
      c >>= 3;
    }
    p[i * 3] = r;
    p[i * 3 + 1] = g;
    p[i * 3 + 2] = b;
  }
  return p;
})();

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the PNG/zlib polynomial) of `bytes[start, end)`. */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function pipeBytes(
  data: Uint8Array,
  ts: CompressionStream | DecompressionStream,
): Promise<Uint8Array> {
  const input = new ReadableStream<BufferSource>({
    start(c) {
      c.enqueue(data as Uint8Array<ArrayBuffer>);
      c.close();
    },
  });
  return new Uint8Array(await new Response(input.pipeThrough(ts)).arrayBuffer());
}

/** zlib-compresses bytes (`CompressionStream("deflate")`). */
export function zlibCompress(data: Uint8Array): Promise<Uint8Array> {
  return pipeBytes(data, new CompressionStream("deflate"));
}

/** zlib-decompresses bytes (`DecompressionStream("deflate")`). */
export function zlibDecompress(data: Uint8Array): Promise<Uint8Array> {
  return pipeBytes(data, new DecompressionStream("deflate"));
}

const COLOUR_TYPES: Record<number, string> = {
  0: "grey",
  2: "RGB",
  3: "palette",
  4: "grey+alpha",
  6: "RGBA",
};

/** A decoded label PNG: `data` holds one value per pixel, row-major. */
export interface LabelImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** The stored values (palette indices or grey levels), width·height bytes. */
  data: Uint8Array;
  /** The PLTE chunk (RGB triples) of a palette PNG, else null. */
  palette: Uint8Array | null;
}

/**
 * Decodes a palette (colour type 3) or grey (type 0) PNG of bit depth 1, 2, 4 or 8 into its
 * stored values: palette indices or grey levels. Throws {@link DataError} naming `path` on a bad
 * signature, bad CRC, truncation, unsupported colour type / bit depth / interlacing, or corrupt
 * zlib data.
 */
export async function decodeLabelPng(bytes: Uint8Array, path: string): Promise<LabelImage> {
  const fail = (problem: string, cause?: unknown): never => {
    throw new DataError(path, problem, cause === undefined ? undefined : { cause });
  };
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    fail("not a PNG file (bad signature)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  let width = 0, height = 0, depth = 0, colourType = -1;
  let palette: Uint8Array | null = null;
  const idat: Uint8Array[] = [];
  let sawEnd = false;
  while (pos < bytes.length) {
    if (pos + 12 > bytes.length) fail(`truncated PNG (partial chunk header at byte ${pos})`);
    const len = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const dataStart = pos + 8;
    const dataEnd = dataStart + len;
    if (dataEnd + 4 > bytes.length) {
      fail(`truncated PNG (${type} chunk of ${len} bytes extends past the end of the file)`);
    }
    const stored = view.getUint32(dataEnd);
    const computed = crc32(bytes, pos + 4, dataEnd);
    if (stored !== computed) {
      fail(
        `bad CRC in ${type} chunk at byte ${pos} (stored 0x${stored.toString(16)}, ` +
          `computed 0x${computed.toString(16)}): the file is corrupt`,
      );
    }
    const data = bytes.subarray(dataStart, dataEnd);
    if (pos === 8 && type !== "IHDR") fail(`first chunk is ${type}, expected IHDR`);
    if (type === "IHDR") {
      if (len !== 13) fail(`IHDR chunk has length ${len}, expected 13`);
      width = view.getUint32(dataStart);
      height = view.getUint32(dataStart + 4);
      depth = data[8];
      colourType = data[9];
      if (data[10] !== 0 || data[11] !== 0) fail("unknown compression or filter method");
      if (data[12] !== 0) fail("interlaced (Adam7) PNGs are not supported for masks");
      if (width === 0 || height === 0) fail(`empty image (${width}x${height})`);
      if (colourType !== 0 && colourType !== 3) {
        fail(
          `colour type ${colourType} (${COLOUR_TYPES[colourType] ?? "unknown"}) is not a ` +
            "label mask: expected a palette (3) or grey (0) PNG",
        );
      }
      if (![1, 2, 4, 8].includes(depth)) {
        fail(`bit depth ${depth} is not supported for masks (expected 1, 2, 4 or 8)`);
      }
    } else if (type === "PLTE") {
      palette = data.slice();
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      sawEnd = true;
      break;
    } else if ((bytes[pos + 4] & 0x20) === 0) {
      fail(`unknown critical chunk ${type}`);
    }
    pos = dataEnd + 4;
  }
  if (colourType < 0) fail("no IHDR chunk");
  if (!sawEnd) fail("truncated PNG (no IEND chunk)");
  if (colourType === 3 && !palette) fail("palette PNG without a PLTE chunk");
  if (idat.length === 0) fail("no IDAT chunk (no image data)");
  const total = idat.reduce((s, d) => s + d.length, 0);
  const z = new Uint8Array(total);
  let o = 0;
  for (const d of idat) {
    z.set(d, o);
    o += d.length;
  }
  let raw: Uint8Array;
  try {
    raw = await zlibDecompress(z);
  } catch (e) {
    return fail(`corrupt compressed image data (${(e as Error).message})`, e);
  }
  const rowBytes = Math.ceil((width * depth) / 8);
  const need = height * (rowBytes + 1);
  if (raw.length < need) {
    fail(`truncated image data (${raw.length} bytes after inflating, expected ${need})`);
  }
  const rows = unfilter(raw, width, height, rowBytes, depth, fail);
  return { width, height, data: unpack(rows, width, height, rowBytes, depth), palette };
}

function unfilter(
  raw: Uint8Array,
  _width: number,
  height: number,
  rowBytes: number,
  depth: number,
  fail: (p: string) => never,
): Uint8Array {
  const bpp = Math.max(1, depth >> 3);
  const out = new Uint8Array(height * rowBytes);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (rowBytes + 1)];
    const src = y * (rowBytes + 1) + 1;
    const dst = y * rowBytes;
    const prev = dst - rowBytes;
    for (let i = 0; i < rowBytes; i++) {
      const x = raw[src + i];
      const a = i >= bpp ? out[dst + i - bpp] : 0;
      const b = y > 0 ? out[prev + i] : 0;
      let v: number;
      switch (f) {
        case 0:
          v = x;
          break;
        case 1:
          v = x + a;
          break;
        case 2:
          v = x + b;
          break;
        case 3:
          v = x + ((a + b) >> 1);
          break;
        case 4: {
          const c = y > 0 && i >= bpp ? out[prev + i - bpp] : 0;
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
          break;
        }
        default:
          return fail(`unknown row filter type ${f} in row ${y}`);
      }
      out[dst + i] = v & 0xff;
    }
  }
  return out;
}

function unpack(
  rows: Uint8Array,
  width: number,
  height: number,
  rowBytes: number,
  depth: number,
): Uint8Array {
  if (depth === 8) return rows;
  const out = new Uint8Array(width * height);
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = rows[y * rowBytes + Math.floor(x / perByte)];
      const shift = 8 - depth * ((x % perByte) + 1);
      out[y * width + x] = (byte >> shift) & mask;
    }
  }
  return out;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length + 12);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  v.setUint32(8 + data.length, crc32(out, 4, 8 + data.length));
  return out;
}

function filterRows(data: Uint8Array, width: number, height: number, filter: number): Uint8Array {
  const out = new Uint8Array(height * (width + 1));
  const cand = new Uint8Array(width);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    let best = filter;
    if (filter < 0) {
      // Adaptive: the filter with the smallest sum of |signed residuals| (libpng's heuristic).
      let bestScore = Infinity;
      for (let f = 0; f < 5; f++) {
        applyFilter(data, row, y > 0 ? row - width : -1, width, f, cand);
        let s = 0;
        for (let i = 0; i < width; i++) s += cand[i] < 128 ? cand[i] : 256 - cand[i];
        if (s < bestScore) {
          bestScore = s;
          best = f;
        }
      }
    }
    out[y * (width + 1)] = best;
    applyFilter(data, row, y > 0 ? row - width : -1, width, best, cand);
    out.set(cand, y * (width + 1) + 1);
  }
  return out;
}

function applyFilter(
  d: Uint8Array,
  row: number,
  prev: number,
  width: number,
  f: number,
  out: Uint8Array,
): void {
  for (let i = 0; i < width; i++) {
    const x = d[row + i];
    const a = i > 0 ? d[row + i - 1] : 0;
    const b = prev >= 0 ? d[prev + i] : 0;
    const c = prev >= 0 && i > 0 ? d[prev + i - 1] : 0;
    let p: number;
    switch (f) {
      case 0:
        p = 0;
        break;
      case 1:
        p = a;
        break;
      case 2:
        p = b;
        break;
      case 3:
        p = (a + b) >> 1;
        break;
      default: {
        const q = a + b - c;
        const pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
    }
    out[i] = (x - p) & 0xff;
  }
}

/**
 * Encodes an 8-bit label image: a palette PNG when `palette` (RGB triples, up to 256) is given,
 * else a grey PNG. `filter` forces one row filter (0–4) for every row; by default each row gets
 * the filter with the smallest residual sum. The output is deterministic for a given input.
 */
export async function encodeLabelPng(
  data: Uint8Array,
  width: number,
  height: number,
  palette?: Uint8Array,
  filter = -1,
): Promise<Uint8Array> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`encodeLabelPng: bad size ${width}x${height}`);
  }
  if (data.length !== width * height) {
    throw new RangeError(`encodeLabelPng: ${data.length} values for a ${width}x${height} image`);
  }
  if (palette && (palette.length % 3 !== 0 || palette.length === 0 || palette.length > 768)) {
    throw new RangeError(`encodeLabelPng: palette of ${palette.length} bytes is not 1-256 RGB`);
  }
  if (!(filter >= -1 && filter <= 4 && Number.isInteger(filter))) {
    throw new RangeError(`encodeLabelPng: filter ${filter} is not -1 (adaptive) or 0..4`);
  }
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr[8] = 8;
  ihdr[9] = palette ? 3 : 0;
  const z = await zlibCompress(filterRows(data, width, height, filter));
  const parts = [
    new Uint8Array(SIGNATURE),
    chunk("IHDR", ihdr),
    ...(palette ? [chunk("PLTE", palette)] : []),
    chunk("IDAT", z),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
