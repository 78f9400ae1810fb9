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
  trainingFinished,
} from "../cam/stages.ts";
import { fmtScore, type Method, methodSchema, runnerFields, type Stage } from "../method.ts";
import { computeRandomWalk } from "./rw.ts";
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
  trainLimit: CAM_FIELDS.trainLimit,
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
});

/** Resolved options of the `affinitynet` method. */
export type AffinityNetOptions = z.infer<typeof AffinityNetSchema>;

/** The AffinityNet folders of a run folder. */
function paths(out: string) {
  return { run: join(out, "affinity"), walk: join(out, "rw-val"), eval: join(out, "eval-rw") };
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
    const r = await trainAffinity({
      cams: camPaths(out).train,
      out: run,
      seed: o.seed,
      ...(o.affinitySteps ? { steps: o.affinitySteps } : {}),
      resume,
    }, { gpu, tty, log });
    return { loss: r.finalLoss, radius: r.radius };
  },
};

/** `rw`: the random walk of the val CAMs, one mask folder per alpha. */
export const rwStage: Stage<AffinityNetOptions> = {
  name: "rw",
  about: "deno task rw on the val CAMs, background exponents 1/2/4/8/16 from one walk",
  outputs: ["rw-val"],
  run: async ({ o, out, stages, log, gpu, tty }) => {
    const p = paths(out);
    // The radius the affinity stage trained with (its checkpoint records it too; a record
    // from before the radius was kept has none, and the walk then reads the checkpoint).
    const radius = stages.affinity?.result.radius;
    const r = await withProgress("rw", (onProgress) =>
      computeRandomWalk({
        ckpt: p.run,
        cams: camPaths(out).val,
        out: p.walk,
        alpha: o.alpha,
        ...(typeof radius === "number" ? { radius } : {}),
      }, { gpu, log, onProgress }), { write: log, tty });
    return { images: r.images, masks: r.masks };
  },
};

/** `eval-rw`: each alpha's masks scored on val; the best alpha's mIoU is the RW mIoU. */
export const evalRwStage: Stage<AffinityNetOptions> = {
  name: "eval-rw",
  about: "deno task eval --masks of each alpha's masks; the best one is the RW mIoU",
  outputs: ["eval-rw"],
  run: async ({ o, out, stages, stagesPath, log, gpu, tty }) => {
    const dirs = stages.rw.result.masks as { alpha: number; dir: string }[] | undefined;
    if (!Array.isArray(dirs)) {
      throw new TrainError(`${stagesPath}: the rw stage lists no mask folders; rerun --from rw`);
    }
    const sweep: { alpha: number; miou: number | null }[] = [];
    for (const { alpha, dir } of dirs) {
      const m = await withProgress("eval", (onProgress) =>
        evaluate({
          masks: dir,
          ...camData(o),
          split: o.evalSplit ?? "val",
          limit: o.evalLimit,
          out: join(paths(out).eval, `alpha-${alpha}`),
        }, { gpu, log, onProgress }), { write: log, tty });
      sweep.push({ alpha, miou: m.miou });
    }
    const best = sweep.reduce((a, b) => ((b.miou ?? -1) > (a.miou ?? -1) ? b : a));
    log(`alpha sweep: ${sweep.map((s) => `${s.alpha}: ${fmtScore(s.miou ?? NaN)}`).join(", ")}`);
    return { miou: best.miou, alpha: best.alpha, sweep };
  },
};

const BY_NAME: Record<(typeof AFFINITYNET_STAGES)[number], Stage<AffinityNetOptions>> = {
  "cam-train": camTrainStage,
  "cams-train": camsTrainStage,
  "cams-val": camsValStage,
  "eval-cam": evalCamStage,
  affinity: affinityStage,
  rw: rwStage,
  "eval-rw": evalRwStage,
};

/** The `affinitynet` method's score names. */
export type AffinityNetScore = "camMiou" | "camBg" | "ocRate" | "rwMiou" | "rwAlpha" | "map";

/** psa's AffinityNet after the CAM classifier: affinity training, random walk, evaluation. */
export const AFFINITYNET: Method<typeof AffinityNetSchema, AffinityNetScore> = {
  name: "affinitynet",
  about: "psa: CAM classifier → AffinityNet → random walk, scored on val",
  schema: AffinityNetSchema,
  stages: AFFINITYNET_STAGES.map((n) => BY_NAME[n]),
  results: [
    CAM_RESULTS.camMiou,
    CAM_RESULTS.camBg,
    CAM_RESULTS.ocRate,
    { key: "rwMiou", stage: "eval-rw", field: "miou" },
    { key: "rwAlpha", stage: "eval-rw", field: "alpha" },
    CAM_RESULTS.map,
  ],
  table: [
    { key: "camMiou", header: "CAM mIoU" },
    { key: "rwMiou", header: "RW mIoU" },
    { key: "ocRate", header: "OC-error rate (unrestricted CAM)" },
    { key: "map", header: "mAP" },
  ],
  summary: (r) =>
    `CAM mIoU ${fmtScore(r.camMiou)} (bg ${r.camBg}), RW mIoU ${fmtScore(r.rwMiou)} ` +
    `(alpha ${r.rwAlpha}), OC-error ${fmtScore(r.ocRate)}, mAP ${fmtScore(r.map)}`,
};
