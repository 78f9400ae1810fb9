/**
 * Config schemas (zod), validated at the boundary: JSON config files and CLI flags. Errors
 * name the offending field. Internals take the parsed, fully-defaulted objects.
 * @module
 */
import { z } from "npm:zod@4.6.7";
import { OCR_DEFAULTS } from "../losses/ocr.ts";

/**
 * Where the VOC reader takes an image's training tags from (docs/data.md#image-tags):
 * - `mask`: the classes in its segmentation mask (`SegmentationClassAug/<id>.png`, else
 *   `SegmentationClass/<id>.png`; the default: every object the mask shows is a tag);
 * - `xml`: the classes of all objects of `Annotations/<id>.xml`, difficult ones included (what
 *   psa's and SEAM's `cls_labels.npy` hold);
 * - `xml-nondifficult`: the classes of its objects not marked `<difficult>1`.
 */
export const VOC_TAG_MODES = ["mask", "xml", "xml-nondifficult"] as const;

/** One of {@link VOC_TAG_MODES}. */
export type VocTagMode = typeof VOC_TAG_MODES[number];

/** OCR loss knobs (docs/ocr.md#knobs), all with the documented defaults. */
export const OcrConfigSchema = z.object({
  enabled: z.boolean().default(false),
  lambda: z.number().min(0).default(OCR_DEFAULTS.lambda),
  tauAct: z.number().min(0).max(1).default(OCR_DEFAULTS.tauAct),
  alpha: z.number().min(0).max(1).default(OCR_DEFAULTS.alpha),
  tauRel: z.number().min(0).max(1).default(OCR_DEFAULTS.tauRel),
  temperature: z.number().positive().default(OCR_DEFAULTS.temperature),
  margin: z.number().min(0).default(OCR_DEFAULTS.margin),
  grad: z.enum(["both", "oc_only"]).default(OCR_DEFAULTS.grad),
  norm: z.enum(["all", "oc"]).default(OCR_DEFAULTS.norm),
  start: z.number().min(0).max(1).default(OCR_DEFAULTS.start),
}).strict();

/**
 * The built-in synthetic data set: generator seed, size and version
 * (docs/data.md#the-built-in-synthetic-dataset); v1 reproduces runs made before v2.
 */
export const SyntheticSchema = z.object({
  seed: z.number().int().min(0).default(0),
  size: z.enum(["tiny", "small", "medium"]).default("small"),
  variant: z.enum(["v1", "v2"]).default("v2"),
}).strict();

/** A resolved synthetic data set choice. */
export type SyntheticChoice = TrainConfig["synthetic"];

/** Data augmentation used for training (psa/SEAM style). */
export const AugmentSchema = z.object({
  scaleRange: z.tuple([z.number().positive(), z.number().positive()]).default([0.9, 1.1]),
  flip: z.boolean().default(true),
  colorJitter: z.number().min(0).max(1).default(0.2),
}).strict();

/** Training configuration. */
export const TrainConfigSchema = z.object({
  dataset: z.enum(["synthetic", "voc", "coco"]).default("synthetic"),
  data: z.string().optional(),
  split: z.string().default("train"),
  valSplit: z.string().default("val"),
  /**
   * VOC (and the synthetic data): where the image tags come from, `mask` (the classes in the
   * segmentation mask), `xml` or `xml-nondifficult` (docs/data.md#image-tags); COCO ignores it.
   */
  tags: z.enum(VOC_TAG_MODES).default("mask"),
  synthetic: SyntheticSchema.default(SyntheticSchema.parse({})),
  model: z.enum(["tiny", "resnet18", "resnet34", "resnet50", "resnet101"]).default("tiny"),
  weights: z.string().optional(),
  outputStride: z.union([z.literal(8), z.literal(16)]).default(16),
  steps: z.number().int().positive().default(1200),
  batch: z.number().int().positive().default(16),
  size: z.number().int().min(16).default(128),
  seed: z.number().int().default(0),
  /** AdamW trains the from-scratch `tiny` best on the synthetic data; psa uses SGD. */
  optimizer: z.enum(["sgd", "adamw"]).default("adamw"),
  /** Base learning rate; default 1e-3 for AdamW, 0.05 for SGD (see {@link defaultLr}). */
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(0.9),
  weightDecay: z.number().min(0).default(1e-4),
  headLrMult: z.number().positive().default(10),
  logEvery: z.number().int().positive().default(10),
  ckptEvery: z.number().int().positive().default(100),
  prefetch: z.number().int().positive().default(4),
  augment: AugmentSchema.default({ scaleRange: [0.9, 1.1], flip: true, colorJitter: 0.2 }),
  ocr: OcrConfigSchema.default(OcrConfigSchema.parse({})),
  /** Run folder; default runs/<model>[-ocr]-<UTC timestamp>. */
  out: z.string().optional(),
}).strict();

/**
 * The default base learning rate of `deno task mctformer` (AdamW): what trained `vit-tiny` from
 * scratch best on the built-in data (300 steps at batch 16: val mAP 0.181 at 5e-4, 0.255 at
 * 1e-3, 0.176 at 2e-3; the default 1200 steps at 1e-3: 0.452; docs/mctformer.md#training).
 * MCTformer's own rule, 5e-4 · batch / 512 for fine-tuning DeiT-S from ImageNet weights, gives
 * 1.6e-5 at batch 16: pass `lr` for that.
 */
export const MCTFORMER_LR = 1e-3;

/** The MCTformer-V2 configurations of `deno task mctformer` (src/models/vit.ts `VIT_ARCHS`). */
export const MCTFORMER_ARCHS = ["vit-tiny", "deit-s"] as const;

/** MCTformer's patch size: the training crop must be a multiple of it. */
export const MCTFORMER_PATCH = 16;

/**
 * MCTformer-V2 training (`deno task mctformer`, src/methods/mctformer/train.ts): the CAM
 * classifier's data, batch, augmentation, logging and OCR fields ({@link TrainConfigSchema})
 * with MCTformer's model, optimizer and schedule (docs/mctformer.md#training):
 * - `model`: `vit-tiny` (default, for the built-in data) or `deit-s` (`weights`: a DeiT-S
 *   safetensors file, converted as MCTformer's main.py does);
 * - `size`: the training crop, a multiple of the patch size 16; default 128 for `vit-tiny`,
 *   224 for `deit-s` (the position grid the model is built for);
 * - AdamW with weight decay 0.05 and MCTformer's cosine schedule with a linear warm-up
 *   (`warmup`: the fraction of the steps, 5 of 60 epochs), the head at the backbone's rate
 *   (`headLrMult` 1); `lr` default {@link MCTFORMER_LR};
 * - `dropPath`: timm's drop_path_rate (MCTformer: 0.1).
 */
export const MctformerConfigSchema = TrainConfigSchema.omit({
  model: true,
  outputStride: true,
  size: true,
}).extend({
  /** Marks the run folder as MCTformer's (CAM inference reads it). */
  method: z.literal("mctformer").default("mctformer"),
  model: z.enum(MCTFORMER_ARCHS).default("vit-tiny"),
  /** Training crop side (a multiple of 16); default 128 for vit-tiny, 224 for deit-s. */
  size: z.number().int().min(MCTFORMER_PATCH).multipleOf(MCTFORMER_PATCH, {
    error: `must be a multiple of the patch size ${MCTFORMER_PATCH}`,
  }).optional(),
  /** AdamW (MCTformer's) or SGD with momentum. */
  optimizer: z.enum(["sgd", "adamw"]).default("adamw"),
  /** Base learning rate; default {@link MCTFORMER_LR} for AdamW, 0.05 for SGD. */
  lr: z.number().positive().optional(),
  /** MCTformer: 0.05. */
  weightDecay: z.number().min(0).default(0.05),
  /** The conv head's learning-rate multiplier (MCTformer: 1, one rate for all). */
  headLrMult: z.number().positive().default(1),
  /** `cosine` with a linear warm-up (MCTformer's) or psa's `poly`. */
  schedule: z.enum(["cosine", "poly"]).default("cosine"),
  /** Warm-up steps as a fraction of `steps` (cosine only; MCTformer: 5 of 60 epochs). */
  warmup: z.number().min(0).lt(1).default(5 / 60),
  /** timm's drop_path_rate: the last block's stochastic-depth rate (MCTformer: 0.1). */
  dropPath: z.number().min(0).lt(1).default(0.1),
}).strict();

/** A resolved MCTformer training config (`size` and `lr` filled in by the trainer). */
export type MctformerConfig = z.infer<typeof MctformerConfigSchema> & { size: number; lr: number };

/** AffinityNet training (psa's second stage; `deno task affinity`). */
export const AffinityConfigSchema = z.object({
  /** CAM folder written by `deno task cam` (holds cam.json and cams/<id>.safetensors). */
  cams: z.string().min(1),
  /** Backbone initialisation (a CAM or ImageNet checkpoint); default: the CAMs' checkpoint. */
  init: z.string().min(1).optional(),
  /** Start from random weights instead of `init`. */
  scratch: z.boolean().default(false),
  /** Backbone; default: the CAM run's. */
  model: z.enum(["tiny", "resnet18", "resnet34", "resnet50", "resnet101"]).optional(),
  steps: z.number().int().positive().default(300),
  batch: z.number().int().positive().default(8),
  /** Crop side; default: the CAM run's training size. */
  size: z.number().int().min(16).optional(),
  seed: z.number().int().min(0).default(0),
  optimizer: z.enum(["sgd", "adamw"]).default("adamw"),
  /** Base learning rate; default 1e-3 for AdamW, 0.05 for SGD. */
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(0.9),
  weightDecay: z.number().min(0).default(1e-4),
  headLrMult: z.number().positive().default(10),
  /** psa's low background exponent: its confident foreground. */
  loAlpha: z.number().positive().default(4),
  /** psa's high background exponent: its confident background. */
  hiAlpha: z.number().positive().default(24),
  /**
   * Refine the label maps with the dense CRF as psa does (its `crf_inference` settings); else
   * the CRF-free rule.
   */
  crf: z.boolean().default(false),
  /** Pair radius on the stride-8 feature grid (psa: 5). */
  radius: z.number().int().min(2).max(16).default(5),
  logEvery: z.number().int().positive().default(10),
  ckptEvery: z.number().int().positive().default(100),
  prefetch: z.number().int().positive().default(4),
  augment: AugmentSchema.default({ scaleRange: [0.9, 1.1], flip: true, colorJitter: 0.2 }),
  /** Run folder; default <cams>/../affinity. */
  out: z.string().optional(),
}).strict();

/** Backbones of the segmenter (the CAM classifier's plus ResNet-101). */
export const SEG_ARCHS = ["tiny", "resnet18", "resnet34", "resnet50", "resnet101"] as const;

/**
 * The final stage's segmenter (`deno task seg`): DeepLab trained on pseudo masks or ground
 * truth (docs/segmentation.md). Data fields as in {@link TrainConfigSchema}.
 */
export const SegConfigSchema = z.object({
  /** A folder of `<id>.png` pseudo masks of the train split, or `gt` (the ground truth). */
  masks: z.string().min(1),
  dataset: z.enum(["synthetic", "voc", "coco"]).default("synthetic"),
  data: z.string().optional(),
  split: z.string().default("train"),
  valSplit: z.string().default("val"),
  tags: z.enum(VOC_TAG_MODES).default("mask"),
  synthetic: SyntheticSchema.default(SyntheticSchema.parse({})),
  /** Train on the first `limit` images of the split only (every one needs a mask). */
  limit: z.number().int().positive().optional(),
  model: z.enum(SEG_ARCHS).default("tiny"),
  /** DeepLab-v2's ASPP (default) or DeepLab-LargeFOV (v1). */
  head: z.enum(["aspp", "largefov"]).default("aspp"),
  outputStride: z.union([z.literal(8), z.literal(16)]).default(8),
  /** ImageNet weights with torchvision names (safetensors) for the backbone. */
  weights: z.string().min(1).optional(),
  /** A checkpoint whose backbone starts the segmenter (e.g. the CAM classifier's). */
  init: z.string().min(1).optional(),
  steps: z.number().int().positive().default(600),
  batch: z.number().int().positive().default(8),
  /** Crop side. */
  size: z.number().int().min(16).default(128),
  seed: z.number().int().min(0).default(0),
  /**
   * AdamW trains `tiny` on the built-in data (measured: val mIoU 0.274 after 200 steps on the
   * ground truth, where SGD at lr 0.05 stays at 0.037); DeepLab uses SGD (lr 2.5e-4 from
   * ImageNet weights): pass `optimizer: "sgd"` and `lr` for the ResNets.
   */
  optimizer: z.enum(["sgd", "adamw"]).default("adamw"),
  /** Base learning rate; default 1e-3 for AdamW, 0.05 for SGD. */
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(0.9),
  weightDecay: z.number().min(0).default(5e-4),
  /** The head's learning-rate multiplier (DeepLab: 10). */
  headLrMult: z.number().positive().default(10),
  logEvery: z.number().int().positive().default(10),
  ckptEvery: z.number().int().positive().default(100),
  prefetch: z.number().int().positive().default(4),
  /** DeepLab's scale augmentation 0.5–1.5, flip, no colour jitter. */
  augment: AugmentSchema.default({ scaleRange: [0.5, 1.5], flip: true, colorJitter: 0 }),
  /** Run folder; default runs/seg-<model>-<UTC timestamp>. */
  out: z.string().optional(),
}).strict();

/** A resolved segmenter training config. */
export type SegConfig = z.infer<typeof SegConfigSchema>;

/** A resolved AffinityNet training config. */
export type AffinityConfig = z.infer<typeof AffinityConfigSchema>;

/** The default base learning rate of an optimizer. */
export function defaultLr(optimizer: "sgd" | "adamw"): number {
  return optimizer === "sgd" ? 0.05 : 1e-3;
}

/** A resolved training config. */
export type TrainConfig = z.infer<typeof TrainConfigSchema>;
/** A training config as given (every field optional, nested defaults filled on validation). */
export type TrainConfigInput =
  & Partial<Omit<TrainConfig, "synthetic" | "ocr" | "augment">>
  & {
    synthetic?: Partial<TrainConfig["synthetic"]>;
    ocr?: Partial<TrainConfig["ocr"]>;
    augment?: Partial<TrainConfig["augment"]>;
  };
/** Resolved OCR options. */
export type OcrConfig = z.infer<typeof OcrConfigSchema>;

/** A config or flag error; the message names the field. */
export class ConfigError extends Error {
  /** Always "ConfigError". */
  override name = "ConfigError";
}

/** Formats zod issues as "field.path: message" lines. */
export function formatIssues(err: z.ZodError, source: string): string {
  return err.issues.map((i) => {
    const path = i.path.length ? i.path.join(".") : "(root)";
    return `${source}: ${path}: ${i.message}`;
  }).join("\n");
}

/** Validates a value against a schema, throwing a ConfigError naming each bad field. */
export function validate<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new ConfigError(formatIssues(r.error, source));
  return r.data;
}

/** Reads a JSON config file (errors name the file). */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
}

/** Deep-merges plain objects (b wins); arrays and scalars are replaced. */
export function deepMerge(a: unknown, b: unknown): unknown {
  if (
    typeof a === "object" && a !== null && !Array.isArray(a) &&
    typeof b === "object" && b !== null && !Array.isArray(b)
  ) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) {
      if (v !== undefined) out[k] = k in out ? deepMerge(out[k], v) : v;
    }
    return out;
  }
  return b === undefined ? a : b;
}

/**
 * Resolves a training config: defaults ← config file ← overrides (CLI flags), validated as a
 * whole so errors name the field whichever layer it came from.
 */
export async function resolveTrainConfig(
  configPath: string | undefined,
  overrides: Record<string, unknown>,
): Promise<TrainConfig> {
  const file = configPath ? await readJsonFile(configPath) : {};
  if (configPath) validate(TrainConfigSchema.partial(), file, configPath);
  return validate(TrainConfigSchema, deepMerge(file, overrides), configPath ?? "config");
}

/** A stable short hash of a JSON-serialisable value (SHA-256, hex, 16 chars). */
export async function hashJson(value: unknown): Promise<string> {
  const bytes = new TextEncoder().encode(stableStringify(value));
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** JSON with object keys sorted (stable across key orders). */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const keys = Object.keys(v).sort();
    return `{${
      keys.filter((k) => (v as Record<string, unknown>)[k] !== undefined)
        .map((k) => `${JSON.stringify(k)}:${stableStringify((v as Record<string, unknown>)[k])}`)
        .join(",")
    }}`;
  }
  return JSON.stringify(v);
}
