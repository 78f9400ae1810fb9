/**
 * AffinityNet stage: the model's gradients (directional finite differences through the GPU
 * forward), loading a CAM classifier's backbone, the label helpers, the random walk's CAM
 * pooling, AffinityNet training (loss falls, resume is bit-exact), the pair radius kept in the
 * checkpoint and used by the walk, no run folder after a failed first batch, clear errors for bad CAM
 * folders, and the resumable pipeline end to end on the tiny synthetic data.
 */
import { join } from "node:path";
import { Tensor } from "../src/gpu/tensor.ts";
import type { GpuContext } from "../src/gpu/context.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { Tape } from "../src/autograd/tape.ts";
import { createAffinityNet } from "../src/methods/affinitynet/model.ts";
import { createModel } from "../src/models/cam_net.ts";
import { saveTensors } from "../src/io/checkpoint.ts";
import { featureLabels, trainAffinity } from "../src/methods/affinitynet/train.ts";
import { readCamFolder, readImageCams } from "../src/methods/cam/cam_folder.ts";
import {
  camsWithBackground,
  checkpointRadius,
  computeRandomWalk,
  loadAffinityNet,
  resolveWalkRadius,
  walkedMasks,
} from "../src/methods/affinitynet/rw.ts";
import { readSafetensorsHeader } from "../src/io/safetensors.ts";
import { exists } from "../src/io/atomic.ts";
import { CamError } from "../src/methods/cam/options.ts";
import { computeCams } from "../src/methods/cam/extract.ts";
import { runPipeline } from "../src/workflows/pipeline.ts";
import { train } from "../src/train/train.ts";
import { decodeLabelPng } from "../src/data/png.ts";
import { Rng } from "../src/rng.ts";
import { assertEquals, assertRejects, assertThrows, randArray, testGpu } from "./util.ts";

Deno.test("AffinityNet: backward matches directional finite differences of the GPU forward", async () => {
  const gpu = await testGpu();
  const net = createAffinityNet(gpu, { arch: "tiny", seed: 1 });
  const [B, S] = [2, 40];
  const x = Tensor.fromArray(gpu, randArray(B * 3 * S * S, 2), [B, 3, S, S]);
  const params = net.params();
  const base = await Promise.all(params.map((p) => p.value.read()));
  // L = Σ r ⊙ features (train mode: batch statistics), a smooth function of every parameter.
  const probe = createAffinityNet(gpu, { arch: "tiny", seed: 1 }).forward(x, null);
  const [, D, h, w] = probe.shape;
  probe.dispose();
  assertEquals([D, h, w], [224, 5, 5]);
  const r = randArray(B * D * h * w, 3);
  const loss = async (): Promise<number> => {
    // Training mode (batch statistics) without recording: a tape with nothing to watch.
    const f = net.forward(x, new Tape(gpu));
    const v = await f.read();
    f.dispose();
    let s = 0;
    for (let i = 0; i < v.length; i++) s += r[i] * v[i];
    return s;
  };
  zeroGrads(params);
  const tape = new Tape(gpu, params);
  const feat = net.forward(x, tape);
  tape.backward([[feat, Tensor.fromArray(gpu, r, feat.shape)]]);
  const grads = await Promise.all(params.map((p) => p.grad.read()));
  feat.dispose();
  // Directions over a few coordinates of one tensor per part: stem, every stage (incl. the
  // stride-4 stage's resize path), branch and fuse convs. A few coordinates and a small step
  // keep the ReLUs from switching between the two evaluations.
  const rng = new Rng(5);
  const names = [
    "conv1.weight",
    "bn1.weight",
    "layer1.0.conv2.weight",
    "layer2.0.conv1.weight",
    "layer2.0.downsample.0.weight",
    "layer3.0.bn2.bias",
    "layer4.0.conv2.weight",
    "f8.0.weight",
    "f8.2.weight",
    "f9.1.weight",
  ];
  const eps = 1e-4;
  for (const name of names) {
    const k = params.findIndex((p) => p.name === name);
    if (k < 0) throw new Error(`no parameter ${name}`);
    const d = new Float32Array(params[k].value.size);
    for (let j = 0; j < 3; j++) d[rng.int(d.length)] = rng.uniform(0.5, 1);
    let analytic = 0;
    for (let i = 0; i < d.length; i++) analytic += d[i] * grads[k][i];
    const at = async (t: number) => {
      params[k].value.write(base[k].map((v, i) => v + t * d[i]));
      return await loss();
    };
    const numeric = ((await at(eps)) - (await at(-eps))) / (2 * eps);
    await at(0);
    const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(analytic), 1);
    if (!(rel < 0.03)) {
      throw new Error(`${name}: directional derivative ${numeric} vs analytic ${analytic}`);
    }
  }
  x.dispose();
  net.dispose();
});

Deno.test("AffinityNet: loads a CAM classifier's backbone by name", async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir();
  try {
    const cam = createModel(gpu, { arch: "tiny", numClasses: 20, seed: 7 });
    const path = join(dir, "cam.safetensors");
    await saveTensors(path, cam.stateTensors(), {});
    const net = createAffinityNet(gpu, { arch: "tiny", seed: 0 });
    const before = await net.params().find((p) => p.name === "f9.0.weight")!.value.read();
    await net.loadBackbone(path);
    const want = await cam.params().find((p) => p.name === "layer3.0.conv1.weight")!.value.read();
    const got = await net.params().find((p) => p.name === "layer3.0.conv1.weight")!.value.read();
    assertEquals(Array.from(got), Array.from(want));
    const after = await net.params().find((p) => p.name === "f9.0.weight")!.value.read();
    assertEquals(Array.from(after), Array.from(before), "the affinity head keeps its init");
    cam.dispose();
    net.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("featureLabels and camsWithBackground on hand-built maps", () => {
  // A 16x16 label map: left half 1, right half 0, one ignored square at the bottom right.
  const S = 16;
  const mask = new Uint8Array(S * S);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) mask[y * S + x] = x < 8 ? 1 : 0;
  for (let y = 8; y < 16; y++) for (let x = 8; x < 16; x++) mask[y * S + x] = 255;
  assertEquals(Array.from(featureLabels(mask, S, 2, 2, 8)), [1, 0, 1, 255]);
  // Cell centres of a 4x4 grid at stride 4 read pixels 2, 6, 10, 14.
  assertEquals(Array.from(featureLabels(mask, S, 4, 4, 4)).slice(0, 4), [1, 1, 0, 0]);

  // One class on a 10x12 image: ceil → a 2x2 grid with zero padding beyond the image.
  const H = 10, W = 12;
  const cams = new Float32Array(H * W);
  cams.fill(0.5);
  const { data, h, w } = camsWithBackground(cams, 1, H, W, [2]);
  assertEquals([h, w], [2, 2]);
  // Cell (0,0): 64 pixels of bg 0.25 and CAM 0.5. Cell (1,1): rows 8-9, cols 8-11 (8 pixels).
  const near = (a: number, b: number) => Math.abs(a - b) < 1e-6;
  const want = [0.25, 0.25 * 32 / 64, 0.25 * 16 / 64, 0.25 * 8 / 64];
  want.forEach((v, i) => {
    if (!near(data[i], v)) throw new Error(`bg cell ${i}: ${data[i]} vs ${v}`);
    if (!near(data[4 + i], 2 * v)) throw new Error(`cam cell ${i}: ${data[4 + i]} vs ${2 * v}`);
  });
  // Two alphas give two background channels in front of the class channel.
  const two = camsWithBackground(cams, 1, H, W, [1, 2]);
  assertEquals(two.data.length, 3 * 4);
  if (!near(two.data[0], 0.5) || !near(two.data[4], 0.25) || !near(two.data[8], 0.5)) {
    throw new Error(`two alphas: ${Array.from(two.data)}`);
  }
  // No tags: the background is 1 everywhere.
  assertEquals(camsWithBackground(new Float32Array(0), 0, 8, 8, [4]).data[0], 1);
});

Deno.test("walkedMasks: per-alpha argmax over its background and the classes, cropped", () => {
  // A = 2 background channels, classes 3 and 7, padded 2x3, cropped to 2x2.
  const bg0 = [0.5, 0.5, 9, 0.5, 0.1, 9];
  const bg1 = [0.05, 0.05, 9, 0.05, 0.05, 9];
  const c3 = [0.4, 0.2, 0, 0.2, 0.3, 0];
  const c7 = [0.1, 0.3, 0, 0.2, 0.3, 0];
  const up = Float32Array.from([...bg0, ...bg1, ...c3, ...c7]);
  const [m0, m1] = walkedMasks(up, 2, [3, 7], 2, 3, 2, 2);
  assertEquals(Array.from(m0), [0, 0, 0, 4]); // ties: background first, then the lower class
  assertEquals(Array.from(m1), [4, 8, 4, 4]);
});

const SYNTH = { seed: 0, size: "tiny" as const };

/** A briefly trained CAM classifier's train-split CAM folder `<root>/cam-train`. */
async function camFolder(
  root: string,
  hooks: { gpu: GpuContext; log: (l: string) => void; tty: boolean },
  o: { steps: number; batch: number; size: number; limit: number },
): Promise<string> {
  const camRun = join(root, "cam");
  const { limit, ...t } = o;
  await train({ dataset: "synthetic", synthetic: SYNTH, ...t, out: camRun, logEvery: o.steps }, {
    ...hooks,
    skipEval: true,
  });
  const camDir = join(root, "cam-train");
  await computeCams({ ckpt: camRun, split: "train", out: camDir, scales: [1], limit }, hooks);
  return camDir;
}

Deno.test("AffinityNet training: loss falls, resume is bit-exact, random walk writes masks", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, tty: false };
  try {
    const camDir = await camFolder(root, quiet, { steps: 6, batch: 4, size: 72, limit: 12 });
    const base = {
      cams: camDir,
      steps: 8,
      batch: 4,
      logEvery: 1,
      ckptEvery: 4,
      lr: 3e-3,
      prefetch: 1,
    };
    const a = join(root, "aff-a");
    const c = join(root, "aff-c");
    await trainAffinity({ ...base, out: a }, quiet);
    const read = async (d: string) =>
      (await Deno.readTextFile(join(d, "train.jsonl"))).trim().split("\n").map((l) => {
        const { images_per_s: _i, elapsed_s: _e, ...rest } = JSON.parse(l);
        return rest;
      });
    const la = await read(a);
    assertEquals(la.length, 8);
    const mean = (xs: { loss: number }[]) => xs.reduce((s, l) => s + l.loss, 0) / xs.length;
    if (!(mean(la.slice(-3)) < mean(la.slice(0, 3)))) {
      throw new Error(`affinity loss did not fall: ${la.map((l) => l.loss.toFixed(3))}`);
    }
    await trainAffinity({ ...base, out: c }, { ...quiet, stopAfter: 6 });
    await trainAffinity({ ...base, out: c, resume: true }, quiet);
    assertEquals(await read(c), la, "resumed run equals the uninterrupted one");

    // Random walk over the same CAMs: one palette mask per image, labels within tags + bg.
    const rw = await computeRandomWalk({ ckpt: a, cams: camDir, out: join(root, "rw") }, quiet);
    assertEquals(rw.images, 12);
    const info = await readCamFolder(camDir);
    assertEquals(info.images, 12);
    for (const f of [...Deno.readDirSync(join(camDir, "cams"))].slice(0, 4)) {
      const id = f.name.replace(".safetensors", "");
      const png = await Deno.readFile(join(root, "rw", "masks", `${id}.png`));
      const { data: labels } = await decodeLabelPng(png, id);
      const meta = JSON.parse(
        new TextDecoder().decode(await Deno.readFile(join(camDir, "cams", f.name))).match(
          /"classes":"(\[[^"]*\])"/,
        )![1],
      ) as number[];
      const allowed = new Set([0, ...meta.map((k) => k + 1)]);
      for (const v of new Set(labels)) {
        if (!allowed.has(v)) throw new Error(`${id}: label ${v} outside tags ${meta}`);
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("AffinityNet radius: stored in the checkpoint, walked with; a failed first batch leaves no run", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, tty: false };
  try {
    const camDir = await camFolder(root, quiet, { steps: 2, batch: 2, size: 48, limit: 4 });
    const aff = join(root, "aff");
    const r = await trainAffinity({ cams: camDir, steps: 2, batch: 2, radius: 3, out: aff }, quiet);
    assertEquals(r.radius, 3);
    const meta = (await readSafetensorsHeader(join(aff, "last.safetensors"))).metadata;
    assertEquals([meta.kind, meta.radius], ["affinitynet", "3"]);

    // The walk's radius: the checkpoint's; an explicit one wins with a warning; a checkpoint
    // without one (written before it was stored) walks with psa's 5 and a note.
    const loaded = await loadAffinityNet(gpu, aff);
    loaded.model.dispose();
    assertEquals(loaded.radius, 3);
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    assertEquals(resolveWalkRadius(undefined, loaded.radius, "ck", log), 3);
    assertEquals(lines, []);
    assertEquals(resolveWalkRadius(3, 3, "ck", log), 3);
    assertEquals(lines, []);
    assertEquals(resolveWalkRadius(5, 3, "ck", log), 5);
    assertEquals(lines.splice(0).map((l) => l.startsWith("warning: --radius 5 differs")), [true]);
    assertEquals(resolveWalkRadius(undefined, null, "ck", log), 5);
    assertEquals(lines.splice(0).map((l) => l.startsWith("note: ck records no pair radius")), [
      true,
    ]);
    assertEquals(checkpointRadius({}, "ck"), null);
    assertThrows(() => checkpointRadius({ radius: "x" }, "ck"), CamError, "ck: metadata radius");
    const rw = await computeRandomWalk(
      { ckpt: aff, cams: camDir, out: join(root, "rw"), limit: 1 },
      quiet,
    );
    assertEquals(rw.images, 1);
    assertEquals(JSON.parse(await Deno.readTextFile(join(root, "rw", "rw.json"))).radius, 3);

    // Without its CAM files the first batch cannot load: an error, and no run folder.
    for (const f of [...Deno.readDirSync(join(camDir, "cams"))]) {
      await Deno.remove(join(camDir, "cams", f.name));
    }
    const none = join(root, "aff-none");
    await assertRejects(
      () => trainAffinity({ cams: camDir, steps: 2, batch: 2, radius: 3, out: none }, quiet),
      CamError,
      "no CAMs for image",
    );
    assertEquals(await exists(none), false, "the failed run left a folder behind");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("AffinityNet: bad CAM folders and checkpoints are clear errors", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    // Every message names the file it is about (and the fix).
    const camJson = join(root, "cam.json");
    await assertRejects(
      () => readCamFolder(root),
      CamError,
      `${root} is not a CAM folder: no ${camJson} (write one with deno task cam`,
    );
    await Deno.writeTextFile(camJson, "{not json");
    await assertRejects(() => readCamFolder(root), CamError, `${camJson}: not valid JSON`);
    await Deno.writeTextFile(camJson, JSON.stringify({ dataset: "voc", split: "train" }));
    await assertRejects(() => readCamFolder(root), Error, `${camJson}: `);
    await Deno.writeTextFile(
      camJson,
      JSON.stringify({ dataset: "voc", root: "/nowhere", split: "train", images: 1, cams: null }),
    );
    await assertRejects(
      () => readCamFolder(root),
      CamError,
      `${camJson}: the CAMs were written with --no-cams; rerun deno task cam`,
    );
    await assertRejects(
      () => readImageCams(root, "x"),
      CamError,
      `no CAMs for image x: ${
        join(root, "cams", "x.safetensors")
      } is missing (rerun deno task cam)`,
    );
    await Deno.mkdir(join(root, "cams"));
    const y = join(root, "cams", "y.safetensors");
    await saveTensors(y, [], {});
    await assertRejects(
      () => readImageCams(root, "y"),
      CamError,
      `${y}: expected tensors cams [T, H, W] and classes [T]`,
    );
    await Deno.writeFile(y, new Uint8Array([1, 2, 3]));
    await assertRejects(() => readImageCams(root, "y"), CamError, `${y}: `);
    await Deno.writeTextFile(
      camJson,
      JSON.stringify({ dataset: "voc", root: "/nowhere", split: "train", images: 1, cams: "x" }),
    );
    const ckpt = join(root, "notaff.safetensors");
    await saveTensors(ckpt, [], { kind: "cam" });
    await assertRejects(
      () => computeRandomWalk({ ckpt, cams: root }, { gpu, log: () => {} }),
      CamError,
      `${ckpt} is not an AffinityNet checkpoint (train one with deno task affinity)`,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** The train RW mask folder at the best train alpha, from a stages.json text. */
function stagesOf(text: string): { masksAtBest: string } {
  const st = JSON.parse(text);
  const alpha = st["eval-rw-train"].result.alpha;
  const dirs = st["rw-train"].result.masks as { alpha: number; dir: string }[];
  return { masksAtBest: dirs.find((d) => d.alpha === alpha)!.dir };
}

Deno.test("pipeline: stages run in order, a rerun skips finished stages, --from redoes later ones", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    const opts = {
      synthetic: SYNTH,
      camSteps: 4,
      affinitySteps: 3,
      segSteps: 2,
      scales: [1],
      trainLimit: 8,
      evalLimit: 6,
      out: root,
    };
    const lines: string[] = [];
    const hooks = { gpu, log: (l: string) => lines.push(l), tty: false };
    const none = await runPipeline(opts, { ...hooks, stopAfter: "eval-cam" });
    assertEquals(none, null);
    const stages = JSON.parse(await Deno.readTextFile(join(root, "stages.json")));
    assertEquals(Object.keys(stages), ["cam-train", "cams-train", "cams-val", "eval-cam"]);
    lines.length = 0;
    const r = await runPipeline(opts, hooks);
    for (const s of ["cam-train", "cams-train", "cams-val", "eval-cam"]) {
      if (!lines.includes(`[${s}] done earlier (${join(root, "stages.json")}), skipped`)) {
        throw new Error(`stage ${s} was not skipped:\n${lines.join("\n")}`);
      }
    }
    if (!r) throw new Error("no result");
    if (![1, 2, 4, 8, 16].includes(r.rwAlpha)) throw new Error(`rwAlpha ${r.rwAlpha}`);
    for (
      const k of [
        "camMiou",
        "rwMiou",
        "ocRate",
        "camMiouTrain",
        "rwMiouTrain",
        "ocRateTrain",
        "segMiou",
        "segMiouCrf",
        "segOcRate",
      ] as const
    ) {
      if (!(r[k] >= 0 && r[k] <= 1)) throw new Error(`${k} = ${r[k]}`);
    }
    // The train-split scores are of the train split's images (the peers' protocol).
    const camTrain = JSON.parse(
      await Deno.readTextFile(join(root, "eval-cam-train", "metrics.json")),
    );
    assertEquals([camTrain.split, camTrain.n_images], ["train", 8]);
    assertEquals((await readCamFolder(join(root, "cam-train"))).images, 8);
    assertEquals((await readCamFolder(join(root, "cam-train"))).images, 8);
    const saved = JSON.parse(await Deno.readTextFile(join(root, "results.json")));
    assertEquals(saved.rwMiou, r.rwMiou);
    // The segmenter learned from the train RW masks of the best alpha and was scored on val.
    const segCfg = JSON.parse(await Deno.readTextFile(join(root, "seg", "config.json")));
    const rwTrain = stagesOf(await Deno.readTextFile(join(root, "stages.json")));
    assertEquals(segCfg.masks, rwTrain.masksAtBest);
    assertEquals(segCfg.init, join(root, "cam", "last.safetensors"));
    const segVal = JSON.parse(await Deno.readTextFile(join(root, "eval-seg", "metrics.json")));
    assertEquals([segVal.split, segVal.n_images], ["val", 6]);

    // --from rw redoes the walk and its evaluation only (same inputs, same masks).
    lines.length = 0;
    const again = await runPipeline({ ...opts, from: "rw" }, hooks);
    for (const want of ["[affinity] done earlier", "[rw] starting", "[eval-rw] starting"]) {
      if (!lines.some((l) => l.startsWith(want))) throw new Error(`missing "${want}"`);
    }
    assertEquals(again?.rwMiou, r.rwMiou);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
