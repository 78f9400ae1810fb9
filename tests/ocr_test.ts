import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { cooccurrence } from "../src/losses/cooccurrence.ts";
import {
  OCR_DEFAULTS,
  ocrLoss,
  ocrLossReference,
  type OcrOptions,
  resolveOcrOptions,
} from "../src/losses/ocr.ts";
import { pointwise } from "../src/ops/pointwise.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertEquals, assertThrows, finiteDiff, randArray, testGpu } from "./util.ts";

/** One test problem: class maps, tags and a prior counted from random tag lists. */
interface Case {
  shape: [number, number, number, number];
  z: Float32Array;
  tags: Float32Array;
  prior: Float32Array;
}

/** Tag sets per image: "rand" = 1..3 random candidates, or explicit class lists. */
function makeCase(
  shape: [number, number, number, number],
  seed: number,
  tagSets: (number[] | "rand")[] = [],
  quantum = 0,
): Case {
  const [B, C, H, W] = shape;
  const rng = new Rng(seed);
  const z = randArray(B * C * H * W, seed + 1, -3, 3);
  if (quantum > 0) {
    for (let i = 0; i < z.length; i++) {
      z[i] = Math.round(z[i] / quantum) * quantum;
    }
  }
  const tags = new Float32Array(B * C);
  for (let b = 0; b < B; b++) {
    const set = tagSets[b] ?? "rand";
    const list = set === "rand" ? rng.shuffle([...Array(C).keys()]).slice(0, 1 + rng.int(3)) : set;
    for (const c of list) tags[b * C + c] = 1;
  }
  const lists = Array.from(
    { length: 40 },
    () => rng.shuffle([...Array(C).keys()]).slice(0, 1 + rng.int(4)),
  );
  return { shape, z, tags, prior: cooccurrence(lists, C) };
}

interface GpuResult {
  loss: number;
  ocPixels: number;
  grad: Float32Array;
  stats: Float32Array;
}

async function runGpu(
  gpu: GpuContext,
  k: Case,
  opts: Partial<OcrOptions>,
  gradInit?: Float32Array,
): Promise<GpuResult> {
  const z = Tensor.fromArray(gpu, k.z, k.shape);
  const tags = Tensor.fromArray(gpu, k.tags, [k.shape[0], k.shape[1]]);
  const prior = Tensor.fromArray(gpu, k.prior, [k.shape[1], k.shape[1]]);
  const gradInto = gradInit ? Tensor.fromArray(gpu, gradInit, k.shape) : undefined;
  const r = ocrLoss(gpu, z, tags, prior, { ...opts, gradInto, keepStats: true });
  const out = {
    loss: (await r.loss.read())[0],
    ocPixels: (await r.ocPixels.read())[0],
    grad: await r.grad.read(),
    stats: await r.stats!.read(),
  };
  if (gradInto) assertEquals(r.grad, gradInto, "grad is the gradInto tensor");
  for (const t of [z, tags, prior, r.loss, r.ocPixels, r.grad, r.stats!]) t.dispose();
  return out;
}

/** Smallest threshold distance the GPU (f32) and reference (f64) are trusted to agree on. */
const GAP = 1e-4;

/** Compares the GPU loss, OC count and gradient with the f64 reference. */
async function compare(
  gpu: GpuContext,
  k: Case,
  opts: Partial<OcrOptions>,
  what: string,
  minOc = 1,
): Promise<void> {
  const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, opts);
  if (!(ref.minGap > GAP)) throw new Error(`${what}: test data too close to a threshold`);
  if (ref.ocPixels < minOc) throw new Error(`${what}: only ${ref.ocPixels} OC pixels`);
  const got = await runGpu(gpu, k, opts);
  assertEquals(got.ocPixels, ref.ocPixels, `${what}: OC pixel count`);
  // f32 sums of f32 softplus values: relative error well below 1e-5 expected.
  assertClose([got.loss], [ref.loss], { rtol: 2e-5, atol: 1e-9 }, `${what}: loss`);
  assertClose([got.stats[2], got.stats[3]], [ref.sum, ref.normaliser], { rtol: 2e-5 }, what);
  let maxG = 0;
  for (const g of ref.grad) maxG = Math.max(maxG, Math.abs(g));
  assertClose(got.grad, ref.grad, { rtol: 1e-4, atol: 1e-6 * maxG }, `${what}: grad`);
  for (let i = 0; i < got.grad.length; i++) {
    if (ref.role[i] === 0 && got.grad[i] !== 0) {
      throw new Error(`${what}: gradient ${got.grad[i]} at ${i}, outside both groups`);
    }
  }
}

const MODES: Partial<OcrOptions>[] = [
  { grad: "both", norm: "all" },
  { grad: "oc_only", norm: "all" },
  { grad: "both", norm: "oc" },
  { grad: "oc_only", norm: "oc" },
];

Deno.test("ocr: options resolve defaults and reject bad values by name", () => {
  assertEquals(resolveOcrOptions({}), { ...OCR_DEFAULTS });
  assertEquals(resolveOcrOptions({ lambda: 1, grad: "oc_only" }).grad, "oc_only");
  assertThrows(() => resolveOcrOptions({ lambda: -1 }), RangeError, "ocr.lambda");
  assertThrows(() => resolveOcrOptions({ temperature: 0 }), RangeError, "ocr.temperature");
  assertThrows(() => resolveOcrOptions({ alpha: 1.5 }), RangeError, "ocr.alpha");
  assertThrows(() => resolveOcrOptions({ tauAct: NaN }), RangeError, "ocr.tauAct");
  assertThrows(() => resolveOcrOptions({ start: 2 }), RangeError, "ocr.start");
  assertThrows(() => resolveOcrOptions({ margin: -0.1 }), RangeError, "ocr.margin");
  const badGrad = { grad: "ic" } as unknown as Partial<OcrOptions>;
  assertThrows(() => resolveOcrOptions(badGrad), RangeError, "ocr.grad");
  const badNorm = { norm: "mean" } as unknown as Partial<OcrOptions>;
  assertThrows(() => resolveOcrOptions(badNorm), RangeError, "ocr.norm");
});

Deno.test("ocr: reference gradient matches central finite differences", async (t) => {
  const opts: Partial<OcrOptions>[] = [
    {},
    { margin: 0.4, temperature: 2, alpha: 0.3, tauRel: 0.6, lambda: 1 },
    { norm: "oc" },
    { tauRel: 0.15, alpha: 0.1 }, // larger IC groups
  ];
  for (const [n, o] of opts.entries()) {
    await t.step(`options ${JSON.stringify(o)}`, () => {
      const k = makeCase([2, 7, 3, 5], 100 + n);
      const shape = k.shape;
      const z = Float64Array.from(k.z);
      const ref = ocrLossReference(z, shape, k.tags, k.prior, o);
      // Perturbations of 1e-6 move no decision across a threshold at least 1e-3 away.
      if (!(ref.minGap > 1e-3)) throw new Error(`data too close to a threshold: ${ref.minGap}`);
      if (ref.ocPixels < 3) throw new Error(`only ${ref.ocPixels} OC pixels`);
      const f = (x: Float64Array) => ocrLossReference(x, shape, k.tags, k.prior, o).loss;
      const fd = finiteDiff(f, z, 1e-6);
      let maxG = 0;
      for (const g of ref.grad) maxG = Math.max(maxG, Math.abs(g));
      assertClose(ref.grad, fd, { rtol: 1e-6, atol: 1e-7 * maxG }, "analytic vs FD");
      // oc_only: the OC-group part of the same gradient, nothing into the IC group.
      const only = ocrLossReference(z, shape, k.tags, k.prior, { ...o, grad: "oc_only" });
      const want = fd.map((g, i) => (ref.role[i] === -1 ? g : 0));
      assertClose(only.grad, want, { rtol: 1e-6, atol: 1e-7 * maxG }, "oc_only vs FD");
    });
  }
});

Deno.test("ocr: GPU matches the reference (C=20, odd 5x7, B=3, all modes)", async (t) => {
  const gpu = await testGpu();
  const k = makeCase([3, 20, 5, 7], 1);
  for (const m of MODES) {
    await t.step(`${m.grad}/${m.norm}`, () => compare(gpu, k, m, JSON.stringify(m), 20));
  }
});

Deno.test("ocr: GPU matches the reference (C=80, B=2, 7x5, all modes)", async (t) => {
  const gpu = await testGpu();
  const k = makeCase([2, 80, 7, 5], 2, [[3, 17, 64], [79]]);
  for (const m of MODES) {
    await t.step(`${m.grad}/${m.norm}`, () => compare(gpu, k, m, `C=80 ${JSON.stringify(m)}`, 20));
  }
});

Deno.test("ocr: GPU matches the reference with other knobs", async () => {
  const gpu = await testGpu();
  const k = makeCase([2, 9, 6, 5], 3, [[0, 4, 8], [2, 3]]);
  const knobs = { margin: 0.5, temperature: 2.5, alpha: 0.2, tauRel: 0.65, lambda: 1 };
  await compare(gpu, k, knobs, "knobs");
  await compare(gpu, makeCase([3, 20, 5, 7], 1), { tauRel: 0.2 }, "low tauRel, C=20", 20);
  await compare(gpu, k, { tauAct: 0.8, tauRel: 0.9, alpha: 0.9 }, "strict thresholds");
});

Deno.test("ocr: ties in the argmax and the relevance resolve to the lowest index", async () => {
  const gpu = await testGpu();
  // Scores on a 0.5 grid: many exact argmax ties; equal candidate scores tie in relevance
  // when their prior entries are equal too (a uniform prior makes that common).
  const k = makeCase([3, 6, 5, 3], 4, [[1, 4], [0, 2, 5], [3]], 0.5);
  let ties = 0;
  const [B, C, H, W] = k.shape;
  for (let b = 0; b < B; b++) {
    for (let q = 0; q < H * W; q++) {
      const v = [...Array(C).keys()].map((c) => k.z[(b * C + c) * H * W + q]);
      if (v.filter((x) => x === Math.max(...v)).length > 1) ties++;
    }
  }
  if (ties < 5) throw new Error(`only ${ties} argmax ties in the test data`);
  await compare(gpu, k, {}, "ties", 5);
  k.prior.fill(0.5);
  for (let c = 0; c < C; c++) k.prior[c * C + c] = 1;
  await compare(gpu, k, { tauRel: 0.9 }, "ties, flat prior", 5);
  // A hand-checked pixel: z = [2, 2, 1, 2] with tags {1, 3}: o = 0 (lowest of the tied
  // maxima) is not a candidate; candidates 1 and 3 tie in relevance, 1 (lowest) is best.
  const h: Case = {
    shape: [1, 4, 1, 1],
    z: Float32Array.of(2, 2, 1, 2),
    tags: Float32Array.of(0, 1, 0, 1),
    prior: Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 1 : 0)),
  };
  const ref = ocrLossReference(h.z, h.shape, h.tags, h.prior, { tauRel: 2, lambda: 0.3 });
  assertEquals([...ref.role], [-1, 1, 0, 0], "roles of the hand-checked pixel");
  assertClose([ref.loss], [0.3 * Math.log(2)], { rtol: 1e-12 }, "hand-checked loss");
  await compare(gpu, h, { tauRel: 2 }, "hand-checked tie");
});

Deno.test("ocr: empty, all-candidate and single-candidate images", async () => {
  const gpu = await testGpu();
  const C = 7;
  const k = makeCase([4, C, 3, 5], 5, [[], [...Array(C).keys()], [2], "rand"]);
  const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, {});
  const HW = 15;
  for (const b of [0, 1]) {
    for (let q = 0; q < HW; q++) assertEquals(ref.oc[b * HW + q], 0, `image ${b} has no OC`);
  }
  for (const m of MODES) await compare(gpu, k, m, `special images ${JSON.stringify(m)}`, 5);
  const got = await runGpu(gpu, k, {});
  for (let i = 0; i < 2 * C * HW; i++) assertEquals(got.grad[i], 0, "no gradient, images 0-1");
});

Deno.test("ocr: an image without activation (max 0) has every OC-argmax pixel OC", async () => {
  const gpu = await testGpu();
  const [B, C, H, W] = [2, 6, 3, 4];
  const HW = H * W;
  const k = makeCase([B, C, H, W], 14, [[1, 2], [0, 5]]);
  // Image 0: every score negative, so relu(z_o) = 0 >= tauAct * 0 at every pixel.
  for (let i = 0; i < C * HW; i++) k.z[i] = -Math.abs(k.z[i]) - 0.1;
  const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, {});
  let want = 0;
  for (let q = 0; q < HW; q++) {
    const v = [...Array(C).keys()].map((c) => k.z[c * HW + q]);
    const o = v.indexOf(Math.max(...v));
    if (o !== 1 && o !== 2) want++;
  }
  let got0 = 0;
  for (let q = 0; q < HW; q++) got0 += ref.oc[q];
  assertEquals(got0, want, "OC pixels of the image with inactive candidates");
  await compare(gpu, k, {}, "inactive candidates", want);
});

Deno.test("ocr: a batch without OC pixels gives zero loss and gradient, no NaN", async () => {
  const gpu = await testGpu();
  const C = 5;
  const k = makeCase([3, C, 4, 3], 6, [[], [...Array(C).keys()], []]);
  for (const m of MODES) {
    const got = await runGpu(gpu, k, m);
    assertEquals(got.loss, 0);
    assertEquals(got.ocPixels, 0);
    assertEquals(got.grad.every((g) => g === 0), true, "all-zero gradient");
    assertEquals(got.stats[3], m.norm === "oc" ? 1 : 36, "normaliser");
    const lambda = OCR_DEFAULTS.lambda; // scale = lambda / normaliser
    assertClose([got.stats[4]], [m.norm === "oc" ? lambda : lambda / 36], { rtol: 1e-6 }, "scale");
    // Accumulating adds nothing.
    const init = randArray(k.z.length, 7);
    const acc = await runGpu(gpu, k, m, init);
    assertEquals([...acc.grad], [...init]);
  }
});

Deno.test("ocr: gradInto receives the gradient added to its contents", async () => {
  const gpu = await testGpu();
  const k = makeCase([2, 8, 5, 5], 8);
  for (const m of MODES) {
    const init = randArray(k.z.length, 9);
    const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, m);
    const got = await runGpu(gpu, k, m, init);
    assertClose([got.loss], [ref.loss], { rtol: 2e-5 }, "loss");
    const want = init.map((v, i) => v + ref.grad[i]);
    assertClose(got.grad, want, { rtol: 1e-5, atol: 1e-7 }, `accumulated ${JSON.stringify(m)}`);
  }
});

Deno.test("ocr: class maps split by images past an artificial binding limit", async () => {
  // One image = 5*63 floats = 1260 bytes; with a 2048-byte cap (and 256-byte alignment)
  // every image gets its own binding.
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const k = makeCase([3, 5, 7, 9], 10);
    const before = gpu.dispatchCount;
    for (const m of MODES) await compare(gpu, k, m, `split ${JSON.stringify(m)}`, 10);
    const init = randArray(k.z.length, 11);
    const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, {});
    const got = await runGpu(gpu, k, {}, init);
    assertClose(got.grad, init.map((v, i) => v + ref.grad[i]), { rtol: 1e-5, atol: 1e-7 }, "acc");
    // imgmax + pixel per image, finish, gradient per image for "oc": 3+3+1 (+3).
    assertEquals(gpu.dispatchCount - before, 2 * 7 + 2 * 10 + 7);
    const z = Tensor.zeros(gpu, [1, 9, 8, 8]);
    const tags = Tensor.zeros(gpu, [1, 9]);
    const prior = Tensor.zeros(gpu, [9, 9]);
    assertThrows(() => ocrLoss(gpu, z, tags, prior), RangeError, "binding limit");
  } finally {
    gpu.destroy();
  }
});

Deno.test("ocr: at most 4 dispatches per call", async () => {
  const gpu = await testGpu();
  const k = makeCase([2, 4, 3, 3], 12);
  const z = Tensor.fromArray(gpu, k.z, k.shape);
  const tags = Tensor.fromArray(gpu, k.tags, [2, 4]);
  const prior = Tensor.fromArray(gpu, k.prior, [4, 4]);
  for (const [norm, n] of [["all", 3], ["oc", 4]] as const) {
    const before = gpu.dispatchCount;
    const r = ocrLoss(gpu, z, tags, prior, { norm });
    assertEquals(gpu.dispatchCount - before, n, `dispatches with norm ${norm}`);
    for (const t of [r.loss, r.grad, r.ocPixels]) t.dispose();
  }
  for (const t of [z, tags, prior]) t.dispose();
});

Deno.test("ocr: bad inputs name the problem", async () => {
  const gpu = await testGpu();
  const z = Tensor.zeros(gpu, [2, 3, 4, 4]);
  const tags = Tensor.zeros(gpu, [2, 3]);
  const prior = Tensor.zeros(gpu, [3, 3]);
  const flat = z.reshape([2, 48]);
  assertThrows(() => ocrLoss(gpu, flat, tags, prior), RangeError, "[B,C,H,W]");
  assertThrows(() => ocrLoss(gpu, z, prior, prior), RangeError, "tags");
  assertThrows(() => ocrLoss(gpu, z, tags, tags), RangeError, "prior");
  assertThrows(() => ocrLoss(gpu, z, tags, prior, { gradInto: tags }), RangeError, "gradInto");
  assertThrows(() => ocrLoss(gpu, z, tags, prior, { gradInto: z }), RangeError, "alias");
  assertThrows(() => ocrLoss(gpu, z, tags, prior, { lambda: -2 }), RangeError, "ocr.lambda");
  const big = Tensor.zeros(gpu, [1, 129, 1, 1]);
  const bigTags = Tensor.zeros(gpu, [1, 129]);
  const bigPrior = Tensor.zeros(gpu, [129, 129]);
  assertThrows(() => ocrLoss(gpu, big, bigTags, bigPrior), RangeError, "at most 128");
  for (const t of [z, tags, prior, big, bigTags, bigPrior]) t.dispose();
});

Deno.test("ocr: one gradient step lowers OC scores relative to IC scores at OC pixels", async (t) => {
  const gpu = await testGpu();
  const k = makeCase([2, 10, 4, 5], 13);
  const [B, C, H, W] = k.shape;
  const HW = H * W;
  for (const mode of ["both", "oc_only"] as const) {
    await t.step(mode, async () => {
      const ref = ocrLossReference(k.z, k.shape, k.tags, k.prior, { grad: mode });
      if (ref.ocPixels < 5) throw new Error(`only ${ref.ocPixels} OC pixels`);
      const z = Tensor.fromArray(gpu, k.z, k.shape);
      const tags = Tensor.fromArray(gpu, k.tags, [B, C]);
      const prior = Tensor.fromArray(gpu, k.prior, [C, C]);
      const r = ocrLoss(gpu, z, tags, prior, { grad: mode });
      const g = await r.grad.read();
      let maxG = 0;
      for (const v of g) maxG = Math.max(maxG, Math.abs(v));
      const lr = 0.1 / maxG;
      const stepped = pointwise(gpu, "axpby", [z, r.grad], { alpha: 1, beta: -lr });
      const z1 = await stepped.read();
      for (const x of [z, tags, prior, r.loss, r.ocPixels, r.grad, stepped]) x.dispose();
      let checked = 0;
      for (let b = 0; b < B; b++) {
        for (let q = 0; q < HW; q++) {
          if (!ref.oc[b * HW + q]) continue;
          let maxOut0 = -Infinity, maxOut1 = -Infinity, minIn0 = Infinity, minIn1 = Infinity;
          for (let c = 0; c < C; c++) {
            const i = (b * C + c) * HW + q;
            if (ref.role[i] === -1) {
              maxOut0 = Math.max(maxOut0, k.z[i]);
              maxOut1 = Math.max(maxOut1, z1[i]);
              if (!(z1[i] < k.z[i])) throw new Error(`OC class ${c} not lowered at ${b}/${q}`);
            } else if (ref.role[i] === 1) {
              minIn0 = Math.min(minIn0, k.z[i]);
              minIn1 = Math.min(minIn1, z1[i]);
              const up = mode === "both" ? z1[i] > k.z[i] : z1[i] === k.z[i];
              if (!up) throw new Error(`IC class ${c} at ${b}/${q}: ${k.z[i]} -> ${z1[i]}`);
            } else if (z1[i] !== k.z[i]) {
              throw new Error(`class ${c} outside the groups changed at ${b}/${q}`);
            }
          }
          if (!(maxOut1 - minIn1 < maxOut0 - minIn0)) {
            throw new Error(`OC-IC gap did not shrink at ${b}/${q}`);
          }
          checked++;
        }
      }
      assertEquals(checked, ref.ocPixels);
    });
  }
});
