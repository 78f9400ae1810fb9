/**
 * MCTformer-V2 as a pipeline method (`deno task pipeline --method mctformer [--ocr]`):
 * MCTformer's training in place of the CAM classifier's, then the shared CAM stages on
 * MCTformer's localisation maps (./cams.ts registers its checkpoints with the CAM tools) and
 * psa's AffinityNet and random walk on them, as MCTformer's paper and code do:
 *
 *   mctformer-train → cams-train → cams-val → eval-cam → affinity → rw → eval-rw
 *
 * mctformer-train writes its run in `<out>/cam` (where the CAM stages look for the CAM model);
 * the CAM stages and rw / eval-rw are the CAM method's and AffinityNet's own stage objects.
 * AffinityNet cannot take MCTformer's ViT as its backbone: the affinity stage trains the
 * AffinityNet of a CNN backbone (`affinity.model`, default `tiny`) from scratch, or from
 * `affinity.init` (torchvision weights of that model). MCTformer's own code does the same
 * kind of thing: psa's AffinityNet with ResNet-38, trained separately, initialised from psa's
 * classification weights (its run_psa.sh).
 * @module
 */
import { join } from "node:path";
import type { z } from "npm:zod@4.6.7";
import { exists } from "../../io/atomic.ts";
import type { AffinityConfig } from "../../io/config.ts";
import { MctformerConfigSchema } from "../../io/config.ts";
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
import { type MctformerInput, trainMctformer } from "./train.ts";
import "./cams.ts";

/** The stages of MCTformer, in order. */
export const MCTFORMER_STAGES = [
  "mctformer-train",
  "cams-train",
  "cams-val",
  "eval-cam",
  "affinity",
  "rw",
  "eval-rw",
] as const;

const AFF = AffinityNetSchema.shape;

/** MCTformer's pipeline options (the CAM and AffinityNet stages' fields). */
export const MctformerMethodSchema = methodSchema("mctformer", {
  ocr: CAM_FIELDS.ocr,
  ocrLambda: CAM_FIELDS.ocrLambda,
  ocrStart: CAM_FIELDS.ocrStart,
  ...runnerFields(MCTFORMER_STAGES),
  synthetic: CAM_FIELDS.synthetic,
  /** MCTformer's training steps (default `deno task mctformer`'s). */
  camSteps: CAM_FIELDS.camSteps,
  affinitySteps: AFF.affinitySteps,
  affinityCrf: AFF.affinityCrf,
  /**
   * More AffinityNet options (a partial `deno task affinity` config). Its backbone is a CNN:
   * `model` (default `tiny`), from scratch unless `init` names weights of that model.
   */
  affinity: AFF.affinity,
  rw: AFF.rw,
  trainLimit: CAM_FIELDS.trainLimit,
  camsSplit: CAM_FIELDS.camsSplit,
  evalLimit: CAM_FIELDS.evalLimit,
  sweep: CAM_FIELDS.sweep,
  alpha: AFF.alpha,
  scales: CAM_FIELDS.scales,
  /**
   * MCTformer's training config (a partial `deno task mctformer` config: model, weights, lr,
   * dataset...; `ocr`, `seed`, `camSteps` and the output folder still apply), validated as one.
   */
  train: MctformerConfigSchema.partial().optional(),
  evalSplit: CAM_FIELDS.evalSplit,
});

/** Resolved MCTformer pipeline options. */
export type MctformerMethodOptions = z.infer<typeof MctformerMethodSchema>;

/** The mctformer-train stage: `deno task mctformer` into `<out>/cam`, resumed when interrupted. */
export const mctformerTrainStage: Stage<MctformerMethodOptions> = {
  name: "mctformer-train",
  about: "deno task mctformer (MCTformer-V2: class tokens + patch CAMs; --ocr adds OCR on them)",
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
    const cfg = camTrainConfig(o, p.run) as MctformerInput;
    const r = await trainMctformer({ ...cfg, resume }, { gpu, tty, log });
    return { map: r.valMap };
  },
};

/**
 * The AffinityNet options of an MCTformer run: the CNN backbone `affinity.model` (default
 * `tiny`), from scratch unless `affinity.init` (or `scratch`) says otherwise; never the CAM
 * run's model (a ViT).
 */
export function mctformerAffinityOptions(o: MctformerMethodOptions): MctformerMethodOptions {
  const a = (o.affinity ?? {}) as Partial<AffinityConfig>;
  const start = a.init === undefined && a.scratch === undefined ? { scratch: true } : {};
  return { ...o, train: undefined, affinity: { model: "tiny", ...start, ...a } };
}

/** `affinity`: AffinityNet's stage on a CNN backbone ({@link mctformerAffinityOptions}). */
export const mctformerAffinityStage: Stage<MctformerMethodOptions> = {
  ...shared(affinityStage),
  about: "deno task affinity on the train CAMs (a CNN AffinityNet, tiny from scratch by " +
    "default; 300 steps, batch 8)",
  run: (ctx) => shared(affinityStage).run({ ...ctx, o: mctformerAffinityOptions(ctx.o) }),
};

/**
 * Another method's stage on MCTformer's options: the CAM and AffinityNet stages read only
 * fields that MCTformer's schema has under the same names and meanings (checked by
 * tests/mctformer_stages_test.ts).
 */
function shared<O>(s: Stage<O>): Stage<MctformerMethodOptions> {
  return s as unknown as Stage<MctformerMethodOptions>;
}

const BY_NAME: Record<(typeof MCTFORMER_STAGES)[number], Stage<MctformerMethodOptions>> = {
  "mctformer-train": mctformerTrainStage,
  "cams-train": shared(camsTrainStage),
  "cams-val": shared(camsValStage),
  "eval-cam": shared(evalCamStage),
  affinity: mctformerAffinityStage,
  rw: shared(rwStage),
  "eval-rw": shared(evalRwStage),
};

/** MCTformer's scores. */
export type MctformerScore = "camMiou" | "camBg" | "ocRate" | "rwMiou" | "rwAlpha" | "map";

/** MCTformer-V2 (Xu et al., CVPR 2022) with psa's AffinityNet after its maps. */
export const MCTFORMER: Method<typeof MctformerMethodSchema, MctformerScore> = {
  name: "mctformer",
  about: "MCTformer-V2: class-token attention x patch CAMs → AffinityNet → random walk, on val",
  schema: MctformerMethodSchema,
  stages: MCTFORMER_STAGES.map((n) => BY_NAME[n]),
  results: [
    CAM_RESULTS.camMiou,
    CAM_RESULTS.camBg,
    CAM_RESULTS.ocRate,
    { key: "rwMiou", stage: "eval-rw", field: "miou" },
    { key: "rwAlpha", stage: "eval-rw", field: "alpha" },
    { key: "map", stage: "mctformer-train", field: "map" },
  ],
  table: [
    { key: "camMiou", header: "MCTformer CAM mIoU (val)" },
    { key: "rwMiou", header: "RW mIoU (val)" },
    { key: "ocRate", header: "OC-error rate (val, unrestricted CAM)" },
    { key: "map", header: "mAP (val)" },
  ],
  summary: (r) =>
    `val: MCTformer CAM mIoU ${fmtScore(r.camMiou)} (bg ${r.camBg}), RW mIoU ` +
    `${fmtScore(r.rwMiou)} (alpha ${r.rwAlpha}), OC-error ${fmtScore(r.ocRate)}, ` +
    `mAP ${fmtScore(r.map)}`,
};
