/**
 * MCTformer-V2 training (`deno task mctformer`): the CAM classifier's data, run folder, atomic
 * checkpoints and bit-exact `--resume` on the shared step loop (src/train/loop.ts), with
 * MCTformer-V2's network (src/models/vit.ts) and loss: the multilabel soft-margin loss on the
 * class tokens' logits plus the same loss on the patch head's logits (engine.py's
 * `train_one_epoch`), and with `ocr.enabled` OCR on the patch head's class maps `patchMap`
 * (the CAMs MCTformer-V2 classifies through; the loss and config block of the CAM classifier's,
 * src/losses/ocr.ts). One command encoder per step; drop path draws from the run's seed and
 * the step, so a resumed run repeats an uninterrupted one bit for bit.
 *
 * The config ({@link MctformerConfigSchema}) is the CAM classifier's data and logging fields
 * with MCTformer's model (`vit-tiny` / `deit-s` with `weights`: DeiT safetensors), AdamW,
 * weight decay 0.05 and a cosine schedule with warm-up. The run folder holds config.json (with
 * `method: "mctformer"`, so the CAM tools load its checkpoints through ./cams.ts),
 * train.jsonl, last.safetensors (metadata kind "mctformer") and summary.json; the validation
 * mAP is the class tokens' (engine.py's `evaluate`).
 * @module
 */
import { join } from "node:path";
import type { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { createGpu, describeBackend } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { tuneMatmul } from "../../ops/matmul.ts";
import {
  defaultLr,
  MCTFORMER_LR,
  type MctformerConfig,
  MctformerConfigSchema,
  type OcrConfig,
  validate,
} from "../../io/config.ts";
import { loadDeitWeights } from "../../io/checkpoint.ts";
import { Tape } from "../../autograd/tape.ts";
import { type Param, zeroGrads } from "../../autograd/param.ts";
import { cosineLr, type Optimizer, polyLr } from "../../optim/mod.ts";
import { disposeMctformerOutputs, type Mctformer } from "../../models/vit.ts";
import { openTrainingData, type TrainBatch } from "../../train/data.ts";
import {
  finishRun,
  type LoopLine,
  resumeAt,
  type RunHooks,
  type RunResult,
  runSteps,
  runTensors,
  stepDropoutSeed,
} from "../../train/loop.ts";
import {
  checkRunFolder,
  createOptimizer,
  recordClassifierLosses,
  validationMap,
} from "../../train/train.ts";
import { mctformerCamView, mctformerOf } from "./model.ts";

export { MctformerConfigSchema };

/** An MCTformer config as given, plus `resume`. */
export type MctformerInput = z.input<typeof MctformerConfigSchema> & { resume?: boolean };

/** One line of MCTformer's train.jsonl (`loss`: cls + patch + OCR). */
export interface MctformerStepLog extends LoopLine {
  /** The class tokens' multilabel loss. */
  loss_cls: number;
  /** The patch head's multilabel loss. */
  loss_patch: number;
  /** OCR on the patch CAMs (0 without OCR or before its start). */
  loss_ocr: number;
  /** OC pixels of the logged batch. */
  oc_pixels: number;
  /** OC pixels over the batch's patch-grid pixels. */
  oc_fraction: number;
}

/** What {@link trainMctformer} returns. */
export interface MctformerTrainResult extends RunResult {
  /** Classification mAP of the class tokens on the val split, NaN when skipped. */
  valMap: number;
}

/** Hooks of {@link trainMctformer}. */
export interface MctformerHooks extends RunHooks {
  /** Skip the validation mAP. */
  skipEval?: boolean;
}

/**
 * Validates an MCTformer config (errors name `source` and the field) and fills in what
 * depends on other fields: `size` (128 for vit-tiny, 224 for deit-s) and `lr`
 * ({@link MCTFORMER_LR} for AdamW, 0.05 for SGD).
 */
export function resolveMctformerConfig(input: unknown, source: string): MctformerConfig {
  const cfg = validate(MctformerConfigSchema, input, source);
  return {
    ...cfg,
    size: cfg.size ?? (cfg.model === "deit-s" ? 224 : 128),
    lr: cfg.lr ?? (cfg.optimizer === "adamw" ? MCTFORMER_LR : defaultLr(cfg.optimizer)),
  };
}

/**
 * The learning rate of each step: cosine decay to 0 after a linear warm-up from 0 over
 * `warmup`·steps steps (MCTformer's timm schedule, per step), or psa's poly schedule.
 */
export function mctformerLr(
  cfg: Pick<MctformerConfig, "lr" | "steps" | "schedule" | "warmup">,
): (step: number) => number {
  if (cfg.schedule === "poly") return (step) => polyLr(cfg.lr, step, cfg.steps);
  const warmupSteps = Math.min(cfg.steps - 1, Math.floor(cfg.warmup * cfg.steps));
  return (step) => cosineLr(cfg.lr, step, cfg.steps, { warmupSteps });
}

/** Inputs of one MCTformer training step. */
export interface MctformerStepInputs {
  /** Images [B, 3, S, S] (normalised; S a multiple of the patch size). */
  x: Tensor;
  /** Multi-hot tags [B, C]. */
  tags: Tensor;
  lr: number;
  /** OCR's co-occurrence prior [C, C] when OCR is on for this step, else null. */
  prior: Tensor | null;
  ocr: OcrConfig;
  /** Seed of the step's drop-path draws. */
  seed: number;
}

/** The losses of a recorded step ([1] tensors owned by the caller; read after a flush). */
export interface MctformerLosses {
  /** Multilabel soft-margin loss of the class tokens' logits. */
  cls: Tensor;
  /** The same of the patch head's logits. */
  patch: Tensor;
  /** OCR on the patch CAMs (null without a prior). */
  ocr: Tensor | null;
  /** OC pixel count (null without a prior). */
  ocPixels: Tensor | null;
}

/**
 * Records one MCTformer-V2 step: a training forward (drop path seeded by `s.seed`),
 * multilabel(clsLogits) + multilabel(patchLogits) (+ OCR on patchMap with a prior; the shared
 * {@link recordClassifierLosses}), backward, optimizer update. Nothing is submitted or read.
 */
export function recordMctformerStep(
  gpu: GpuContext,
  model: Mctformer,
  opt: Optimizer,
  params: Param[],
  s: MctformerStepInputs,
): { losses: MctformerLosses; mapShape: readonly number[] } {
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const out = model.forward(s.x, { tape, train: true, seed: s.seed });
  const r = recordClassifierLosses(gpu, {
    logits: [out.clsLogits, out.patchLogits],
    maps: out.patchMap,
    tags: s.tags,
    prior: s.prior,
    ocr: s.ocr,
  });
  const mapShape = out.patchMap.shape;
  tape.backward(r.seeds);
  disposeMctformerOutputs(out);
  opt.step(params, s.lr);
  const [cls, patch] = r.cls;
  return { losses: { cls, patch, ocr: r.ocr, ocPixels: r.ocPixels }, mapShape };
}

/** Trains MCTformer-V2 (module doc). */
export async function trainMctformer(
  input: MctformerInput,
  hooks: MctformerHooks = {},
): Promise<MctformerTrainResult> {
  const { resume: resumeFlag = false, ...rest } = input;
  const cfg = resolveMctformerConfig(rest, "mctformer config");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  const out = cfg.out ?? `runs/mctformer-${cfg.model}${cfg.ocr.enabled ? "-ocr" : ""}-${stamp}`;
  cfg.out = out;
  const resume = await checkRunFolder(out, join(out, "last.safetensors"), resumeFlag, log);
  const data = await openTrainingData(cfg, log);
  const gpu = hooks.gpu ?? await createGpu();
  await tuneMatmul(gpu);
  const model = mctformerOf(gpu, cfg, data.numClasses);
  if (cfg.weights && !resume) {
    for (const note of await loadDeitWeights(model, cfg.weights)) log(`${cfg.weights}: ${note}`);
  }
  const params = model.params();
  const opt = createOptimizer(gpu, cfg);
  const tensors = runTensors(model, opt, params);
  const prior = cfg.ocr.enabled
    ? Tensor.fromArray(gpu, await data.prior(), [data.numClasses, data.numClasses])
    : null;
  const configHash = await data.configHash(cfg);
  const start = await resumeAt(resume, out, tensors, opt, configHash, cfg.steps, log);
  log(
    `training MCTformer-V2 (${cfg.model}, ${cfg.size} px, ${params.length} parameter ` +
      `tensors) on ${data.describe} (${data.size} images, ${data.numClasses} classes)${
        cfg.ocr.enabled ? ` with OCR (lambda ${cfg.ocr.lambda})` : ""
      }, ${cfg.optimizer} lr ${cfg.lr} (${cfg.schedule}) on ${gpu.describe()}; ${
        describeBackend(gpu)
      }`,
  );
  const ocrStart = Math.floor(cfg.ocr.start * cfg.steps);
  const end = await runSteps<TrainBatch, MctformerStepLog>({
    gpu,
    out,
    config: cfg,
    stream: data.batches(start.position),
    resumed: resume,
    start,
    cfg,
    lr: cfg.lr,
    lrAt: mctformerLr(cfg),
    label: "mctformer",
    log,
    tty: hooks.tty,
    stopAfter: hooks.stopAfter,
    step: (b, lr, step) => {
      const x = Tensor.fromArray(gpu, b.images, [b.batchSize, 3, cfg.size, cfg.size]);
      const tags = Tensor.fromArray(gpu, b.tags, [b.batchSize, data.numClasses]);
      const { losses, mapShape } = recordMctformerStep(gpu, model, opt, params, {
        x,
        tags,
        lr,
        prior: prior && step >= ocrStart ? prior : null,
        ocr: cfg.ocr,
        seed: stepDropoutSeed(cfg.seed, step),
      });
      x.dispose();
      tags.dispose();
      const { cls, patch, ocr, ocPixels } = losses;
      return {
        images: b.batchSize,
        tensors: [cls, patch, ocr, ocPixels].filter((t) => t !== null),
        read: (values) => {
          const [lc, lp, lo = 0, oc = 0] = values.map((v) => v[0]);
          const ocFraction = oc / (b.batchSize * mapShape[2] * mapShape[3]);
          return {
            fields: {
              loss: lc + lp + lo,
              loss_cls: lc,
              loss_patch: lp,
              loss_ocr: lo,
              oc_pixels: oc,
              oc_fraction: ocFraction,
            },
            progress: {
              "cls/patch": `${lc.toFixed(3)}/${lp.toFixed(3)}`,
              ...(prior ? { ocr: lo.toFixed(4), oc: `${(ocFraction * 100).toFixed(1)}%` } : {}),
            },
            detail: ` (cls ${lc}, patch ${lp}, ocr ${lo})`,
          };
        },
      };
    },
    tensors,
    opt,
    configHash,
    metadata: { kind: "mctformer", arch: cfg.model },
    failure: { what: "MCTformer loss", advice: "lower --lr or check the data" },
  });
  let valMap = NaN;
  if (!hooks.skipEval && end.complete) {
    valMap = await validationMap(gpu, mctformerCamView(gpu, model, "patch"), data, cfg, log);
  }
  const peak = gpu.pool.stats().peakInUse;
  const result: MctformerTrainResult = await finishRun(
    { ...end, peakPoolBytes: peak },
    { valMap },
    log,
    `, val mAP ${Number.isNaN(valMap) ? "n/a" : valMap.toFixed(3)}, ` +
      `peak GPU pool ${(peak / 2 ** 20).toFixed(1)} MiB`,
  );
  prior?.dispose();
  opt.dispose();
  model.dispose();
  if (!hooks.gpu) gpu.destroy();
  return result;
}
