/**
 * The generic workflows over a method's stage list (src/workflows): the registry's methods are
 * consistent (unique stage names, scores read from their own stages, every stage accepted by
 * `from`), an unknown method is an error naming the known ones, and the OCR ablation runs the
 * `cam` method's stages (train, evaluate) per setting and seed, resumably, on the tiny
 * synthetic data. The `affinitynet` stage list end to end is in tests/aff_net_test.ts.
 */
import { join } from "node:path";
import { ConfigError } from "../src/io/config.ts";
import { getMethod, METHOD_NAMES, METHODS } from "../src/workflows/registry.ts";
import { runPipeline, stageTable } from "../src/workflows/pipeline.ts";
import { ablationRuns, ablationTable, runAblation } from "../src/workflows/ablate.ts";
import { assertEquals, assertRejects, testGpu } from "./util.ts";

Deno.test("registry: every method's stages, scores and schema agree", () => {
  assertEquals(METHOD_NAMES, ["affinitynet", "cam", "mctformer", "seam"]);
  for (const name of METHOD_NAMES) {
    const m = getMethod(name);
    assertEquals(m, METHODS[name] as unknown);
    const names = m.stages.map((s) => s.name);
    assertEquals(new Set(names).size, names.length, `${name}: stage names repeat`);
    for (const s of m.stages) {
      if (!s.outputs.length) throw new Error(`${name}/${s.name}: no outputs`);
      for (const p of s.outputs) {
        if (p.startsWith("/") || p.includes("..")) throw new Error(`${name}/${s.name}: ${p}`);
      }
    }
    for (const c of m.results) {
      if (!names.includes(c.stage)) throw new Error(`${name}: score ${c.key} of stage ${c.stage}`);
    }
    const keys = m.results.map((c) => c.key as string);
    for (const c of m.table) {
      if (!keys.includes(c.key)) throw new Error(`${name}: table column ${c.key} is no score`);
    }
    const o = m.schema.parse({});
    assertEquals([o.method, o.ocr, o.seed], [name, false, 0]);
    for (const stage of names) assertEquals(m.schema.parse({ from: stage }).from, stage);
    assertEquals(m.schema.safeParse({ from: "nope" }).success, false);
    assertEquals(m.schema.safeParse({ bogus: 1 }).success, false);
  }
  assertEquals(
    METHODS.affinitynet.stages.map((s) => s.name),
    [
      "cam-train",
      "cams-train",
      "cams-val",
      "eval-cam",
      "affinity",
      "rw",
      "eval-rw",
      "eval-cam-train",
      "rw-train",
      "eval-rw-train",
      "seg",
      "eval-seg",
      "eval-seg-crf",
    ],
  );
});

Deno.test("pipeline: the closing table lists each stage's time, peak RSS and pool and numbers, then the total", () => {
  const lines = stageTable(["cam-train", "eval-cam"], {
    "cam-train": {
      seconds: 90,
      result: { map: 0.8123, out: "x" },
      peakRssMiB: 812,
      peakPoolMiB: 95,
    },
    "eval-cam": { seconds: 12.5, result: { miou: 0.4, images: 250 } },
  });
  assertEquals(lines, [
    "stage           time   peak RSS  peak pool  result",
    "cam-train      1m30s    812 MiB     95 MiB  map 0.812",
    "eval-cam         13s                        miou 0.400, images 250",
    "total          1m43s    812 MiB     95 MiB",
  ]);
});

Deno.test("pipeline: each stage's peak resident memory is its own (the high-water mark restarts)", async () => {
  // In a child process that can free its memory on demand: touch 256 MiB, free it, reset.
  const mod = new URL("../src/io/memory.ts", import.meta.url).href;
  const code = `import { peakRss, resetPeakRss } from "${mod}";
    let big = new Uint8Array(256 * 2 ** 20).fill(1);
    const during = peakRss().bytes;
    big = null;
    // V8 may free the backing store on a background thread: wait (bounded) until the resident
    // memory has actually dropped, so the reset below starts from the freed state.
    for (let i = 0; i < 100 && Deno.memoryUsage().rss > during - 128 * 2 ** 20; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    const reset = resetPeakRss();
    console.log(JSON.stringify({ during, reset, after: peakRss() }));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assertEquals(out.code, 0);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(r.during >= 256 * 2 ** 20, true, `peak ${r.during} below the 256 MiB touched`);
  if (!r.reset) return; // no /proc/self/clear_refs here: the fallback (current RSS) stands in
  assertEquals(r.after.exact, true);
  assertEquals(r.after.bytes < r.during - 128 * 2 ** 20, true, `peak ${r.after.bytes} kept`);
});

Deno.test("pipeline: an unknown method is an error listing the known ones", async () => {
  const e = await assertRejects(
    () => runPipeline({ method: "puzzle-cam" } as never, { log: () => {} }),
    ConfigError,
  );
  assertEquals(
    e.message,
    `unknown method "puzzle-cam"; known methods: affinitynet, cam, mctformer, seam`,
  );
});

Deno.test("ablate: the cam method's stages per setting and seed, resumable, tabulated", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    const base = {
      dataset: "synthetic" as const,
      synthetic: { seed: 0, size: "tiny" as const },
      steps: 3,
      batch: 4,
      size: 32,
    };
    const opts = { split: "val", sweep: "0.1,0.2", limit: 4 };
    const runs = ablationRuns(root, [0]);
    assertEquals(runs.map((r) => r.dir), [join(root, "baseline-s0"), join(root, "ocr-s0")]);
    const lines: string[] = [];
    const scores = [];
    for (const r of runs) {
      scores.push(await runAblation(r, base, opts, (l) => lines.push(l), { gpu, tty: false }));
    }
    for (const r of runs) {
      const stages = JSON.parse(await Deno.readTextFile(join(r.dir, "stages.json")));
      assertEquals(Object.keys(stages), ["cam-train", "eval-cam"]);
      const cfg = JSON.parse(await Deno.readTextFile(join(r.dir, "cam", "config.json")));
      assertEquals([cfg.steps, cfg.batch, cfg.ocr.enabled], [3, 4, r.setting === "ocr"]);
    }
    for (const s of scores) {
      assertEquals(Object.keys(s.scores), ["camMiou", "camBg", "ocRate", "map"]);
      if (![0.1, 0.2].includes(s.scores.camBg)) throw new Error(`camBg ${s.scores.camBg}`);
    }
    const table = ablationTable(scores).split("\n");
    assertEquals(table.slice(0, 2), [
      "| setting | runs | CAM pseudo-mask mIoU | OC-error rate (unrestricted CAM) | classification mAP |",
      "| --- | --- | --- | --- | --- |",
    ]);
    assertEquals([table[2].split(" | ")[0], table[3].split(" | ")[0]], [
      "| without OCR",
      "| with OCR",
    ]);
    // A rerun skips both stages and gives the same scores.
    lines.length = 0;
    const again = await runAblation(runs[0], base, opts, (l) => lines.push(l), { gpu, tty: false });
    assertEquals(again, scores[0]);
    for (const s of ["cam-train", "eval-cam"]) {
      if (!lines.some((l) => l.startsWith(`[${s}] done earlier`))) {
        throw new Error(`stage ${s} was not skipped:\n${lines.join("\n")}`);
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
