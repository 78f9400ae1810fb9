/**
 * `deno task pipeline` on real-data layouts: the whole affinitynet stage list on the synthetic
 * data's COCO-format tree with `--dataset coco --data DIR --model resnet18` (tiny settings from a
 * `--config` file, deep-merged under the flags) and on its VOC-format tree, killed (SIGKILL) in
 * the middle of the CAM folder stage and resumed; a config error naming the field, the
 * fail-early errors (a missing or mismatched weights file, a dataset without the splits, an
 * AffinityNet crop too small for its radius, camsSplit with trainLimit, an unknown preset, a run
 * folder of another method or dataset), and the presets against the README's table.
 */
import { join } from "node:path";
import { SYNTH_SIZES, synthesize } from "../src/data/synthetic.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { PRESET_ROWS, presetOptions, presetTable } from "../src/workflows/presets.ts";
import { assertEquals } from "./util.ts";

const dir = await Deno.makeTempDir({ prefix: "ocr-pipeline-real-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const tree = await synthesize({ out: join(dir, "data"), seed: 3, size: "tiny" });

/** Runs `deno task pipeline` with `args`; its exit code and output. */
async function pipeline(args: string[]): Promise<{ code: number; text: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../tasks/pipeline.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: r.code, text: d.decode(r.stdout) + d.decode(r.stderr) };
}

/** Asserts a failed run whose output holds `want`. */
function assertFails(r: { code: number; text: string }, want: string) {
  if (r.code === 0 || !r.text.includes(want)) {
    throw new Error(`expected a failure with "${want}", got code ${r.code}:\n${r.text}`);
  }
}

async function writeJson(name: string, v: unknown): Promise<string> {
  const p = join(dir, name);
  await Deno.writeTextFile(p, JSON.stringify(v));
  return p;
}

const coco = ["--dataset", "coco", "--data", tree.cocoRoot];

/** The tiny settings of the end-to-end runs. */
function tinyConfig(name: string): Promise<string> {
  return writeJson(name, {
    train: { size: 64, batch: 2, logEvery: 1, ckptEvery: 1000 },
    camSteps: 2,
    affinitySteps: 2,
    affinity: { batch: 2, radius: 2 },
    segSteps: 2,
    seg: { size: 64, batch: 2 },
    scales: [1],
    alpha: [4],
    sweep: "0.2:0.2:0.1",
    trainLimit: 4,
    evalLimit: 4,
  });
}

Deno.test("pipeline --dataset coco --model resnet18: every stage end to end (tiny settings)", async () => {
  const cfg = await tinyConfig("tiny.json");
  const out = join(dir, "run");
  const r = await pipeline([...coco, "--model", "resnet18", "--config", cfg, "--out", out]);
  if (r.code !== 0) throw new Error(r.text);
  const saved = JSON.parse(await Deno.readTextFile(join(out, "pipeline.json")));
  // The flags and the file deep-merged into the CAM classifier's train config.
  assertEquals(saved.train, {
    size: 64,
    batch: 2,
    logEvery: 1,
    ckptEvery: 1000,
    dataset: "coco",
    data: tree.cocoRoot,
    model: "resnet18",
  });
  const camCfg = JSON.parse(await Deno.readTextFile(join(out, "cam", "config.json")));
  assertEquals([camCfg.dataset, camCfg.model, camCfg.steps], ["coco", "resnet18", 2]);
  const segCfg = JSON.parse(await Deno.readTextFile(join(out, "seg", "config.json")));
  assertEquals([segCfg.dataset, segCfg.model, segCfg.size], ["coco", "resnet18", 64]);
  const res = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
  for (const k of ["camMiou", "rwMiou", "rwMiouTrain", "segMiou", "segMiouCrf"]) {
    if (!(res[k] >= 0 && res[k] <= 1)) throw new Error(`${k} = ${res[k]}`);
  }
  // The same folder on other data, or for another method, fails before any stage.
  const voc = await pipeline(["--dataset", "voc", "--data", tree.vocRoot, "--out", out]);
  assertFails(voc, `this folder's run is on coco at ${tree.cocoRoot}, not voc at ${tree.vocRoot}`);
  assertFails(voc, "--from cam-train");
  const seam = await pipeline(["--method", "seam", ...coco, "--out", out]);
  assertFails(seam, "this folder holds a affinitynet run, not seam: pick another --out");
});

Deno.test("pipeline --dataset voc --model resnet18: killed in the CAM folder stage, resumed to the end", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(await tinyConfig("voc.json")));
  // Every train image's CAMs (not 4), so that the kill lands inside the stage.
  delete cfg.trainLimit;
  const file = await writeJson("voc.json", cfg);
  const out = join(dir, "voc-run");
  const args = [
    "run",
    "-A",
    new URL("../tasks/pipeline.ts", import.meta.url).pathname,
    "--dataset",
    "voc",
    "--data",
    tree.vocRoot,
    "--model",
    "resnet18",
    "--config",
    file,
    "--out",
    out,
  ];
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "null", stderr: "null" })
    .spawn();
  // SIGKILL once the train CAM folder holds a few images: no cleanup code runs.
  const cams = join(out, "cam-train", "cams");
  const total = SYNTH_SIZES.tiny.vocTrain;
  let written = 0;
  for (;;) {
    written = await Array.fromAsync(Deno.readDir(cams)).then(
      (es) => es.filter((e) => e.name.endsWith(".safetensors")).length,
      () => 0,
    );
    if (written >= 3) break;
    const done = await Promise.race([child.status, new Promise((r) => setTimeout(r, 10))]);
    if (done) throw new Error(`the run ended before the CAM stage wrote 3 images: ${done}`);
  }
  child.kill("SIGKILL");
  await child.status;
  if (written >= total) throw new Error(`killed too late: ${written} of ${total} CAMs written`);
  const r = await pipeline(args.slice(3));
  if (r.code !== 0) throw new Error(r.text);
  const resumed = /resuming: (\d+) of (\d+) images already written/.exec(r.text);
  if (!resumed || Number(resumed[1]) < 3 || Number(resumed[2]) !== total) {
    throw new Error(`no resume of the CAM folder stage:\n${r.text}`);
  }
  if (!r.text.includes("[cam-train] done earlier")) throw new Error(`cam-train redone:\n${r.text}`);
  const res = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
  for (const k of ["camMiou", "camMiouTrain", "rwMiou", "rwMiouTrain", "segMiou", "segMiouCrf"]) {
    if (!(res[k] >= 0 && res[k] <= 1)) throw new Error(`${k} = ${res[k]}`);
  }
});

Deno.test("pipeline --config: an error names the file and the field", async () => {
  const bad = await writeJson("bad.json", { camSteps: "ten" });
  assertFails(await pipeline(["--config", bad, "--out", join(dir, "x")]), `${bad}: camSteps:`);
  const nested = await writeJson("nested.json", { train: { batch: "x" } });
  assertFails(await pipeline(["--config", nested]), `${nested}: train.batch:`);
});

Deno.test("pipeline fails early: weights, dataset splits, preset", async () => {
  const out = join(dir, "early");
  const missing = join(dir, "nope.safetensors");
  assertFails(
    await pipeline([...coco, "--model", "resnet18", "--weights", missing, "--out", out]),
    `--weights ${missing}: no such file`,
  );
  // A resnet18 file given for resnet50: named from the header alone.
  const w = join(dir, "r18.safetensors");
  const one = { shape: [1], data: new Float32Array(1) };
  await writeSafetensors(w, [
    ["conv1.weight", one],
    ["bn1.weight", one],
    ["layer4.1.conv2.weight", one],
  ]);
  assertFails(
    await pipeline([...coco, "--model", "resnet50", "--weights", w, "--out", out]),
    "not a resnet50 backbone: no tensor layer1.2.conv3.weight",
  );
  const empty = join(dir, "empty");
  await Deno.mkdir(join(empty, "annotations"), { recursive: true });
  assertFails(
    await pipeline(["--dataset", "coco", "--data", empty, "--out", out]),
    "the coco dataset lacks the splits the pipeline reads: train",
  );
  assertFails(await pipeline(["--preset", "psa"]), 'unknown preset "psa"');
  // AffinityNet's 64 px crop: an 8x8 stride-8 grid, too small for psa's radius 5.
  const crop = await writeJson("crop.json", { train: { size: 64 } });
  assertFails(
    await pipeline([...coco, "--config", crop, "--out", out]),
    "affinity: a 64 px crop gives AffinityNet a 8x8 grid (stride 8), too small for radius 5: " +
      "set affinity.size to at least 65 or affinity.radius to at most 4",
  );
  assertFails(
    await pipeline(["--cams-split", "trainaug", "--train-limit", "5", "--out", out]),
    "camsSplit trainaug with trainLimit 5: the train-split scores need",
  );
  // Nothing ran: no run folder.
  assertEquals(await Deno.stat(out).then(() => true, () => false), false);
});

Deno.test("presets: the values are the README's table, and psa-voc's are psa's recipe", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const rows = (t: string) =>
    t.split("\n").filter((l) => l.startsWith("| `")).map((l) =>
      l.split("|").slice(1, -1).map((c) => c.trim())
    );
  const want = rows(presetTable());
  const at = readme.indexOf("| option");
  const got = rows(readme.slice(at, readme.indexOf("\n\n", at)));
  assertEquals(got, want);
  const voc = presetOptions("psa-voc") as Record<string, Record<string, unknown>>;
  assertEquals(Object.keys(presetOptions("synthetic")), []);
  assertEquals(
    [voc.train.lr, voc.train.weightDecay, voc.train.batch, voc.train.size, voc.camSteps],
    [0.1, 5e-4, 16, 448, 9915],
  );
  assertEquals(voc.scales as unknown, [1, 0.5, 1.5, 2]);
  assertEquals([voc.affinity.loAlpha, voc.affinity.hiAlpha, voc.affinity.radius], [4, 32, 5]);
  assertEquals([voc.rw.beta, voc.rw.logt, voc.affinity.batch], [8, 8, 8]);
  assertEquals(PRESET_ROWS.length, new Set(PRESET_ROWS.map((r) => r.path)).size);
});
