import {
  AFFINITY_IGNORE,
  affinityOffsets,
  forEachPair,
  pairGrid,
  pairwiseAffinity,
  pairwiseAffinityBackward,
  pairwiseAffinityBackwardRef,
  pairwiseAffinityRef,
} from "../src/ops/affinity.ts";
import { affinityLabelMap, affinityPairLabels } from "../src/methods/affinitynet/labels.ts";
import {
  affinityLoss,
  affinityLossRef,
  PAIR_BG,
  PAIR_FG,
  PAIR_IGNORE,
  PAIR_NEG,
  pairCounts,
  uploadPairCodes,
} from "../src/losses/affinity.ts";
import {
  randomWalk,
  randomWalkRef,
  transitionMatrix,
  transitionMatrixRef,
} from "../src/methods/affinitynet/random_walk.ts";
import { autoLogt, RwSchema } from "../src/methods/affinitynet/rw.ts";
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { Rng } from "../src/rng.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  finiteDiff,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

Deno.test("affinity offsets: psa's half disc of radius 5, in psa's order", () => {
  const off = affinityOffsets(5);
  assertEquals(off.length, 34);
  assertEquals(off.slice(0, 5), [[0, 1], [0, 2], [0, 3], [0, 4], [1, -4]]);
  assertEquals(off.slice(-5), [[4, -2], [4, -1], [4, 0], [4, 1], [4, 2]]);
  // Exactly the set {(dy, dx): dx² + dy² < 25, dy > 0 or (dy = 0, dx > 0)}.
  const want = new Set<string>();
  for (let dy = -6; dy <= 6; dy++) {
    for (let dx = -6; dx <= 6; dx++) {
      if (dx * dx + dy * dy < 25 && (dy > 0 || (dy === 0 && dx > 0))) want.add(`${dy},${dx}`);
    }
  }
  assertEquals(new Set(off.map(([y, x]) => `${y},${x}`)), want);
  assertEquals(affinityOffsets(2), [[0, 1], [1, -1], [1, 0], [1, 1]]);
  const g = pairGrid(7, 12, 5);
  assertEquals([g.cropH, g.cropW, g.nFrom], [3, 4, 12]);
  assertThrows(() => pairGrid(4, 20, 5), RangeError, "too small");
  assertThrows(() => pairGrid(8, 8, 5), RangeError, "too small");
});

Deno.test("affinity label map: psa's low/high alpha rule on a hand-built CAM", () => {
  // 2 tagged classes (3 and 7) on a 2x4 grid. m = max CAM, r = 1 - m:
  //   bg (label 0)    when r^24 >= m;   fg (class + 1) when m > r^4;   else ignored (255).
  const a = [0.9, 0.0, 0.3, 0.2, 0.05, 0.12, 0.1, 0.6];
  const b = [0.1, 0.0, 0.0, 0.1, 0.01, 0.00, 0.5, 0.7];
  const labels = affinityLabelMap([...a, ...b], [3, 7], 2, 4);
  // 0.9: r^4 = 1e-4 < 0.9 -> fg 3 (label 4). 0.0: r^24 = 1 >= 0 -> bg.
  // 0.3: r^24 = 1.9e-4 < 0.3, r^4 = 0.24 < 0.3 -> fg. 0.2: r^24 = 0.0047, r^4 = 0.41 -> ignore.
  // 0.05: r^24 = 0.29 >= 0.05 -> bg. 0.12: r^24 = 0.047 < 0.12 < r^4 = 0.60 -> ignore.
  // (0.1, 0.5): m = 0.5 from class 7 -> r^4 = 0.0625 -> fg 7 (label 8). (0.6, 0.7) -> label 8.
  assertEquals([...labels], [4, 0, 4, AFFINITY_IGNORE, 0, AFFINITY_IGNORE, 8, 8]);
  // Other alphas move the thresholds: with hiAlpha 2 the 0.12 pixel (0.88² = 0.77 >= 0.12)
  // becomes background; with loAlpha 1 foreground needs m > 1 - m, so the 0.3 pixel and the
  // 0.5 pixel (a tie: not strictly greater) are ignored.
  const l2 = affinityLabelMap([...a, ...b], [3, 7], 2, 4, { hiAlpha: 2 });
  assertEquals(l2[5], 0);
  assertEquals(l2[3], 0); // 0.8² = 0.64 >= 0.2
  const l1 = affinityLabelMap([...a, ...b], [3, 7], 2, 4, { loAlpha: 1 });
  const I = AFFINITY_IGNORE;
  assertEquals([...l1], [4, 0, I, I, 0, I, I, 8]);
  // No tags: all background.
  assertEquals([...affinityLabelMap([], [], 2, 2)], [0, 0, 0, 0]);
  assertThrows(() => affinityLabelMap([0.5], [1], 2, 2), RangeError, "CAM values");
  assertThrows(() => affinityLabelMap([0.5], [-1], 1, 1), RangeError, "class index");
});

/** A 5x9 label map (radius 5: a 1x1 crop, the single "from" pixel at (0, 4)). */
function handLabels(row0: number): number[] {
  const m: number[] = [];
  for (let y = 0; y < 5; y++) {
    for (let x = 0; x < 9; x++) {
      if (y === 0) m.push(row0);
      else if (y === 1) m.push(0);
      else if (y === 2) m.push(AFFINITY_IGNORE);
      else m.push(x < 4 ? 2 : 1);
    }
  }
  return m;
}

Deno.test("affinity pair labels: hand-counted pairs on a 5x9 grid", () => {
  // From pixel label 1: row 0 (dx 1..4) 4 fg; dy=1 (9 offsets, label 0) 9 neg; dy=2 ignored;
  // dy=3 (dx -3..3 -> cols 1..7): cols 1-3 label 2 -> 3 neg, cols 4-7 -> 4 fg;
  // dy=4 (dx -2..2 -> cols 2..6): 2 neg, 3 fg.
  const p1 = affinityPairLabels(handLabels(1), 5, 9);
  assertEquals([p1.bg, p1.fg, p1.neg], [0, 11, 14]);
  assertEquals(p1.codes.length, 34);
  assertEquals(p1.codes.filter((c) => c === PAIR_IGNORE).length, 9);
  const k10 = affinityOffsets().findIndex(([y, x]) => y === 1 && x === 0);
  assertEquals(k10, 8);
  assertEquals(p1.codes[k10], PAIR_NEG);
  assertEquals(p1.codes[0], PAIR_FG);
  // From pixel label 0 (row 0 background): 4 + 9 bg, 7 + 5 neg, none fg.
  const p0 = affinityPairLabels(handLabels(0), 5, 9);
  assertEquals([p0.bg, p0.fg, p0.neg], [13, 0, 12]);
  assertEquals(p0.codes[0], PAIR_BG);
  // An ignored from pixel drops all its pairs.
  const pi = affinityPairLabels(handLabels(AFFINITY_IGNORE), 5, 9);
  assertEquals([pi.bg, pi.fg, pi.neg], [0, 0, 0]);
  // A uniform background 7x12 map: every pair (34 per crop pixel, 3x4 crop) is bg-positive.
  const pu = affinityPairLabels(new Array(84).fill(0), 7, 12);
  assertEquals([pu.bg, pu.fg, pu.neg], [34 * 12, 0, 0]);
  assertEquals(pairCounts([p1, p0]), { bg: 13, fg: 11, neg: 26 });
  assertThrows(() => affinityPairLabels([0, 0], 5, 9), RangeError, "labels");
});

/** Random features whose channel differences stay away from the |x| kink. */
function features(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(r.uniform(-1, 1) * 1e4) / 1e4 + i * 1e-7;
  return out;
}

async function checkAffinity(
  gpu: GpuContext,
  N: number,
  C: number,
  H: number,
  W: number,
  seed: number,
  threeD = false,
): Promise<void> {
  const g = pairGrid(H, W);
  const P = g.offsets.length;
  const f = features(N * C * H * W, seed);
  const feat = Tensor.fromArray(gpu, f, threeD ? [C, H, W] : [N, C, H, W]);
  const aff = pairwiseAffinity(gpu, feat);
  assertEquals(aff.shape, [N, P, g.nFrom]);
  const dA = randArray(N * P * g.nFrom, seed + 1);
  const dAff = Tensor.fromArray(gpu, dA, aff.shape);
  const dFeat = pairwiseAffinityBackward(gpu, feat, aff, dAff);
  const got = await aff.read();
  const gotD = await dFeat.read();
  const plane = C * H * W;
  const pp = P * g.nFrom;
  for (let n = 0; n < N; n++) {
    const fs = f.subarray(n * plane, (n + 1) * plane);
    const ref = pairwiseAffinityRef(fs, C, H, W);
    assertClose(got.subarray(n * pp, (n + 1) * pp), ref, { rtol: 1e-5, atol: 1e-6 }, "aff");
    const refD = pairwiseAffinityBackwardRef(fs, dA.subarray(n * pp, (n + 1) * pp), C, H, W);
    const err = maxRelError(gotD.subarray(n * plane, (n + 1) * plane), refD);
    if (!(err < 1e-4)) {
      throw new Error(`dFeat GPU vs CPU: max rel error ${err} (${N}x${C}x${H}x${W})`);
    }
  }
  for (const t of [feat, aff, dAff, dFeat]) t.dispose();
}

Deno.test("pairwise affinity: GPU forward/backward match the CPU reference", async () => {
  const gpu = await testGpu();
  await checkAffinity(gpu, 2, 3, 7, 11, 1);
  await checkAffinity(gpu, 1, 5, 6, 9, 2, true);
  await checkAffinity(gpu, 3, 2, 9, 13, 3);
  assertThrows(
    () => pairwiseAffinity(gpu, Tensor.zeros(gpu, [1, 2, 4, 9])),
    RangeError,
    "too small",
  );
});

Deno.test("pairwise affinity: analytic gradient matches finite differences (f64)", () => {
  const C = 3, H = 6, W = 10;
  const f = Float64Array.from(features(C * H * W, 7));
  const g = pairGrid(H, W);
  const dA = randArray(g.offsets.length * g.nFrom, 8);
  const loss = (x: Float64Array) => {
    const a = pairwiseAffinityRef(x, C, H, W);
    let s = 0;
    for (let i = 0; i < a.length; i++) s += dA[i] * a[i];
    return s;
  };
  const num = finiteDiff(loss, f, 1e-7);
  const ana = pairwiseAffinityBackwardRef(f, dA, C, H, W);
  // Threshold: f64 central differences with eps 1e-7 away from kinks (|Δf| >= 1e-4).
  const err = maxRelError(ana, num);
  if (!(err < 1e-6)) throw new Error(`finite-difference check: max rel error ${err}`);
});

Deno.test("affinity loss: GPU matches the CPU reference, gradient matches finite differences", async () => {
  const gpu = await testGpu();
  const N = 2, P = 34, n = 37;
  const r = new Rng(11);
  const a = new Float32Array(N * P * n);
  const codes = new Float32Array(N * P * n);
  for (let i = 0; i < a.length; i++) {
    a[i] = r.uniform(0.02, 0.98);
    codes[i] = r.int(4);
  }
  const counts = {
    bg: codes.filter((c) => c === PAIR_BG).length,
    fg: codes.filter((c) => c === PAIR_FG).length,
    neg: codes.filter((c) => c === PAIR_NEG).length,
  };
  const ref = affinityLossRef(a, codes, counts);
  const aff = Tensor.fromArray(gpu, a, [N, P, n]);
  const ct = Tensor.fromArray(gpu, codes, [N, P, n]);
  const { loss, grad } = affinityLoss(gpu, aff, ct, counts);
  const l = await loss.read();
  assertClose(l.subarray(0, 4), ref.loss, { rtol: 1e-5, atol: 0 }, "loss terms");
  assertClose(await grad.read(), ref.grad, { rtol: 1e-5, atol: 1e-9 }, "loss grad");
  // The reference gradient against central differences of the reference loss.
  const x = Float64Array.from(a);
  const idx = [0, 5, 17, 100, 333, 1000, a.length - 1];
  const num = finiteDiff((v) => affinityLossRef(v, codes, counts).loss[0], x, 1e-7, idx);
  assertClose(idx.map((i) => ref.grad[i]), idx.map((i) => num[i]), { rtol: 1e-5, atol: 1e-9 });
  // Terms by hand on a 4-pair example: bg pair 0.5, fg pair 0.25, neg pairs 0.5 and 0.1.
  const hand = affinityLossRef([0.5, 0.25, 0.5, 0.1], [1, 2, 3, 3], { bg: 1, fg: 1, neg: 2 });
  const e = 1e-5;
  const bg = -Math.log(0.5 + e) / (1 + e);
  const fg = -Math.log(0.25 + e) / (1 + e);
  const neg = -(Math.log(0.5 + e) + Math.log(0.9 + e)) / (2 + e);
  assertClose(hand.loss, [bg / 4 + fg / 4 + neg / 2, bg, fg, neg], { rtol: 1e-12, atol: 0 });
  assertThrows(() => affinityLoss(gpu, aff, ct, { bg: -1, fg: 0, neg: 0 }), RangeError, "count");
  for (const t of [aff, ct, loss, grad]) t.dispose();
});

Deno.test("affinity: pair codes upload, loss through the affinity backward chain", async () => {
  const gpu = await testGpu();
  const H = 6, W = 10, C = 2;
  const labels = new Array(H * W).fill(0).map((_, p) => (p % W < 5 ? 0 : p % 3 === 0 ? 255 : 2));
  const pl = [affinityPairLabels(labels, H, W), affinityPairLabels(labels.reverse(), H, W)];
  const codes = uploadPairCodes(gpu, pl);
  const counts = pairCounts(pl);
  const f = features(2 * C * H * W, 21);
  const feat = Tensor.fromArray(gpu, f, [2, C, H, W]);
  const aff = pairwiseAffinity(gpu, feat);
  const { loss, grad } = affinityLoss(gpu, aff, codes, counts);
  const dFeat = pairwiseAffinityBackward(gpu, feat, aff, grad);
  const got = await dFeat.read();
  const l = (await loss.read())[0];
  // CPU: loss of features in f64 and its finite-difference gradient at a few indices.
  const allCodes = new Float64Array(await codes.read());
  const lossOf = (x: Float64Array) => {
    const plane = C * H * W;
    const a0 = pairwiseAffinityRef(x.subarray(0, plane), C, H, W);
    const a1 = pairwiseAffinityRef(x.subarray(plane), C, H, W);
    const all = new Float64Array(a0.length * 2);
    all.set(a0);
    all.set(a1, a0.length);
    return affinityLossRef(all, allCodes, counts).loss[0];
  };
  const x = Float64Array.from(f);
  assertClose([l], [lossOf(x)], { rtol: 1e-5, atol: 0 }, "chained loss");
  const idx = [0, 7, 33, 64, 119, 180, 239];
  const num = finiteDiff(lossOf, x, 1e-7, idx);
  assertClose(idx.map((i) => got[i]), idx.map((i) => num[i]), { rtol: 1e-3, atol: 1e-6 }, "dFeat");
  for (const t of [codes, feat, aff, loss, grad, dFeat]) t.dispose();
});

Deno.test("random walk: transition matrix and walk match the CPU reference", async () => {
  const gpu = await testGpu();
  const h = 7, w = 10, K = 3;
  const g = pairGrid(h, w);
  const a = randArray(g.offsets.length * g.nFrom, 31, 0.3, 1);
  const aff = Tensor.fromArray(gpu, a, [g.offsets.length, g.nFrom]);
  const m = transitionMatrix(gpu, aff, h, w);
  const mRef = transitionMatrixRef(a, h, w);
  assertClose(await m.read(), mRef, { rtol: 1e-5, atol: 1e-7 }, "transition matrix");
  const n = h * w;
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += mRef[i * n + j];
    if (Math.abs(s - 1) > 1e-12) throw new Error(`column ${j} sums to ${s}`);
  }
  const c = randArray(K * n, 32, 0, 1);
  const cams = Tensor.fromArray(gpu, c, [K, h, w]);
  for (const logt of [0, 1, 3]) {
    const opts = { logt, beta: 4 };
    const ref = randomWalkRef(a, c, K, h, w, opts);
    for (const method of ["square", "iterate"] as const) {
      const rw = randomWalk(gpu, aff, cams, { ...opts, method });
      const what = `walked cams (${method}, logt ${logt})`;
      assertClose(await rw.cams.read(), ref.cams, { rtol: 1e-4, atol: 1e-6 }, what);
      assertEquals([...(await rw.labels.read())], [...ref.labels]);
      rw.cams.dispose();
      rw.labels.dispose();
    }
  }
  const rw = randomWalk(gpu, aff, cams, { logt: 2 });
  assertThrows(() => randomWalk(gpu, aff, cams, { method: "x" as "auto" }), RangeError, "method");
  assertThrows(() => randomWalk(gpu, aff, cams, { logt: -1 }), RangeError, "logt");
  assertThrows(() => transitionMatrix(gpu, aff, h, w + 1), RangeError, "aff");
  for (const t of [aff, m, cams, rw.cams, rw.labels]) t.dispose();
});

Deno.test("random walk: a 2-region toy map spreads each seed label over its region", async () => {
  const gpu = await testGpu();
  const C = 4, h = 8, w = 12, n = h * w;
  const region = (p: number) => (p % w < 5 ? 0 : 1);
  const f = new Float32Array(C * n);
  for (let c = 0; c < C; c++) for (let p = 0; p < n; p++) f[c * n + p] = region(p) * 3;
  const feat = Tensor.fromArray(gpu, f, [C, h, w]);
  const aff = pairwiseAffinity(gpu, feat);
  // Channel 0: a weak uniform background; channel 1 seeds pixel (2, 1) (region 0),
  // channel 2 seeds pixel (5, 9) (region 1).
  const cam = new Float32Array(3 * n);
  cam.fill(1e-3, 0, n);
  cam[n + 2 * w + 1] = 1;
  cam[2 * n + 5 * w + 9] = 1;
  const cams = Tensor.fromArray(gpu, cam, [3, h, w]);
  const rw = randomWalk(gpu, aff.reshape([aff.shape[1], aff.shape[2]]), cams);
  const labels = await rw.labels.read();
  // psa's pair geometry leaves a few corner pixels without any pair (e.g. row 0 left of the
  // crop): they keep their own CAM (background here); every other pixel gets its region's seed.
  const touched = new Uint8Array(n);
  forEachPair(pairGrid(h, w), (_j, p, q) => touched[p] = touched[q] = 1);
  const untouched = n - touched.reduce((a, b) => a + b, 0);
  if (untouched > 12) throw new Error(`${untouched} pixels without pairs`);
  assertEquals([...labels], Array.from({ length: n }, (_, p) => touched[p] ? region(p) + 1 : 0));
  // The background channel is constant under the walk (columns of M sum to 1).
  const walked = await rw.cams.read();
  assertClose(walked.subarray(0, n), new Float32Array(n).fill(1e-3), { rtol: 1e-4, atol: 0 });
  for (const t of [feat, aff, cams, rw.cams, rw.labels]) t.dispose();
});

Deno.test("affinity ops split work past a small binding limit", async () => {
  const gpu = await createGpu({ debug: true, maxBindingBytes: 4096 });
  try {
    // Features 3·6·9·4 = 648 bytes per sample, affinities 34·6·4 = 816: several chunks.
    await checkAffinity(gpu, 9, 3, 6, 9, 41);
    const N = 7, P = 34, nf = 12;
    const r = new Rng(43);
    const a = Float32Array.from({ length: N * P * nf }, () => r.uniform(0.05, 0.95));
    const codes = Float32Array.from({ length: N * P * nf }, () => r.int(4));
    const counts = {
      bg: codes.filter((c) => c === PAIR_BG).length,
      fg: codes.filter((c) => c === PAIR_FG).length,
      neg: codes.filter((c) => c === PAIR_NEG).length,
    };
    const aff = Tensor.fromArray(gpu, a, [N, P, nf]);
    const ct = Tensor.fromArray(gpu, codes, [N, P, nf]);
    const { loss, grad } = affinityLoss(gpu, aff, ct, counts);
    const ref = affinityLossRef(a, codes, counts);
    assertClose((await loss.read()).subarray(0, 4), ref.loss, { rtol: 1e-5, atol: 0 }, "loss");
    assertClose(await grad.read(), ref.grad, { rtol: 1e-5, atol: 1e-9 }, "grad");
    // A 5x12 grid: the 60x60 transition matrix (14400 bytes) is split over rows.
    const g = pairGrid(5, 12);
    const ta = randArray(g.offsets.length * g.nFrom, 44, 0.2, 1);
    const tAff = Tensor.fromArray(gpu, ta, [g.offsets.length, g.nFrom]);
    const m = transitionMatrix(gpu, tAff, 5, 12);
    assertClose(await m.read(), transitionMatrixRef(ta, 5, 12), { rtol: 1e-5, atol: 1e-7 });
  } finally {
    gpu.destroy();
  }
});

Deno.test("rw: the default walk length is psa's 8 scaled to the feature grid", () => {
  // psa's VOC grids (56x56 crops, ~63x47 whole images) keep 8; the built-in 16x16 grid gets 4.
  assertEquals(autoLogt(56 * 56), 8);
  assertEquals(autoLogt(63 * 47), 8);
  assertEquals(autoLogt(16 * 16), 4);
  assertEquals(autoLogt(8 * 8), 2);
  assertEquals(autoLogt(1), 0);
  assertEquals(autoLogt(1e9), 12);
  assertThrows(() => autoLogt(0), RangeError, "grid");
  assertEquals(RwSchema.parse({ ckpt: "a", cams: "b" }).logt, "auto");
  assertEquals(RwSchema.parse({ ckpt: "a", cams: "b", logt: 6 }).logt, 6);
});
