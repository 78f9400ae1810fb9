/**
 * OCR inside training: one training step with a co-occurrence prior (`recordTrainStep`, the
 * OCR branch on) against the f64 model reference plus the OCR reference, the two class-map
 * gradients summed; and an OCR run interrupted and resumed before and after `ocr.start` whose
 * per-step `loss_ocr` / `oc_pixels` equal the uninterrupted run's, with the dataset prior
 * counted and cached by the trainer.
 */
import { join } from "node:path";
import type { GpuContext } from "../src/gpu/context.ts";
import { createGpu } from "../src/io/gpu.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  type OcrConfig,
  OcrConfigSchema,
  type TrainConfig,
  TrainConfigSchema,
  validate,
} from "../src/io/config.ts";
import { cooccurrence } from "../src/losses/cooccurrence.ts";
import { multilabelSoftMarginLossRef } from "../src/losses/multilabel.ts";
import { ocrLossReference } from "../src/losses/ocr.ts";
import { createModel } from "../src/models/cam_net.ts";
import { CamNetRef, readModelState } from "../src/models/reference.ts";
import { globalAvgPoolBackwardRef } from "../src/ops/pool.ts";
import { paramLr, SGD } from "../src/optim/mod.ts";
import { defaultCacheDir } from "../src/data/synthetic.ts";
import { cooccurrenceCachePath } from "../src/train/cooccurrence.ts";
import { openTrainingData } from "../src/train/data.ts";
import { recordTrainStep, train, type TrainInput } from "../src/train/train.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertEquals, losses, maxRelError, randArray, readLog } from "./util.ts";

let plain: Promise<GpuContext> | null = null;

/**
 * A plain (non-debug) GPU context for this file, with validation and out-of-memory errors
 * captured around `fn` (debug mode submits every dispatch alone: several times slower here).
 */
async function scoped<T>(fn: (gpu: GpuContext) => Promise<T>): Promise<T> {
  plain ??= createGpu();
  const gpu = await plain;
  gpu.device.pushErrorScope("out-of-memory");
  gpu.device.pushErrorScope("validation");
  let out: T;
  let failure: unknown = null;
  try {
    out = await fn(gpu);
  } catch (e) {
    failure = e;
  }
  await gpu.sync();
  const validation = await gpu.device.popErrorScope();
  const oom = await gpu.device.popErrorScope();
  const gpuError = validation ?? oom;
  if (gpuError) throw new Error(`WebGPU error: ${gpuError.message} (then: ${failure})`);
  if (failure) throw failure;
  return out!;
}

// GPU f32 against the f64 references; model_test measures about 1e-6 for the tiny model's
// gradients, the OCR test below 1e-5 for the loss.
const TOL = 1e-4;

/** Largest absolute value. */
function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * Tags that leave the argmax of many pixels out: per image the `k` classes that win the
 * fewest pixels of `cam` [B, C, h, w] (so most pixels are out-of-candidate).
 */
function rareArgmaxTags(cam: Float64Array, shape: number[], k: number): Float32Array {
  const [B, C, h, w] = shape;
  const hw = h * w;
  const tags = new Float32Array(B * C);
  for (let b = 0; b < B; b++) {
    const wins = new Array(C).fill(0);
    for (let q = 0; q < hw; q++) {
      let o = 0;
      for (let c = 1; c < C; c++) {
        if (cam[(b * C + c) * hw + q] > cam[(b * C + o) * hw + q]) o = c;
      }
      wins[o]++;
    }
    const order = [...Array(C).keys()].sort((a, c) => wins[a] - wins[c] || a - c);
    for (const c of order.slice(0, k)) tags[b * C + c] = 1;
  }
  return tags;
}

/**
 * One `recordTrainStep` with the OCR prior against CamNetRef + ocrLossReference: logged
 * losses and OC count, every parameter gradient (d/dcam = GAP backward of the classification
 * gradient + the OCR gradient) and the SGD update made from them.
 */
async function checkOcrStep(
  gpu: GpuContext,
  ocrOpts: Partial<OcrConfig>,
  seed: number,
  tagsPerImage: number,
): Promise<void> {
  const ocr = OcrConfigSchema.parse({ enabled: true, ...ocrOpts });
  const C = 6;
  const opts = { arch: "tiny", numClasses: C, outputStride: 8 } as const;
  const xShape = [3, 3, 48, 40]; // class maps 6x5 per image (OS8)
  const model = createModel(gpu, { ...opts, seed });
  const state = await readModelState(model);
  const ref = new CamNetRef(opts, state);
  const xData = randArray(xShape.reduce((a, d) => a * d), seed + 1);
  const f = ref.forward({ shape: xShape, data: Float64Array.from(xData) }, true);
  const tags = rareArgmaxTags(f.cam.data, f.cam.shape, tagsPerImage);
  const rng = new Rng(seed + 2);
  const lists = Array.from(
    { length: 30 },
    () => rng.shuffle([...Array(C).keys()]).slice(0, 1 + rng.int(3)),
  );
  const prior = cooccurrence(lists, C);

  // The references: the two map gradients summed, then the model's backward.
  const ml = multilabelSoftMarginLossRef(f.logits.data, tags);
  const dCls = globalAvgPoolBackwardRef(ml.grad, f.cam.shape);
  const o = ocrLossReference(f.cam.data, f.cam.shape, tags, prior, ocr);
  const pixels = f.cam.shape[0] * f.cam.shape[2] * f.cam.shape[3];
  if (o.ocPixels < pixels / 3) throw new Error(`only ${o.ocPixels}/${pixels} OC pixels`);
  // f32 class maps differ from f64 by ~1e-6 of their scale: no OCR decision may be that close.
  const camMax = maxAbs(f.cam.data);
  if (!(o.minGap > 1e-4 * camMax)) {
    throw new Error(`test data within ${o.minGap} of an OCR threshold (maps up to ${camMax})`);
  }
  const dCam = Float64Array.from(dCls, (g, i) => g + o.grad[i]);
  const { grads } = ref.backward(f, dCam);
  const clsOnly = ref.backward(f, dCls).grads;

  // The GPU step (SGD, first step: momentum buffer = grad, so p -= lr·mult·grad).
  const params = model.params();
  const opt = new SGD(gpu, { momentum: 0.9, weightDecay: 0 });
  const lr = 0.01;
  const x = Tensor.fromArray(gpu, xData, xShape);
  const tagsT = Tensor.fromArray(gpu, tags, [xShape[0], C]);
  const priorT = Tensor.fromArray(gpu, prior, [C, C]);
  const out = recordTrainStep(gpu, model, opt, params, { x, tags: tagsT, lr, prior: priorT, ocr });
  gpu.flush();
  assertEquals([...out.camShape], f.cam.shape, "cam shape");
  if (!out.lossOcr || !out.ocPixels) throw new Error("the step recorded no OCR loss");
  const [lossCls] = await out.lossCls.read();
  const [lossOcr] = await out.lossOcr.read();
  const [ocPixels] = await out.ocPixels.read();
  assertEquals(ocPixels, o.ocPixels, "OC pixel count");
  assertClose([lossCls], [ml.loss], { rtol: TOL, atol: 0 }, "classification loss");
  assertClose([lossOcr], [o.loss], { rtol: TOL, atol: 0 }, "OCR loss");

  const errs: Record<string, number> = {};
  let ocrShare = 0;
  for (const p of params) {
    const want = grads.get(p.name)!;
    errs[p.name] = maxRelError(await p.grad.read(), want);
    ocrShare = Math.max(ocrShare, maxRelError(clsOnly.get(p.name)!, want));
  }
  const bad = Object.entries(errs).filter(([, e]) => !(e <= TOL));
  if (bad.length) {
    throw new Error(
      `${bad.length} gradients differ from the reference beyond ${TOL}: ` +
        bad.slice(0, 8).map(([k, e]) => `${k} ${e.toExponential(2)}`).join(", "),
    );
  }
  const worst = Math.max(...Object.values(errs));
  console.log(
    `    ${o.ocPixels}/${pixels} OC pixels, OCR loss ${o.loss.toFixed(4)}, max grad error ` +
      `${worst.toExponential(2)}, OCR share of the grads ${ocrShare.toExponential(2)}`,
  );
  // The OCR term moves the gradients far more than the tolerance: dropping it would show.
  if (!(ocrShare > 100 * TOL)) throw new Error(`OCR changes the gradients by only ${ocrShare}`);
  // The update used this step's gradients.
  for (const p of params) {
    const want = grads.get(p.name)!;
    const before = state.get(p.name)!.data;
    const step = paramLr(p, lr, opt.lrMult);
    assertClose(
      await p.value.read(),
      before.map((v, i) => v - step * want[i]),
      { rtol: 0, atol: 4e-7 * maxAbs(before) + TOL * step * maxAbs(want) },
      `${p.name} after the SGD step`,
    );
  }
  for (const t of [x, tagsT, priorT, out.lossCls, out.lossOcr, out.ocPixels]) t.dispose();
  opt.dispose();
  model.dispose();
}

Deno.test("train step with OCR matches the model + OCR references (grads, losses, OC count)", async (t) => {
  await t.step(
    "defaults, lambda 0.7, tauAct 0.05, one tag per image",
    () => scoped((gpu) => checkOcrStep(gpu, { lambda: 0.7, tauAct: 0.05 }, 40, 1)),
  );
  await t.step(
    "norm oc, grad oc_only, margin, temperature, tauAct 0.5, two tags per image",
    () =>
      scoped((gpu) =>
        checkOcrStep(
          gpu,
          {
            lambda: 0.5,
            tauAct: 0.5,
            norm: "oc",
            grad: "oc_only",
            margin: 0.2,
            temperature: 2,
            alpha: 0.3,
            tauRel: 0.4,
          },
          50,
          2,
        )
      ),
  );
});

const OCR_RUN: TrainInput = {
  dataset: "synthetic",
  synthetic: { seed: 0, size: "tiny" },
  model: "tiny",
  optimizer: "sgd",
  steps: 8,
  batch: 4,
  size: 48,
  seed: 5,
  lr: 0.02,
  logEvery: 1,
  ckptEvery: 3,
  prefetch: 2,
  ocr: OcrConfigSchema.parse({ enabled: true, start: 0.5, lambda: 0.5, tauAct: 0.1 }),
};

Deno.test("train with OCR: resumed across ocr.start equals uninterrupted; dataset prior cached", () =>
  scoped(async (gpu) => {
    const root = await Deno.makeTempDir();
    const quiet = { gpu, log: () => {}, skipEval: true, tty: false };
    // The dataset prior: counted from the training tags and cached by the trainer (the cache
    // file is removed first so that the counting path runs; the second run reads it back).
    const cfg: TrainConfig = validate(TrainConfigSchema, OCR_RUN, "test config");
    const data = await openTrainingData(cfg, () => {});
    const cache = await cooccurrenceCachePath(
      join(defaultCacheDir(), "cooccurrence"),
      data.priorKey,
      data.numClasses,
    );
    await Deno.remove(cache).catch(() => {});
    try {
      const a = join(root, "a");
      const c = join(root, "c");
      await train({ ...OCR_RUN, out: a }, quiet);
      const la = losses(await readLog(a));
      assertEquals(la.length, 8);
      // ocr.start 0.5 of 8 steps: OCR from the 5th step on.
      for (const l of la) {
        const on = l.step > 4;
        if (on !== (l.loss_ocr > 0) || on !== (l.oc_pixels > 0)) {
          throw new Error(
            `step ${l.step}: loss_ocr ${l.loss_ocr}, oc_pixels ${l.oc_pixels}; OCR should be ` +
              `${on ? "on" : "off"}`,
          );
        }
        assertEquals(l.loss, l.loss_cls + l.loss_ocr, `step ${l.step}: total loss`);
      }

      // The cache holds the counts of the training split's tags (counted here by hand).
      const file = JSON.parse(await Deno.readTextFile(cache));
      const C = data.numClasses;
      const counts = new Array(C * C).fill(0);
      for (let i = 0; i < data.train.ids.length; i++) {
        const t = data.train.tagsOf(i);
        for (const p of t) for (const q of t) counts[p * C + q]++;
      }
      assertEquals(file.counts, counts, "cached co-occurrence counts");
      assertEquals(file.images, data.train.ids.length);

      // Interrupted at step 5 (checkpoint at 3, before ocr.start), resumed and interrupted
      // at 6 (checkpoint at 6, after it), resumed to the end.
      await train({ ...OCR_RUN, out: c }, { ...quiet, stopAfter: 5 });
      assertEquals((await readLog(c)).length, 5);
      await train({ ...OCR_RUN, out: c, resume: true }, { ...quiet, stopAfter: 3 });
      assertEquals((await readLog(c)).length, 6);
      await train({ ...OCR_RUN, out: c, resume: true }, quiet);
      assertEquals(losses(await readLog(c)), la, "resumed run equals uninterrupted run");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  }));
