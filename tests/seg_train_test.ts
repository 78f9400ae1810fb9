/**
 * The final stage's segmenter (src/methods/seg): training on ground truth and on a mask
 * folder (loss falls, resume is bit-exact), a CAM classifier's backbone loaded by name,
 * prediction (masks written per image, a rerun skips written ones, multi-scale + flip fused
 * probabilities equal a host fusion of single-scale runs) and evaluation, and clear errors
 * for bad mask folders.
 */
import { join } from "node:path";
import { Tensor } from "../src/gpu/tensor.ts";
import { createModel } from "../src/models/cam_net.ts";
import { createSegModel } from "../src/models/deeplab.ts";
import { saveTensors } from "../src/io/checkpoint.ts";
import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { openDataset } from "../src/data/dataset.ts";
import { resolveDataRoot } from "../src/data/root.ts";
import { SyntheticSchema } from "../src/io/config.ts";
import {
  evaluateSegmenter,
  loadSegBackbone,
  loadSegModel,
  predictSegmenter,
  recordSegProbs,
  trainSegmenter,
} from "../src/methods/seg/mod.ts";
import { decodeLabelPng } from "../src/data/png.ts";
import { assertClose, assertEquals, assertRejects, randArray, testGpu } from "./util.ts";

const SYNTH = { seed: 0, size: "tiny" as const };

async function trainSplit() {
  const root = await resolveDataRoot({
    dataset: "synthetic",
    synthetic: SyntheticSchema.parse(SYNTH),
  }, () => {});
  return await openDataset({ kind: root.kind, root: root.root, split: "train", tags: "mask" });
}

Deno.test("segmenter: trains on ground truth (loss falls), resume is bit-exact, predicts and scores val", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, tty: false };
  try {
    const base = {
      masks: "gt",
      synthetic: SYNTH,
      steps: 10,
      batch: 4,
      size: 64,
      logEvery: 1,
      ckptEvery: 5,
      optimizer: "adamw" as const,
      lr: 3e-3,
      prefetch: 1,
      limit: 16,
    };
    const a = join(root, "seg-a");
    const c = join(root, "seg-c");
    await trainSegmenter({ ...base, out: a }, quiet);
    const read = async (d: string) =>
      (await Deno.readTextFile(join(d, "train.jsonl"))).trim().split("\n").map((l) => {
        const { images_per_s: _i, elapsed_s: _e, ...rest } = JSON.parse(l);
        return rest;
      });
    const la = await read(a);
    assertEquals(la.length, 10);
    const mean = (xs: { loss: number }[]) => xs.reduce((s, l) => s + l.loss, 0) / xs.length;
    if (!(mean(la.slice(-3)) < mean(la.slice(0, 3)))) {
      throw new Error(`segmentation loss did not fall: ${la.map((l) => l.loss.toFixed(3))}`);
    }
    await trainSegmenter({ ...base, out: c }, { ...quiet, stopAfter: 7 });
    await trainSegmenter({ ...base, out: c, resume: true }, quiet);
    assertEquals(await read(c), la, "resumed run equals the uninterrupted one");

    // Prediction: one palette PNG per image with labels in 0..C; a rerun writes nothing new.
    const p = await predictSegmenter({ ckpt: a, limit: 5, scales: [1], flip: false }, quiet);
    assertEquals([p.images, p.predicted], [5, 5]);
    const again = await predictSegmenter({ ckpt: a, limit: 5, scales: [1], flip: false }, quiet);
    assertEquals(again.predicted, 0);
    const val = await openDataset({
      kind: "voc",
      root: (await trainSplit()).root,
      split: "val",
      tags: "mask",
    });
    const s0 = await val.load(0);
    const png = await decodeLabelPng(await Deno.readFile(join(p.masks, `${s0.id}.png`)), s0.id);
    assertEquals([png.width, png.height], [s0.width, s0.height]);
    for (const v of new Set(png.data)) {
      if (v > val.numClasses) throw new Error(`label ${v} outside 0..${val.numClasses}`);
    }
    const m = await evaluateSegmenter({
      ckpt: a,
      limit: 5,
      scales: [1],
      flip: false,
      out: p.out,
    }, quiet);
    assertEquals([m.split, m.n_images], ["val", 5]);
    if (!(m.miou !== null && m.miou >= 0 && m.miou <= 1)) throw new Error(`mIoU ${m.miou}`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("segmenter: multi-scale + flip probabilities are the sum of the single runs, mirrored back", async () => {
  const gpu = await testGpu();
  const model = createSegModel(gpu, { arch: "tiny", numClasses: 3, seed: 4 });
  const [H, W] = [40, 48];
  const img = randArray(3 * H * W, 9);
  const x = Tensor.fromArray(gpu, img, [1, 3, H, W]);
  const fused = await recordSegProbs(gpu, model, x, { scales: [1, 0.5], flip: true }).read();
  // Host fusion of the parts: each scale's probabilities alone, the mirrored image's mirrored.
  const mirrorImg = new Float32Array(img.length);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        mirrorImg[(c * H + y) * W + xx] = img[(c * H + y) * W + (W - 1 - xx)];
      }
    }
  }
  const xm = Tensor.fromArray(gpu, mirrorImg, [1, 3, H, W]);
  const want = new Float64Array(3 * H * W);
  for (const s of [1, 0.5]) {
    const pa = await recordSegProbs(gpu, model, x, { scales: [s], flip: false }).read();
    const pm = await recordSegProbs(gpu, model, xm, { scales: [s], flip: false }).read();
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          const i = (c * H + y) * W + xx;
          want[i] += pa[i] + pm[(c * H + y) * W + (W - 1 - xx)];
        }
      }
    }
  }
  assertClose(fused, want, { rtol: 1e-4, atol: 1e-5 }, "fused probabilities");
  // Probabilities: each pixel's K values sum to the number of runs (2 scales x 2 images).
  for (let p = 0; p < H * W; p += 97) {
    const sum = fused[p] + fused[H * W + p] + fused[2 * H * W + p];
    assertClose([sum], [4], { atol: 1e-4 }, "probability mass");
  }
  x.dispose();
  xm.dispose();
  model.dispose();
});

Deno.test("segmenter: a CAM classifier's backbone loads by name, the head keeps its init", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    const cam = createModel(gpu, { arch: "tiny", numClasses: 20, seed: 3 });
    const file = join(root, "cam.safetensors");
    await saveTensors(file, cam.stateTensors(), {});
    const seg = createSegModel(gpu, { arch: "tiny", numClasses: 21, seed: 8 });
    const headBefore = await seg.params().at(-1)!.value.read();
    await loadSegBackbone(seg, file);
    const want = new Map(cam.stateTensors().map((t) => [t.name, t.value]));
    for (const t of [...seg.backbone.params(), ...seg.backbone.buffers()]) {
      const w = want.get(t.name);
      if (!w) throw new Error(`CAM classifier has no ${t.name}`);
      assertEquals(Array.from(await t.value.read()), Array.from(await w.read()), t.name);
    }
    assertEquals(Array.from(await seg.params().at(-1)!.value.read()), Array.from(headBefore));
    cam.dispose();
    seg.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("segmenter: bad mask folders and checkpoints are clear errors", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, tty: false };
  try {
    const ds = await trainSplit();
    const masks = join(root, "masks");
    await Deno.mkdir(masks);
    const base = { synthetic: SYNTH, steps: 1, batch: 2, size: 32, limit: 3, masks };
    // Missing masks are listed before any training; no run folder is left.
    await assertRejects(
      () => trainSegmenter({ ...base, out: join(root, "r1") }, quiet),
      Error,
      `3 of 3 masks missing in ${masks}`,
    );
    const write = async (i: number, w: number, h: number, fill: number) =>
      await Deno.writeFile(
        join(masks, `${ds.ids[i]}.png`),
        await encodeLabelPng(new Uint8Array(w * h).fill(fill), w, h, VOC_PALETTE),
      );
    const s = [await ds.load(0), await ds.load(1), await ds.load(2)];
    await write(0, s[0].width, s[0].height, 0);
    await write(1, s[1].width + 1, s[1].height, 0);
    await write(2, s[2].width, s[2].height, 0);
    await assertRejects(
      () => trainSegmenter({ ...base, batch: 3, out: join(root, "r2") }, quiet),
      Error,
      `mask is ${s[1].width + 1}x${s[1].height} but image ${s[1].id}`,
    );
    await write(1, s[1].width, s[1].height, 40);
    await assertRejects(
      () => trainSegmenter({ ...base, batch: 3, out: join(root, "r3") }, quiet),
      Error,
      "label 40 outside 0..20 and 255",
    );
    for (const r of ["r1", "r2", "r3"]) {
      if (await Deno.stat(join(root, r, "last.safetensors")).then(() => true, () => false)) {
        throw new Error(`${r} left a checkpoint`);
      }
    }
    // A CAM classifier checkpoint is not a segmenter's.
    const cam = createModel(gpu, { arch: "tiny", numClasses: 20 });
    const file = join(root, "cam.safetensors");
    await saveTensors(file, cam.stateTensors(), {});
    cam.dispose();
    await assertRejects(() => loadSegModel(gpu, file), Error, "is not a segmenter checkpoint");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
