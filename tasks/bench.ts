/**
 * `deno task bench`: prints the benchmark table (every figure beside a reference measured in
 * the same run) and writes bench.json. `--quick` runs the small cases only; `--only` picks
 * sections (runtime,kernels,data,eval,cam,train,ocr,affinity).
 */
import { z } from "npm:zod@4.6.7";
import { createGpu } from "../src/io/gpu.ts";
import { writeJsonAtomic } from "../src/io/atomic.ts";
import { parseFlags, runMain } from "../src/io/cli.ts";
import { validate } from "../src/io/config.ts";
import { benchRuntime } from "../src/bench/runtime.ts";
import { benchKernels } from "../src/bench/kernels.ts";
import { benchData } from "../src/bench/data.ts";
import { benchEval } from "../src/bench/eval.ts";
import { benchOcr, benchTrain } from "../src/bench/train.ts";
import { benchCam } from "../src/bench/cam.ts";
import { benchAffinity } from "../src/bench/affinity.ts";
import { type BenchRow, formatTable } from "../src/bench/table.ts";

const SECTIONS = [
  "runtime",
  "kernels",
  "data",
  "eval",
  "cam",
  "train",
  "ocr",
  "affinity",
] as const;
const USAGE = `usage: deno task bench [--quick] [--only ${SECTIONS.join(",")}] [--out bench.json]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    quick: { type: "boolean" },
    only: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  const only = validate(
    z.array(z.enum(SECTIONS)),
    f.only ? f.only.split(",").map((s) => s.trim()) : [...SECTIONS],
    "--only",
  );
  const quick = f.quick ?? false;
  const gpu = await createGpu();
  const adapter = gpu.describe();
  const backend = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
  console.log(`adapter: ${adapter}; backend ${backend}${quick ? "; quick" : ""}`);
  const rows: BenchRow[] = [];
  const log = (l: string) => console.error(`  ${l}`);
  const run = async (name: (typeof SECTIONS)[number], fn: () => Promise<BenchRow[]>) => {
    if (!only.includes(name)) return;
    const t0 = performance.now();
    console.error(`[bench] ${name}...`);
    const r = await fn();
    rows.push(...r);
    console.error(`[bench] ${name} done in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
    console.log(formatTable(r));
  };
  await run("runtime", () => benchRuntime(gpu));
  await run("kernels", () => benchKernels(gpu, { quick, log }));
  await run("data", () => benchData({ log, size: quick ? "tiny" : "small" }));
  await run("eval", () => benchEval(gpu));
  await run(
    "cam",
    () => benchCam(gpu, quick ? { cases: [{ arch: "tiny", size: 128, images: 4 }], reps: 1 } : {}),
  );
  await run("train", () => benchTrain(gpu, { quick }));
  await run("ocr", () => benchOcr(gpu, { quick }));
  await run("affinity", () => benchAffinity(gpu, { quick }));
  console.log(`\nall sections (${adapter}):\n${formatTable(rows)}`);
  const out = f.out ?? "bench.json";
  await writeJsonAtomic(out, {
    adapter,
    backend,
    deno: Deno.version.deno,
    date: new Date().toISOString(),
    quick,
    pool: gpu.pool.stats(),
    rows,
  });
  console.log(`wrote ${out}`);
  gpu.destroy();
});
