/**
 * COCO mask encodings against hand-computed cases (and a few values from pycocotools'
 * maskApi.c, compiled from its source for reference), plus round trips.
 */
import {
  maskBox,
  polygonToRle,
  rleArea,
  rleDecode,
  rleEncode,
  rleFromString,
  rleToString,
} from "../src/data/coco_rle.ts";
import { Rng } from "../src/rng.ts";
import { assertEquals, assertThrows } from "./util.ts";

Deno.test("rleEncode / rleDecode: column-major runs, background first", () => {
  // 3x2 mask (h=3, w=2), row-major:
  //   1 0
  //   1 1
  //   0 1
  // Column-major sequence: 1 1 0 | 0 1 1 -> runs: bg 0, fg 2, bg 2, fg 2.
  const m = new Uint8Array([1, 0, 1, 1, 0, 1]);
  assertEquals(rleEncode(m, 3, 2), [0, 2, 2, 2]);
  assertEquals(rleDecode([0, 2, 2, 2], 3, 2), m);
  assertEquals(rleEncode(new Uint8Array(6), 3, 2), [6]);
  assertEquals(rleArea([0, 2, 2, 2]), 4);
  assertThrows(() => rleDecode([1, 2], 3, 2), Error, "sum to 3");
});

Deno.test("rleToString / rleFromString: hand-computed strings", () => {
  // Each count is written 5 bits per char (+48), low group first, bit 0x20 = more follows,
  // bit 0x10 of the last char = sign; counts from index 3 on are stored minus counts[i-2].
  assertEquals(rleToString([3]), "3"); // 3 + 48 = '3'
  assertEquals(rleToString([3, 5, 2, 7]), "3522"); // last: 7 - 5 = 2
  // 100 = 3*32 + 4: first char 4|0x20 = 36 -> 'T', then 3 -> '3'.
  assertEquals(rleToString([100]), "T3");
  // 16 needs two chars (bit 4 would read as a sign): 16|0x20 = 48 -> '`', then 0 -> '0'.
  assertEquals(rleToString([16]), "`0");
  // [10, 2, 4, 1]: index 3 stores 1 - 2 = -1 -> 31 (0x1f, sign set, no more) -> 'O'.
  assertEquals(rleToString([10, 2, 4, 1]), ":24O");
  for (const s of ["3", "3522", "T3", "`0", ":24O"]) {
    assertEquals(rleToString(rleFromString(s)), s);
  }
  assertEquals(rleFromString(":24O"), [10, 2, 4, 1]);
  assertEquals(rleFromString("T3"), [100]);
  assertThrows(() => rleFromString("3!"), Error, "invalid character '!'");
  assertThrows(() => rleFromString("T"), Error, "ends inside a number");
});

Deno.test("compressed string round trip on random masks", () => {
  const r = new Rng(3);
  for (let t = 0; t < 40; t++) {
    const h = 1 + r.int(60), w = 1 + r.int(60);
    const m = new Uint8Array(h * w);
    const p = r.uniform(0.05, 0.95);
    for (let i = 0; i < m.length; i++) m[i] = r.next() < p ? 1 : 0;
    const counts = rleEncode(m, h, w);
    assertEquals(rleFromString(rleToString(counts)), counts);
    assertEquals(rleDecode(counts, h, w), m);
  }
  // Large counts (multi-char, negative differences).
  const big = [123456, 7, 99999, 3, 1, 200000];
  assertEquals(rleFromString(rleToString(big)), big);
});

Deno.test("polygonToRle: hand-traced squares (pixel centres at integer coordinates)", () => {
  // Square [0,2]x[0,2] in a 4x4 image. Vertices x5: (0,0) (10,0) (10,10) (0,10). Walking the
  // top edge, the column crossings that land on pixel centres are u: 2->3 (x=0) and 7->8
  // (x=1), at y = ceil((0+.5)/5-.5) clamped = 0; the bottom edge gives x=1, x=0 at
  // y = ceil(10.5/5 - .5) = 2. Starts x*h+y = 0, 4, 6, 2 plus h*w = 16 -> sorted 0 2 4 6 16
  // -> differences 0 2 2 2 10: pixels x in {0,1}, y in {0,1}.
  assertEquals(polygonToRle([0, 0, 2, 0, 2, 2, 0, 2], 4, 4), [0, 2, 2, 2, 10]);
  // The same square moved by (1,1) in a 4x5 (h x w) image: pixels x, y in {1,2}.
  assertEquals(polygonToRle([1, 1, 3, 1, 3, 3, 1, 3], 4, 5), [5, 2, 2, 2, 9]);
  // Partly outside the image: columns < 0 are dropped and rows clamped to 0.
  assertEquals(polygonToRle([-1, -1, 2, -1, 2, 2, -1, 2], 3, 3), [0, 2, 1, 2, 4]);
  // Vertex order (clockwise or not) does not matter.
  assertEquals(polygonToRle([0, 2, 2, 2, 2, 0, 0, 0], 4, 4), [0, 2, 2, 2, 10]);
  assertEquals(polygonToRle([], 2, 3), [6]);
  assertThrows(() => polygonToRle([0, 0, 1], 2, 2), Error, "odd number of coordinates (3)");
});

Deno.test("polygonToRle: values from pycocotools maskApi.c", () => {
  // Computed with rleFrPoly/rleToString from cocodataset/cocoapi common/maskApi.c.
  const tri = polygonToRle([0, 0, 4, 0, 0, 4], 5, 5);
  assertEquals(tri, [0, 3, 2, 2, 3, 1, 14]);
  assertEquals(rleToString(tri), "032O1O;");
  const pent = polygonToRle([1.3, 0.2, 5.7, 1.1, 6.2, 4.9, 3.1, 5.6, 0.4, 3.3], 6, 7);
  assertEquals(pent, [6, 4, 2, 5, 2, 5, 1, 4, 2, 4, 7]);
  assertEquals(rleToString(pent), "642100OO105");
});

Deno.test("maskBox gives COCO [x, y, w, h] and area", () => {
  const m = rleDecode([5, 2, 2, 2, 9], 4, 5);
  assertEquals(maskBox(m, 4, 5), { bbox: [1, 1, 2, 2], area: 4 });
  assertEquals(maskBox(new Uint8Array(6), 2, 3), { bbox: [0, 0, 0, 0], area: 0 });
});
