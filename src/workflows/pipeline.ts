/**
 * The WSSS pipeline runner (`deno task pipeline --method NAME [--ocr]`): runs a method's stage
 * list (src/methods/method.ts; the methods are in src/workflows/registry.ts) in one run folder,
 * on the built-in synthetic data by default. `--method affinitynet` (the default): CAM
 * classifier training → CAMs of the train and val splits → CAM evaluation → AffinityNet
 * training → random walk on the val CAMs → evaluation of the random-walk pseudo masks.
 *
 * Resumable stage list: each finished stage is recorded in `<out>/stages.json` (atomically,
 * with its result) and skipped on a rerun; an interrupted training stage resumes from its
 * checkpoint; an interrupted CAM, random-walk or prediction stage continues at its next
 * unwritten image (files are written atomically, per image). Each stage runs on a GPU context
 * of its own (unless the caller shares one), and its record keeps its time, its peak resident
 * memory and its GPU pool's peak. The final scores (the method's `results`) go to `<out>/results.json`.
 *
 * `runComparison` runs the pipeline with and without OCR for several seeds and tabulates the
 * method's table columns (AffinityNet: CAM mIoU, random-walk mIoU, the unrestricted-CAM
 * OC-error rate and mAP; mean ± std).
 * @module
 */
import { join } from "node:path";
import type { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../gpu/context.ts";
import { exists, writeJsonAtomic, writeTextAtomic } from "../io/atomic.ts";
import { validate } from "../io/config.ts";
import { fmtScore, type Method, type StageRecord } from "../methods/method.ts";
import { fmtDuration } from "../io/progress.ts";
import { peakRss, resetPeakRss } from "../io/memory.ts";
import { createGpu } from "../io/gpu.ts";
import { AFFINITYNET_STAGES, AffinityNetSchema, RW_ALPHAS } from "../methods/affinitynet/stages.ts";
import { methodTrainSchema, preflight } from "./preflight.ts";
import { getMethod, type MethodName, type METHODS, type ScoreOf } from "./registry.ts";

export { RW_ALPHAS };

/** The stage names of the default method (affinitynet), in order. */
export const PIPELINE_STAGES: typeof AFFINITYNET_STAGES = AFFINITYNET_STAGES;

/** Options of {@link runPipeline} with the default method (affinitynet). */
export const PipelineSchema = AffinityNetSchema;

/** Input of {@link runPipeline} for method `N` (its schema's input). */
export type PipelineInput<N extends MethodName = "affinitynet"> =
  & z.input<(typeof METHODS)[N]["schema"]>
  & { method?: N };
/** Resolved pipeline options of method `N`. */
export type PipelineOptions<N extends MethodName = "affinitynet"> = z.infer<
  (typeof METHODS)[N]["schema"]
>;

/** The scores of one pipeline run: who ran, the method's scores (results.json). */
export type PipelineResult<N extends MethodName = "affinitynet"> =
  & {
    /** The method ("affinitynet"). */
    method: string;
    /** Whether the CAM classifier trained with OCR. */
    ocr: boolean;
    /** The run's seed (CAM and second-stage training). */
    seed: number;
    /** Run folder. */
    out: string;
  }
  & Record<ScoreOf<N>, number>
  & {
    /** Seconds per stage (of the call that ran it). */
    seconds: Record<string, number>;
  };

/** A stage name of the default method. */
export type PipelineStage = typeof PIPELINE_STAGES[number];

/** Hooks of {@link runPipeline}. */
export interface PipelineHooks {
  /** Reuse a GPU context (tests, scripts). */
  gpu?: GpuContext;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Stop after this stage (tests simulate an interruption). */
  stopAfter?: string;
  /** Force the progress mode of the training stages (default: bar on a TTY). */
  tty?: boolean;
}

/** The default run folder of a method run. */
export function defaultRunDir(method: string, ocr: boolean, seed: number): string {
  return join("runs", "pipeline", `${method}${ocr ? "-ocr" : ""}-s${seed}`);
}

/**
 * Runs (or resumes) a method's stages; see the module doc. The method is `input.method`
 * (default "affinitynet"); an unknown one is a ConfigError listing the known methods.
 */
export async function runPipeline<N extends MethodName = "affinitynet">(
  input: PipelineInput<N>,
  hooks: PipelineHooks = {},
): Promise<PipelineResult<N> | null> {
  const method = getMethod((input as { method?: unknown }).method ?? "affinitynet");
  const o = validate(method.schema, input, "pipeline options");
  const r = await runStages(method, o, hooks);
  return r as PipelineResult<N> | null;
}

/** Runs (or resumes) `method`'s stages with resolved options `o`. */
async function runStages<O extends z.infer<Method["schema"]>>(
  method: Method,
  o: O,
  hooks: PipelineHooks,
): Promise<Record<string, unknown> | null> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  const out = o.out ?? defaultRunDir(o.method, o.ocr, o.seed);
  // Weights, dataset splits, nested options and the run folder: one clear error before any work.
  await preflight(
    o as unknown as Parameters<typeof preflight>[0],
    out,
    method.stages.map((s) => s.name),
    "pipeline options",
    methodTrainSchema(method.schema),
  );
  await Deno.mkdir(out, { recursive: true });
  const stagesPath = join(out, "stages.json");
  const stages: Record<string, StageRecord> = await exists(stagesPath)
    ? JSON.parse(await Deno.readTextFile(stagesPath))
    : {};
  await writeJsonAtomic(join(out, "pipeline.json"), o);
  const names = method.stages.map((s) => s.name);

  if (o.from) {
    // Forget the records of the stage and every later one; training stages start over.
    // An interrupted training stage has no record but a checkpoint: it starts over too.
    for (const stage of method.stages.slice(names.indexOf(o.from))) {
      delete stages[stage.name];
      if (stage.restart) { for (const p of stage.outputs) await removeAll(join(out, p)); }
    }
    await writeJsonAtomic(stagesPath, stages);
  }
  for (const stage of method.stages) {
    const name = stage.name;
    if (stages[name]) {
      log(`[${name}] done earlier (${stagesPath}), skipped`);
    } else {
      log(`[${name}] starting`);
      const t0 = performance.now();
      resetPeakRss();
      // A context of the stage's own (as a stage makes when given none), so that its pool's
      // peak is the stage's alone and nothing it cached outlives it.
      const gpu = hooks.gpu ?? await createGpu();
      gpu.pool.resetPeak();
      let result;
      try {
        const ctx = {
          o,
          out,
          stagesPath,
          stages,
          log: (l: string) => log(`[${name}] ${l}`),
          gpu,
          tty: hooks.tty,
        };
        result = (await stage.done?.(ctx)) ?? await stage.run(ctx);
      } finally {
        if (!hooks.gpu) gpu.destroy();
      }
      const seconds = (performance.now() - t0) / 1000;
      stages[name] = {
        seconds,
        result,
        peakRssMiB: Math.round(peakRss().bytes / 2 ** 20),
        peakPoolMiB: Math.round(gpu.pool.stats().peakInUse / 2 ** 20),
      };
      await writeJsonAtomic(stagesPath, stages);
      log(`[${name}] done in ${stages[name].seconds.toFixed(1)}s`);
    }
    if (hooks.stopAfter === name) return null;
  }
  const num = (v: unknown) => (typeof v === "number" ? v : NaN);
  const scores = Object.fromEntries(
    method.results.map((c) => [c.key, num(stages[c.stage].result[c.field])]),
  );
  const result = {
    method: o.method,
    ocr: o.ocr,
    seed: o.seed,
    out,
    ...scores,
    seconds: Object.fromEntries(names.map((s) => [s, stages[s].seconds])),
  };
  await writeJsonAtomic(join(out, "results.json"), result);
  for (const line of stageTable(names, stages)) log(line);
  log(
    `${o.method}${o.ocr ? " + OCR" : ""} seed ${o.seed}: ${method.summary(scores)} → ${
      join(out, "results.json")
    }`,
  );
  return result;
}

/**
 * The run's stages as table lines: each stage's time (in the call that ran it), its peak
 * resident memory and GPU pool and the numbers of its result, then the total time and the
 * largest peaks.
 */
export function stageTable(
  names: readonly string[],
  stages: Readonly<Record<string, StageRecord>>,
): string[] {
  const w = Math.max(5, ...names.map((n) => n.length));
  const lines = [
    `${"stage".padEnd(w)}  ${"time".padStart(9)}  ${"peak RSS".padStart(9)}  ` +
    `${"peak pool".padStart(9)}  result`,
  ];
  const mib = (v: number | undefined) => (v === undefined ? "" : `${v} MiB`).padStart(9);
  let total = 0;
  let peak = 0;
  let pool: number | undefined;
  for (const n of names) {
    const r = stages[n];
    total += r.seconds;
    const nums = Object.entries(r.result)
      .filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : fmtScore(v as number)}`)
      .join(", ");
    lines.push(
      `${n.padEnd(w)}  ${fmtDuration(r.seconds).padStart(9)}  ${mib(r.peakRssMiB)}  ` +
        `${mib(r.peakPoolMiB)}  ${nums}`,
    );
    peak = Math.max(peak, r.peakRssMiB ?? 0);
    if (r.peakPoolMiB !== undefined) pool = Math.max(pool ?? 0, r.peakPoolMiB);
  }
  lines.push(
    `${"total".padEnd(w)}  ${fmtDuration(total).padStart(9)}  ${mib(peak || undefined)}  ` +
      mib(pool).trimEnd(),
  );
  return lines;
}

/** Removes a stage output (file or folder) so that its stage starts from scratch. */
async function removeAll(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/** Mean and sample standard deviation. */
export function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.length > 1 ? xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1) : 0;
  return { mean, std: Math.sqrt(v) };
}

/**
 * A Markdown table of run scores grouped into rows (mean ± std of each of the method's table
 * columns): `head` names the first two columns, `rows` the groups (label and runs), and each
 * row lists its runs' seeds.
 */
export function scoreTable(
  method: Pick<Method, "table">,
  head: [string, string],
  rows: { label: string; runs: { seed: number; scores: Record<string, number> }[] }[],
): string {
  const cols = method.table;
  const lines = [
    `| ${head[0]} | ${head[1]} | ${cols.map((c) => c.header).join(" | ")} |`,
    `| --- | --- | ${cols.map(() => "---").join(" | ")} |`,
  ];
  for (const { label, runs } of rows) {
    if (!runs.length) continue;
    const cells = cols.map((c) => {
      const { mean, std } = meanStd(runs.map((r) => r.scores[c.key]));
      return `${fmtScore(mean)} ± ${fmtScore(std)}`;
    });
    lines.push(`| ${label} | ${runs.map((r) => r.seed).join(",")} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The comparison table (Markdown) of pipeline results (all of one method). */
export function pipelineTable(results: PipelineResult<MethodName>[]): string {
  if (!results.length) return scoreTable(getMethod("affinitynet"), ["method", "seeds"], []);
  const method = getMethod(results[0].method);
  return scoreTable(
    method,
    ["method", "seeds"],
    [false, true].map((ocr) => ({
      label: `${results[0].method}${ocr ? " + OCR" : ""}`,
      runs: results.filter((r) => r.ocr === ocr).map((r) => ({
        seed: r.seed,
        scores: r as unknown as Record<string, number>,
      })),
    })),
  );
}

/**
 * Runs the pipeline with and without OCR for each seed under `root` (`<method>[-ocr]-s<seed>`),
 * resumably, and writes `comparison.md` and `comparison.json` there. Returns the table.
 */
export async function runComparison<N extends MethodName = "affinitynet">(
  root: string,
  seeds: number[],
  base: Omit<PipelineInput<N>, "ocr" | "seed" | "out">,
  hooks: PipelineHooks = {},
): Promise<{ table: string; results: PipelineResult<N>[] }> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  const results: PipelineResult<N>[] = [];
  for (const seed of seeds) {
    for (const ocr of [false, true]) {
      const name = `${base.method ?? "affinitynet"}${ocr ? "-ocr" : ""}-s${seed}`;
      const input = { ...base, ocr, seed, out: join(root, name) } as PipelineInput<N>;
      const r = await runPipeline<N>(input, {
        ...hooks,
        log: (l) => log(`${name} ${l}`),
      });
      if (r) results.push(r);
    }
  }
  const table = pipelineTable(results as PipelineResult<MethodName>[]);
  await writeJsonAtomic(join(root, "comparison.json"), results);
  await writeTextAtomic(join(root, "comparison.md"), table + "\n");
  return { table, results };
}
