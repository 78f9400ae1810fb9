/**
 * The WSSS pipeline runner (`deno task pipeline --method affinitynet [--ocr]`): CAM classifier
 * training → CAMs of the train and val splits → CAM evaluation → AffinityNet training →
 * random walk on the val CAMs → evaluation of the random-walk pseudo masks, on the built-in
 * synthetic data by default.
 *
 * Resumable stage list: each finished stage is recorded in `<out>/stages.json` (atomically,
 * with its result) and skipped on a rerun; an interrupted training stage resumes from its
 * checkpoint; an interrupted CAM or random-walk stage is redone (its files are rewritten
 * atomically). The final scores go to `<out>/results.json`.
 *
 * `runComparison` runs the pipeline with and without OCR for several seeds and tabulates
 * CAM mIoU, random-walk mIoU and the unrestricted-CAM OC-error rate (mean ± std).
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../gpu/context.ts";
import { exists, writeJsonAtomic, writeTextAtomic } from "../io/atomic.ts";
import { type TrainConfig, validate } from "../io/config.ts";
import { computeCams } from "../methods/cam/extract.ts";
import { withProgress } from "../methods/cam/options.ts";
import { evaluate } from "../methods/cam/evaluate.ts";
import { computeRandomWalk } from "../methods/affinitynet/rw.ts";
import { trainAffinity } from "../methods/affinitynet/train.ts";
import { meanStd } from "./ablate.ts";
import { checkpointMetadata, train, TrainError } from "../train/train.ts";

/** The stage names, in order. */
export const PIPELINE_STAGES = [
  "cam-train",
  "cams-train",
  "cams-val",
  "eval-cam",
  "affinity",
  "rw",
  "eval-rw",
] as const;

/** The random-walk background exponents a pipeline sweeps by default. */
export const RW_ALPHAS: readonly number[] = [1, 2, 4, 8, 16];

/** Options of {@link runPipeline}. */
export const PipelineSchema = z.object({
  method: z.enum(["affinitynet"]).default("affinitynet"),
  /** Train the CAM classifier with OCR. */
  ocr: z.boolean().default(false),
  /** OCR weight and start (fraction of the CAM training); default: the train config's. */
  ocrLambda: z.number().min(0).optional(),
  ocrStart: z.number().min(0).max(1).optional(),
  seed: z.number().int().min(0).default(0),
  /**
   * Redo this stage and every later one (e.g. "rw" after changing `alpha`); a one-off: rerun
   * without it to resume an interrupted redo.
   */
  from: z.enum(PIPELINE_STAGES).optional(),
  /** Run folder; default runs/pipeline/<method>[-ocr]-s<seed>. */
  out: z.string().min(1).optional(),
  /** Synthetic data set (default seed 0, "small"). */
  synthetic: z.object({
    seed: z.number().int().min(0).default(0),
    size: z.enum(["tiny", "small", "medium"]).default("small"),
  }).strict().optional(),
  /** CAM classifier training steps (default: the train config's, 600). */
  camSteps: z.number().int().positive().optional(),
  /** AffinityNet training steps (default 300). */
  affinitySteps: z.number().int().positive().optional(),
  /** CAMs (and AffinityNet labels) for only the first N train images (default: all). */
  trainLimit: z.number().int().positive().optional(),
  /** Evaluate on only the first N val images (default: all). */
  evalLimit: z.number().int().positive().optional(),
  /** Background thresholds swept for the CAM mIoU. */
  sweep: z.string().min(1).default("0.05:0.6:0.05"),
  /**
   * Random-walk background exponents swept (one walk gives them all); the RW mIoU is the best,
   * as the CAM mIoU is at the best background threshold.
   */
  alpha: z.array(z.number().positive()).min(1).max(16).default([...RW_ALPHAS]),
  /** CAM inference scales (default 0.5, 1, 1.5, 2). */
  scales: z.array(z.number().positive()).min(1).optional(),
}).strict();

/** Input of {@link runPipeline}. */
export type PipelineInput = z.input<typeof PipelineSchema>;
/** Resolved pipeline options. */
export type PipelineOptions = z.infer<typeof PipelineSchema>;

/** The scores of one pipeline run. */
export interface PipelineResult {
  /** The second-stage method ("affinitynet"). */
  method: string;
  /** Whether the CAM classifier trained with OCR. */
  ocr: boolean;
  /** The run's seed (CAM and AffinityNet training). */
  seed: number;
  /** Run folder. */
  out: string;
  /** CAM pseudo-mask mIoU at the best swept background threshold (val). */
  camMiou: number;
  /** The background threshold of `camMiou`. */
  camBg: number;
  /** Unrestricted-CAM OC-error rate (val). */
  ocRate: number;
  /** Random-walk pseudo-mask mIoU (val) at the best swept alpha. */
  rwMiou: number;
  /** The alpha of `rwMiou`. */
  rwAlpha: number;
  /** Classification mAP of the CAM classifier (val). */
  map: number;
  /** Seconds per stage (of the call that ran it). */
  seconds: Record<string, number>;
}

/** A pipeline stage name. */
export type PipelineStage = typeof PIPELINE_STAGES[number];

type StageRecord = { seconds: number; result: Record<string, unknown> };

/** Hooks of {@link runPipeline}. */
export interface PipelineHooks {
  /** Reuse a GPU context (tests, scripts). */
  gpu?: GpuContext;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Stop after this stage (tests simulate an interruption). */
  stopAfter?: PipelineStage;
  /** Force the progress mode of the training stages (default: bar on a TTY). */
  tty?: boolean;
}

/** Runs (or resumes) the pipeline; see the module doc. */
export async function runPipeline(
  input: PipelineInput,
  hooks: PipelineHooks = {},
): Promise<PipelineResult | null> {
  const o = validate(PipelineSchema, input, "pipeline options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const out = o.out ?? join("runs", "pipeline", `${o.method}${o.ocr ? "-ocr" : ""}-s${o.seed}`);
  await Deno.mkdir(out, { recursive: true });
  const stagesPath = join(out, "stages.json");
  const stages: Record<string, StageRecord> = await exists(stagesPath)
    ? JSON.parse(await Deno.readTextFile(stagesPath))
    : {};
  await writeJsonAtomic(join(out, "pipeline.json"), o);
  const synthetic = o.synthetic ?? { seed: 0, size: "small" as const };
  const camRun = join(out, "cam");
  const camCkpt = join(camRun, "last.safetensors");
  const affRun = join(out, "affinity");
  const sub = (stage: string) => (l: string) => log(`[${stage}] ${l}`);
  const common = { gpu: hooks.gpu, tty: hooks.tty };

  const bodies: Record<
    PipelineStage,
    (log: (l: string) => void) => Promise<StageRecord["result"]>
  > = {
    "cam-train": async (log) => {
      const cfg: Partial<TrainConfig> = {
        dataset: "synthetic",
        synthetic,
        seed: o.seed,
        out: camRun,
        ...(o.camSteps ? { steps: o.camSteps } : {}),
        ocr: {
          enabled: o.ocr,
          ...(o.ocrLambda !== undefined ? { lambda: o.ocrLambda } : {}),
          ...(o.ocrStart !== undefined ? { start: o.ocrStart } : {}),
        } as TrainConfig["ocr"],
      };
      const resume = await exists(camCkpt);
      if (resume && await finished(camCkpt, join(camRun, "summary.json"))) {
        const s = JSON.parse(await Deno.readTextFile(join(camRun, "summary.json")));
        return { map: s.valMap };
      }
      const r = await train({ ...cfg, resume }, { ...common, log });
      return { map: r.valMap };
    },
    "cams-train": async (log) => {
      const r = await withProgress("cam", (onProgress) =>
        computeCams({
          ckpt: camCkpt,
          split: "train",
          out: join(out, "cam-train"),
          limit: o.trainLimit,
          ...(o.scales ? { scales: o.scales } : {}),
        }, { gpu: hooks.gpu, log, onProgress }), { write: log, tty: hooks.tty });
      return { images: r.images };
    },
    "cams-val": async (log) => {
      const r = await withProgress("cam", (onProgress) =>
        computeCams({
          ckpt: camCkpt,
          split: "val",
          out: join(out, "cam-val"),
          limit: o.evalLimit,
          ...(o.scales ? { scales: o.scales } : {}),
        }, { gpu: hooks.gpu, log, onProgress }), { write: log, tty: hooks.tty });
      return { images: r.images };
    },
    "eval-cam": async (log) => {
      const m = await withProgress("eval", (onProgress) =>
        evaluate({
          ckpt: camCkpt,
          split: "val",
          sweep: o.sweep,
          limit: o.evalLimit,
          out: join(out, "eval-cam"),
          ...(o.scales ? { scales: o.scales } : {}),
        }, { gpu: hooks.gpu, log, onProgress }), { write: log, tty: hooks.tty });
      return { miou: m.miou, oc_rate: m.oc_rate, bg: m.bg_threshold };
    },
    affinity: async (log) => {
      const ckpt = join(affRun, "last.safetensors");
      const resume = await exists(ckpt);
      if (resume && await finished(ckpt, join(affRun, "summary.json"))) {
        return {
          loss: JSON.parse(await Deno.readTextFile(join(affRun, "summary.json"))).finalLoss,
        };
      }
      const r = await trainAffinity({
        cams: join(out, "cam-train"),
        out: affRun,
        seed: o.seed,
        ...(o.affinitySteps ? { steps: o.affinitySteps } : {}),
        resume,
      }, { ...common, log });
      return { loss: r.finalLoss };
    },
    rw: async (log) => {
      const r = await withProgress("rw", (onProgress) =>
        computeRandomWalk({
          ckpt: affRun,
          cams: join(out, "cam-val"),
          out: join(out, "rw-val"),
          alpha: o.alpha,
        }, { gpu: hooks.gpu, log, onProgress }), { write: log, tty: hooks.tty });
      return { images: r.images, masks: r.masks };
    },
    "eval-rw": async (log) => {
      const dirs = stages.rw.result.masks as { alpha: number; dir: string }[] | undefined;
      if (!Array.isArray(dirs)) {
        throw new TrainError(`${stagesPath}: the rw stage lists no mask folders; rerun --from rw`);
      }
      const sweep: { alpha: number; miou: number | null }[] = [];
      for (const { alpha, dir } of dirs) {
        const m = await withProgress("eval", (onProgress) =>
          evaluate({
            masks: dir,
            dataset: "synthetic",
            synthetic,
            split: "val",
            limit: o.evalLimit,
            out: join(out, "eval-rw", `alpha-${alpha}`),
          }, { gpu: hooks.gpu, log, onProgress }), { write: log, tty: hooks.tty });
        sweep.push({ alpha, miou: m.miou });
      }
      const best = sweep.reduce((a, b) => ((b.miou ?? -1) > (a.miou ?? -1) ? b : a));
      log(`alpha sweep: ${sweep.map((s) => `${s.alpha}: ${fmt(s.miou ?? NaN)}`).join(", ")}`);
      return { miou: best.miou, alpha: best.alpha, sweep };
    },
  };

  if (o.from) {
    // Forget the records of the stage and every later one; training stages start over.
    for (const name of PIPELINE_STAGES.slice(PIPELINE_STAGES.indexOf(o.from))) {
      if (!stages[name]) continue;
      delete stages[name];
      if (name === "cam-train") await removeRun(camRun);
      if (name === "affinity") await removeRun(affRun);
    }
    await writeJsonAtomic(stagesPath, stages);
  }
  for (const name of PIPELINE_STAGES) {
    if (stages[name]) {
      log(`[${name}] done earlier (${stagesPath}), skipped`);
    } else {
      log(`[${name}] starting`);
      const t0 = performance.now();
      const result = await bodies[name](sub(name));
      stages[name] = { seconds: (performance.now() - t0) / 1000, result };
      await writeJsonAtomic(stagesPath, stages);
      log(`[${name}] done in ${stages[name].seconds.toFixed(1)}s`);
    }
    if (hooks.stopAfter === name) return null;
  }
  const num = (v: unknown) => (typeof v === "number" ? v : NaN);
  const result: PipelineResult = {
    method: o.method,
    ocr: o.ocr,
    seed: o.seed,
    out,
    camMiou: num(stages["eval-cam"].result.miou),
    camBg: num(stages["eval-cam"].result.bg),
    ocRate: num(stages["eval-cam"].result.oc_rate),
    rwMiou: num(stages["eval-rw"].result.miou),
    rwAlpha: num(stages["eval-rw"].result.alpha),
    map: num(stages["cam-train"].result.map),
    seconds: Object.fromEntries(PIPELINE_STAGES.map((s) => [s, stages[s].seconds])),
  };
  await writeJsonAtomic(join(out, "results.json"), result);
  log(
    `${o.method}${o.ocr ? " + OCR" : ""} seed ${o.seed}: CAM mIoU ${fmt(result.camMiou)} ` +
      `(bg ${result.camBg}), RW mIoU ${fmt(result.rwMiou)} (alpha ${result.rwAlpha}), OC-error ${
        fmt(result.ocRate)
      }, ` +
      `mAP ${fmt(result.map)} → ${join(out, "results.json")}`,
  );
  return result;
}

/** Removes a training run's folder so that its stage trains from scratch. */
async function removeRun(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/** Whether a training run reached its last step (summary.json written). */
async function finished(ckpt: string, summary: string): Promise<boolean> {
  if (!await exists(summary)) return false;
  const s = JSON.parse(await Deno.readTextFile(summary));
  return Number((await checkpointMetadata(ckpt)).step) >= s.steps;
}

function fmt(x: number, d = 3): string {
  return Number.isFinite(x) ? x.toFixed(d) : "n/a";
}

/** The comparison table (Markdown) of pipeline results. */
export function pipelineTable(results: PipelineResult[]): string {
  const lines = [
    "| method | seeds | CAM mIoU | RW mIoU | OC-error rate (unrestricted CAM) | mAP |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const ocr of [false, true]) {
    const rs = results.filter((r) => r.ocr === ocr);
    if (!rs.length) continue;
    const cell = (k: "camMiou" | "rwMiou" | "ocRate" | "map") => {
      const { mean, std } = meanStd(rs.map((r) => r[k]));
      return `${fmt(mean)} ± ${fmt(std)}`;
    };
    lines.push(
      `| ${rs[0].method}${ocr ? " + OCR" : ""} | ${rs.map((r) => r.seed).join(",")} | ` +
        `${cell("camMiou")} | ${cell("rwMiou")} | ${cell("ocRate")} | ${cell("map")} |`,
    );
  }
  return lines.join("\n");
}

/**
 * Runs the pipeline with and without OCR for each seed under `root` (`<method>[-ocr]-s<seed>`),
 * resumably, and writes `comparison.md` and `comparison.json` there. Returns the table.
 */
export async function runComparison(
  root: string,
  seeds: number[],
  base: Omit<PipelineInput, "ocr" | "seed" | "out">,
  hooks: PipelineHooks = {},
): Promise<{ table: string; results: PipelineResult[] }> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  const results: PipelineResult[] = [];
  for (const seed of seeds) {
    for (const ocr of [false, true]) {
      const name = `${base.method ?? "affinitynet"}${ocr ? "-ocr" : ""}-s${seed}`;
      const r = await runPipeline({ ...base, ocr, seed, out: join(root, name) }, {
        ...hooks,
        log: (l) => log(`${name} ${l}`),
      });
      if (r) results.push(r);
    }
  }
  const table = pipelineTable(results);
  await writeJsonAtomic(join(root, "comparison.json"), results);
  await writeTextAtomic(join(root, "comparison.md"), table + "\n");
  return { table, results };
}
