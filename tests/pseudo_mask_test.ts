/**
 * The one pseudo-mask rule (src/cam/pseudo_mask.ts): hand-computed cases (ties, a score equal
 * to the threshold, a background plane, a cropped grid), its wrappers, and its WGSL
 * counterpart (shaders/eval.wgsl `cam_argmax` + `cam_pseudo`, through `camPseudoMask`) on
 * normalised CAMs built to hit the ties and the threshold exactly.
 */
import { pseudoMask, pseudoMaskFromNormalized } from "../src/cam/pseudo_mask.ts";
import { normalizeTaggedRef } from "../src/cam/fuse.ts";
import { camPseudoMask, pseudoMaskRef } from "../src/eval/cam.ts";
import { walkedMasks } from "../src/methods/affinitynet/rw.ts";
import { Rng } from "../src/rng.ts";
import { assertEquals, assertThrows, testGpu } from "./util.ts";

Deno.test("pseudoMask: background wins ties, then the earlier tag; only scores above win", () => {
  // Two tags (classes 3 and 7) over 6 pixels.
  const s = Float32Array.from([
    0.5,
    0.2,
    0.2,
    0.9,
    0.0,
    0.3, // class 3
    0.5,
    0.6,
    0.1,
    0.9,
    0.0,
    0.31, // class 7
  ]);
  assertEquals([...pseudoMask(s, [3, 7], 0.2, { width: 6, height: 1 })], [4, 8, 0, 4, 0, 8]);
  // A score equal to the (f32) threshold is background.
  assertEquals([...pseudoMask(s, [3, 7], 0.5, { width: 6, height: 1 })], [0, 8, 0, 4, 0, 0]);
  assertEquals([...pseudoMaskFromNormalized(s, [3, 7], 6, 0.2)], [4, 8, 0, 4, 0, 8]);
  // No tags: all background; a threshold below every score: the argmax.
  assertEquals([...pseudoMask(new Float32Array(0), [], 0.1, { width: 3, height: 1 })], [0, 0, 0]);
  assertEquals([...pseudoMask(s, [3, 7], -1, { width: 6, height: 1 })], [4, 8, 4, 4, 4, 8]);
  assertThrows(() => pseudoMaskFromNormalized(s, [3], 6, 0.2), RangeError);
  assertThrows(() => pseudoMask(s, [3, 7], 0.2, { width: 7, height: 1 }), RangeError);
});

Deno.test("pseudoMask: a background plane and a cropped grid", () => {
  // [bg, c0, c1] planes of a 2x3 grid; the mask is its 2x2 top-left crop.
  const up = Float32Array.from([
    0.5,
    0.5,
    9,
    0.1,
    0.9,
    9, // bg
    0.5,
    0.7,
    9,
    0.2,
    0.3,
    9, // class 1
    0.4,
    0.7,
    9,
    0.3,
    0.8,
    9, // class 4
  ]);
  const grid = { width: 2, height: 2, rowStride: 3, planeStride: 6, offset: 6 };
  const mask = pseudoMask(up, [1, 4], { offset: 0 }, grid);
  assertEquals([...mask], [0, 2, 5, 0]);
  assertEquals(walkedMasks(up, 1, [1, 4], 2, 3, 2, 2), [mask]);
});

Deno.test("pseudo-mask rule: the WGSL counterpart (cam_argmax + cam_pseudo) matches it", async () => {
  const gpu = await testGpu();
  const rng = new Rng(5);
  const [C, H, W] = [6, 9, 11];
  const n = H * W;
  const tags = [1, 2, 4];
  const cam = new Float32Array(C * n);
  for (let i = 0; i < cam.length; i++) cam[i] = Math.fround(rng.uniform(-0.5, 2));
  // Classes 1 and 2 tie everywhere on the left half (equal maps with equal maxima).
  for (let i = 0; i < n; i++) if (i % W < W / 2) cam[2 * n + i] = cam[1 * n + i];
  cam[2 * n + W - 1] = cam[1 * n + W - 1] = 3; // the same maximum for both
  const norm = normalizeTaggedRef(cam, n, tags);
  // Thresholds: ordinary ones and ones equal to a pixel's best score (background there).
  const best = (i: number) => Math.max(norm[i], norm[n + i], norm[2 * n + i]);
  const thresholds = [0.15, 0.5, best(17), best(40)];
  const sample = { id: "rule", cam, camShape: [C, H, W] as const, width: W, height: H, tags };
  let ties = 0, equal = 0;
  for (const t of thresholds) {
    const want = pseudoMask(norm, tags, t, { width: n, height: 1 });
    assertEquals((await camPseudoMask(gpu, sample, C, t)).data, want, `threshold ${t}`);
    assertEquals(pseudoMaskRef(cam, C, n, tags, t), want);
    for (let i = 0; i < n; i++) {
      const [a, b] = [norm[i], norm[n + i]];
      if (a === b && a > Math.fround(t)) ties++;
      if (best(i) === Math.fround(t)) equal++;
    }
  }
  if (ties === 0 || equal === 0) throw new Error(`cases not hit: ${ties} ties, ${equal} equal`);
});
