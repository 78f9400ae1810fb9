/**
 * The label PNG codec: hand-built PNGs exercising every row filter and sub-byte depths
 * (expected pixels worked out by hand), encode/decode round trips at odd sizes with each filter,
 * the VOC colour map, CRC-32 check values, and bad input.
 */
import {
  crc32,
  decodeLabelPng,
  encodeLabelPng,
  VOC_PALETTE,
  zlibCompress,
} from "../src/data/png.ts";
import { DataError } from "../src/data/errors.ts";
import { Rng } from "../src/rng.ts";
import { assertEquals, assertRejects } from "./util.ts";

const te = new TextEncoder();
const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function be32(v: number): number[] {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** A chunk built independently of the encoder (the CRC function is checked below). */
function chunk(type: string, data: number[] | Uint8Array): number[] {
  const body = [...te.encode(type), ...data];
  return [...be32(data.length), ...body, ...be32(crc32(new Uint8Array(body)))];
}

/** A PNG from explicit chunks (IHDR fields given), the IDAT payload given as-is. */
function pngOf(
  w: number,
  h: number,
  depth: number,
  colourType: number,
  idat: number[] | Uint8Array,
  palette?: number[],
) {
  const ihdr = [...be32(w), ...be32(h), depth, colourType, 0, 0, 0];
  return new Uint8Array([
    ...SIGNATURE,
    ...chunk("IHDR", ihdr),
    ...(palette ? chunk("PLTE", palette) : []),
    ...chunk("IDAT", idat),
    ...chunk("IEND", []),
  ]);
}

/** A PNG whose raw (filtered) rows are zlib-compressed here. */
async function png(
  w: number,
  h: number,
  depth: number,
  colourType: number,
  raw: number[],
  palette?: number[],
): Promise<Uint8Array> {
  return pngOf(w, h, depth, colourType, await zlibCompress(new Uint8Array(raw)), palette);
}

Deno.test("crc32 matches the standard check values", () => {
  assertEquals(crc32(te.encode("123456789")), 0xcbf43926);
  assertEquals(crc32(te.encode("IEND")), 0xae426082);
});

Deno.test("VOC_PALETTE is the standard VOC colour map", () => {
  assertEquals(VOC_PALETTE.length, 768);
  const rgb = (i: number) => [...VOC_PALETTE.subarray(3 * i, 3 * i + 3)];
  assertEquals(rgb(0), [0, 0, 0]);
  assertEquals(rgb(1), [128, 0, 0]); // aeroplane
  assertEquals(rgb(2), [0, 128, 0]);
  assertEquals(rgb(15), [192, 128, 128]); // person
  assertEquals(rgb(20), [0, 64, 128]); // tvmonitor
  assertEquals(rgb(255), [224, 224, 192]); // void
});

Deno.test("decodeLabelPng undoes all five row filters (hand-computed rows)", async () => {
  // 3x5 grey image; one row per filter type. Raw bytes are filter type + residuals:
  // Sub: x - left; Up: x - up; Average: x - floor((left + up) / 2);
  // Paeth: x - the predictor among left/up/upper-left nearest to left + up - upper-left.
  const raw = [
    0,
    10,
    20,
    30, // None: 10 20 30
    1,
    15,
    10,
    20, // Sub: 15, 25 (15+10), 45 (25+20)
    2,
    5,
    5,
    251, // Up: 20 (15+5), 30 (25+5), 40 (45-5)
    3,
    20,
    4,
    163, // Avg: 30 = 20+10, 34 = 4+(30+30)/2, 200 = 163+floor((34+40)/2)
    4,
    1,
    6,
    156, // Paeth: 31 = 1+30 (up), 40 = 6+34 (up), 100 = 156+200 (up) mod 256
  ];
  const dec = await decodeLabelPng(await png(3, 5, 8, 0, raw), "hand.png");
  assertEquals(dec.width, 3);
  assertEquals(dec.height, 5);
  assertEquals([...dec.data], [10, 20, 30, 15, 25, 45, 20, 30, 40, 30, 34, 200, 31, 40, 100]);
});

Deno.test("decodeLabelPng reads 2-bit palette indices and keeps the palette", async () => {
  // Row 0: 0 1 2 3 1 -> 00 01 10 11 | 01 000000 = 0x1b 0x40; row 1: 3 3 0 0 2 -> 0xf0 0x80.
  const pal = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0];
  const dec = await decodeLabelPng(await png(5, 2, 2, 3, [0, 0x1b, 0x40, 0, 0xf0, 0x80], pal), "p");
  assertEquals([...dec.data], [0, 1, 2, 3, 1, 3, 3, 0, 0, 2]);
  assertEquals([...dec.palette!], pal);
});

Deno.test("encodeLabelPng -> decodeLabelPng round trip (odd sizes, every filter)", async () => {
  const r = new Rng(11);
  for (const [w, h] of [[1, 1], [7, 3], [13, 17], [64, 5]]) {
    for (const filter of [-1, 0, 1, 2, 3, 4]) {
      const data = new Uint8Array(w * h);
      // Mix of flat regions and noise so that every filter meets both.
      for (let i = 0; i < data.length; i++) data[i] = r.next() < 0.5 ? (i >> 3) % 21 : r.int(256);
      for (const pal of [VOC_PALETTE, undefined]) {
        const bytes = await encodeLabelPng(data, w, h, pal, filter);
        const dec = await decodeLabelPng(bytes, "rt.png");
        assertEquals([dec.width, dec.height], [w, h]);
        assertEquals(dec.data, data, `${w}x${h} filter ${filter} palette ${!!pal}`);
        assertEquals(dec.palette === null, pal === undefined);
      }
    }
  }
});

Deno.test("encodeLabelPng is deterministic", async () => {
  const data = new Uint8Array(40 * 30).map((_, i) => (i * 7) % 23);
  const a = await encodeLabelPng(data, 40, 30, VOC_PALETTE);
  const b = await encodeLabelPng(data, 40, 30, VOC_PALETTE);
  assertEquals(a, b);
});

Deno.test("decodeLabelPng: bad input names the file and the problem", async () => {
  const good = await encodeLabelPng(new Uint8Array(64).fill(3), 8, 8, VOC_PALETTE);
  const flipped = good.slice();
  const idat = [...good.keys()].find((i) =>
    good[i] === 73 && good[i + 1] === 68 && good[i + 2] === 65 && good[i + 3] === 84
  )!;
  flipped[idat + 6] ^= 0x55; // a byte of the IDAT payload
  let e = await assertRejects(() => decodeLabelPng(flipped, "m/bad.png"), DataError);
  assertEquals(e.message.startsWith("m/bad.png: bad CRC in IDAT chunk"), true, e.message);

  e = await assertRejects(
    () => decodeLabelPng(good.slice(0, good.length - 20), "t.png"),
    DataError,
  );
  assertEquals(/^t\.png: truncated PNG/.test(e.message), true, e.message);

  e = await assertRejects(() => decodeLabelPng(te.encode("GIF89a....."), "x.png"), DataError);
  assertEquals(e.message, "x.png: not a PNG file (bad signature)");

  const rgb = await png(2, 1, 8, 2, [0, 1, 2, 3, 4, 5, 6]);
  await assertRejects(() => decodeLabelPng(rgb, "c.png"), DataError, "colour type 2 (RGB)");

  const b16 = await png(2, 1, 16, 0, [0, 1, 2, 3, 4]);
  await assertRejects(() => decodeLabelPng(b16, "d.png"), DataError, "bit depth 16");

  const garbage = pngOf(2, 2, 8, 0, [1, 2, 3, 4, 5, 6]);
  await assertRejects(() => decodeLabelPng(garbage, "z.png"), DataError, "corrupt compressed");

  const short = await png(4, 4, 8, 0, [0, 1, 2, 3, 4]);
  await assertRejects(() => decodeLabelPng(short, "s.png"), DataError, "truncated image data");

  const badFilter = await png(2, 1, 8, 0, [7, 1, 2]);
  await assertRejects(() => decodeLabelPng(badFilter, "f.png"), DataError, "filter type 7");
});
