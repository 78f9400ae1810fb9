/**
 * What a WSSS method is to the workflows (src/workflows: `deno task pipeline`, `deno task
 * ablate`): a named, ordered list of stages over one run folder, an option schema, and the
 * scores its run reports. A method lives in its own folder, src/methods/<name>/, and exports
 * a {@link Method} from `stages.ts`; src/workflows/registry.ts lists the methods. The CAM
 * classifier's stages (src/methods/cam/stages.ts) are shared: a method starts its list with
 * them and adds its own (AffinityNet: affinity → rw → eval-rw).
 *
 * Adding a method (SEAM, MCTformer, a segmentation stage on pseudo masks):
 * 1. src/methods/<name>/stages.ts: its stages, each `{ name, about, outputs, run }` (plus
 *    `done` for work that can be found finished on disk, `restart` for a training stage);
 * 2. its option schema: `methodSchema(name, stageNames, { ...CAM_FIELDS, ...own fields })`;
 * 3. its `results` (which stage result fields become results.json scores), the comparison
 *    table's columns and the summary line;
 * 4. one line in src/workflows/registry.ts.
 * The runner records each finished stage in `<out>/stages.json`, skips recorded stages on a
 * rerun, and redoes a stage and the later ones with `--from STAGE`.
 * @module
 */
import { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../gpu/context.ts";

/** A stage's result: what stages.json records for it (JSON values). */
export type StageResult = Record<string, unknown>;

/** What stages.json holds per finished stage. */
export interface StageRecord {
  /** Seconds the stage took (in the call that ran it). */
  seconds: number;
  /** What the stage's `done` or `run` returned. */
  result: StageResult;
  /**
   * The process's peak resident memory during the stage, in MiB (src/io/memory.ts; it
   * includes the GPU pool on CPU adapters). Absent in records written before it existed.
   */
  peakRssMiB?: number;
}

/** What a stage's functions get from the runner. */
export interface StageContext<O> {
  /** The resolved options (the method's schema). */
  o: O;
  /** The run folder. */
  out: string;
  /** `<out>/stages.json`. */
  stagesPath: string;
  /** The records of the stages finished so far (earlier stages' results). */
  stages: Readonly<Record<string, StageRecord>>;
  /** Progress lines of this stage (the runner prefixes `[stage] `). */
  log: (line: string) => void;
  /** A GPU context to reuse (tests, scripts), else each stage makes its own. */
  gpu?: GpuContext;
  /** Force the progress mode (default: a bar on a TTY). */
  tty?: boolean;
}

/** One stage of a method. */
export interface Stage<O> {
  /** Its name in stages.json, `--from`, and the `[name]` log prefix. */
  name: string;
  /** One line: what it does. */
  about: string;
  /** What it writes, relative to the run folder. */
  outputs: readonly string[];
  /**
   * A stage that resumes from what it wrote (a training stage's checkpoint, a prediction's
   * masks): `--from` removes its outputs so that it starts from scratch (otherwise an
   * interrupted run resumes; other stages rewrite their files).
   */
  restart?: boolean;
  /**
   * Its result when its work is found finished on disk (e.g. a training run that reached its
   * last step but whose record is missing), else null: then {@link Stage.run} runs.
   */
  done?: (ctx: StageContext<O>) => Promise<StageResult | null>;
  /** Does the work (resuming where it can) and returns the result to record. */
  run: (ctx: StageContext<O>) => Promise<StageResult>;
}

/** A score of results.json: the field `field` of stage `stage`'s result. */
export interface ResultColumn<K extends string> {
  /** The score's key in results.json. */
  key: K;
  /** The stage whose result holds it. */
  stage: string;
  /** The field of that result (a non-number records NaN). */
  field: string;
}

/**
 * A WSSS method: see the module doc. `S`: its option schema (resolved options
 * `z.infer<S>`); `K`: its score names.
 */
export interface Method<
  S extends z.ZodType<MethodOptions> = z.ZodType<MethodOptions>,
  K extends string = string,
> {
  /** Its `--method` name (the `method` option). */
  name: string;
  /** One line: what it is. */
  about: string;
  /** Its options (strict; includes the runner's fields, see {@link methodSchema}). */
  schema: S;
  /** The stages, in order. */
  stages: readonly Stage<z.infer<S>>[];
  /** The scores of results.json, in order. */
  results: readonly ResultColumn<K>[];
  /** The comparison tables' score columns: a score and its header. */
  table: readonly { key: K; header: string }[];
  /** The scores part of the run's last log line. */
  summary: (scores: Record<K, number>) => string;
}

/** The options every method has (the runner's). */
export interface MethodOptions {
  /** The method's name. */
  method: string;
  /** Train the CAM classifier with OCR. */
  ocr: boolean;
  /** Seed of the training stages; part of the default run folder's name. */
  seed: number;
  /** Redo this stage and every later one. */
  from?: string;
  /** Run folder (default runs/pipeline/<method>[-ocr]-s<seed>). */
  out?: string;
}

/**
 * A method's strict option schema: `method` (its name, the default), then `fields` (which
 * must hold the CAM stages' `ocr`, `seed`, `from` and `out` where the method wants them in
 * pipeline.json; {@link runnerFields} gives them) in order.
 */
export function methodSchema<S extends z.ZodRawShape>(name: string, fields: S) {
  return z.object({ method: z.enum([name]).default(name), ...fields }).strict();
}

/**
 * The runner's fields other than `method`: `seed`, `from` (one of `stages`) and `out`, for
 * {@link methodSchema}.
 */
export function runnerFields(stages: readonly [string, ...string[]]) {
  return {
    seed: z.number().int().min(0).default(0),
    /**
     * Redo this stage and every later one (e.g. "rw" after changing `alpha`); a one-off: rerun
     * without it to resume an interrupted redo.
     */
    from: z.enum(stages).optional(),
    /** Run folder; default runs/pipeline/<method>[-ocr]-s<seed>. */
    out: z.string().min(1).optional(),
  };
}

/** A score for tables and log lines: 3 decimals, "n/a" when not finite. */
export function fmtScore(x: number, d = 3): string {
  return Number.isFinite(x) ? x.toFixed(d) : "n/a";
}
