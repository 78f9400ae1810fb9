/**
 * CAM extraction and evaluation end to end on the synthetic "tiny" data with a checkpoint
 * trained for a few steps in the test: the files `computeCams` writes (against plain references
 * in this file: normalised CAMs, pseudo masks), the OC-error rate (against a plain count on the
 * same CAMs), `evaluate` on the checkpoint and on the pseudo-mask folder agreeing exactly, the
 * sweep, the two CLI tasks, and clear errors for bad input (missing checkpoint or config.json,
 * bad options, mask size).
 */
import { join } from "node:path";
import { train } from "../src/train/train.ts";
import { CamError, computeCams, evaluate, loadCamModel } from "../src/methods/cam/mod.ts";
import { recordSampleCams } from "../src/methods/cam/extract.ts";
import { ConfigError } from "../src/io/config.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { decodeLabelPng, encodeLabelPng } from "../src/data/png.ts";
import { openDataset } from "../src/data/dataset.ts";
import { ensureSynthetic } from "../src/data/synthetic.ts";
import type { Metrics } from "../src/eval/metrics.ts";
import { assertClose, assertEquals, assertRejects, testGpu } from "./util.ts";

const quiet = () => {};

/** A 3-step checkpoint on the tiny synthetic set (shared by the tests of this file). */
let run: Promise<{ root: string; ckpt: string }> | null = null;
function trainedRun(): Promise<{ root: string; ckpt: string }> {
  run ??= (async () => {
    const gpu = await testGpu();
    const root = await Deno.makeTempDir({ prefix: "ocr-eval-test-" });
    const out = join(root, "run");
    await train({
      dataset: "synthetic",
      synthetic: { seed: 0, size: "tiny" },
      model: "tiny",
      steps: 3,
      batch: 4,
      size: 64,
      lr: 0.02,
      logEvery: 1,
      ckptEvery: 3,
      prefetch: 1,
      out,
    }, { gpu, log: quiet, skipEval: true, tty: false });
    return { root, ckpt: join(out, "last.safetensors") };
  })();
  return run;
}

async function runTask(name: string, args: string[]) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../tasks/${name}.ts`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  });
  const r = await cmd.output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

const SCALES = [0.5, 1];

// Plain references of the rules the CAM stage implements, written out here rather than taken
// from src/ (so that the files and metrics are checked against something the code did not
// compute itself).

const f32 = Math.fround;

/** Tagged CAMs [C, n] divided by their ReLU'd maximum + 1e-5 (f32), in tag order. */
function normalizedRef(cam: Float32Array, n: number, tags: readonly number[]): Float32Array {
  const out = new Float32Array(tags.length * n);
  tags.forEach((c, t) => {
    let m = 0;
    for (let i = 0; i < n; i++) m = Math.max(m, cam[c * n + i]);
    const d = f32(m + f32(1e-5));
    for (let i = 0; i < n; i++) out[t * n + i] = Math.max(cam[c * n + i], 0) / d;
  });
  return out;
}

/**
 * The pseudo mask of normalised tagged CAMs at background threshold `bg`: the first tag with
 * the largest score, as label tag + 1, where that score is above f32(bg); background otherwise.
 */
function maskRef(norm: Float32Array, tags: readonly number[], n: number, bg: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let best = -1;
    for (let t = 0; t < tags.length; t++) {
      if (best < 0 || norm[t * n + i] > norm[best * n + i]) best = t;
    }
    out.push(best >= 0 && norm[best * n + i] > f32(bg) ? tags[best] + 1 : 0);
  }
  return out;
}

/**
 * Unrestricted-CAM OC counts of one image's CAMs [C, n] (tau 0.3): a pixel is active when its
 * largest CAM is positive and at least f32(tau · the largest tagged class maximum); it is OC
 * when that largest CAM's class (the lowest on ties) is not a tag.
 */
function ocRef(cam: Float32Array, C: number, n: number, tags: readonly number[]) {
  if (tags.length === 0) return { active: 0, oc: 0 };
  let a = 0;
  for (const c of tags) for (let i = 0; i < n; i++) a = Math.max(a, cam[c * n + i]);
  const thr = f32(f32(0.3) * a);
  let active = 0, oc = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (cam[c * n + i] > cam[best * n + i]) best = c;
    const v = cam[best * n + i];
    if (!(v > 0 && v >= thr)) continue;
    active++;
    if (!tags.includes(best)) oc++;
  }
  return { active, oc };
}

Deno.test("cam + eval: files, checkpoint and mask-folder scores agree, sweep", async () => {
  const gpu = await testGpu();
  const { root, ckpt } = await trainedRun();
  const camOut = join(root, "cam-val");
  const r = await computeCams(
    { ckpt, split: "val", scales: SCALES, bg: 0.2, out: camOut },
    { gpu, log: quiet },
  );
  const { vocRoot } = await ensureSynthetic({ seed: 0, size: "tiny" });
  const ds = await openDataset({ kind: "voc", root: vocRoot, split: "val" });
  assertEquals(r.images, ds.ids.length);
  assertEquals(r.ids, ds.ids);
  // The unrestricted fused CAMs of each image (the model, scales and flip computeCams and
  // evaluate use), for the references below.
  const model = (await loadCamModel(gpu, ckpt)).model;
  const oc = { active: 0, oc: 0 };
  let fg = 0;
  for (const [i, id] of ds.ids.entries()) {
    const tags = ds.tagsOf(i);
    const st = await readSafetensors(join(camOut, "cams", `${id}.safetensors`));
    const cams = st.tensors.get("cams")!;
    const s = await ds.load(i);
    assertEquals(cams.shape, [tags.length, s.height, s.width], `${id} CAM shape`);
    assertEquals([...st.tensors.get("classes")!.data], tags, `${id} classes`);
    assertEquals(JSON.parse(st.metadata.classes), tags);
    const n = s.width * s.height;
    const t0 = recordSampleCams(gpu, model, s, { scales: SCALES, flip: true });
    const full = await t0.read();
    t0.dispose();
    const C = ds.numClasses;
    assertEquals(full.length, C * n);
    // The saved CAMs are the tagged ones normalised; a division may be 2.5 ulp off in WGSL.
    assertClose(cams.data, normalizedRef(full, n, tags), { rtol: 3e-7, atol: 0 }, `${id} CAMs`);
    const r = ocRef(full, C, n, tags);
    oc.active += r.active;
    oc.oc += r.oc;
    for (let t = 0; t < tags.length; t++) {
      const plane = cams.data.subarray(t * n, (t + 1) * n);
      const max = Math.max(...plane);
      const min = Math.min(...plane);
      if (!(min >= 0 && max <= 1 && (max === 0 || max > 0.9999))) {
        throw new Error(`${id}: normalised CAM range [${min}, ${max}]`);
      }
    }
    const png = await decodeLabelPng(
      await Deno.readFile(join(camOut, "masks", `${id}.png`)),
      id,
    );
    assertEquals([png.width, png.height], [s.width, s.height]);
    const want = maskRef(cams.data, tags, n, 0.2);
    assertEquals([...png.data], want, `${id}: mask = pseudo mask of the saved CAMs at bg 0.2`);
    fg += want.filter((v) => v > 0).length;
  }
  // The references must see foreground, background, active, inactive and OC pixels.
  const pixels = (await Promise.all(ds.ids.map((_, i) => ds.load(i))))
    .reduce((a, s) => a + s.width * s.height, 0);
  if (!(fg > 0 && fg < pixels && oc.oc > 0 && oc.oc < oc.active && oc.active < pixels)) {
    throw new Error(`degenerate: ${fg} fg, ${oc.oc} OC of ${oc.active} active, ${pixels} px`);
  }
  model.dispose();
  const camJson = JSON.parse(await Deno.readTextFile(join(camOut, "cam.json")));
  assertEquals([camJson.images, camJson.bg, camJson.scales], [ds.ids.length, 0.2, SCALES]);

  // The checkpoint's CAM evaluation at bg 0.2 scores exactly the masks computeCams wrote.
  const evalOut = join(root, "eval-ckpt");
  const m = await evaluate(
    { ckpt, split: "val", scales: SCALES, bg: 0.2, out: evalOut, examples: 2 },
    { gpu, log: quiet },
  );
  const mm = await evaluate(
    {
      masks: join(camOut, "masks"),
      split: "val",
      synthetic: { size: "tiny" },
      out: join(root, "eval-masks"),
    },
    { gpu, log: quiet },
  );
  assertEquals(m.confusion, mm.confusion, "CAM eval and mask-folder eval of its masks agree");
  assertEquals(m.miou, mm.miou);
  assertEquals([m.oc_kind, mm.oc_kind, mm.oc_rate], ["cam", "mask", 0]);
  assertEquals([m.n_images, m.n_gt_images, m.bg_threshold, m.sweep], [12, 12, 0.2, null]);
  // The OC rate is the reference's, counted on the same CAMs.
  assertEquals([m.oc_pixels, m.oc_denominator], [oc.oc, oc.active], "OC and active pixels");
  assertEquals(m.oc_rate, oc.oc / oc.active);
  const saved: Metrics = JSON.parse(await Deno.readTextFile(join(evalOut, "metrics.json")));
  assertEquals(saved, JSON.parse(JSON.stringify(m)), "metrics.json = the returned metrics");
  const html = await Deno.readTextFile(join(evalOut, "report.html"));
  for (const part of ["<svg", "data:image/png;base64", "OC breakdown", "CAM overlay"]) {
    if (!html.includes(part)) throw new Error(`report.html lacks ${part}`);
  }

  // The sweep's value at 0.2 is the single-threshold run's; the reported one is the best.
  const sw = await evaluate(
    { ckpt, split: "val", scales: SCALES, sweep: "0.1:0.3:0.1", out: join(root, "sw") },
    { gpu, log: quiet },
  );
  assertEquals(sw.sweep!.map((p) => p.t), [0.1, 0.2, 0.3]);
  assertEquals(sw.sweep![1].miou, m.miou);
  const best = Math.max(...sw.sweep!.map((p) => p.miou ?? -1));
  assertEquals(sw.miou, best);
  assertEquals(sw.oc_pixels, m.oc_pixels, "the OC rate does not depend on the threshold");
});

Deno.test("cam + eval tasks: CLI runs end to end and reports bad input in one line", async () => {
  const { root, ckpt } = await trainedRun();
  const out = join(root, "cli-eval");
  const ev = await runTask("eval", [
    "--ckpt",
    ckpt,
    "--split",
    "val",
    "--scales",
    "1",
    "--no-flip",
    "--sweep",
    "0.1:0.2:0.05",
    "--limit",
    "3",
    "--out",
    out,
  ]);
  assertEquals(ev.code, 0, ev.stderr);
  const m: Metrics = JSON.parse(await Deno.readTextFile(join(out, "metrics.json")));
  assertEquals([m.n_images, m.sweep?.length], [3, 3]);
  if (!ev.stdout.includes("OC-error rate")) throw new Error(`no summary: ${ev.stdout}`);

  const camOut = join(root, "cli-cam");
  const cam = await runTask("cam", [
    "--ckpt",
    ckpt,
    "--scales",
    "1",
    "--limit",
    "2",
    "--out",
    camOut,
  ]);
  assertEquals(cam.code, 0, cam.stderr);
  assertEquals((await Array.fromAsync(Deno.readDir(join(camOut, "masks")))).length, 2);

  const bad = await runTask("eval", ["--ckpt", join(root, "nope", "last.safetensors")]);
  assertEquals(bad.code, 1);
  if (!/^error: checkpoint .*nope.* not found/.test(bad.stderr) || bad.stderr.includes("    at ")) {
    throw new Error(`unclear error: ${bad.stderr}`);
  }
  const flags = await runTask("eval", ["--ckpt", ckpt, "--bg", "0.1", "--sweep", "0.1:0.3:0.1"]);
  assertEquals(flags.code, 1);
  if (!flags.stderr.includes("either bg")) throw new Error(`unclear error: ${flags.stderr}`);
  const scales = await runTask("cam", ["--ckpt", ckpt, "--scales", "1,x"]);
  if (scales.code !== 1 || !scales.stderr.includes('--scales: "x"')) {
    throw new Error(`unclear error: ${scales.stderr}`);
  }
});

Deno.test("cam + eval: bad input gives clear errors", async () => {
  const gpu = await testGpu();
  const { root, ckpt } = await trainedRun();
  const hooks = { gpu, log: quiet };
  await assertRejects(
    () => evaluate({ ckpt: join(root, "missing.safetensors") }, hooks),
    CamError,
    "not found",
  );
  // A checkpoint copied away from its run folder has no config.json.
  const lone = join(root, "lone");
  await Deno.mkdir(lone);
  await Deno.copyFile(ckpt, join(lone, "last.safetensors"));
  await assertRejects(
    () => loadCamModel(gpu, lone),
    CamError,
    `no config.json beside checkpoint ${join(lone, "last.safetensors")} (looked for ${
      join(lone, "config.json")
    })`,
  );
  await assertRejects(
    () => computeCams({ ckpt: join(lone, "last.safetensors") }, hooks),
    CamError,
    "config.json",
  );
  // Options are validated at the boundary, naming the field.
  await assertRejects(() => evaluate({}, hooks), ConfigError, "exactly one of ckpt");
  await assertRejects(() => evaluate({ ckpt, bg: 2 }, hooks), ConfigError, "bg");
  await assertRejects(() => evaluate({ ckpt, sweep: "0.5:0.1:0.1" }, hooks), ConfigError, "sweep");
  await assertRejects(() => computeCams({ ckpt, scales: [1, 1] }, hooks), ConfigError, "scales");
  await assertRejects(
    () => computeCams({ ckpt, dataset: "synthetic", data: "/x" }, hooks),
    ConfigError,
    "--data",
  );
  // A predicted mask whose size differs from its image is an error naming file and sizes.
  const { vocRoot } = await ensureSynthetic({ seed: 0, size: "tiny" });
  const ds = await openDataset({ kind: "voc", root: vocRoot, split: "val" });
  const masks = join(root, "bad-masks");
  await Deno.mkdir(masks);
  for (const [i, id] of ds.ids.entries()) {
    const s = await ds.load(i);
    const [w, h] = i === 1 ? [s.width + 1, s.height] : [s.width, s.height];
    await Deno.writeFile(
      join(masks, `${id}.png`),
      await encodeLabelPng(new Uint8Array(w * h), w, h),
    );
  }
  const e = await assertRejects(() =>
    evaluate({ masks, split: "val", synthetic: { size: "tiny" } }, hooks)
  );
  const want = `${ds.ids[1]}.png`;
  if (!e.message.includes(want) || !/\d+x\d+/.test(e.message)) {
    throw new Error(`unclear size-mismatch error: ${e.message}`);
  }
  await Deno.remove(join(masks, `${ds.ids[2]}.png`));
  await assertRejects(
    () => evaluate({ masks, split: "val", synthetic: { size: "tiny" } }, hooks),
    Error,
    "missing",
  );
});
