/**
 * Option schemas (zod) of CAM extraction and evaluation, validated at the boundary: the task
 * flags and the script API ({@link computeCams}, {@link evaluate}) go through the same checks,
 * so a bad value is an error naming the field. Also the flags both tasks share and their
 * conversion to options (no validation there: the schemas do it).
 * @module
 */
import { z } from "npm:zod@4.6.7";
import { ConfigError, SyntheticSchema } from "../../io/config.ts";
import { numFlag } from "../../io/cli.ts";
import { Progress } from "../../io/progress.ts";
import { DEFAULT_SCALES } from "../../cam/image.ts";

/** Errors of CAM extraction/evaluation inputs; the message names the file or image. */
export class CamError extends Error {
  /** Always "CamError". */
  override name = "CamError";
}

/**
 * For the tasks: input errors (CamError, RangeError from validation, plain Errors such as a
 * missing prediction file) become a ConfigError, which the CLI prints as one line without a
 * stack; anything else (a bug) is returned unchanged.
 */
export function asUserError(e: unknown): unknown {
  if (e instanceof CamError || e instanceof RangeError) return new ConfigError(e.message);
  if (e instanceof Error && e.constructor === Error) return new ConfigError(e.message);
  return e;
}

/**
 * Reads and parses a JSON file of a run or CAM folder; a missing file is a CamError with the
 * message `missing`, an unreadable or malformed one a CamError naming the file.
 */
export async function readCamJson(path: string, missing: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CamError(missing);
    throw new CamError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CamError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
}

export { DEFAULT_SCALES };

const scales = z.array(z.number().positive().max(8)).min(1).max(16)
  .refine((s) => new Set(s).size === s.length, "scales must not repeat");

/**
 * Fields shared by the inference tasks (CAM extraction, CAM evaluation, the segmenter's
 * prediction): checkpoint, data, scales and flip, limit, output folder.
 */
export const INFERENCE_FIELDS = {
  /** Checkpoint (`runs/X/last.safetensors`) or run folder holding `last.safetensors`. */
  ckpt: z.string().min(1),
  /** Dataset root (VOC: VOC2012 or above; COCO: the folder holding `annotations/`). */
  data: z.string().min(1).optional(),
  /** Dataset kind; default: the run's (config.json), or `voc` when only `data` is given. */
  dataset: z.enum(["synthetic", "voc", "coco"]).optional(),
  /** Synthetic data set (default: the run's, else seed 0, "small"). */
  synthetic: SyntheticSchema.optional(),
  /** Inference scales relative to the image size. */
  scales: scales.default([...DEFAULT_SCALES]),
  /** Add the horizontally flipped image at every scale. */
  flip: z.boolean().default(true),
  /** Only the first `limit` images of the split. */
  limit: z.number().int().positive().optional(),
  /** Output folder. */
  out: z.string().min(1).optional(),
};

/** Options of {@link computeCams} (`deno task cam`). */
export const CamRunSchema = z.object({
  ...INFERENCE_FIELDS,
  split: z.string().min(1).default("train"),
  /** Background threshold of the pseudo masks (normalised CAM scores are in [0, 1]). */
  bg: z.number().min(0).max(1).default(0.15),
  /** Write the per-image CAM arrays (safetensors) besides the pseudo masks. */
  saveCams: z.boolean().default(true),
}).strict();

/** Resolved options of {@link computeCams}. */
export type CamRunOptions = z.infer<typeof CamRunSchema>;
/** Input of {@link computeCams}: defaults filled in by the schema. */
export type CamRunInput = z.input<typeof CamRunSchema>;

/** Options of {@link evaluate} (`deno task eval`). */
export const EvaluateSchema = z.object({
  ...INFERENCE_FIELDS,
  ckpt: INFERENCE_FIELDS.ckpt.optional(),
  /** A folder of predicted masks `<id>.png` to score instead of a checkpoint's CAMs. */
  masks: z.string().min(1).optional(),
  split: z.string().min(1).default("val"),
  /** One background threshold (default 0.15 unless `sweep` is given). */
  bg: z.number().min(0).max(1).optional(),
  /** Thresholds to sweep: "start:stop:step", "a,b,c" or a list; metrics at the best one. */
  sweep: z.union([z.string().min(1), z.array(z.number().min(0).max(1)).min(1)]).optional(),
  /** Activation ratio of the unrestricted-CAM OC rate (src/eval/cam.ts). */
  tau: z.number().min(0).max(1).default(0.3),
  /** Example rows in report.html. */
  examples: z.number().int().min(0).max(64).default(6),
}).strict()
  .refine((o) => (o.ckpt === undefined) !== (o.masks === undefined), {
    message: "give exactly one of ckpt (a checkpoint's CAMs) and masks (a mask folder)",
    path: ["ckpt"],
  })
  .refine((o) => o.bg === undefined || o.sweep === undefined, {
    message: "give either bg (one threshold) or sweep (several), not both",
    path: ["sweep"],
  })
  .refine((o) => o.masks === undefined || (o.bg === undefined && o.sweep === undefined), {
    message: "bg and sweep apply to CAMs, not to a mask folder",
    path: ["masks"],
  });

/** Resolved options of {@link evaluate}. */
export type EvaluateOptions = z.infer<typeof EvaluateSchema>;
/** Input of {@link evaluate}: defaults filled in by the schema. */
export type EvaluateInput = z.input<typeof EvaluateSchema>;

/** Parses a comma-separated list of scales ("0.5,1,1.5,2"); errors name the flag. */
export function parseScales(spec: string, flag = "--scales"): number[] {
  const parts = spec.split(",").map((p) => p.trim());
  const out = parts.map(Number);
  const bad = parts.findIndex((p, i) => p === "" || !Number.isFinite(out[i]));
  if (bad >= 0) throw new ConfigError(`${flag}: "${parts[bad]}" in "${spec}" is not a number`);
  return out;
}

/**
 * The `synthetic` option from `--synthetic-size` / `--synthetic-seed` / `--synthetic-variant`
 * (undefined when none is given; the schema checks the values).
 */
export function syntheticFlags(
  size: string | undefined,
  seed: string | undefined,
  variant?: string,
): { size?: "tiny" | "small" | "medium"; seed?: number; variant?: "v1" | "v2" } | undefined {
  if (size === undefined && seed === undefined && variant === undefined) return undefined;
  const n = seed === undefined ? undefined : Number(seed);
  if (seed !== undefined && (seed.trim() === "" || !Number.isFinite(n))) {
    throw new ConfigError(`--synthetic-seed: expected a number, got "${seed}"`);
  }
  return {
    size: size as "tiny" | "small" | "medium" | undefined,
    seed: n,
    variant: variant as "v1" | "v2" | undefined,
  };
}

/** `node:util` parseArgs options choosing the built-in synthetic data set (see {@link syntheticFromFlags}). */
export const SYNTHETIC_FLAGS = {
  "synthetic-size": { type: "string" },
  "synthetic-seed": { type: "string" },
  "synthetic-variant": { type: "string" },
} as const;

/** The `synthetic` option from parsed {@link SYNTHETIC_FLAGS} values (undefined when none is given). */
export function syntheticFromFlags(
  f: Record<string, string | boolean | undefined>,
): ReturnType<typeof syntheticFlags> {
  const str = (k: string) => (typeof f[k] === "string" ? f[k] as string : undefined);
  return syntheticFlags(str("synthetic-size"), str("synthetic-seed"), str("synthetic-variant"));
}

/** `node:util` parseArgs options shared by `deno task cam` and `deno task eval`. */
export const COMMON_FLAGS = {
  ckpt: { type: "string" },
  data: { type: "string" },
  dataset: { type: "string" },
  ...SYNTHETIC_FLAGS,
  split: { type: "string" },
  bg: { type: "string" },
  scales: { type: "string" },
  flip: { type: "boolean" },
  "no-flip": { type: "boolean" },
  limit: { type: "string" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Usage lines of {@link COMMON_FLAGS}. */
export const COMMON_USAGE =
  `  [--data DIR] [--dataset synthetic|voc|coco] [--synthetic-size tiny|small|medium]
  [--synthetic-seed S] [--synthetic-variant v2|v1] [--split NAME] [--scales 0.5,1,1.5,2] [--flip | --no-flip] [--limit N]`;

/** The options both tasks share, from parsed {@link COMMON_FLAGS} values. */
export function commonFlagInput(f: Record<string, string | boolean | undefined>) {
  const str = (k: string) => f[k] as string | undefined;
  if (f.flip && f["no-flip"]) throw new ConfigError("give --flip or --no-flip, not both");
  const scales = str("scales");
  return {
    ckpt: str("ckpt"),
    data: str("data"),
    dataset: str("dataset") as "synthetic" | "voc" | "coco" | undefined,
    synthetic: syntheticFromFlags(f),
    split: str("split"),
    bg: numFlag("bg", str("bg")),
    scales: scales === undefined ? undefined : parseScales(scales),
    flip: f["no-flip"] ? false : undefined,
    limit: numFlag("limit", str("limit")),
    out: str("out"),
  };
}

/**
 * Runs a task body with a progress bar (created at the first report; `opts` as
 * {@link Progress}'s: line sink and TTY mode) and turns input errors into one-line errors
 * ({@link asUserError}).
 */
export async function withProgress<T>(
  label: string,
  body: (onProgress: (done: number, total: number) => void) => Promise<T>,
  opts: { write?: (s: string) => void; tty?: boolean } = {},
): Promise<T> {
  let bar: Progress | null = null;
  const onProgress = (done: number, total: number) => {
    bar ??= new Progress(label, total, opts);
    bar.update(done, { "img/s": (done / Math.max(bar.elapsed, 1e-3)).toFixed(2) });
  };
  try {
    return await body(onProgress);
  } catch (e) {
    throw asUserError(e);
  } finally {
    (bar as Progress | null)?.done();
  }
}
