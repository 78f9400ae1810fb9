/**
 * SEAM as a pipeline method (`deno task pipeline --method seam [--ocr]`): SEAM's training in
 * place of the CAM classifier's, then the shared CAM stages on SEAM's CAMs (./cams.ts
 * registers SEAM's checkpoints with the CAM tools) and psa's AffinityNet stages on them, as
 * SEAM's paper does:
 *
 *   seam-train → cams-train → cams-val → eval-cam → affinity → rw → eval-rw
 *
 * seam-train writes its run in `<out>/cam` (where the CAM stages look for the CAM model);
 * every other stage is the CAM method's or AffinityNet's own stage object.
 * @module
 */
import { join } from "node:path";
import type { z } from "npm:zod@4.6.7";
import { exists } from "../../io/atomic.ts";
import {
  CAM_FIELDS,
  CAM_RESULTS,
  camPaths,
  camsTrainStage,
  camsValStage,
  camTrainConfig,
  evalCamStage,
  trainingFinished,
} from "../cam/stages.ts";
import { AffinityNetSchema, affinityStage, evalRwStage, rwStage } from "../affinitynet/stages.ts";
import { fmtScore, type Method, methodSchema, runnerFields, type Stage } from "../method.ts";
import { trainSeam } from "./train.ts";
import "./cams.ts";

/** The stages of SEAM, in order. */
export const SEAM_STAGES = [
  "seam-train",
  "cams-train",
  "cams-val",
  "eval-cam",
  "affinity",
  "rw",
  "eval-rw",
] as const;

const AFF = AffinityNetSchema.shape;

/** SEAM's pipeline options (the CAM and AffinityNet stages' fields, `camSteps` = SEAM's). */
export const SeamMethodSchema = methodSchema("seam", {
  ocr: CAM_FIELDS.ocr,
  ocrLambda: CAM_FIELDS.ocrLambda,
  ocrStart: CAM_FIELDS.ocrStart,
  ...runnerFields(SEAM_STAGES),
  synthetic: CAM_FIELDS.synthetic,
  /** SEAM's training steps (default the CAM classifier's). */
  camSteps: CAM_FIELDS.camSteps,
  affinitySteps: AFF.affinitySteps,
  affinityCrf: AFF.affinityCrf,
  affinity: AFF.affinity,
  rw: AFF.rw,
  trainLimit: CAM_FIELDS.trainLimit,
  camsSplit: CAM_FIELDS.camsSplit,
  evalLimit: CAM_FIELDS.evalLimit,
  sweep: CAM_FIELDS.sweep,
  alpha: AFF.alpha,
  scales: CAM_FIELDS.scales,
  /** SEAM's training config (its fields over the CAM classifier's, as `deno task seam`'s). */
  train: CAM_FIELDS.train,
  evalSplit: CAM_FIELDS.evalSplit,
});

/** Resolved SEAM pipeline options. */
export type SeamMethodOptions = z.infer<typeof SeamMethodSchema>;

/** The seam-train stage: `deno task seam` into `<out>/cam`, resumed when interrupted. */
export const seamTrainStage: Stage<SeamMethodOptions> = {
  name: "seam-train",
  about: "deno task seam (SEAM: two branches, PCM, ER + ECR; --ocr adds OCR on both)",
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
    // deno-lint-ignore no-explicit-any
    const cfg = camTrainConfig(o, p.run) as any;
    const r = await trainSeam({ ...cfg, resume }, { gpu, tty, log });
    return { map: r.valMap };
  },
};

/**
 * Another method's stage on SEAM's options: the CAM and AffinityNet stages read only fields
 * that SEAM's schema has under the same names and meanings (checked by tests/seam_stages_test.ts).
 */
function shared<O>(s: Stage<O>): Stage<SeamMethodOptions> {
  return s as unknown as Stage<SeamMethodOptions>;
}

const BY_NAME: Record<(typeof SEAM_STAGES)[number], Stage<SeamMethodOptions>> = {
  "seam-train": seamTrainStage,
  "cams-train": shared(camsTrainStage),
  "cams-val": shared(camsValStage),
  "eval-cam": shared(evalCamStage),
  affinity: shared(affinityStage),
  rw: shared(rwStage),
  "eval-rw": shared(evalRwStage),
};

/** SEAM's scores. */
export type SeamScore = "camMiou" | "camBg" | "ocRate" | "rwMiou" | "rwAlpha" | "map";

/** SEAM (Wang et al., CVPR 2020) with psa's AffinityNet after its CAMs. */
export const SEAM: Method<typeof SeamMethodSchema, SeamScore> = {
  name: "seam",
  about: "SEAM: two-branch equivariant CAMs with PCM → AffinityNet → random walk, on val",
  schema: SeamMethodSchema,
  stages: SEAM_STAGES.map((n) => BY_NAME[n]),
  results: [
    CAM_RESULTS.camMiou,
    CAM_RESULTS.camBg,
    CAM_RESULTS.ocRate,
    { key: "rwMiou", stage: "eval-rw", field: "miou" },
    { key: "rwAlpha", stage: "eval-rw", field: "alpha" },
    { key: "map", stage: "seam-train", field: "map" },
  ],
  table: [
    { key: "camMiou", header: "SEAM CAM mIoU (val)" },
    { key: "rwMiou", header: "RW mIoU (val)" },
    { key: "ocRate", header: "OC-error rate (val, unrestricted CAM)" },
    { key: "map", header: "mAP (val)" },
  ],
  summary: (r) =>
    `val: SEAM CAM mIoU ${fmtScore(r.camMiou)} (bg ${r.camBg}), RW mIoU ${fmtScore(r.rwMiou)} ` +
    `(alpha ${r.rwAlpha}), OC-error ${fmtScore(r.ocRate)}, mAP ${fmtScore(r.map)}`,
};
