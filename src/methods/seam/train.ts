/**
 * SEAM training (`deno task seam`): the CAM classifier's data, optimizer, schedule, run folder,
 * atomic checkpoints and bit-exact `--resume` (src/train/train.ts's helpers), with SEAM's
 * network (./model.ts) and two-branch loss (./loss.ts) in place of the classifier and its
 * loss; one command encoder per step. `ocr.enabled` adds OCR on both branches' class maps.
 *
 * The config is the CAM classifier's ({@link TrainConfigSchema}) with SEAM's fields: output
 * stride 8 by default (SEAM's), `scaleFactor` (0.3), `ecrTopk` (0.2), `dropout` (0.5) and the
 * PCM widths. The run folder holds config.json (with `method: "seam"`), train.jsonl,
 * last.safetensors (metadata kind "seam") and summary.json, like a CAM run's.
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { createGpu, describeBackend } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { tuneMatmul } from "../../ops/matmul.ts";
import { defaultLr, TrainConfigSchema, validate } from "../../io/config.ts";
import { loadTorchvisionWeights } from "../../io/checkpoint.ts";
import { Tape } from "../../autograd/tape.ts";
import { type Param, zeroGrads } from "../../autograd/param.ts";
import type { Optimizer } from "../../optim/mod.ts";
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
import { checkRunFolder, createOptimizer, TrainError, validationMap } from "../../train/train.ts";
import { createSeamNet, type SeamNet } from "./model.ts";
import {
  checkSeamLossOptions,
  recordSeamLosses,
  type SeamLosses,
  type SeamStepInputs,
  seamTotal,
} from "./loss.ts";

/** SEAM's training config: the CAM classifier's plus SEAM's fields (module doc). */
export const SeamConfigSchema = TrainConfigSchema.extend({
  /** Marks the run folder as SEAM's (CAM inference reads it). */
  method: z.literal("seam").default("seam"),
  outputStride: z.union([z.literal(8), z.literal(16)]).default(8),
  /** img2 = img1 resized by this factor (SEAM: 0.3). */
  scaleFactor: z.number().gt(0).lt(1).default(0.3),
  /** Fraction of each image's (C+1)·h·w ECR values averaged (SEAM: 0.2). */
  ecrTopk: z.number().gt(0).max(1).default(0.2),
  /** Dropout before fc8 (SEAM: 0.5). */
  dropout: z.number().min(0).lt(1).default(0.5),
  /** f8_3 / f8_4 widths (default 64/128, tiny 16/32). */
  pcmWidths: z.tuple([z.number().int().positive(), z.number().int().positive()]).optional(),
  /** PCM feature channels (default 192, tiny 48; at most 256). */
  pcmChannels: z.number().int().positive().max(256).optional(),
}).strict();

/** A resolved SEAM config. */
export type SeamConfig = z.infer<typeof SeamConfigSchema>;
/** A SEAM config as given, plus `resume`. */
export type SeamInput = z.input<typeof SeamConfigSchema> & { resume?: boolean };

/** One line of SEAM's train.jsonl (`loss`: the total). */
export interface SeamStepLog extends LoopLine {
  loss_cls: number;
  loss_rvmin: number;
  loss_er: number;
  loss_ecr: number;
  loss_ocr: number;
}

/** What {@link trainSeam} returns. */
export interface SeamTrainResult extends RunResult {
  /** Classification mAP on the val split (GAP of the class maps), NaN when skipped. */
  valMap: number;
}

/** Hooks of {@link trainSeam}. */
export interface SeamHooks extends RunHooks {
  /** Skip the validation mAP. */
  skipEval?: boolean;
}

/** Builds the network of a SEAM config. */
export function seamNetOf(gpu: GpuContext, cfg: SeamConfig, numClasses: number): SeamNet {
  return createSeamNet(gpu, {
    arch: cfg.model,
    numClasses,
    outputStride: cfg.outputStride,
    seed: cfg.seed,
    dropout: cfg.dropout,
    pcmWidths: cfg.pcmWidths,
    pcmChannels: cfg.pcmChannels,
  });
}

/**
 * Records one SEAM step: both branches, the losses, the backward, the optimizer update.
 * Nothing is submitted or read back; the caller disposes the losses.
 */
export function recordSeamStep(
  gpu: GpuContext,
  model: SeamNet,
  opt: Optimizer,
  params: Param[],
  s: SeamStepInputs & { lr: number },
): { losses: SeamLosses; camShape: readonly number[] } {
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const r = recordSeamLosses(gpu, model, tape, s);
  tape.backward(r.seeds);
  r.release();
  opt.step(params, s.lr);
  return { losses: r.losses, camShape: r.camShape };
}

const CKPT = "last.safetensors";

/** Trains SEAM (module doc). */
export async function trainSeam(
  input: SeamInput,
  hooks: SeamHooks = {},
): Promise<SeamTrainResult> {
  const { resume: resumeFlag = false, ...rest } = input;
  const cfg = validate(SeamConfigSchema, rest, "seam config");
  checkSeamLossOptions(cfg);
  cfg.lr ??= defaultLr(cfg.optimizer);
  const log = hooks.log ?? ((l: string) => console.log(l));
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  const out = cfg.out ?? `runs/seam-${cfg.model}${cfg.ocr.enabled ? "-ocr" : ""}-${stamp}`;
  cfg.out = out;
  const ckptPath = join(out, CKPT);
  const resume = await checkRunFolder(out, ckptPath, resumeFlag, log);
  const data = await openTrainingData(cfg, log);
  const S2 = Math.floor(cfg.size * cfg.scaleFactor);
  if (S2 < 2) {
    throw new TrainError(`--size ${cfg.size} x scaleFactor ${cfg.scaleFactor} is under 2 pixels`);
  }
  const gpu = hooks.gpu ?? await createGpu();
  await tuneMatmul(gpu);
  const model = seamNetOf(gpu, cfg, data.numClasses);
  if (cfg.weights && !resume) await loadTorchvisionWeights(model, cfg.weights);
  const params = model.params();
  const opt = createOptimizer(gpu, cfg);
  const tensors = runTensors(model, opt, params);
  const prior = cfg.ocr.enabled
    ? Tensor.fromArray(gpu, await data.prior(), [data.numClasses, data.numClasses])
    : null;
  const configHash = await data.configHash(cfg);
  const start = await resumeAt(resume, out, tensors, opt, configHash, cfg.steps, log);
  log(
    `training SEAM (${cfg.model}, output stride ${cfg.outputStride}, branch 2 at ` +
      `${cfg.scaleFactor}x) on ${data.describe} (${data.size} images, ${data.numClasses} ` +
      `classes)${
        cfg.ocr.enabled ? ` with OCR (lambda ${cfg.ocr.lambda})` : ""
      } on ${gpu.describe()}; ${describeBackend(gpu)}`,
  );
  const ocrStart = Math.floor(cfg.ocr.start * cfg.steps);
  const keys = ["cls1", "cls2", "rvmin1", "rvmin2", "er", "ecr1", "ecr2"] as const;
  const end = await runSteps<TrainBatch, SeamStepLog>({
    gpu,
    out,
    config: cfg,
    stream: data.batches(start.position),
    resumed: resume,
    start,
    cfg,
    lr: cfg.lr,
    label: "seam",
    log,
    tty: hooks.tty,
    stopAfter: hooks.stopAfter,
    step: (b, lr, step) => {
      const x = Tensor.fromArray(gpu, b.images, [b.batchSize, 3, cfg.size, cfg.size]);
      const tags = Tensor.fromArray(gpu, b.tags, [b.batchSize, data.numClasses]);
      const { losses } = recordSeamStep(gpu, model, opt, params, {
        x,
        tags,
        lr,
        prior: prior && step >= ocrStart ? prior : null,
        ocr: cfg.ocr,
        dropoutSeed: stepDropoutSeed(cfg.seed, step),
        scaleFactor: cfg.scaleFactor,
        ecrTopk: cfg.ecrTopk,
      });
      x.dispose();
      tags.dispose();
      return {
        images: b.batchSize,
        tensors: [...keys.map((k) => losses[k]), losses.ocr1, losses.ocr2].filter((t) =>
          t !== null
        ),
        rest: [losses.ocPixels1, losses.ocPixels2],
        read: (values) => {
          const vals = values.map((buf) => buf[0]);
          const v = Object.fromEntries(keys.map((k, i) => [k, vals[i]])) as Record<
            typeof keys[number],
            number
          >;
          const ocr = (vals[7] ?? 0) + (vals[8] ?? 0);
          const lossCls = (v.cls1 + v.cls2) / 2;
          const lossEcr = v.ecr1 + v.ecr2;
          return {
            fields: {
              loss: seamTotal(v, ocr),
              loss_cls: lossCls,
              loss_rvmin: (v.rvmin1 + v.rvmin2) / 2,
              loss_er: v.er,
              loss_ecr: lossEcr,
              loss_ocr: ocr,
            },
            progress: {
              "cls/er/ecr": `${lossCls.toFixed(3)}/${v.er.toFixed(3)}/${lossEcr.toFixed(3)}`,
              ...(prior ? { ocr: ocr.toFixed(4) } : {}),
            },
          };
        },
      };
    },
    tensors,
    opt,
    configHash,
    metadata: { kind: "seam", arch: cfg.model },
    failure: { what: "SEAM loss", advice: "lower --lr or check the data" },
  });
  let valMap = NaN;
  if (!hooks.skipEval && end.complete) {
    valMap = await validationMap(gpu, model.camView("cam"), data, cfg, log);
  }
  // The peak counts the validation too.
  const result: SeamTrainResult = await finishRun(
    { ...end, peakPoolBytes: gpu.pool.stats().peakInUse },
    { valMap },
    log,
    `, val mAP ${Number.isNaN(valMap) ? "n/a" : valMap.toFixed(3)}`,
  );
  prior?.dispose();
  model.dispose();
  if (!hooks.gpu) gpu.destroy();
  return result;
}
