/**
 * SEAM as a pipeline method end to end on the tiny synthetic data: seam-train → SEAM's CAM
 * folders → eval-cam → AffinityNet → random walk → eval-rw, resumable; `deno task cam`'s
 * loader reads SEAM checkpoints; the shared stages' option fields exist in SEAM's schema.
 */
import { join } from "node:path";
import { exists } from "../src/io/atomic.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { runPipeline } from "../src/workflows/pipeline.ts";
import { SEAM, SeamMethodSchema } from "../src/methods/seam/stages.ts";
import { AffinityNetSchema } from "../src/methods/affinitynet/stages.ts";
import { loadCamModel } from "../src/methods/cam/extract.ts";
import { assertEquals, testGpu } from "./util.ts";

const SYNTH = { seed: 0, size: "tiny" as const };

Deno.test("seam stages: the shared stages' fields exist in SEAM's schema", () => {
  // The CAM and AffinityNet stages read these fields of their options.
  const seam = Object.keys(SeamMethodSchema.shape);
  for (const k of Object.keys(AffinityNetSchema.shape)) {
    if (["segSteps", "segModel", "segHead", "segBatch", "segSize", "segCrf"].includes(k)) continue;
    if (k.startsWith("seg")) continue;
    if (!seam.includes(k)) throw new Error(`SEAM's schema lacks ${k}`);
  }
  assertEquals(SEAM.stages.map((s) => s.name), [
    "seam-train",
    "cams-train",
    "cams-val",
    "eval-cam",
    "affinity",
    "rw",
    "eval-rw",
  ]);
});

Deno.test("seam pipeline: SEAM's CAMs through eval-cam, AffinityNet and the walk", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    const opts = {
      method: "seam" as const,
      train: { dataset: "synthetic", synthetic: SYNTH, size: 72, batch: 2, steps: 2 },
      affinitySteps: 2,
      scales: [1],
      trainLimit: 8,
      evalLimit: 4,
      sweep: "0.1,0.3",
      alpha: [2, 8],
      out: root,
    };
    const hooks = { gpu, log: () => {}, tty: false };
    const none = await runPipeline(opts, { ...hooks, stopAfter: "eval-cam" });
    assertEquals(none, null);
    const cam = await readSafetensors(
      join(root, "cam-val", "cams", await firstFile(join(root, "cam-val", "cams"))),
    );
    if (!cam.tensors.has("cams")) throw new Error("no cams tensor in SEAM's CAM folder");
    const loaded = await loadCamModel(gpu, join(root, "cam"));
    assertEquals(loaded.config.model, "tiny");
    const r = await runPipeline(opts, hooks);
    if (!r) throw new Error("no result");
    for (const k of ["camMiou", "rwMiou", "ocRate", "map"] as const) {
      if (!Number.isFinite(r[k])) throw new Error(`${k} = ${r[k]}`);
    }
    if (!await exists(join(root, "affinity", "last.safetensors"))) throw new Error("no affinity");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

async function firstFile(dir: string): Promise<string> {
  for await (const e of Deno.readDir(dir)) if (e.isFile) return e.name;
  throw new Error(`${dir} is empty`);
}
