import { createGpu } from "../src/gpu/context.ts";
import { Rng } from "../src/rng.ts";
import {
  accumulateMaskCounts,
  checkLabels,
  emptyMaskCounts,
  type LabelMap,
  MaskEvaluator,
  type MaskSample,
} from "../src/eval/confusion.ts";
import { assertClose, assertEquals, assertRejects, randArray, testGpu } from "./util.ts";

/** A random blobby label map: piecewise-constant runs plus noise and ignore pixels. */
function randomMap(rng: Rng, w: number, h: number, C: number, ignore: number): LabelMap {
  const data = new Uint8Array(w * h);
  let v = rng.int(C + 1);
  for (let i = 0; i < data.length; i++) {
    if (rng.next() < 0.08) v = rng.int(C + 1);
    data[i] = rng.next() < ignore ? 255 : (rng.next() < 0.05 ? rng.int(C + 1) : v);
  }
  return { width: w, height: h, data };
}

function randomSample(rng: Rng, id: string, w: number, h: number, C: number): MaskSample {
  const gt = randomMap(rng, w, h, C, 0.1);
  const pred = randomMap(rng, w, h, C, 0);
  const tags = [...new Set([...gt.data].filter((v) => v > 0 && v < 255).map((v) => v - 1))]
    .filter(() => rng.next() < 0.7);
  return { id, gt, pred, tags };
}

Deno.test("GPU confusion matrix and OC counts equal the TS reference", async () => {
  const gpu = await testGpu();
  const rng = new Rng(7);
  for (const C of [1, 5, 20]) {
    const ev = new MaskEvaluator(gpu, C);
    const ref = emptyMaskCounts(C);
    for (const [w, h] of [[1, 1], [7, 3], [33, 17], [64, 64], [101, 59]]) {
      const s = randomSample(rng, `img${w}x${h}`, w, h, C);
      await ev.add(s);
      accumulateMaskCounts(ref, s);
    }
    const got = await ev.result();
    ev.dispose();
    assertEquals(got, ref);
    if (ref.ocPixels === 0 || ref.fgPixels === 0) throw new Error("test data has no OC pixels");
  }
});

import {
  accumulateCamCounts,
  type CamCounts,
  CamEvaluator,
  camPseudoMask,
  type CamSample,
  emptyCamCounts,
  pseudoMaskRef,
  upsampleBilinearRef,
} from "../src/eval/cam.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { resizeBilinear } from "../src/ops/resize.ts";

/**
 * Random CAM sample; `quant` rounds values to multiples of 1/8: the upsampling is then exact f32
 * arithmetic, the same with or without fused multiply-adds, so those tests compare exactly.
 */
function randomCam(
  rng: Rng,
  id: string,
  C: number,
  h: number,
  w: number,
  H: number,
  W: number,
  quant: boolean,
  withGt = true,
): CamSample {
  // Each low-resolution location is weak, medium or strong for all classes, so that the
  // activation threshold (tau x the largest tagged maximum) separates pixels.
  const cam = new Float32Array(C * h * w);
  const scale = Array.from({ length: h * w }, () => [0.02, 0.3, 1][rng.int(3)]);
  for (let i = 0; i < cam.length; i++) {
    const v = rng.uniform(-1, 4) * scale[i % (h * w)];
    cam[i] = quant ? Math.round(v * 8) / 8 : v;
  }
  const tags = [...Array(C).keys()].filter(() => rng.next() < 0.35);
  const gt = withGt ? randomMap(rng, W, H, C, 0.1) : null;
  return { id, cam, camShape: [C, h, w], width: W, height: H, tags, gt };
}

/** The test data must exercise every branch: inactive, active, OC and varying sweeps. */
function checkNonDegenerate(ref: CamCounts, samples: CamSample[]): void {
  const pixels = samples.reduce((a, s) => a + s.width * s.height, 0);
  if (!(ref.ocPixels > 0 && ref.ocPixels < ref.activePixels && ref.activePixels < pixels)) {
    throw new Error(`degenerate data: ${ref.ocPixels} OC, ${ref.activePixels} active, ${pixels}`);
  }
  const bg = ref.confusions.map((m) => m.filter((_, i) => i % (ref.numClasses + 1) === 0));
  const sums = bg.map((col) => col.reduce((a, b) => a + b, 0));
  if (!(sums[0] < sums[sums.length - 1])) throw new Error(`sweep does not vary: ${sums}`);
}

const SWEEP = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6];

async function camCase(
  gpu: Awaited<ReturnType<typeof testGpu>>,
  C: number,
  samples: CamSample[],
  opts: { drainPixels?: number } = {},
) {
  const ev = new CamEvaluator(gpu, C, { thresholds: SWEEP, ...opts });
  const ref = emptyCamCounts(C, SWEEP);
  for (const s of samples) {
    await ev.add(s);
    await accumulateCamCounts(ref, s);
  }
  const got = await ev.result();
  ev.dispose();
  return { got, ref };
}

Deno.test("CAM OC counts and threshold sweep equal the TS reference (exact data)", async () => {
  const gpu = await testGpu();
  const rng = new Rng(11);
  const C = 6;
  const samples = [
    randomCam(rng, "up4", C, 4, 8, 16, 32, true),
    randomCam(rng, "same", C, 9, 13, 9, 13, true),
    randomCam(rng, "down2", C, 10, 6, 5, 3, true),
    randomCam(rng, "nogt", C, 4, 4, 8, 8, true, false),
    { ...randomCam(rng, "notags", C, 4, 4, 8, 8, true), tags: [] },
  ];
  const { got, ref } = await camCase(gpu, C, samples);
  assertEquals(got, ref);
  checkNonDegenerate(ref, samples);
});

/**
 * Per pixel of a sample (1 = near): whether a decision of the CAM evaluation lies so close to
 * its threshold or to a tie that a driver rounding the upsampling differently may flip it. A
 * fusing driver (NVIDIA's Vulkan compiler may turn `a·b + c` into one fma) changes an f32
 * upsampled value of class c by a few ulp of its largest tap, far less than `relEps` times
 * T_c (the largest ReLU'd low-resolution value of c), and the class maxima likewise; WGSL's
 * f32 division may be 2.5 ulp off. Near: the two largest CAMs (argmax), the largest CAM
 * against 0 and tau·A (activity), the normalised tagged scores' best two (pseudo-mask class)
 * and the best against each background threshold. A 0 (all taps ReLU'd to 0) is exact.
 */
function nearDecisions(
  s: CamSample,
  C: number,
  tau: number,
  thresholds: readonly number[],
  relEps = 1e-6,
): { oc: number; mask: number[]; pixels: Uint8Array } {
  const [, h, w] = s.camShape!;
  const n = s.width * s.height;
  const cam = s.cam as Float32Array;
  const up = upsampleBilinearRef(cam, C, h, w, s.height, s.width, true);
  const max = (a: Float32Array) => a.reduce((m, v) => Math.max(m, v), 0);
  const M = Array.from({ length: C }, (_, c) => max(up.subarray(c * n, (c + 1) * n)));
  const d = Array.from(
    { length: C },
    (_, c) => relEps * max(cam.subarray(c * h * w, (c + 1) * h * w)),
  );
  let A = 0, dA = 0;
  for (const c of s.tags) if (M[c] > A) [A, dA] = [M[c], d[c]];
  const near = { oc: 0, mask: thresholds.map(() => 0), pixels: new Uint8Array(n) };
  for (let i = 0; i < n; i++) {
    const v = Array.from(
      { length: C },
      (_, c) => ({ v: up[c * n + i], d: up[c * n + i] ? d[c] : 0 }),
    )
      .sort((a, b) => b.v - a.v);
    const oc = v[0].v > 0 &&
      (v[0].v - v[1].v <= v[0].d + v[1].d || Math.abs(v[0].v - tau * A) <= v[0].d + tau * dA);
    if (oc) near.oc++;
    let tie = false;
    const atT = thresholds.map(() => false);
    if (s.tags.length > 0) {
      // Normalised score and its possible error: numerator and maximum each off by d_c.
      const sc = s.tags.map((c) => {
        const den = M[c] + 1e-5;
        const val = up[c * n + i] / den;
        return { val, err: val === 0 ? 0 : d[c] * (1 + val) / den + 3e-7 * val };
      }).sort((a, b) => b.val - a.val);
      tie = sc.length > 1 && sc[0].val > 0 && sc[0].val - sc[1].val <= sc[0].err + sc[1].err;
      thresholds.forEach((t, k) => atT[k] = Math.abs(sc[0].val - t) <= sc[0].err);
    }
    // A class tie matters where the best score is above the threshold.
    atT.forEach((at, k) => {
      if (at || tie) near.mask[k]++;
    });
    near.pixels[i] = oc || tie || atT.some((x) => x) ? 1 : 0;
  }
  return near;
}

/**
 * GPU counts against the reference's where a fusing driver may flip near pixels (see
 * {@link nearDecisions}, summed over the samples): exact image counts; each pixel near an
 * activity or argmax decision moves at most one active and one OC count and one OC pair (L1
 * distance 2); each near a pseudo-mask decision at threshold t one entry of t's confusion
 * matrix. The near pixels must be few (else the data would make the check loose). On a driver
 * that rounds as the reference does (llvmpipe) the counts are equal.
 */
function assertCountsNear(
  got: CamCounts,
  ref: CamCounts,
  near: { oc: number; mask: number[] },
  pixels: number,
): void {
  const worst = Math.max(near.oc, ...near.mask);
  if (!(worst <= 0.002 * pixels)) throw new Error(`${worst} of ${pixels} pixels near a decision`);
  const { confusions: gc, ocPairs: gp, activePixels: ga, ocPixels: go, ...gRest } = got;
  const { confusions: rc, ocPairs: rp, activePixels: ra, ocPixels: ro, ...rRest } = ref;
  assertEquals(gRest, rRest);
  const l1 = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0);
  const oc = [Math.abs(ga - ra), Math.abs(go - ro), l1(gp, rp) / 2];
  const masks = gc.map((m, t) => l1(m, rc[t]) / 2);
  if (!oc.every((x) => x <= near.oc) || !masks.every((x, t) => x <= near.mask[t])) {
    throw new Error(
      `counts differ beyond the pixels near a decision: active/OC/pairs ${oc} (near ${near.oc}), ` +
        `confusions ${masks} (near ${near.mask})`,
    );
  }
}

Deno.test("CAM evaluation on general sizes and values", async () => {
  const gpu = await testGpu();
  const rng = new Rng(12);
  const C = 20;
  const samples = [
    randomCam(rng, "a", C, 7, 5, 23, 17, false),
    randomCam(rng, "b", C, 16, 16, 128, 128, false),
    randomCam(rng, "c", C, 3, 11, 40, 37, false),
  ];
  const { got, ref } = await camCase(gpu, C, samples);
  // General values: compared away from the decision thresholds (see nearDecisions).
  const near = { oc: 0, mask: SWEEP.map(() => 0) };
  for (const s of samples) {
    const r = nearDecisions(s, C, 0.3, SWEEP);
    near.oc += r.oc;
    r.mask.forEach((v, t) => near.mask[t] += v);
  }
  assertCountsNear(got, ref, near, samples.reduce((a, s) => a + s.width * s.height, 0));
  checkNonDegenerate(ref, samples);
});

const sum = (a: ArrayLike<number>) => Array.prototype.reduce.call(a, (x, y) => x + y, 0) as number;

import { camMetrics, maskMetrics, parseSweep, segScores, topOcPairs } from "../src/eval/metrics.ts";
import { assertThrows } from "./util.ts";

const map = (w: number, rows: number[][]): LabelMap => ({
  width: w,
  height: rows.length,
  data: Uint8Array.from(rows.flat()),
});

Deno.test("hand-built 4x4 example: known IoUs, accuracies and OC rate", async () => {
  const gpu = await testGpu();
  const gt = map(4, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 2, 255]]);
  const pred = map(4, [[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 1, 1], [0, 2, 2, 2]]);
  const s: MaskSample = { id: "hand", gt, pred, tags: [1] }; // tagged: "dog" only
  const ev = new MaskEvaluator(gpu, 2);
  await ev.add(s);
  const c = await ev.result();
  ev.dispose();
  // Rows = ground truth (ignore column 3 of rows 2-3 dropped), cols = prediction.
  assertEquals([...c.confusion], [3, 1, 0, 1, 3, 0, 1, 1, 4]);
  const sc = segScores(c.confusion, 3);
  assertEquals(sc.iou, [3 / 6, 3 / 6, 4 / 6]);
  assertEquals(sc.miou, (3 / 6 + 3 / 6 + 4 / 6) / 3);
  assertEquals(sc.pixelAcc, 10 / 14);
  assertEquals(sc.meanAcc, (3 / 4 + 3 / 4 + 4 / 6) / 3);
  // 11 pixels predicted foreground (ignore pixels included), 6 of them "cat" (not tagged).
  assertEquals([c.fgPixels, c.ocPixels], [11, 6]);
  const m = maskMetrics(c, { classNames: ["cat", "dog"], split: "test", source: "hand" });
  assertEquals(m.oc_rate, 6 / 11);
  assertEquals(m.oc_pairs, [
    { true: "cat", pred: "cat", count: 3 },
    { true: "background", pred: "cat", count: 1 },
    { true: "dog", pred: "cat", count: 1 },
    { true: "ignore", pred: "cat", count: 1 },
  ]);
  assertEquals(m.per_class, { background: 0.5, cat: 0.5, dog: 4 / 6 });
});

Deno.test("ground truth as prediction: mIoU exactly 1, OC rate 0", async () => {
  const gpu = await testGpu();
  const rng = new Rng(5);
  const C = 20;
  const ev = new MaskEvaluator(gpu, C);
  for (let i = 0; i < 4; i++) {
    const gt = randomMap(rng, 37 + i, 29, C, 0.1);
    const pred = { ...gt, data: gt.data.map((v) => (v === 255 ? 0 : v)) };
    const tags = [...new Set([...gt.data].filter((v) => v > 0 && v < 255))].map((v) => v - 1);
    await ev.add({ id: `g${i}`, gt, pred, tags });
  }
  const m = maskMetrics(await ev.result(), { split: "t", source: "gt" });
  ev.dispose();
  assertEquals([m.miou, m.pixel_acc, m.mean_acc, m.oc_rate], [1, 1, 1, 0]);
  if (!(m.oc_denominator > 0)) throw new Error("no foreground predicted");

  // The CAM path: one-hot CAMs of the ground truth give the ground truth back.
  const cev = new CamEvaluator(gpu, C, { thresholds: [0.15, 0.5] });
  for (let i = 0; i < 3; i++) {
    const W = 40, H = 30;
    const gt = randomMap(rng, W, H, C, 0.1);
    const cam = new Float32Array(C * H * W);
    gt.data.forEach((v, p) => {
      if (v > 0 && v < 255) cam[(v - 1) * H * W + p] = 1;
    });
    const tags = [...new Set([...gt.data].filter((v) => v > 0 && v < 255))].map((v) => v - 1);
    await cev.add({ id: `c${i}`, cam, camShape: [C, H, W], width: W, height: H, tags, gt });
  }
  const cm = camMetrics(await cev.result(), { split: "t", source: "gt" });
  cev.dispose();
  assertEquals([cm.miou, cm.oc_rate, cm.sweep?.map((s) => s.miou)], [1, 0, [1, 1]]);
});

Deno.test("size mismatches and bad labels are clear errors", async () => {
  const gpu = await testGpu();
  const ev = new MaskEvaluator(gpu, 3);
  const gt = map(3, [[0, 1, 2], [3, 255, 0]]);
  await assertRejects(
    () => ev.add({ id: "2008_000123", gt, pred: map(2, [[0, 1], [1, 1], [0, 0]]), tags: [] }),
    RangeError,
    "2008_000123: prediction is 2x3 but the ground truth is 3x2",
  );
  await assertRejects(
    () => ev.add({ id: "x", gt, pred: map(3, [[0, 1, 4], [0, 0, 0]]), tags: [] }),
    RangeError,
    "x: prediction: label 4 at (x 2, y 0) is out of range 0..3",
  );
  await assertRejects(
    () => ev.add({ id: "y", gt: map(3, [[0, 9, 0], [0, 0, 0]]), pred: gt, tags: [] }),
    RangeError,
    "y: ground truth: label 9 at (x 1, y 0)",
  );
  await assertRejects(
    () => ev.add({ id: "z", gt, pred: map(3, [[0, 0, 0], [0, 0, 0]]), tags: [3] }),
    RangeError,
    "z: tags: tag 3 out of range 0..2",
  );
  ev.dispose();
  const cev = new CamEvaluator(gpu, 3);
  const cam = new Float32Array(3 * 4);
  await assertRejects(
    () => cev.add({ id: "c1", cam, camShape: [3, 2, 2], width: 5, height: 4, tags: [0], gt }),
    RangeError,
    "c1: ground truth is 3x2 but the image is 5x4",
  );
  await assertRejects(
    () => cev.add({ id: "c2", cam, camShape: [2, 2, 3], width: 3, height: 2, tags: [0] }),
    RangeError,
    "c2: CAM has 2 classes, the evaluation expects 3",
  );
  cev.dispose();
});

Deno.test("work past the binding limit is split; counters drain before u32 overflow", async () => {
  const small = await createGpu({ maxBindingBytes: 4096, debug: true });
  const gpu = await testGpu();
  const rng = new Rng(21);
  // Masks: 100x50 = 5000 pixels, two chunks of 4096 bytes.
  const masks = [randomSample(rng, "m0", 100, 50, 4), randomSample(rng, "m1", 31, 7, 4)];
  const want = emptyMaskCounts(4);
  const evs = [new MaskEvaluator(small, 4), new MaskEvaluator(gpu, 4, { drainPixels: 1000 })];
  for (const s of masks) {
    accumulateMaskCounts(want, s);
    for (const ev of evs) await ev.add(s);
  }
  for (const ev of evs) {
    assertEquals(await ev.result(), want);
    ev.dispose();
  }
  // CAMs: 23x29 planes (2668 bytes) -> one class per binding, unaligned class offsets;
  // 40x37 pixels -> six pixel chunks of the 16-byte state.
  const C = 5;
  const cams = [
    randomCam(rng, "c0", C, 23, 29, 40, 37, true),
    randomCam(rng, "c1", C, 5, 6, 9, 9, true),
  ];
  const ref = emptyCamCounts(C, SWEEP);
  const cevs = [
    new CamEvaluator(small, C, { thresholds: SWEEP }),
    new CamEvaluator(gpu, C, { thresholds: SWEEP, drainPixels: 700 }),
  ];
  for (const s of cams) {
    await accumulateCamCounts(ref, s);
    for (const ev of cevs) await ev.add(s);
  }
  for (const ev of cevs) {
    assertEquals(await ev.result(), ref);
    ev.dispose();
  }
  const pm = await camPseudoMask(small, cams[0], C, 0.25);
  const up = upsampleBilinearRef(cams[0].cam as Float32Array, C, 23, 29, 40, 37, true);
  assertEquals(pm.data, pseudoMaskRef(up, C, 40 * 37, cams[0].tags, 0.25));
  small.destroy();
});

Deno.test("pseudo masks equal the reference and the sweep's confusion", async () => {
  const gpu = await testGpu();
  const rng = new Rng(31);
  const C = 8;
  for (const [h, w, H, W, quant] of [[6, 7, 30, 21, false], [8, 8, 32, 32, true]] as const) {
    const s = randomCam(rng, `p${h}`, C, h, w, H, W, quant);
    const up = upsampleBilinearRef(s.cam as Float32Array, C, h, w, H, W, true);
    const ev = new CamEvaluator(gpu, C, { thresholds: SWEEP });
    const t = 0.3;
    const mask = await ev.add(s, { pseudoThreshold: t });
    const counts = await ev.result();
    ev.dispose();
    const want = pseudoMaskRef(up, C, H * W, s.tags, t);
    // Exact data: exact. General values: equal away from the decision thresholds (a driver
    // that fuses multiply-adds may flip a pixel within rounding of one; nearDecisions).
    const near = quant ? new Uint8Array(H * W) : nearDecisions(s, C, 0.3, [t]).pixels;
    if (!(sum(near) <= 0.01 * H * W)) throw new Error(`${sum(near)} pixels near a decision`);
    for (const got of [mask!.data, (await camPseudoMask(gpu, s, C, t)).data]) {
      assertEquals(got.length, want.length);
      const bad = want.findIndex((v, i) => got[i] !== v && !near[i]);
      if (bad >= 0) throw new Error(`pixel ${bad}: ${got[bad]}, reference ${want[bad]}`);
    }
    // Only background and tagged classes; both occur.
    const labels = new Set(want);
    for (const v of labels) if (v > 0 && !s.tags.includes(v - 1)) throw new Error(`OC label ${v}`);
    if (labels.size < 2) throw new Error("degenerate pseudo mask");
    // The sweep's matrix at t is the confusion of this mask.
    const direct = emptyMaskCounts(C);
    accumulateMaskCounts(direct, {
      id: s.id,
      gt: s.gt!,
      pred: { ...s.gt!, data: want },
      tags: s.tags,
    });
    assertEquals(counts.confusions[SWEEP.indexOf(t)], direct.confusion);
  }
});

Deno.test("bilinear upsampling follows PyTorch align_corners=false", async () => {
  // 2x2 -> 3x3, hand-computed with PyTorch's rule: scale 2/3, source rows/cols at
  // max((d + 0.5)·2/3 − 0.5, 0) = 0, 0.5, 1.1667 (clamped to the last row/col).
  const up = upsampleBilinearRef(Float32Array.from([0, 3, 6, 9]), 1, 2, 2, 3, 3);
  assertEquals([...up], [0, 1.5, 3, 3, 4.5, 6, 6, 7.5, 9]);
  // Downsampling 4 -> 2 samples at 0.5 and 2.5: means of neighbours.
  const down = upsampleBilinearRef(Float32Array.from([0, 2, 4, 6]), 1, 1, 4, 1, 2);
  assertEquals([...down], [1, 5]);
  // Same size is the identity; ReLU applies to the inputs.
  const x = Float32Array.from([-1, 2, 3, -4, 5, 6]);
  assertEquals([...upsampleBilinearRef(x, 1, 2, 3, 2, 3)], [...x]);
  assertEquals([...upsampleBilinearRef(x, 1, 2, 3, 2, 3, true)], [0, 2, 3, 0, 5, 6]);

  // The fused GPU upsampling agrees with the nn resize op: evaluating low-res CAMs equals
  // evaluating their resizeBilinear output at full size (non-negative dyadic values: exact).
  const gpu = await testGpu();
  const rng = new Rng(41);
  const C = 5, h = 6, w = 5, H = 24, W = 20;
  const s = randomCam(rng, "r", C, h, w, H, W, true);
  const cam = (s.cam as Float32Array).map((v) => Math.abs(v));
  const t = Tensor.fromArray(gpu, cam, [1, C, h, w]);
  const big = resizeBilinear(gpu, t, { size: [H, W] });
  const results = [];
  for (const c of [t, big]) {
    const ev = new CamEvaluator(gpu, C, { thresholds: SWEEP, relu: false });
    await ev.add({ ...s, cam: c, camShape: undefined });
    results.push(await ev.result());
    ev.dispose();
  }
  assertEquals(results[0], results[1]);
  const ref = emptyCamCounts(C, SWEEP);
  await accumulateCamCounts(ref, { ...s, cam }, { relu: false });
  assertEquals(results[0], ref);
  t.dispose();
  big.dispose();
  // The reference matches the nn resize kernel on general sizes and values.
  const x2 = randArray(3 * 7 * 5, 43, -2, 2);
  const t2 = Tensor.fromArray(gpu, x2, [1, 3, 7, 5]);
  const y2 = resizeBilinear(gpu, t2, { size: [23, 17] });
  assertClose(await y2.read(), upsampleBilinearRef(x2, 3, 7, 5, 23, 17), {
    rtol: 1e-6,
    atol: 1e-6,
  });
  t2.dispose();
  y2.dispose();
});

Deno.test("metrics: absent classes, best threshold, sweep parsing", () => {
  // Class 2 never occurs: NaN IoU, left out of the mean; meanAcc over present classes.
  const sc = segScores([5, 1, 0, 2, 2, 0, 0, 0, 0], 3);
  assertEquals(sc.iou.map((x) => Number.isNaN(x) ? null : x), [5 / 8, 2 / 5, null]);
  assertEquals(sc.miou, (5 / 8 + 2 / 5) / 2);
  assertEquals(sc.meanAcc, (5 / 6 + 2 / 4) / 2);
  assertEquals(Number.isNaN(segScores([0, 0, 0, 0], 2).miou), true);
  assertThrows(() => segScores([1, 2, 3], 2), RangeError, "expected 2x2");

  const counts = emptyCamCounts(1, [0.1, 0.2, 0.3]);
  counts.confusions[0].set([4, 4, 0, 4]);
  counts.confusions[1].set([8, 0, 0, 4]); // perfect
  counts.confusions[2].set([8, 0, 4, 0]);
  counts.nImages = counts.nGtImages = 1;
  const m = camMetrics(counts, { split: "s", source: "x" });
  assertEquals([m.bg_threshold, m.miou, m.oc_rate], [0.2, 1, null]);
  assertEquals(m.sweep, [{ t: 0.1, miou: (1 / 2 + 1 / 2) / 2 }, { t: 0.2, miou: 1 }, {
    t: 0.3,
    miou: (8 / 12 + 0) / 2,
  }]);
  assertEquals(m.per_class, { background: 1, class1: 1 });
  assertEquals(camMetrics(counts, { split: "s", source: "x", bgThreshold: 0.3 }).miou, 1 / 3);
  assertThrows(
    () => camMetrics(counts, { split: "s", source: "x", bgThreshold: 0.25 }),
    RangeError,
    "0.25 was not evaluated",
  );
  assertEquals(JSON.parse(JSON.stringify(m)), m);

  assertEquals(parseSweep("0.05:0.6:0.05").length, 12);
  assertEquals(parseSweep("0.05:0.6:0.05")[11], 0.6);
  assertEquals(parseSweep("0.3, 0.1,0.2"), [0.1, 0.2, 0.3]);
  assertThrows(() => parseSweep("0.1:0.5"), RangeError, 'bad threshold sweep "0.1:0.5"');
  assertThrows(() => parseSweep("0.5:0.1:0.1"), RangeError, "stop is below start");
  assertThrows(() => parseSweep("a,b"), RangeError, "not a number list");
  assertEquals(topOcPairs([0, 2, 0, 5, 0, 1], ["bg", "x"], 2), [
    { true: "x", pred: "x", count: 5 },
    { true: "bg", pred: "x", count: 2 },
  ]);
});

import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { type EvalDataset, evaluateMaskFolder } from "../src/methods/cam/mask_folder.ts";

/** An in-memory dataset with the `Dataset` interface of src/data/dataset.ts. */
function fakeDataset(rng: Rng, C: number, sizes: [number, number][]): EvalDataset {
  const items = sizes.map(([w, h], i) => {
    const gt = randomMap(rng, w, h, C, 0.1);
    const tags = [...new Set([...gt.data].filter((v) => v > 0 && v < 255))].map((v) => v - 1);
    return {
      id: `img_${i}`,
      width: w,
      height: h,
      rgb: new Uint8Array(w * h * 3).fill(100 + i),
      mask: i === sizes.length - 1 ? null : gt.data,
      tags: tags.slice(1), // one class only on "difficult" objects
      present: tags,
    };
  });
  return {
    ids: items.map((x) => x.id),
    numClasses: C,
    classNames: [...Array(C)].map((_, c) => `c${c}`),
    load: (i) => Promise.resolve(items[i]),
  };
}

Deno.test("mask-folder evaluation: palette and grey PNGs, clear errors", async () => {
  const gpu = await testGpu();
  const rng = new Rng(51);
  const C = 6;
  const ds = fakeDataset(rng, C, [[20, 10], [17, 13], [8, 8], [9, 5]]);
  const dir = await Deno.makeTempDir();
  const want = emptyMaskCounts(C);
  for (let i = 0; i < ds.ids.length; i++) {
    const item = await ds.load(i);
    const pred = randomMap(rng, item.width, item.height, C, 0);
    const png = await encodeLabelPng(
      pred.data,
      pred.width,
      pred.height,
      i % 2 ? VOC_PALETTE : undefined, // palette and grey files
    );
    await Deno.writeFile(`${dir}/${item.id}.png`, png);
    const gt = item.mask ?? new Uint8Array(item.width * item.height).fill(255);
    accumulateMaskCounts(want, {
      id: item.id,
      gt: { width: item.width, height: item.height, data: gt },
      pred,
      tags: item.present,
    });
  }
  const r = await evaluateMaskFolder({ gpu, dataset: ds, masksDir: dir, examples: 2 });
  assertEquals(r.counts, want);
  assertEquals(r.metrics, {
    ...maskMetrics(want, { classNames: ds.classNames, split: "val", source: `masks:${dir}` }),
    n_gt_images: 3, // the last image has no ground truth: it only counts for the OC rate
  });
  assertEquals(r.examples.map((e) => e.id), ["img_0", "img_1"]);

  // A prediction of the wrong size.
  await Deno.writeFile(`${dir}/img_2.png`, await encodeLabelPng(new Uint8Array(12), 4, 3));
  await assertRejects(
    () => evaluateMaskFolder({ gpu, dataset: ds, masksDir: dir }),
    Error,
    `${dir}/img_2.png: img_2: prediction is 4x3 but the ground truth is 8x8`,
  );
  // A label outside 0..C.
  await Deno.writeFile(`${dir}/img_2.png`, await encodeLabelPng(new Uint8Array(64).fill(7), 8, 8));
  await assertRejects(
    () => evaluateMaskFolder({ gpu, dataset: ds, masksDir: dir }),
    Error,
    "img_2: prediction: label 7 at (x 0, y 0) is out of range 0..6",
  );
  // Missing files are listed before any work.
  await Deno.remove(`${dir}/img_1.png`);
  await Deno.remove(`${dir}/img_3.png`);
  await assertRejects(
    () => evaluateMaskFolder({ gpu, dataset: ds, masksDir: dir }),
    Error,
    `2 of 4 predictions missing in ${dir} (expected <id>.png): img_1, img_3`,
  );
  // A corrupt PNG names the file.
  await Deno.writeFile(`${dir}/img_1.png`, new Uint8Array([137, 80, 78, 71, 1, 2, 3]));
  await Deno.writeFile(`${dir}/img_3.png`, new Uint8Array(0));
  await assertRejects(
    () => evaluateMaskFolder({ gpu, dataset: ds, masksDir: dir }),
    Error,
    `${dir}/img_1.png`,
  );
  await assertRejects(
    () => evaluateMaskFolder({ gpu, dataset: ds, masksDir: `${dir}/nope` }),
    Error,
    `mask folder ${dir}/nope not found`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("label validation finds a bad value at any position (word-wise scan)", () => {
  for (const C of [1, 20, 126, 127, 200]) {
    for (const offset of [0, 1]) {
      const buf = new Uint8Array(38);
      const data = buf.subarray(offset, offset + 37); // unaligned views use the plain loop
      for (let i = 0; i < 37; i++) data[i] = i % (C + 1);
      checkLabels(data, C, false, "ok", 37);
      data[5] = 255;
      checkLabels(data, C, true, "ignore allowed", 37);
      assertThrows(() => checkLabels(data, C, false, "m", 10), RangeError, "255 at (x 5, y 0)");
      data[5] = 0;
      for (const pos of [0, 3, 4, 17, 35, 36]) {
        for (const v of [C + 1, 128, 254, 255]) {
          if (v <= C) continue;
          const d = data.slice();
          d[pos] = v;
          assertThrows(
            () => checkLabels(d, C, v !== 255, "m", 10),
            RangeError,
            `m: label ${v} at (x ${pos % 10}, y ${Math.floor(pos / 10)})`,
          );
        }
      }
    }
  }
});
