/**
 * `deno task bench`: prints the benchmark table (every figure beside a reference measured in
 * the same run) and writes bench.json. `--quick` runs the small cases only; `--only` picks
 * sections (roofline,runtime,kernels,data,eval,cam,train,ocr,affinity,crf,seg,seam,mctformer,
 * ops; and cold, the time to a first step in a fresh process with a cold shader cache, which
 * runs only when asked for); `--no-torch` skips the same-run PyTorch reference.
 * `--op NAME[,NAME...]` (or `all`) runs the generic op rows of those registered op units only
 * (src/registry/ops.ts), and writes a JSON file only with `--out`.
 */
import { z } from "npm:zod@4.6.7";
import { createGpu, describeBackend } from "../src/io/gpu.ts";
import { writeJsonAtomic } from "../src/io/atomic.ts";
import { parseFlags, runMain } from "../src/io/cli.ts";
import { validate } from "../src/io/config.ts";
import { benchRuntime } from "../src/bench/runtime.ts";
import { measureRoofline, type Roofline } from "../src/bench/roofline.ts";
import { benchKernels } from "../src/bench/kernels.ts";
import { benchData } from "../src/bench/data.ts";
import { benchEval } from "../src/bench/eval.ts";
import { benchOcr, benchTrain } from "../src/bench/train.ts";
import { benchCam } from "../src/bench/cam.ts";
import { benchAffinity } from "../src/bench/affinity.ts";
import { benchOps } from "../src/bench/ops.ts";
import { benchCold } from "../src/bench/cold.ts";
import { benchCrf } from "../src/bench/crf.ts";
import { benchSeg } from "../src/bench/seg.ts";
import { benchSeam } from "../src/bench/seam.ts";
import { benchMctformer } from "../src/bench/mctformer.ts";
import { type BenchRow, formatTable } from "../src/bench/table.ts";
import { OP_NAMES, OP_UNITS } from "../src/registry/ops.ts";

const SECTIONS = [
  "roofline",
  "runtime",
  "kernels",
  "data",
  "eval",
  "cam",
  "train",
  "ocr",
  "affinity",
  "crf",
  "seg",
  "seam",
  "mctformer",
  "ops",
  "cold",
] as const;
/** Sections run without --only: all but the minutes-long cold start. */
const DEFAULT_SECTIONS = SECTIONS.filter((s) => s !== "cold");
const USAGE = `usage: deno task bench [--quick] [--no-torch] [--only ${SECTIONS.join(",")}] ` +
  `[--op all|NAME,...] [--out bench.json]\n  ops: ${OP_NAMES.join(", ")}`;

/** `--op`: a comma list of registered op names, or `all`. */
const OpList = z.array(
  z.string().refine((n) => n === "all" || OP_NAMES.includes(n), {
    error: (i) => `unknown op "${i.input}"; valid: all, ${OP_NAMES.join(", ")}`,
  }),
).min(1);

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    quick: { type: "boolean" },
    "no-torch": { type: "boolean" },
    only: { type: "string" },
    op: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  const ops = f.op === undefined
    ? null
    : validate(OpList, f.op.split(",").map((s) => s.trim()), "--op");
  const units = !ops || ops.includes("all")
    ? OP_UNITS
    : OP_UNITS.filter((u) => ops.includes(u.name));
  const only = validate(
    z.array(z.enum(SECTIONS)),
    f.only ? f.only.split(",").map((s) => s.trim()) : ops ? ["ops"] : [...DEFAULT_SECTIONS],
    "--only",
  );
  const quick = f.quick ?? false;
  const noTorch = f["no-torch"] ?? false;
  const gpu = await createGpu();
  const adapter = gpu.describe();
  const backend = describeBackend(gpu);
  console.log(`adapter: ${adapter}; ${backend}${quick ? "; quick" : ""}`);
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
  // The adapter's limits come first: the kernel rows print their share of them.
  let roof: Roofline | undefined;
  await run("roofline", async () => {
    const r = await measureRoofline(gpu, { quick });
    roof = r.roof;
    return r.rows;
  });
  await run("runtime", () => benchRuntime(gpu));
  await run("kernels", () => benchKernels(gpu, { quick, log, roof, noTorch }));
  await run("data", () => benchData({ log, size: quick ? "tiny" : "small" }));
  await run("eval", () => benchEval(gpu));
  await run(
    "cam",
    () => benchCam(gpu, quick ? { cases: [{ arch: "tiny", size: 128, images: 4 }], reps: 1 } : {}),
  );
  await run("train", () => benchTrain(gpu, { quick, noTorch }));
  await run("ocr", () => benchOcr(gpu, { quick }));
  await run("affinity", () => benchAffinity(gpu, { quick }));
  await run("crf", () => benchCrf(gpu, { quick, log }));
  await run("seg", () => benchSeg(gpu, { quick }));
  await run("seam", () => benchSeam(gpu, { quick }));
  await run("mctformer", () => benchMctformer(gpu, { quick }));
  await run("ops", () => benchOps(gpu, units, { quick, log }));
  await run("cold", () => benchCold({ quick, log }));
  console.log(`\nall sections (${adapter}):\n${formatTable(rows)}`);
  const out = f.out ?? (ops ? null : "bench.json");
  if (out === null) return gpu.destroy();
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
