/**
 * The CAM classifier training loop (docs/architecture.md, docs/ocr.md#where-it-plugs-in,
 * docs/data.md#checkpoints): one command encoder and one submit per step (forward, the tape's
 * backward, optimizer), losses read back every `logEvery` steps, checkpoints written
 * atomically with model + optimizer state + step + data position (the stream's order and
 * augmentation derive from the seed and the position), and
 * `resume` continuing bit for bit.
 * @module
 */
import { join } from "node:path";
import type { GpuContext } from "../gpu/context.ts";
import { createGpu, describeBackend } from "../io/gpu.ts";
import { Tensor } from "../gpu/tensor.ts";
import { tuneMatmul } from "../ops/matmul.ts";
import {
  defaultLr,
  type OcrConfig,
  type TrainConfig,
  type TrainConfigInput,
  TrainConfigSchema,
  validate,
} from "../io/config.ts";
import { exists, writeJsonAtomic, writeTextAtomic } from "../io/atomic.ts";
import { loadTensors, loadTorchvisionWeights, saveTensors } from "../io/checkpoint.ts";
import { readSafetensorsHeader } from "../io/safetensors.ts";
import { Tape } from "../autograd/tape.ts";
import { type CamNet, createModel } from "../models/cam_net.ts";
import type { CamModel } from "../cam/image.ts";
import {
  multilabelSoftMarginLoss,
  multilabelSoftMarginLossBackward,
} from "../losses/multilabel.ts";
import { ocrLoss } from "../losses/ocr.ts";
import { AdamW, type Optimizer, SGD } from "../optim/mod.ts";
import type { NamedTensor } from "../io/checkpoint.ts";
import { type Param, zeroGrads } from "../autograd/param.ts";
import { meanAveragePrecision } from "../eval/classification.ts";
import { openTrainingData, type TrainBatch, type TrainingData } from "./data.ts";
import {
  finishRun,
  type LoopLine,
  resumeAt,
  type RunHooks,
  type RunResult,
  runSteps,
  runTensors,
} from "./loop.ts";

/** Raised for training failures (NaN loss, bad run folder); the message says what to do. */
export class TrainError extends Error {
  /** Always "TrainError". */
  override name = "TrainError";
}

/** One line of train.jsonl (`loss`: classification + OCR). */
export interface StepLog extends LoopLine {
  loss_cls: number;
  loss_ocr: number;
  oc_pixels: number;
  oc_fraction: number;
}

/** What {@link train} returns (`finalLoss`: classification + OCR). */
export interface TrainResult extends RunResult {
  /** Validation classification mAP; NaN when the run stopped early or eval was skipped. */
  valMap: number;
}

/** Hooks of {@link train}. */
export interface TrainHooks extends RunHooks {
  /** Skip the validation mAP at the end. */
  skipEval?: boolean;
  /**
   * Called before each step with the number of steps done so far and the model (after that
   * step's checkpoint, if any, is written): tests read the state or inject a fault.
   */
  beforeStep?: (step: number, model: CamNet) => void | Promise<void>;
}

const CKPT = "last.safetensors";

/** Input for {@link train}: a config, partial or resolved, plus `resume`. */
export type TrainInput = TrainConfigInput & { resume?: boolean };

/** Trains a CAM classifier as configured; see the module doc. */
export async function train(input: TrainInput, hooks: TrainHooks = {}): Promise<TrainResult> {
  const { resume: resumeFlag = false, ...rest } = input;
  const cfg = validate(TrainConfigSchema, rest, "train config");
  cfg.lr ??= defaultLr(cfg.optimizer);
  const log = hooks.log ?? ((l: string) => console.log(l));
  const out = cfg.out ?? defaultRunDir(cfg);
  cfg.out = out;
  const ckptPath = join(out, CKPT);
  const resume = await checkRunFolder(out, ckptPath, resumeFlag, log);

  const data = await openTrainingData(cfg, log);
  const gpu = hooks.gpu ?? await createGpu();
  await tuneMatmul(gpu); // picks the matmul variant for this adapter (cached per adapter)
  const model = createModel(gpu, {
    arch: cfg.model,
    numClasses: data.numClasses,
    outputStride: cfg.outputStride,
    seed: cfg.seed,
  });
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
    `training ${cfg.model} on ${data.describe} (${data.size} images, ${data.numClasses} classes)` +
      `${cfg.ocr.enabled ? ` with OCR (lambda ${cfg.ocr.lambda})` : ""} on ${gpu.describe()}; ${
        describeBackend(gpu)
      }`,
  );

  const ocrStart = Math.floor(cfg.ocr.start * cfg.steps);
  const end = await runSteps<TrainBatch, StepLog>({
    gpu,
    out,
    config: cfg,
    stream: data.batches(start.position),
    resumed: resume,
    start,
    cfg,
    lr: cfg.lr,
    label: "train",
    log,
    tty: hooks.tty,
    stopAfter: hooks.stopAfter,
    beforeStep: (step) => hooks.beforeStep?.(step, model),
    step: (b, lr, step) => {
      const x = Tensor.fromArray(gpu, b.images, [b.batchSize, 3, cfg.size, cfg.size]);
      const tags = Tensor.fromArray(gpu, b.tags, [b.batchSize, data.numClasses]);
      const { lossCls, lossOcr, ocPixels, camShape } = recordTrainStep(gpu, model, opt, params, {
        x,
        tags,
        lr,
        prior: prior && step >= ocrStart ? prior : null,
        ocr: cfg.ocr,
      });
      x.dispose();
      tags.dispose();
      return {
        images: b.batchSize,
        tensors: [lossCls, lossOcr, ocPixels].filter((t) => t !== null),
        read: (values) => {
          const [lc, lo = 0, oc = 0] = values.map((v) => v[0]);
          const total = lc + lo;
          const ocFraction = oc / (b.batchSize * camShape[2] * camShape[3]);
          return {
            fields: {
              loss: total,
              loss_cls: lc,
              loss_ocr: lo,
              oc_pixels: oc,
              oc_fraction: ocFraction,
            },
            progress: prior
              ? { ocr: lo.toFixed(4), oc: `${(ocFraction * 100).toFixed(1)}%` }
              : undefined,
            detail: ` (cls ${lc}, ocr ${lo})`,
          };
        },
      };
    },
    tensors,
    opt,
    configHash,
    failure: { what: "loss", advice: "lower --lr or check the data" },
  });
  let valMap = NaN;
  if (!hooks.skipEval && end.complete) {
    valMap = await validationMap(gpu, model, data, cfg, log);
  }
  const peak = end.peakPoolBytes;
  const result: TrainResult = await finishRun(
    end,
    { valMap },
    log,
    `, val mAP ${Number.isNaN(valMap) ? "n/a" : valMap.toFixed(3)}, ` +
      `peak GPU pool ${(peak / 2 ** 20).toFixed(1)} MiB`,
  );
  prior?.dispose();
  if (!hooks.gpu) gpu.destroy();
  return result;
}

/** Inputs of one training step. */
export interface StepInputs {
  /** Images [B, 3, S, S]. */
  x: Tensor;
  /** Multi-hot tags [B, C]. */
  tags: Tensor;
  lr: number;
  /** Co-occurrence prior [C, C] when OCR is on for this step, else null. */
  prior: Tensor | null;
  ocr: OcrConfig;
}

/** Loss tensors of a recorded step (owned by the caller; read them after a flush). */
export interface StepOutputs {
  lossCls: Tensor;
  lossOcr: Tensor | null;
  ocPixels: Tensor | null;
  camShape: readonly number[];
}

/** What {@link recordClassifierLosses} records (tensors owned by the caller). */
export interface ClassifierLosses {
  /** The multilabel soft-margin loss [1] of each logits tensor, in order. */
  cls: Tensor[];
  /** OCR's loss [1] on the class maps (null without a prior). */
  ocr: Tensor | null;
  /** OCR's OC pixel count [1] (null without a prior). */
  ocPixels: Tensor | null;
  /** The backward's seeds: each logits tensor's and the maps' gradient (the tape owns them). */
  seeds: [Tensor, Tensor][];
}

/**
 * The classification losses of a step, shared by the CAM classifier and MCTformer: the
 * multilabel soft-margin loss on each of `logits` (each [B, C], weight 1) and, with a prior,
 * OCR on the class maps `maps` [B, C, h, w] (docs/ocr.md#where-it-plugs-in); returns the losses
 * and the seeds of the tape's backward. The OCR kernel computes its gradient with its loss: a
 * seed of the maps, to which the backward of a logits tensor that is their mean adds in place.
 */
export function recordClassifierLosses(
  gpu: GpuContext,
  s: { logits: Tensor[]; maps: Tensor; tags: Tensor; prior: Tensor | null; ocr: OcrConfig },
): ClassifierLosses {
  const seeds: [Tensor, Tensor][] = [];
  const cls = s.logits.map((l) => {
    seeds.push([l, multilabelSoftMarginLossBackward(gpu, l, s.tags)]);
    return multilabelSoftMarginLoss(gpu, l, s.tags);
  });
  if (!s.prior) return { cls, ocr: null, ocPixels: null, seeds };
  const r = ocrLoss(gpu, s.maps, s.tags, s.prior, s.ocr);
  seeds.push([s.maps, r.grad]);
  return { cls, ocr: r.loss, ocPixels: r.ocPixels, seeds };
}

/**
 * Records one training step: forward, multilabel soft-margin loss on the GAP logits, its
 * gradient through GAP into the class maps, plus the OCR gradient on the class maps when a
 * prior is given ({@link recordClassifierLosses}), backward, optimizer update. Nothing is
 * submitted or read back.
 */
export function recordTrainStep(
  gpu: GpuContext,
  model: CamNet,
  opt: Optimizer,
  params: Param[],
  s: StepInputs,
): StepOutputs {
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const { cam, logits } = model.forward(s.x, tape);
  const r = recordClassifierLosses(gpu, { ...s, logits: [logits], maps: cam });
  const camShape = cam.shape;
  tape.backward(r.seeds);
  logits.dispose();
  cam.dispose();
  opt.step(params, s.lr);
  return { lossCls: r.cls[0], lossOcr: r.ocr, ocPixels: r.ocPixels, camShape };
}

/** Where a resumed run continues. */
export interface ResumePoint {
  step: number;
  /** Data stream position (samples consumed). */
  position: number;
  /** Training seconds before this call. */
  elapsedBefore: number;
}

/**
 * Writes a run folder's `last.safetensors` (atomically): `tensors` (model + optimizer state)
 * and the metadata {@link resumeRun} reads back (`point.elapsedBefore`: total training seconds
 * so far), plus `extra` metadata.
 */
export async function saveRunCheckpoint(
  out: string,
  tensors: NamedTensor[],
  opt: Optimizer,
  configHash: string,
  point: ResumePoint,
  extra: Record<string, string> = {},
): Promise<void> {
  await saveTensors(join(out, CKPT), tensors, {
    ...extra,
    step: String(point.step),
    position: String(point.position),
    config_hash: configHash,
    elapsed_s: String(point.elapsedBefore),
    optim_steps: String(opt.stepCount),
  });
}

/**
 * Resumes a run folder's `last.safetensors` into `tensors` (model + optimizer state): checks
 * that it was written with the same config hash, restores the optimizer's step count and cuts
 * `train.jsonl` back to the checkpoint's step.
 */
export async function resumeRun(
  out: string,
  tensors: NamedTensor[],
  opt: Optimizer,
  configHash: string,
): Promise<ResumePoint> {
  const ckptPath = join(out, CKPT);
  // The config first: a changed config (another optimizer, say) also changes the tensors.
  const meta = (await readSafetensorsHeader(ckptPath)).metadata;
  if (meta.config_hash !== configHash) {
    throw new TrainError(
      `--resume: ${ckptPath} was written with a different config (hash ${meta.config_hash}, ` +
        `now ${configHash}); resume with the saved ${join(out, "config.json")}`,
    );
  }
  await loadTensors(ckptPath, tensors);
  const step = Number(meta.step);
  opt.stepCount = Number(meta.optim_steps);
  await truncateJsonl(join(out, "train.jsonl"), step);
  return {
    step,
    position: Number(meta.position),
    elapsedBefore: Number(meta.elapsed_s ?? 0),
  };
}

/**
 * Checks a run folder before training and says whether it is resumed: a fresh run must not
 * overwrite a checkpoint; `--resume` needs one, except that a folder holding a `config.json`
 * but no checkpoint (a run that stopped before its first checkpoint) is started afresh, with
 * a note. Errors say which flag to use.
 */
export async function checkRunFolder(
  out: string,
  ckptPath: string,
  resume: boolean,
  log: (l: string) => void = console.log,
): Promise<boolean> {
  const haveCkpt = await exists(ckptPath);
  if (!resume && haveCkpt) {
    throw new TrainError(
      `${out} already holds a run (${ckptPath}); pass --resume to continue it or choose ` +
        `another --out`,
    );
  }
  if (resume && !haveCkpt) {
    if (await exists(join(out, "config.json"))) {
      log(`--resume: ${out} stopped before its first checkpoint; starting it afresh`);
      return false;
    }
    throw new TrainError(`--resume: no checkpoint ${ckptPath} to resume from`);
  }
  return resume;
}

/**
 * Starts a run on its batch stream: the first batch is loaded (when a step is left) before
 * the run folder is written, so that a run that fails on its data (a corrupt image, a missing
 * file) leaves no folder without a checkpoint behind. A fresh run's folder gets an empty
 * `train.jsonl`; every run (re)writes `config.json`. Returns the stream's next batch, the
 * loaded one first; a stream that ends early is a {@link TrainError}.
 */
export async function startRun<T>(
  stream: AsyncIterator<T>,
  stepsLeft: boolean,
  out: string,
  config: unknown,
  fresh: boolean,
): Promise<() => Promise<T>> {
  const next = async () => {
    const n = await stream.next();
    if (n.done) throw new TrainError("the data stream ended early");
    return n.value;
  };
  let first: { batch: T } | null = stepsLeft ? { batch: await next() } : null;
  if (fresh) {
    await Deno.mkdir(out, { recursive: true });
    await writeTextAtomic(join(out, "train.jsonl"), "");
  }
  await writeJsonAtomic(join(out, "config.json"), config);
  return () => {
    if (!first) return next();
    const { batch } = first;
    first = null;
    return Promise.resolve(batch);
  };
}

/** The configured optimizer: SGD with momentum (psa) or AdamW; head group at headLrMult. */
export function createOptimizer(
  gpu: GpuContext,
  cfg: Pick<TrainConfig, "optimizer" | "momentum" | "weightDecay" | "headLrMult">,
): Optimizer {
  const lrMult = { head: cfg.headLrMult };
  return cfg.optimizer === "sgd"
    ? new SGD(gpu, { momentum: cfg.momentum, weightDecay: cfg.weightDecay, lrMult })
    : new AdamW(gpu, { weightDecay: cfg.weightDecay, lrMult });
}

/** runs/<model>[-ocr]-<UTC timestamp>. */
export function defaultRunDir(cfg: TrainConfig): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  return `runs/${cfg.model}${cfg.ocr.enabled ? "-ocr" : ""}-${stamp}`;
}

/** Keeps the lines of train.jsonl up to `step` (a resumed run regenerates the rest). */
export async function truncateJsonl(path: string, step: number): Promise<void> {
  const text = await exists(path) ? await Deno.readTextFile(path) : "";
  const kept = text.split("\n").filter((l) => l.trim() && JSON.parse(l).step <= step);
  await writeTextAtomic(path, kept.map((l) => l + "\n").join(""));
}

/** Classification mAP of the model on the validation split (eval mode, no augmentation). */
export async function validationMap(
  gpu: GpuContext,
  model: CamModel,
  data: TrainingData,
  cfg: Pick<TrainConfig, "size">,
  log: (l: string) => void,
): Promise<number> {
  const scores: number[] = [];
  const labels: number[] = [];
  for await (const b of data.valBatches()) {
    const x = Tensor.fromArray(gpu, b.images, [b.batchSize, 3, cfg.size, cfg.size]);
    const { cam, logits } = model.forward(x, null);
    x.dispose();
    cam.dispose();
    scores.push(...await logits.read());
    logits.dispose();
    labels.push(...b.tags);
  }
  const { map } = meanAveragePrecision(scores, labels, data.numClasses);
  log(
    `validation: ${labels.length / data.numClasses} images, classification mAP ${map.toFixed(4)}`,
  );
  return map;
}

/** Reads the metadata of a checkpoint (step, position, config hash...). */
export async function checkpointMetadata(path: string): Promise<Record<string, string>> {
  return (await readSafetensorsHeader(path)).metadata;
}
