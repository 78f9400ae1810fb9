/**
 * The OCR ablation (issue 6): a method's stage list (default `cam`, the CAM baseline: train the
 * classifier, score its CAM pseudo masks) run with and without OCR for several seeds on the
 * same data, each run a pipeline run folder (src/workflows/pipeline.ts: resumable, finished
 * stages skipped), and the method's scores tabulated as mean ± std per setting. For `cam`:
 * the CAM pseudo-mask mIoU at the best background threshold of a sweep, the unrestricted-CAM
 * OC-error rate and the classification mAP.
 * @module
 */
import { join } from "node:path";
import { writeJsonAtomic, writeTextAtomic } from "../io/atomic.ts";
import type { TrainConfigInput } from "../io/config.ts";
import { fmtScore } from "../methods/method.ts";
import { meanStd, type PipelineHooks, runPipeline, scoreTable } from "./pipeline.ts";
import { getMethod, type MethodName } from "./registry.ts";

export { meanStd };

/**
 * Training settings of the published ablation table (README), applied under a config file
 * and flags: batch 16 with scale 0.9–1.1 and colour jitter 0.2. Pinned here so that a change
 * of the main job's defaults does not silently change what `deno task ablate` reproduces.
 */
export const ABLATION_DEFAULTS = {
  batch: 16,
  augment: { scaleRange: [0.9, 1.1], flip: true, colorJitter: 0.2 },
} as const;

/** One ablation run. */
export interface AblationRun {
  setting: "baseline" | "ocr";
  seed: number;
  dir: string;
}

/** Scores of one run: the run and its method's scores (results.json). */
export interface AblationScore extends AblationRun {
  method: string;
  scores: Record<string, number>;
}

/** The runs of an ablation folder. */
export function ablationRuns(root: string, seeds: number[]): AblationRun[] {
  return (["baseline", "ocr"] as const).flatMap((setting) =>
    seeds.map((seed) => ({ setting, seed, dir: join(root, `${setting}-s${seed}`) }))
  );
}

/** Options of {@link runAblation}: the method and where its CAMs are evaluated. */
export interface AblationOptions {
  split: string;
  sweep: string;
  limit?: number;
  /** The method whose stages each run runs (default "cam"). */
  method?: MethodName;
}

/** Runs (or resumes) one run's stages; returns its scores. */
export async function runAblation(
  run: AblationRun,
  base: TrainConfigInput,
  opts: AblationOptions,
  log: (l: string) => void,
  hooks: Omit<PipelineHooks, "log" | "stopAfter"> = {},
): Promise<AblationScore> {
  const name = opts.method ?? "cam";
  const method = getMethod(name);
  const r = await runPipeline({
    method: name,
    ocr: run.setting === "ocr",
    seed: run.seed,
    out: run.dir,
    train: base,
    evalSplit: opts.split,
    sweep: opts.sweep,
    ...(opts.limit !== undefined ? { evalLimit: opts.limit } : {}),
  }, { ...hooks, log }) as Record<string, unknown> | null;
  if (!r) throw new Error(`ablation run ${run.dir} stopped early`);
  const scores = Object.fromEntries(method.results.map((c) => [c.key, r[c.key] as number]));
  const score = { ...run, method: name, scores };
  log(ablationLine(score));
  return score;
}

/** The ablation table (Markdown) from run scores (all of one method). */
export function ablationTable(scores: AblationScore[]): string {
  const method = getMethod(scores[0]?.method ?? "cam");
  return scoreTable(
    method,
    ["setting", "runs"],
    (["baseline", "ocr"] as const).map((setting) => ({
      label: setting === "ocr" ? "with OCR" : "without OCR",
      runs: scores.filter((x) => x.setting === setting),
    })),
  );
}

/** One run's scores as a log line. */
export function ablationLine(s: AblationScore): string {
  const method = getMethod(s.method);
  return `${s.setting} seed ${s.seed}: ${
    method.table.map((c) => `${c.header} ${fmtScore(s.scores[c.key])}`).join(", ")
  } (${s.dir})`;
}

/** Writes the table and raw scores beside the runs. */
export async function writeAblation(root: string, scores: AblationScore[]): Promise<string> {
  const table = ablationTable(scores);
  await writeJsonAtomic(join(root, "ablation.json"), scores);
  await writeTextAtomic(join(root, "ablation.md"), table + "\n");
  return table;
}
