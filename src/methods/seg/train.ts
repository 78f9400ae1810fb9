/**
 * The final stage's training (`deno task seg`, docs/segmentation.md): a DeepLab segmenter
 * (src/models/deeplab.ts) trained on a folder of pseudo masks (`<id>.png`, any method's) or on
 * the ground truth (`--masks gt`, the fully supervised upper bound), with the DeepLab recipe:
 * SGD with momentum and poly LR, the head at 10x, random scale 0.5–1.5, flip, crops padded
 * with the ignore label. The logits (at the output stride) are bilinearly upsampled to the crop
 * size and scored by the pixel-wise softmax cross-entropy with ignore label 255. One submit per
 * step, atomic checkpoints and bit-exact `--resume`, as the CAM trainer.
 *
 * The backbone starts from `weights` (ImageNet, torchvision names), from `init` (any checkpoint
 * with the backbone's names, e.g. the CAM classifier's: the only pretraining `tiny` has), or
 * from Kaiming initialisation.
 * @module
 */
import { join } from "node:path";
import type { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { createGpu, describeBackend } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { tuneMatmul } from "../../ops/matmul.ts";
import { type Param, zeroGrads } from "../../autograd/param.ts";
import { Tape } from "../../autograd/tape.ts";
import { resizeBilinear, softmaxCrossEntropy } from "../../autograd/functions.ts";
import { createSegModel, type SegNet } from "../../models/deeplab.ts";
import {
  ConfigError,
  defaultLr,
  type SegConfig,
  SegConfigSchema,
  validate,
} from "../../io/config.ts";
import { loadTensors, loadTorchvisionWeights } from "../../io/checkpoint.ts";
import { type Dataset, openDataset } from "../../data/dataset.ts";
import { withMasks } from "../../data/base.ts";
import { resolveDataRoot } from "../../data/root.ts";
import { logWarnings, runConfigHash, trainingStream } from "../../train/data.ts";
import {
  finishRun,
  type LoopLine,
  resumeAt,
  type RunHooks,
  type RunResult,
  runSteps,
  runTensors,
} from "../../train/loop.ts";
import type { Batch } from "../../data/stream.ts";
import type { Optimizer } from "../../optim/mod.ts";
import { checkMaskFolder, readMaskPng } from "../cam/mask_folder.ts";
import { checkRunFolder, createOptimizer } from "../../train/train.ts";

/** The checkpoint metadata `kind` of a segmenter. */
export const SEG_KIND = "segmenter";

/** One line of the segmenter's train.jsonl (`loss`: mean cross-entropy, labelled pixels). */
export interface SegStepLog extends LoopLine {
  /** Share of the batch's pixels that carry a label (not 255). */
  labelled: number;
}

/** What {@link trainSegmenter} returns. */
export type SegTrainResult = RunResult;

/** Hooks of {@link trainSegmenter}. */
export type SegHooks = RunHooks;

/** Input of {@link trainSegmenter}: a config (defaults filled in) plus `resume`. */
export type SegInput = z.input<typeof SegConfigSchema> & { resume?: boolean };

/**
 * The training split with its masks: the dataset's own (`gt`) or `<masks>/<id>.png` of the
 * first `limit` images (every one must exist, checked before training; each mask must have
 * its image's size and labels 0..C or 255).
 */
export async function segTrainingSet(
  cfg: SegConfig,
  log: (l: string) => void,
): Promise<{ ds: Dataset; describe: string }> {
  const root = await resolveDataRoot(cfg, log);
  const ds = await openDataset({
    kind: root.kind,
    root: root.root,
    split: cfg.split,
    tags: cfg.tags,
  });
  logWarnings(ds, log);
  const n = Math.min(ds.ids.length, cfg.limit ?? Infinity);
  if (cfg.masks === "gt") {
    if (!ds.hasMasks) {
      throw new ConfigError(
        `--masks gt: ${root.kind} '${cfg.split}' has no ground-truth masks; give a mask folder`,
      );
    }
    return { ds: withMasks(ds, (s) => Promise.resolve(s.mask!), n), describe: root.describe };
  }
  const dir = cfg.masks;
  await checkMaskFolder(dir, ds.ids.slice(0, n));
  const C = ds.numClasses;
  const view = withMasks(ds, async (s) => {
    const path = join(dir, `${s.id}.png`);
    const m = await readMaskPng(path, s.id);
    if (m.width !== s.width || m.height !== s.height) {
      throw new Error(
        `${path}: mask is ${m.width}x${m.height} but image ${s.id} is ${s.width}x${s.height}`,
      );
    }
    for (const v of m.data) {
      if (v > C && v !== 255) throw new Error(`${path}: label ${v} outside 0..${C} and 255`);
    }
    return m.data;
  }, n);
  return { ds: view, describe: root.describe };
}

/** Inputs of one segmenter training step. */
export interface SegStepInputs {
  /** Images [B, 3, S, S]. */
  x: Tensor;
  /** Labels [B, S, S] as f32 (0 bg, c+1 class c, 255 ignored). */
  labels: Tensor;
  lr: number;
  /** Seed of this step's dropout masks (LargeFOV). */
  dropoutSeed: number;
}

/**
 * Records one step: logits, upsampled to the crop, the cross-entropy with ignore label, the
 * backward, the optimizer update. Returns the loss tensor [1] (read it after a flush).
 */
export function recordSegStep(
  gpu: GpuContext,
  model: SegNet,
  opt: Optimizer,
  params: Param[],
  s: SegStepInputs,
): Tensor {
  const [, , S] = s.x.shape;
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const logits = model.forward(s.x, tape, { training: true, dropoutSeed: s.dropoutSeed });
  const up = resizeBilinear(tape, logits, { size: [S, S] });
  logits.dispose();
  const loss = softmaxCrossEntropy(tape, up, s.labels);
  up.dispose();
  const one = Tensor.fromArray(gpu, new Float32Array([1]), [1]);
  tape.backward([[loss, one]]);
  one.dispose();
  opt.step(params, s.lr);
  return loss;
}

/** Loads a checkpoint's backbone tensors (torchvision names) into the segmenter. */
export async function loadSegBackbone(model: SegNet, path: string): Promise<void> {
  const backbone = new Set(
    [...model.backbone.params(), ...model.backbone.buffers()].map((t) => t.name),
  );
  await loadTensors(path, model.stateTensors(), {
    allowMissing: (n) => !backbone.has(n),
    ignoreUnexpected: (n) =>
      n.startsWith("classifier.") || n.startsWith("optim.") || n.startsWith("fc.") ||
      n.startsWith("f8.") || n.startsWith("f9.") || n.endsWith(".num_batches_tracked"),
  });
}

/** runs/seg-<model>-<UTC timestamp>. */
function defaultSegDir(cfg: SegConfig): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  return `runs/seg-${cfg.model}-${stamp}`;
}

/** Trains the segmenter; see the module doc. */
export async function trainSegmenter(
  input: SegInput,
  hooks: SegHooks = {},
): Promise<SegTrainResult> {
  const { resume: resumeFlag = false, ...rest } = input;
  const cfg: SegConfig = validate(SegConfigSchema, rest, "seg config");
  cfg.lr ??= defaultLr(cfg.optimizer);
  if (cfg.weights && cfg.init) {
    throw new ConfigError("give at most one of --weights (ImageNet) and --init (a checkpoint)");
  }
  const log = hooks.log ?? ((l: string) => console.log(l));
  const out = cfg.out ?? defaultSegDir(cfg);
  cfg.out = out;
  const ckptPath = join(out, "last.safetensors");
  const resume = await checkRunFolder(out, ckptPath, resumeFlag, log);
  const { ds, describe } = await segTrainingSet(cfg, log);
  const K = ds.numClasses + 1;
  const S = cfg.size;

  const gpu = hooks.gpu ?? await createGpu();
  await tuneMatmul(gpu);
  const model = createSegModel(gpu, {
    arch: cfg.model,
    numClasses: K,
    head: cfg.head,
    outputStride: cfg.outputStride,
    seed: cfg.seed,
  });
  const params = model.params();
  const opt = createOptimizer(gpu, cfg);
  const tensors = runTensors(model, opt, params);
  const configHash = await runConfigHash(cfg, { listHash: ds.listHash });
  const start = await resumeAt(resume, out, tensors, opt, configHash, cfg.steps, log);
  if (!resume && cfg.weights) await loadTorchvisionWeights(model, cfg.weights);
  else if (!resume && cfg.init) await loadSegBackbone(model, cfg.init);
  const source = cfg.masks === "gt" ? "ground truth" : `masks ${cfg.masks}`;
  log(
    `training DeepLab-${cfg.head === "aspp" ? "v2 ASPP" : "LargeFOV"} (${cfg.model}, output ` +
      `stride ${cfg.outputStride}, ${K} classes) on ${ds.ids.length} images of ${describe} ` +
      `'${cfg.split}' with ${source}, backbone from ${
        cfg.weights ?? cfg.init ?? "scratch"
      }, on ${gpu.describe()}; ${describeBackend(gpu)}`,
  );

  const end = await runSteps<Batch, SegStepLog>({
    gpu,
    out,
    config: cfg,
    stream: trainingStream(ds, cfg, start.position, true)[Symbol.asyncIterator](),
    resumed: resume,
    start,
    cfg,
    lr: cfg.lr,
    label: "seg",
    log,
    tty: hooks.tty,
    stopAfter: hooks.stopAfter,
    step: (b, lr, step) => {
      const x = Tensor.fromArray(gpu, b.images, [b.size, 3, S, S]);
      const masks = b.masks!;
      const labelsF = Float32Array.from(masks);
      let labelled = 0;
      for (const v of masks) if (v !== 255) labelled++;
      const labels = Tensor.fromArray(gpu, labelsF, [b.size, S, S]);
      const loss = recordSegStep(gpu, model, opt, params, {
        x,
        labels,
        lr,
        dropoutSeed: cfg.seed * 1_000_003 + step,
      });
      x.dispose();
      labels.dispose();
      return {
        images: b.size,
        tensors: [loss],
        read: ([[value]]) => ({ fields: { loss: value, labelled: labelled / masks.length } }),
      };
    },
    tensors,
    opt,
    configHash,
    metadata: {
      kind: SEG_KIND,
      arch: cfg.model,
      head: cfg.head,
      classes: String(K),
      output_stride: String(cfg.outputStride),
    },
    failure: { what: "segmentation loss", advice: "lower --lr" },
  });
  const result: SegTrainResult = await finishRun(end, {}, log);
  model.dispose();
  if (!hooks.gpu) gpu.destroy();
  return result;
}
