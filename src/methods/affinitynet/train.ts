/**
 * AffinityNet training (psa's second stage, `deno task affinity`): images with psa's confident
 * label maps from a CAM folder written by `deno task cam`, pairwise affinities of the
 * AffinityNet features within a radius on the stride-8 grid, psa's affinity loss, one submit
 * per step, atomic checkpoints and bit-exact `--resume` (as the CAM trainer).
 *
 * Labels: per image, the normalised tagged CAMs (`cams/<id>.safetensors`) give psa's CRF-free
 * two-alpha label map at image resolution ({@link affinityLabelMap}: low alpha 4 → confident
 * foreground, high alpha 24 → confident background, the rest ignored). The map goes through the
 * same augmentation as the image (nearest-neighbour for labels, 255 in padding), then each
 * stride-8 feature cell takes the label at its centre ({@link featureLabels}) and pairs within
 * the radius become bg-positive, fg-positive or negative ({@link affinityPairLabels}).
 * With `crf`, the label maps are psa's own: both alphas' score maps refined by the dense CRF on
 * the image before the argmax ({@link crfAffinityLabelMap}), computed once per image before
 * training and kept beside the CAMs (`<cams>/affinity-labels/crf-lo<a>-hi<b>/<id>.png`).
 *
 * The backbone starts from the CAM classifier's checkpoint (named in cam.json) by default:
 * psa starts from ImageNet weights, which `tiny` does not have. `--scratch` starts from random
 * weights, `--init FILE` from any checkpoint with torchvision names.
 * @module
 */
import { dirname, join, resolve } from "node:path";
import type { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { createGpu, describeBackend } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { tuneMatmul } from "../../ops/matmul.ts";
import { type Param, zeroGrads } from "../../autograd/param.ts";
import { Tape } from "../../autograd/tape.ts";
import { pairwiseAffinity } from "../../autograd/functions.ts";
import { type AffinityNet, createAffinityNet } from "./model.ts";
import {
  type AffinityConfig,
  AffinityConfigSchema,
  ConfigError,
  defaultLr,
  validate,
} from "../../io/config.ts";
import { exists, writeFileAtomic } from "../../io/atomic.ts";
import { type Dataset, openDataset } from "../../data/dataset.ts";
import { withMasks } from "../../data/base.ts";
import type { Batch } from "../../data/stream.ts";
import { runConfigHash, trainingStream } from "../../train/data.ts";
import {
  finishRun,
  type LoopLine,
  resumeAt,
  type RunHooks,
  type RunResult,
  runSteps,
  runTensors,
} from "../../train/loop.ts";
import type { Optimizer } from "../../optim/mod.ts";
import { affinityLabelMap, affinityPairLabels, crfAffinityLabelMap } from "./labels.ts";
import { readMaskPng } from "../cam/mask_folder.ts";
import { imagesToWrite, PROGRESS_FILE } from "../cam/resume.ts";
import { PSA_CRF } from "../../ops/crf.ts";
import { prefetchSamples, rgbPlanes } from "../cam/extract.ts";
import { encodeLabelPng, VOC_PALETTE } from "../../data/png.ts";
import { affinityLoss, pairCounts, uploadPairCodes } from "../../losses/affinity.ts";
import { pairGrid } from "../../ops/affinity.ts";
import { readRunConfig } from "../cam/extract.ts";
import { readCamFolder, readImageCams } from "../cam/cam_folder.ts";
import { Progress } from "../../io/progress.ts";
import { checkRunFolder, createOptimizer } from "../../train/train.ts";

/** Options of psa's label maps. */
export interface LabelAlphas {
  loAlpha: number;
  hiAlpha: number;
}

/**
 * A view of the first `images` samples of `ds` (those with CAMs) whose samples carry psa's
 * confident label maps (from the CAM folder `camDir`) as their masks; a CAM file whose size
 * differs from its image is an error naming both.
 */
export function withAffinityLabels(
  ds: Dataset,
  camDir: string,
  alphas: LabelAlphas,
  images = ds.ids.length,
): Dataset {
  return withMasks(ds, async (s) => {
    const c = await readImageCams(camDir, s.id, s);
    return affinityLabelMap(c.cams, c.classes, c.height, c.width, alphas);
  }, images);
}

/** Where the CRF label maps of a CAM folder for these alphas go (they depend on nothing else). */
export function crfLabelDir(camDir: string, alphas: LabelAlphas): string {
  return join(camDir, "affinity-labels", `crf-lo${alphas.loAlpha}-hi${alphas.hiAlpha}`);
}

/**
 * Writes psa's CRF-refined confident label maps ({@link crfAffinityLabelMap}, psa's CRF
 * settings) of the first `images` samples of `ds` as `<dir>/<id>.png`, from the CAM folder
 * `camDir`; images already written for the same CAMs and settings are skipped (each file is
 * written atomically; see ../cam/resume.ts), so an interrupted run resumes. Progress with ETA.
 */
export async function writeCrfAffinityLabels(
  gpu: GpuContext,
  ds: Dataset,
  camDir: string,
  images: number,
  dir: string,
  alphas: LabelAlphas,
  hooks: { log?: (l: string) => void; tty?: boolean } = {},
): Promise<void> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  await Deno.mkdir(dir, { recursive: true });
  // The labels depend on the CAMs: the CAM folder's own settings key is part of theirs.
  const camKey = await Deno.readTextFile(join(camDir, PROGRESS_FILE)).then(
    (t) => JSON.parse(t).key ?? null,
    () => null,
  );
  const key = { camKey, loAlpha: alphas.loAlpha, hiAlpha: alphas.hiAlpha, crf: PSA_CRF };
  const todo = await imagesToWrite(
    dir,
    key,
    ds.ids.slice(0, images),
    (id) => [join(dir, `${id}.png`)],
    log,
  );
  if (todo.length === 0) return;
  log(
    `CRF affinity labels (low alpha ${alphas.loAlpha}, high alpha ${alphas.hiAlpha}) of ` +
      `${todo.length} of ${images} images → ${dir}`,
  );
  const progress = new Progress("crf-labels", todo.length, { write: log, tty: hooks.tty });
  const sub = { load: (j: number) => ds.load(todo[j]) };
  let done = 0;
  try {
    for await (const s of prefetchSamples(sub, todo.length)) {
      const c = await readImageCams(camDir, s.id, s);
      const image = Tensor.fromArray(gpu, rgbPlanes(s.rgb, s.width, s.height), [
        3,
        s.height,
        s.width,
      ]);
      const labels = await crfAffinityLabelMap(
        gpu,
        image,
        c.cams,
        c.classes,
        s.height,
        s.width,
        alphas,
      );
      image.dispose();
      await writeFileAtomic(
        join(dir, `${s.id}.png`),
        await encodeLabelPng(labels, s.width, s.height, VOC_PALETTE),
      );
      progress.update(++done);
    }
  } finally {
    progress.done();
  }
}

/**
 * The label of each cell of an h x w grid of stride `stride` over an S x S label map: the
 * label at the cell's centre pixel (clamped to the map).
 */
export function featureLabels(
  mask: Uint8Array,
  S: number,
  h: number,
  w: number,
  stride = 8,
  offset = 0,
): Uint8Array {
  const out = new Uint8Array(h * w);
  const c = stride >> 1;
  for (let i = 0; i < h; i++) {
    const y = Math.min(S - 1, i * stride + c);
    for (let j = 0; j < w; j++) {
      out[i * w + j] = mask[offset + y * S + Math.min(S - 1, j * stride + c)];
    }
  }
  return out;
}

/** Inputs of one AffinityNet training step. */
export interface AffinityStepInputs {
  /** Images [B, 3, S, S]. */
  x: Tensor;
  /** Label maps [B, S, S] (0 bg, c+1 class, 255 ignored). */
  masks: Uint8Array;
  lr: number;
  radius: number;
}

/** What a recorded step leaves to read: the loss [8] (see affinityLoss) and the pair counts. */
export interface AffinityStepOutputs {
  loss: Tensor;
  counts: { bg: number; fg: number; neg: number };
}

/**
 * Records one AffinityNet step: features, pairwise affinities, psa's affinity loss and its
 * gradient back through the affinities and the network, optimizer update. Nothing is
 * submitted or read back.
 */
export function recordAffinityStep(
  gpu: GpuContext,
  model: AffinityNet,
  opt: Optimizer,
  params: Param[],
  s: AffinityStepInputs,
): AffinityStepOutputs {
  const [B, , S] = s.x.shape;
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const feat = model.forward(s.x, tape);
  const [, , h, w] = feat.shape;
  const labels = Array.from(
    { length: B },
    (_, b) =>
      affinityPairLabels(featureLabels(s.masks, S, h, w, model.stride, b * S * S), h, w, s.radius),
  );
  const codes = uploadPairCodes(gpu, labels);
  const counts = pairCounts(labels);
  const aff = pairwiseAffinity(tape, feat, s.radius);
  const { loss, grad } = affinityLoss(gpu, aff, codes, counts);
  codes.dispose();
  tape.backward([[aff, grad]]);
  aff.dispose();
  feat.dispose();
  opt.step(params, s.lr);
  return { loss, counts };
}

/** One line of the AffinityNet train.jsonl (`loss`: psa's total, bg/4 + fg/4 + neg/2). */
export interface AffinityStepLog extends LoopLine {
  loss_bg: number;
  loss_fg: number;
  loss_neg: number;
  /** Pair counts of the logged batch. */
  pairs_bg: number;
  pairs_fg: number;
  pairs_neg: number;
}

/** What {@link trainAffinity} returns. */
export interface AffinityTrainResult extends RunResult {
  /** The pair radius trained with (recorded in the checkpoint for the random walk). */
  radius: number;
}

/** Hooks of {@link trainAffinity}. */
export type AffinityHooks = RunHooks;

/** Input of {@link trainAffinity}: a config (defaults filled in) plus `resume`. */
export type AffinityInput = z.input<typeof AffinityConfigSchema> & { resume?: boolean };

/** Trains AffinityNet on a CAM folder's labels; see the module doc. */
export async function trainAffinity(
  input: AffinityInput,
  hooks: AffinityHooks = {},
): Promise<AffinityTrainResult> {
  const { resume: resumeFlag = false, ...rest } = input;
  const cfg: AffinityConfig = validate(AffinityConfigSchema, rest, "affinity config");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const cf = await readCamFolder(cfg.cams);
  const run = cf.ckpt && await exists(join(dirname(cf.ckpt), "config.json"))
    ? await readRunConfig(cf.ckpt)
    : null;
  // The CAM run's backbone when AffinityNet can take it (another method's network, such as
  // MCTformer's ViT, it cannot: AffinityNet then needs --scratch or --init and --model).
  const runArch = AffinityConfigSchema.shape.model.unwrap().options.find((a) => a === run?.model);
  if (run && !runArch && !cfg.scratch && !cfg.init) {
    throw new ConfigError(
      `${cfg.cams}: its CAMs come from a ${run.model} run (${cf.ckpt}), whose network ` +
        `AffinityNet cannot start from: pass --scratch or --init FILE (weights of --model)`,
    );
  }
  cfg.model ??= runArch ?? "tiny";
  cfg.size ??= run?.size ?? 128;
  cfg.lr ??= defaultLr(cfg.optimizer);
  const init = cfg.scratch ? null : cfg.init ?? cf.ckpt;
  if (!cfg.scratch && !init) {
    throw new ConfigError(
      `${join(cfg.cams, "cam.json")} names no checkpoint: pass --init FILE or --scratch`,
    );
  }
  const out = cfg.out ?? join(dirname(resolve(cfg.cams)), "affinity");
  cfg.out = out;
  const S = cfg.size;
  const grid = Math.ceil(S / 8);
  try {
    pairGrid(grid, grid, cfg.radius);
  } catch {
    throw new ConfigError(
      `--size ${S} gives a ${grid}x${grid} feature grid, too small for radius ${cfg.radius} ` +
        `(need size >= ${8 * (2 * cfg.radius - 1)})`,
    );
  }
  const ckptPath = join(out, "last.safetensors");
  const resume = await checkRunFolder(out, ckptPath, resumeFlag, log);
  const split = await openDataset({ kind: cf.kind, root: cf.root, split: cf.split, tags: cf.tags });
  const gpu = hooks.gpu ?? await createGpu();
  let ds: Dataset;
  if (cfg.crf) {
    const dir = crfLabelDir(cf.dir, cfg);
    await writeCrfAffinityLabels(gpu, split, cf.dir, cf.images, dir, cfg, hooks);
    ds = withMasks(
      split,
      async (s) => (await readMaskPng(join(dir, `${s.id}.png`), s.id)).data,
      cf.images,
    );
  } else {
    ds = withAffinityLabels(split, cf.dir, cfg, cf.images);
  }
  await tuneMatmul(gpu);
  const model = createAffinityNet(gpu, { arch: cfg.model, seed: cfg.seed });
  const params = model.params();
  const opt = createOptimizer(gpu, cfg);
  const tensors = runTensors(model, opt, params);
  const configHash = await runConfigHash(cfg, { init });
  const start = await resumeAt(resume, out, tensors, opt, configHash, cfg.steps, log);
  if (!resume && init) await model.loadBackbone(init);
  log(
    `training AffinityNet (${cfg.model}, ${model.featureChannels} feature channels, radius ` +
      `${cfg.radius}) on ${ds.ids.length} images of ${cf.kind} '${cf.split}' with labels from ` +
      `${cf.dir}, backbone from ${init ?? "scratch"}, on ${gpu.describe()}; ${
        describeBackend(gpu)
      }`,
  );

  const stream = trainingStream(ds, { ...cfg, size: S }, start.position, true)
    [Symbol.asyncIterator]();
  const end = await runSteps<Batch, AffinityStepLog>({
    gpu,
    out,
    config: { ...cfg, init, camFolder: cf },
    stream,
    resumed: resume,
    start,
    cfg,
    lr: cfg.lr,
    label: "affinity",
    log,
    tty: hooks.tty,
    stopAfter: hooks.stopAfter,
    step: (b, lr) => {
      const x = Tensor.fromArray(gpu, b.images, [b.size, 3, S, S]);
      const { loss, counts } = recordAffinityStep(gpu, model, opt, params, {
        x,
        masks: b.masks!,
        lr,
        radius: cfg.radius,
      });
      x.dispose();
      return {
        images: b.size,
        tensors: [loss],
        read: ([[total, lb, lf, ln]]) => ({
          fields: {
            loss: total,
            loss_bg: lb,
            loss_fg: lf,
            loss_neg: ln,
            pairs_bg: counts.bg,
            pairs_fg: counts.fg,
            pairs_neg: counts.neg,
          },
          progress: { "bg/fg/neg": `${lb.toFixed(3)}/${lf.toFixed(3)}/${ln.toFixed(3)}` },
        }),
      };
    },
    tensors,
    opt,
    configHash,
    // The radius is the walk's too: deno task rw reads it from here.
    metadata: { kind: "affinitynet", arch: cfg.model, radius: String(cfg.radius) },
    failure: { what: "affinity loss", advice: "lower --lr" },
  });
  const result: AffinityTrainResult = await finishRun(end, { radius: cfg.radius }, log);
  model.dispose();
  if (!hooks.gpu) gpu.destroy();
  return result;
}
