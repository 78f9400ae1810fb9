/**
 * psa's AffinityNet as a method (src/methods/method.ts): the CAM classifier's stages
 * (src/methods/cam/stages.ts), then
 *
 * | stage      | what it does                                                               |
 * | ---------- | -------------------------------------------------------------------------- |
 * | `affinity` | `deno task affinity` on the train CAMs into `<out>/affinity` (300 steps)   |
 * | `rw`       | `deno task rw` on the val CAMs into `<out>/rw-val`, background exponents    |
 * |            | 1/2/4/8/16 from one walk                                                   |
 * | `eval-rw`  | `deno task eval --masks` of each alpha's masks into `<out>/eval-rw`; the    |
 * |            | best one is the RW mIoU                                                    |
 *
 * then the same CAM and RW stages on the train split (eval-cam-train, rw-train,
 * eval-rw-train), and the final segmenter (src/methods/seg/stages.ts) trained on the train
 * split's RW masks at their best alpha: seg, eval-seg, eval-seg-crf.
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { exists } from "../../io/atomic.ts";
import { TrainError } from "../../train/train.ts";
import { evaluate } from "../cam/evaluate.ts";
import { withProgress } from "../cam/options.ts";
import {
  CAM_FIELDS,
  CAM_RESULTS,
  camData,
  camPaths,
  camsTrainStage,
  camsValStage,
  camTrainStage,
  evalCamStage,
  evalCamTrainStage,
  trainingFinished,
} from "../cam/stages.ts";
import {
  fmtScore,
  type Method,
  methodSchema,
  runnerFields,
  type Stage,
  type StageContext,
} from "../method.ts";
import { SEG_FIELDS, segStages } from "../seg/stages.ts";
import { computeRandomWalk, type RwInput } from "./rw.ts";
import type { AffinityConfig } from "../../io/config.ts";
import { trainAffinity } from "./train.ts";

/** The stage names, in order. */
export const AFFINITYNET_STAGES = [
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
] as const;

/** The random-walk background exponents a pipeline sweeps by default. */
export const RW_ALPHAS: readonly number[] = [1, 2, 4, 8, 16];

/** Options of the `affinitynet` method (`deno task pipeline --method affinitynet`). */
export const AffinityNetSchema = methodSchema("affinitynet", {
  ocr: CAM_FIELDS.ocr,
  ocrLambda: CAM_FIELDS.ocrLambda,
  ocrStart: CAM_FIELDS.ocrStart,
  ...runnerFields(AFFINITYNET_STAGES),
  synthetic: CAM_FIELDS.synthetic,
  camSteps: CAM_FIELDS.camSteps,
  /** AffinityNet training steps (default 300). */
  affinitySteps: z.number().int().positive().optional(),
  /** psa's CRF-refined affinity labels instead of the CRF-free rule. */
  affinityCrf: z.boolean().default(false),
  /**
   * More AffinityNet training options (a partial `deno task affinity` config: lr, batch, size,
   * optimizer, loAlpha, hiAlpha, radius...; `cams`, `out`, `seed` are the run's). Default: the
   * model and crop of the CAM run, the affinity defaults.
   */
  affinity: z.record(z.string(), z.unknown()).optional(),
  /** More random-walk options (`beta`, `logt`; default: `deno task rw`'s). */
  rw: z.record(z.string(), z.unknown()).optional(),
  trainLimit: CAM_FIELDS.trainLimit,
  camsSplit: CAM_FIELDS.camsSplit,
  evalLimit: CAM_FIELDS.evalLimit,
  sweep: CAM_FIELDS.sweep,
  /**
   * Random-walk background exponents swept (one walk gives them all); the RW mIoU is the best,
   * as the CAM mIoU is at the best background threshold.
   */
  alpha: z.array(z.number().positive()).min(1).max(16).default([...RW_ALPHAS]),
  scales: CAM_FIELDS.scales,
  train: CAM_FIELDS.train,
  evalSplit: CAM_FIELDS.evalSplit,
  ...SEG_FIELDS,
});

/** Resolved options of the `affinitynet` method. */
export type AffinityNetOptions = z.infer<typeof AffinityNetSchema>;

/** The AffinityNet folders of a run folder (walks and their scores per split). */
function paths(out: string, split: "train" | "val" = "val") {
  return {
    run: join(out, "affinity"),
    walk: join(out, `rw-${split}`),
    eval: join(out, split === "val" ? "eval-rw" : "eval-rw-train"),
  };
}

/** `affinity`: AffinityNet on the train CAMs' confident labels (resumes an interrupted run). */
export const affinityStage: Stage<AffinityNetOptions> = {
  name: "affinity",
  about: "deno task affinity on the train CAMs (300 steps, batch 8)",
  outputs: ["affinity"],
  restart: true,
  done: async ({ out }) => {
    const { run } = paths(out);
    const ckpt = join(run, "last.safetensors");
    if (!await exists(ckpt) || !await trainingFinished(ckpt, join(run, "summary.json"))) {
      return null;
    }
    const summary = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
    return { loss: summary.finalLoss, radius: summary.radius };
  },
  run: async ({ o, out, log, gpu, tty }) => {
    const { run } = paths(out);
    const resume = await exists(join(run, "last.safetensors"));
    const model = (o.train as { model?: AffinityConfig["model"] } | undefined)?.model;
    const r = await trainAffinity({
      ...(model ? { model } : {}),
      ...(o.affinity as Partial<AffinityConfig> | undefined),
      cams: camPaths(out).train,
      out: run,
      seed: o.seed,
      ...(o.affinitySteps ? { steps: o.affinitySteps } : {}),
      crf: o.affinityCrf,
      resume,
    }, { gpu, tty, log });
    return { loss: r.finalLoss, radius: r.radius };
  },
};

/**
 * A random-walk stage: the walk of one split's CAMs, one mask folder per alpha (`rw` on val,
 * `rw-train` on train).
 */
function rwStageFor(split: "train" | "val"): Stage<AffinityNetOptions> {
  return {
    name: split === "val" ? "rw" : "rw-train",
    about: `deno task rw on the ${split} CAMs, background exponents 1/2/4/8/16 from one walk`,
    outputs: [`rw-${split}`],
    run: async ({ o, out, stages, log, gpu, tty }) => {
      const p = paths(out, split);
      // The radius the affinity stage trained with (its checkpoint records it too; a record
      // from before the radius was kept has none, and the walk then reads the checkpoint).
      const radius = stages.affinity?.result.radius;
      const r = await withProgress("rw", (onProgress) =>
        computeRandomWalk({
          ...(o.rw as Partial<RwInput> | undefined),
          ckpt: p.run,
          cams: split === "val" ? camPaths(out).val : camPaths(out).train,
          out: p.walk,
          alpha: o.alpha,
          ...(typeof radius === "number" ? { radius } : {}),
        }, { gpu, log, onProgress }), { write: log, tty });
      return { images: r.images, masks: r.masks };
    },
  };
}

/**
 * An RW evaluation stage: each alpha's masks scored on the split; the best alpha's mIoU is
 * the RW mIoU (`eval-rw` on val, `eval-rw-train` on train).
 */
function evalRwStageFor(split: "train" | "val"): Stage<AffinityNetOptions> {
  const rw = split === "val" ? "rw" : "rw-train";
  const name = split === "val" ? "eval-rw" : "eval-rw-train";
  return {
    name,
    about: `deno task eval --masks of each alpha's ${split} masks; the best one is the RW mIoU`,
    outputs: [name],
    run: async ({ o, out, stages, stagesPath, log, gpu, tty }) => {
      const dirs = stages[rw]?.result.masks as { alpha: number; dir: string }[] | undefined;
      if (!Array.isArray(dirs)) {
        throw new TrainError(
          `${stagesPath}: the ${rw} stage lists no mask folders; rerun --from ${rw}`,
        );
      }
      const sweep: { alpha: number; miou: number | null }[] = [];
      for (const { alpha, dir } of dirs) {
        const m = await withProgress("eval", (onProgress) =>
          evaluate({
            masks: dir,
            ...camData(o),
            split: split === "val" ? o.evalSplit ?? "val" : "train",
            limit: split === "val" ? o.evalLimit : o.trainLimit,
            out: join(paths(out, split).eval, `alpha-${alpha}`),
          }, { gpu, log, onProgress }), { write: log, tty });
        sweep.push({ alpha, miou: m.miou });
      }
      const best = sweep.reduce((a, b) => ((b.miou ?? -1) > (a.miou ?? -1) ? b : a));
      log(
        `alpha sweep (${split}): ` +
          sweep.map((s) => `${s.alpha}: ${fmtScore(s.miou ?? NaN)}`).join(", "),
      );
      return { miou: best.miou, alpha: best.alpha, sweep, split };
    },
  };
}

/** `rw`: the random walk of the val CAMs, one mask folder per alpha. */
export const rwStage: Stage<AffinityNetOptions> = rwStageFor("val");
/** `eval-rw`: each alpha's val masks scored; the best alpha's mIoU is the RW mIoU. */
export const evalRwStage: Stage<AffinityNetOptions> = evalRwStageFor("val");

/**
 * The train pseudo masks the segmenter learns from: the random walk's train masks at the
 * background exponent that scored best on train (eval-rw-train).
 */
function rwTrainMasks({ stages, stagesPath }: StageContext<AffinityNetOptions>): string {
  const dirs = stages["rw-train"]?.result.masks as { alpha: number; dir: string }[] | undefined;
  const alpha = stages["eval-rw-train"]?.result.alpha;
  const hit = Array.isArray(dirs) ? dirs.find((d) => d.alpha === alpha) : undefined;
  if (!hit) {
    throw new TrainError(
      `${stagesPath}: no train masks at the best alpha (rw-train, eval-rw-train); rerun ` +
        `--from rw-train`,
    );
  }
  return hit.dir;
}

const [segStage, evalSegStage, evalSegCrfStage] = segStages(rwTrainMasks);

const BY_NAME: Record<(typeof AFFINITYNET_STAGES)[number], Stage<AffinityNetOptions>> = {
  "cam-train": camTrainStage,
  "cams-train": camsTrainStage,
  "cams-val": camsValStage,
  "eval-cam": evalCamStage,
  affinity: affinityStage,
  rw: rwStage,
  "eval-rw": evalRwStage,
  "eval-cam-train": evalCamTrainStage,
  "rw-train": rwStageFor("train"),
  "eval-rw-train": evalRwStageFor("train"),
  seg: segStage,
  "eval-seg": evalSegStage,
  "eval-seg-crf": evalSegCrfStage,
};

/** The `affinitynet` method's score names. */
export type AffinityNetScore =
  | "camMiou"
  | "camBg"
  | "ocRate"
  | "rwMiou"
  | "rwAlpha"
  | "camMiouTrain"
  | "ocRateTrain"
  | "rwMiouTrain"
  | "segMiou"
  | "segMiouCrf"
  | "segOcRate"
  | "map";

/** psa's AffinityNet after the CAM classifier: affinity training, random walk, evaluation. */
export const AFFINITYNET: Method<typeof AffinityNetSchema, AffinityNetScore> = {
  name: "affinitynet",
  about: "psa: CAM classifier → AffinityNet → random walk, scored on val and train",
  schema: AffinityNetSchema,
  stages: AFFINITYNET_STAGES.map((n) => BY_NAME[n]),
  results: [
    CAM_RESULTS.camMiou,
    CAM_RESULTS.camBg,
    CAM_RESULTS.ocRate,
    { key: "rwMiou", stage: "eval-rw", field: "miou" },
    { key: "rwAlpha", stage: "eval-rw", field: "alpha" },
    { key: "camMiouTrain", stage: "eval-cam-train", field: "miou" },
    { key: "ocRateTrain", stage: "eval-cam-train", field: "oc_rate" },
    { key: "rwMiouTrain", stage: "eval-rw-train", field: "miou" },
    { key: "segMiou", stage: "eval-seg", field: "miou" },
    { key: "segMiouCrf", stage: "eval-seg-crf", field: "miou" },
    { key: "segOcRate", stage: "eval-seg", field: "oc_rate" },
    CAM_RESULTS.map,
  ],
  table: [
    { key: "camMiouTrain", header: "CAM mIoU (train)" },
    { key: "rwMiouTrain", header: "RW mIoU (train)" },
    { key: "camMiou", header: "CAM mIoU (val)" },
    { key: "rwMiou", header: "RW mIoU (val)" },
    { key: "ocRate", header: "OC-error rate (val, unrestricted CAM)" },
    { key: "segMiou", header: "seg mIoU (val)" },
    { key: "segMiouCrf", header: "seg + CRF mIoU (val)" },
    { key: "segOcRate", header: "seg OC-error rate (val, tag-free)" },
    { key: "map", header: "mAP (val)" },
  ],
  summary: (r) =>
    `train: CAM mIoU ${fmtScore(r.camMiouTrain)}, RW mIoU ${fmtScore(r.rwMiouTrain)}; ` +
    `val: CAM mIoU ${fmtScore(r.camMiou)} (bg ${r.camBg}), RW mIoU ${fmtScore(r.rwMiou)} ` +
    `(alpha ${r.rwAlpha}), OC-error ${fmtScore(r.ocRate)}, mAP ${fmtScore(r.map)}; ` +
    `segmenter (val): mIoU ${fmtScore(r.segMiou)}, + CRF ${fmtScore(r.segMiouCrf)}, ` +
    `OC-error ${fmtScore(r.segOcRate)}`,
};
