/**
 * The CAM classifier's stages, shared by every method (src/methods/method.ts), and the `cam`
 * method (the CAM baseline: train the classifier, score its CAM pseudo masks):
 *
 * | stage        | what it does                                                              |
 * | ------------ | ------------------------------------------------------------------------- |
 * | `cam-train`  | `deno task train` into `<out>/cam` (`ocr` adds OCR)                       |
 * | `cams-train` | `deno task cam` on the train split into `<out>/cam-train`                 |
 * | `cams-val`   | the same on the val split into `<out>/cam-val`                            |
 * | `eval-cam`   | `deno task eval` of the CAMs on val into `<out>/eval-cam`: mIoU at the    |
 * |              | best background threshold of the sweep, OC-error rate                     |
 *
 * Their options ({@link CAM_FIELDS}) are part of every method's schema.
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { exists } from "../../io/atomic.ts";
import {
  type SyntheticChoice,
  SyntheticSchema,
  type TrainConfig,
  TrainConfigSchema,
} from "../../io/config.ts";
import { checkpointMetadata, train } from "../../train/train.ts";
import { computeCams } from "./extract.ts";
import { evaluate } from "./evaluate.ts";
import { withProgress } from "./options.ts";
import {
  fmtScore,
  type Method,
  methodSchema,
  runnerFields,
  type Stage,
  type StageContext,
} from "../method.ts";

/** The options of the CAM stages (zod fields, for a method's {@link methodSchema}). */
export const CAM_FIELDS = {
  /** Train the CAM classifier with OCR. */
  ocr: z.boolean().default(false),
  /** OCR weight and start (fraction of the CAM training); default: the train config's. */
  ocrLambda: z.number().min(0).optional(),
  ocrStart: z.number().min(0).max(1).optional(),
  /** Synthetic data set (default seed 0, "small"). */
  synthetic: SyntheticSchema.optional(),
  /** CAM classifier training steps (default: the train config's). */
  camSteps: z.number().int().positive().optional(),
  /** CAMs (and AffinityNet labels) for only the first N train images (default: all). */
  trainLimit: z.number().int().positive().optional(),
  /** Evaluate on only the first N val images (default: all). */
  evalLimit: z.number().int().positive().optional(),
  /**
   * The split whose CAMs `cams-train` computes: the CAMs AffinityNet learns from, the train
   * random walk walks and the segmenter's pseudo masks come from (default "train"; psa uses
   * VOC's train_aug). The train-split scores (eval-cam-train, eval-rw-train) stay on "train",
   * the peers' protocol, so this split must hold the train images.
   */
  camsSplit: z.string().min(1).optional(),
  /** Background thresholds swept for the CAM mIoU. */
  sweep: z.string().min(1).default("0.05:0.6:0.05"),
  /** CAM inference scales (default 0.5, 1, 1.5, 2). */
  scales: z.array(z.number().positive()).min(1).optional(),
  /**
   * The CAM classifier's training config (a resolved `deno task train` config: dataset, model,
   * batch, augmentation...; `ocr`, `seed`, `camSteps` and the output folder still apply).
   * Default: the built-in synthetic data (`synthetic`) with the train defaults.
   */
  train: z.record(z.string(), z.unknown()).optional(),
  /** The split the CAMs are evaluated on (default "val"). */
  evalSplit: z.string().min(1).optional(),
};

/** The resolved CAM stage options. */
export interface CamStageOptions {
  seed: number;
  ocr: boolean;
  ocrLambda?: number;
  ocrStart?: number;
  synthetic?: Partial<SyntheticChoice>;
  camSteps?: number;
  trainLimit?: number;
  evalLimit?: number;
  camsSplit?: string;
  sweep: string;
  scales?: number[];
  train?: Record<string, unknown>;
  evalSplit?: string;
}

/** The folders of the CAM stages in a run folder. */
export function camPaths(out: string) {
  return {
    /** The CAM classifier's training run. */
    run: join(out, "cam"),
    /** Its checkpoint. */
    ckpt: join(out, "cam", "last.safetensors"),
    /** CAM folders of the train and val splits. */
    train: join(out, "cam-train"),
    val: join(out, "cam-val"),
    /** CAM evaluation (metrics.json, report.html). */
    eval: join(out, "eval-cam"),
  };
}

/** Whether a training run reached its last step (summary.json written). */
export async function trainingFinished(ckpt: string, summary: string): Promise<boolean> {
  if (!await exists(summary)) return false;
  const s = JSON.parse(await Deno.readTextFile(summary));
  return Number((await checkpointMetadata(ckpt)).step) >= s.steps;
}

/**
 * The dataset the CAM classifier trains on, as `evaluate` options (for scoring a mask folder
 * of the same data): the `train` config's, else the built-in synthetic data.
 */
export function camData(o: CamStageOptions): {
  dataset: "synthetic" | "voc" | "coco";
  data?: string;
  synthetic?: { seed: number; size: "tiny" | "small" | "medium" };
} {
  if (o.train) {
    const t = o.train as Partial<TrainConfig>;
    return {
      dataset: t.dataset ?? "synthetic",
      ...(t.data !== undefined ? { data: t.data } : {}),
      ...(t.synthetic !== undefined ? { synthetic: t.synthetic } : {}),
    };
  }
  return { dataset: "synthetic", synthetic: SyntheticSchema.parse(o.synthetic ?? {}) };
}

/** The CAM classifier's training config of a run. */
export function camTrainConfig(o: CamStageOptions, runDir: string): Partial<TrainConfig> {
  const ocr = {
    ...(o.ocrLambda !== undefined ? { lambda: o.ocrLambda } : {}),
    ...(o.ocrStart !== undefined ? { start: o.ocrStart } : {}),
  };
  if (o.train) {
    const base = o.train as Partial<TrainConfig>;
    return {
      ...base,
      seed: o.seed,
      out: runDir,
      ...(o.camSteps ? { steps: o.camSteps } : {}),
      ocr: { ...base.ocr, enabled: o.ocr, ...ocr } as TrainConfig["ocr"],
    };
  }
  return {
    dataset: "synthetic",
    synthetic: SyntheticSchema.parse(o.synthetic ?? {}),
    seed: o.seed,
    out: runDir,
    ...(o.camSteps ? { steps: o.camSteps } : {}),
    ocr: { enabled: o.ocr, ...ocr } as TrainConfig["ocr"],
  };
}

/** `cam-train`: the CAM classifier (resumes an interrupted run). */
export const camTrainStage: Stage<CamStageOptions> = {
  name: "cam-train",
  about: `deno task train (${TrainConfigSchema.parse({}).steps} steps by default; --ocr adds OCR)`,
  outputs: ["cam"],
  restart: true,
  done: async ({ out }) => {
    const p = camPaths(out);
    if (!await exists(p.ckpt) || !await trainingFinished(p.ckpt, join(p.run, "summary.json"))) {
      return null;
    }
    const s = JSON.parse(await Deno.readTextFile(join(p.run, "summary.json")));
    return { map: s.valMap };
  },
  run: async ({ o, out, log, gpu, tty }) => {
    const p = camPaths(out);
    const resume = await exists(p.ckpt);
    const r = await train({ ...camTrainConfig(o, p.run), resume }, { gpu, tty, log });
    return { map: r.valMap };
  },
};

/** A `deno task cam` stage on one split. */
function camsStage(split: "train" | "val"): Stage<CamStageOptions> {
  return {
    name: `cams-${split}`,
    about: split === "train"
      ? "deno task cam on the train split (or camsSplit): normalised tagged CAMs, scales " +
        "0.5/1/1.5/2 + flip"
      : "the same on the val split",
    outputs: [`cam-${split}`],
    run: async ({ o, out, log, gpu, tty }: StageContext<CamStageOptions>) => {
      const p = camPaths(out);
      const r = await withProgress("cam", (onProgress) =>
        computeCams({
          ckpt: p.ckpt,
          split: split === "train" ? o.camsSplit ?? "train" : o.evalSplit ?? "val",
          out: split === "train" ? p.train : p.val,
          limit: split === "train" ? o.trainLimit : o.evalLimit,
          ...(o.scales ? { scales: o.scales } : {}),
        }, { gpu, log, onProgress }), { write: log, tty });
      return { images: r.images };
    },
  };
}

/** `cams-train`: the CAM folder of the train split. */
export const camsTrainStage: Stage<CamStageOptions> = camsStage("train");
/** `cams-val`: the CAM folder of the val split. */
export const camsValStage: Stage<CamStageOptions> = camsStage("val");

/**
 * A CAM evaluation stage: pseudo-mask mIoU (best of the sweep) and OC-error rate on the val
 * split (`eval-cam`, into `<out>/eval-cam`) or on the train split (`eval-cam-train`, the split
 * psa, SEAM and MCTformer report their seeds and pseudo masks on).
 */
function evalCamStageFor(split: "train" | "val"): Stage<CamStageOptions> {
  const name = split === "val" ? "eval-cam" : "eval-cam-train";
  return {
    name,
    about: `deno task eval of the CAMs on ${split}: mIoU at the best background threshold, ` +
      "OC-error rate",
    outputs: [name],
    run: async ({ o, out, log, gpu, tty }) => {
      const p = camPaths(out);
      const m = await withProgress("eval", (onProgress) =>
        evaluate({
          ckpt: p.ckpt,
          split: split === "val" ? o.evalSplit ?? "val" : "train",
          sweep: o.sweep,
          limit: split === "val" ? o.evalLimit : o.trainLimit,
          out: join(out, name),
          ...(o.scales ? { scales: o.scales } : {}),
        }, { gpu, log, onProgress }), { write: log, tty });
      return { miou: m.miou, oc_rate: m.oc_rate, bg: m.bg_threshold, split: m.split };
    },
  };
}

/** `eval-cam`: CAM pseudo-mask mIoU (best of the sweep) and OC-error rate on val. */
export const evalCamStage: Stage<CamStageOptions> = evalCamStageFor("val");
/** `eval-cam-train`: the same on the train split. */
export const evalCamTrainStage: Stage<CamStageOptions> = evalCamStageFor("train");

/** The CAM stages' scores for results.json (a method lists the ones it reports). */
export const CAM_RESULTS = {
  camMiou: { key: "camMiou", stage: "eval-cam", field: "miou" },
  camBg: { key: "camBg", stage: "eval-cam", field: "bg" },
  ocRate: { key: "ocRate", stage: "eval-cam", field: "oc_rate" },
  map: { key: "map", stage: "cam-train", field: "map" },
} as const;

/** The stage names of the `cam` method. */
export const CAM_STAGES = ["cam-train", "eval-cam"] as const;

/** Options of the `cam` method. */
export const CamMethodSchema = methodSchema("cam", {
  ocr: CAM_FIELDS.ocr,
  ocrLambda: CAM_FIELDS.ocrLambda,
  ocrStart: CAM_FIELDS.ocrStart,
  ...runnerFields(CAM_STAGES),
  synthetic: CAM_FIELDS.synthetic,
  camSteps: CAM_FIELDS.camSteps,
  evalLimit: CAM_FIELDS.evalLimit,
  sweep: CAM_FIELDS.sweep,
  scales: CAM_FIELDS.scales,
  train: CAM_FIELDS.train,
  evalSplit: CAM_FIELDS.evalSplit,
});

/** The `cam` method's score names. */
export type CamScore = "camMiou" | "camBg" | "ocRate" | "map";

/**
 * The CAM baseline as a method: train the CAM classifier, score its CAMs' pseudo masks
 * (what `deno task ablate` compares with and without OCR).
 */
export const CAM_METHOD: Method<typeof CamMethodSchema, CamScore> = {
  name: "cam",
  about: "the CAM baseline: CAM classifier → CAM pseudo masks, scored on val",
  schema: CamMethodSchema,
  stages: [camTrainStage, evalCamStage],
  results: [CAM_RESULTS.camMiou, CAM_RESULTS.camBg, CAM_RESULTS.ocRate, CAM_RESULTS.map],
  table: [
    { key: "camMiou", header: "CAM pseudo-mask mIoU" },
    { key: "ocRate", header: "OC-error rate (unrestricted CAM)" },
    { key: "map", header: "classification mAP" },
  ],
  summary: (r) =>
    `CAM mIoU ${fmtScore(r.camMiou)} (bg ${r.camBg}), OC-error ${fmtScore(r.ocRate)}, ` +
    `mAP ${fmtScore(r.map)}`,
};
