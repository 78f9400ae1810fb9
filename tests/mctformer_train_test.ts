/**
 * MCTformer as a method (src/methods/mctformer): one training step's losses equal the f64
 * reference's (multilabel soft-margin on the class-token and patch logits, OCR's reference on
 * the patch CAMs, drop path with the model's factors); an interrupted `trainMctformer` run
 * resumes bit for bit; the CAM loader's maps of one image equal the reference's maps resized
 * to the image, with the flipped image's mirrored back; the method's stages and the shared
 * stages' fields; the pipeline on the tiny synthetic data through eval-cam.
 *
 * The models here are small (vit-tiny at 32 px, batch 2; a 16-wide model for the step) and
 * the GPU context is a plain one, not debug mode (which submits every dispatch on its own).
 */
import { join } from "node:path";
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { ensureSynthetic } from "../src/data/synthetic.ts";
import { openDataset } from "../src/data/dataset.ts";
import { cooccurrence } from "../src/losses/cooccurrence.ts";
import { multilabelSoftMarginLossRef } from "../src/losses/multilabel.ts";
import { ocrLossReference } from "../src/losses/ocr.ts";
import { AdamW } from "../src/optim/mod.ts";
import { ConfigError, OcrConfigSchema } from "../src/io/config.ts";
import { createMctformer, mctformerConfig } from "../src/models/vit.ts";
import {
  mctformerForwardRef,
  mctformerMapsRef,
  type VitRefParam,
} from "../src/models/vit_reference.ts";
import { resizeBilinearRef } from "../src/ops/resize.ts";
import { loadCamModel, recordSampleCams, rgbToChw } from "../src/methods/cam/extract.ts";
import {
  type MctformerInput,
  type MctformerStepLog,
  recordMctformerStep,
  trainMctformer,
} from "../src/methods/mctformer/train.ts";
import { MCTFORMER, MctformerMethodSchema } from "../src/methods/mctformer/stages.ts";
import { AffinityNetSchema } from "../src/methods/affinitynet/stages.ts";
import { runPipeline } from "../src/workflows/pipeline.ts";
import { trainAffinity } from "../src/methods/affinitynet/train.ts";
import { assertEquals, assertRejects, maxRelError, randArray } from "./util.ts";

let plain: Promise<GpuContext> | null = null;
/** This file's GPU context (plain: a whole model's step in debug mode is slow on llvmpipe). */
const gpuOf = () => plain ??= createGpu();

const SYNTH = { seed: 0, size: "tiny" as const };

/** A small run: vit-tiny at 32 px (a 2x2 patch grid), batch 2, drop path on, OCR from step 2. */
const BASE: MctformerInput = {
  dataset: "synthetic",
  synthetic: SYNTH,
  steps: 4,
  batch: 2,
  size: 32,
  seed: 3,
  logEvery: 1,
  ckptEvery: 2,
  prefetch: 2,
  ocr: { enabled: true, start: 0.5 },
};

async function readLog(dir: string): Promise<MctformerStepLog[]> {
  const text = await Deno.readTextFile(join(dir, "train.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** Asserts maxRelError <= tol. */
function rel(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  const e = maxRelError(got, want);
  if (!(e <= tol)) throw new Error(`${what}: max relative error ${e.toExponential(2)} > ${tol}`);
}

Deno.test("mctformer step: losses equal multilabel on the f64 reference's logits + OCR's reference on its patch map (drop path on); a step frees what it allocates", async () => {
  const gpu = await gpuOf();
  const C = 5, B = 2;
  const cfg = { embedDim: 16, depth: 3, numHeads: 2, patch: 4, numClasses: C, imgSize: 16 };
  const model = createMctformer(gpu, { ...cfg, seed: 1, dropPath: 0.5 });
  const params = model.params();
  const state = new Map<string, VitRefParam>();
  for (const p of params) state.set(p.name, { shape: p.value.shape, data: await p.value.read() });
  const shape = [B, 3, 16, 16];
  const xData = randArray(B * 3 * 16 * 16, 11);
  const tagLists = [[1], [3]];
  const tags = new Float32Array(B * C);
  tagLists.forEach((t, b) => t.forEach((k) => tags[b * C + k] = 1));
  const prior = cooccurrence([[1, 2], [3], [1, 3], [0, 4]], C);
  const ocr = OcrConfigSchema.parse({ enabled: true, tauAct: 0 });
  const seed = 7;
  const x = Tensor.fromArray(gpu, xData, shape);
  const tg = Tensor.fromArray(gpu, tags, [B, C]);
  const pr = Tensor.fromArray(gpu, prior, [C, C]);
  const opt = new AdamW(gpu, { weightDecay: 0.05 });
  const { losses } = recordMctformerStep(gpu, model, opt, params, {
    x,
    tags: tg,
    lr: 1e-3,
    prior: pr,
    ocr,
    seed,
  });
  const [cls, patch, ocrLoss, oc] = await Promise.all(
    [losses.cls, losses.patch, losses.ocr!, losses.ocPixels!].map(async (t) => (await t.read())[0]),
  );
  const ref = mctformerForwardRef(cfg, state, { shape, data: xData }, {
    branchScales: model.dropPathScales(seed, B),
  });
  const wantCls = multilabelSoftMarginLossRef(ref.clsLogits.data, tags).loss;
  const wantPatch = multilabelSoftMarginLossRef(ref.patchLogits.data, tags).loss;
  const wantOcr = ocrLossReference(ref.patchMap.data, ref.patchMap.shape, tags, prior, ocr);
  if (!(wantOcr.ocPixels > 0)) throw new Error("the case has no OC pixel: OCR is not checked");
  assertEquals(oc, wantOcr.ocPixels, "OC pixels");
  rel([cls, patch, ocrLoss], [wantCls, wantPatch, wantOcr.loss], 1e-4, "cls, patch, ocr losses");
  const release = (l: typeof losses) => Object.values(l).forEach((t) => t?.dispose());
  release(losses);
  // A step leaves nothing behind: the pool's bytes in use after a second step are the first's.
  const inUse = gpu.pool.stats().inUse;
  const s2 = { x, tags: tg, lr: 1e-3, prior: pr, ocr, seed: seed + 1 };
  release(recordMctformerStep(gpu, model, opt, params, s2).losses);
  assertEquals(gpu.pool.stats().inUse, inUse, "GPU pool bytes in use after another step");
  for (const t of [x, tg, pr]) t.dispose();
  opt.dispose();
  model.dispose();
});

Deno.test("mctformer train: an interrupted run resumes bit for bit; the CAM loader's maps equal the reference's, resized, with the flip", async () => {
  const gpu = await gpuOf();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, skipEval: true, tty: false };
  try {
    const a = join(root, "a"), c = join(root, "c");
    await trainMctformer({ ...BASE, out: a }, quiet);
    const la = await readLog(a);
    assertEquals(la.length, BASE.steps);
    if (!la.every((l) => Number.isFinite(l.loss) && l.loss_cls > 0 && l.loss_patch > 0)) {
      throw new Error(`bad losses ${JSON.stringify(la)}`);
    }
    assertEquals(la.map((l) => l.loss_ocr > 0 || l.oc_pixels === 0), [true, true, true, true]);
    assertEquals([la[0].loss_ocr, la[1].loss_ocr], [0, 0], "OCR starts at step 2");
    await trainMctformer({ ...BASE, out: c }, { ...quiet, stopAfter: 2 });
    await trainMctformer({ ...BASE, out: c, resume: true }, quiet);
    const strip = (l: MctformerStepLog[]) =>
      l.map(({ images_per_s: _i, elapsed_s: _e, ...rest }) => rest);
    assertEquals(strip(await readLog(c)), strip(la), "resumed equals uninterrupted");
    const ta = (await readSafetensors(join(a, "last.safetensors"))).tensors;
    const tc = (await readSafetensors(join(c, "last.safetensors"))).tensors;
    for (const [name, t] of ta) {
      assertEquals(Array.from(tc.get(name)!.data), Array.from(t.data), `${name} after resume`);
    }

    // The CAM loader: one image's maps at scale 1 with its flip, against the reference.
    const m = await loadCamModel(gpu, a);
    assertEquals([m.config.model, m.numClasses, m.step], ["vit-tiny", 20, 4]);
    const { vocRoot } = await ensureSynthetic(SYNTH);
    const ds = await openDataset({ kind: "voc", root: vocRoot, split: "val" });
    const s = await ds.load(0);
    const cam = recordSampleCams(gpu, m.model, s, { scales: [1], flip: true });
    const got = await cam.read();
    cam.dispose();
    m.model.dispose();
    const params = new Map<string, VitRefParam>(
      [...ta].filter(([n]) => !n.startsWith("optim.")).map(([n, t]) => [n, t]),
    );
    const rcfg = mctformerConfig("vit-tiny", 20, 32);
    const H = s.height, W = s.width;
    const chw = rgbToChw(s.rgb, W, H);
    const mapsOf = (data: Float32Array) => {
      const fwd = mctformerForwardRef(rcfg, params, { shape: [1, 3, H, W], data }, { attn: true });
      const r = mctformerMapsRef(fwd, { nLayers: 3, type: "fused" }).refined;
      return resizeBilinearRef(r.data, r.shape, { size: [H, W] });
    };
    const mirror = (v: ArrayLike<number>, planes: number) => {
      const o = new Float32Array(v.length);
      for (let p = 0; p < planes; p++) {
        for (let i = 0; i < H; i++) {
          for (let j = 0; j < W; j++) o[(p * H + i) * W + j] = v[(p * H + i) * W + W - 1 - j];
        }
      }
      return o;
    };
    const plainMaps = mapsOf(chw);
    const flipped = mirror(mapsOf(mirror(chw, 3)), 20);
    const want = plainMaps.map((v, i) => Math.max(v, 0) + Math.max(flipped[i], 0));
    assertEquals(got.length, 20 * H * W);
    rel(got, want, 1e-4, `maps of ${s.id} (${W}x${H}, scale 1 + flip)`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("mctformer stages: registered stage list; the shared stages' fields exist in its schema", () => {
  assertEquals(MCTFORMER.stages.map((s) => s.name), [
    "mctformer-train",
    "cams-train",
    "cams-val",
    "eval-cam",
    "affinity",
    "rw",
    "eval-rw",
  ]);
  const own = Object.keys(MctformerMethodSchema.shape);
  for (const k of Object.keys(AffinityNetSchema.shape)) {
    if (k.startsWith("seg")) continue;
    if (!own.includes(k)) throw new Error(`MCTformer's schema lacks ${k}`);
  }
});

Deno.test("mctformer pipeline: its maps through the CAM folders, eval-cam, then resumed through AffinityNet and the walk", async () => {
  const gpu = await gpuOf();
  const root = await Deno.makeTempDir();
  try {
    const opts = {
      method: "mctformer" as const,
      train: { dataset: "synthetic" as const, synthetic: SYNTH, size: 32, batch: 2, steps: 2 },
      scales: [1],
      trainLimit: 4,
      evalLimit: 4,
      sweep: "0.1,0.3",
      affinitySteps: 2,
      affinity: { size: 72, batch: 2 },
      alpha: [2, 8],
      out: root,
    };
    const none = await runPipeline(opts, { gpu, log: () => {}, tty: false, stopAfter: "eval-cam" });
    assertEquals(none, null);
    const stages = JSON.parse(await Deno.readTextFile(join(root, "stages.json")));
    assertEquals(Object.keys(stages), ["mctformer-train", "cams-train", "cams-val", "eval-cam"]);
    const ev = stages["eval-cam"].result;
    if (!(ev.miou >= 0 && ev.miou <= 1 && ev.oc_rate >= 0 && ev.oc_rate <= 1)) {
      throw new Error(`eval-cam ${JSON.stringify(ev)}`);
    }
    let files = 0;
    for await (const e of Deno.readDir(join(root, "cam-val", "cams"))) if (e.isFile) files++;
    assertEquals(files, 4, "CAM files of the val split");
    // AffinityNet cannot start from MCTformer's ViT: deno task affinity on its CAMs says so.
    await assertRejects(
      () => trainAffinity({ cams: join(root, "cam-train"), out: join(root, "x") }, { gpu }),
      ConfigError,
      "--scratch or --init",
    );
    // Resumed: AffinityNet (tiny, from scratch) and the walk.
    const r = await runPipeline(opts, { gpu, log: () => {}, tty: false });
    if (!r) throw new Error("no result");
    for (const k of ["camMiou", "rwMiou", "ocRate"] as const) {
      if (!Number.isFinite(r[k])) throw new Error(`${k} = ${r[k]}`);
    }
    const aff = JSON.parse(await Deno.readTextFile(join(root, "affinity", "config.json")));
    assertEquals([aff.model, aff.init], ["tiny", null]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
