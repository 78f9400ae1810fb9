/**
 * The segmenter's inference and evaluation (`deno task eval --ckpt SEG_CKPT`,
 * docs/segmentation.md): per image, all on the GPU in one recording, the image (and with
 * `flip` its mirror image) at every scale, the class probabilities (softmax of the logits at
 * the output stride) bilinearly resized to the image and summed over scales and flips, an
 * optional dense CRF on them, the argmax: a palette PNG `<out>/masks/<id>.png` written
 * atomically. Prediction resumes: with the same settings (../cam/resume.ts), images whose PNG
 * exists are skipped. The prediction uses no
 * image tags, so the OC-error rate of these masks is the one a deployed model pays.
 * @module
 */
import { dirname, join } from "node:path";
import { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { createGpu } from "../../io/gpu.ts";
import { writeFileAtomic, writeJsonAtomic } from "../../io/atomic.ts";
import { loadTensors } from "../../io/checkpoint.ts";
import { readSafetensorsHeader, SafetensorsError } from "../../io/safetensors.ts";
import { type SegConfig, SegConfigSchema, validate } from "../../io/config.ts";
import { argmaxChannels, softmaxChannels } from "../../ops/channel.ts";
import { pointwise } from "../../ops/pointwise.ts";
import { denseCrf, type DenseCrfOptions } from "../../ops/crf.ts";
import { recordFusedMaps } from "../../cam/image.ts";
import { createSegModel, type SegNet } from "../../models/deeplab.ts";
import { encodeLabelPng, VOC_PALETTE } from "../../data/png.ts";
import type { Dataset, Sample } from "../../data/dataset.ts";
import type { Metrics } from "../../eval/metrics.ts";
import { CamError, INFERENCE_FIELDS, readCamJson } from "../cam/options.ts";
import {
  type CamHooks,
  openRunDataset,
  prefetchSamples,
  resolveCheckpoint,
  rgbPlanes,
  rgbToChw,
} from "../cam/extract.ts";
import { evaluateMaskFolder } from "../cam/mask_folder.ts";
import { checkpointKey, imagesToWrite } from "../cam/resume.ts";
import { writeEvalOutputs } from "../cam/report.ts";
import { SEG_KIND } from "./train.ts";

/** The segmenter's default inference scales (DeepLab's multi-scale test, around 1). */
export const SEG_SCALES: readonly number[] = [0.75, 1, 1.25];

/** Options of {@link predictSegmenter} and {@link evaluateSegmenter}. */
export const SegEvalSchema = z.object({
  ...INFERENCE_FIELDS,
  split: z.string().min(1).default("val"),
  scales: INFERENCE_FIELDS.scales.default([...SEG_SCALES]),
  /** Refine the fused probabilities with the dense CRF before the argmax. */
  crf: z.boolean().default(false),
  /** Example rows in report.html. */
  examples: z.number().int().min(0).max(64).default(6),
}).strict();

/** Input of {@link predictSegmenter} / {@link evaluateSegmenter}. */
export type SegEvalInput = z.input<typeof SegEvalSchema>;

/** A segmenter loaded for inference. */
export interface LoadedSegModel {
  model: SegNet;
  /** Its training config (config.json beside the checkpoint). */
  config: SegConfig;
  /** Classes K, background included. */
  numClasses: number;
  ckpt: string;
  runDir: string;
  step: number | null;
}

/** Whether a checkpoint file is a segmenter's (its metadata kind). */
export async function isSegCheckpoint(path: string): Promise<boolean> {
  const file = await resolveCheckpoint(path);
  return (await readSafetensorsHeader(file)).metadata.kind === SEG_KIND;
}

/** Loads a checkpoint written by `deno task seg` (or its run folder). */
export async function loadSegModel(gpu: GpuContext, ckpt: string): Promise<LoadedSegModel> {
  const file = await resolveCheckpoint(ckpt);
  const { metadata } = await readSafetensorsHeader(file);
  if (metadata.kind !== SEG_KIND) {
    throw new CamError(`${file} is not a segmenter checkpoint (train one with deno task seg)`);
  }
  const cfgPath = join(dirname(file), "config.json");
  const config = validate(
    SegConfigSchema,
    await readCamJson(cfgPath, `no config.json beside segmenter checkpoint ${file}`),
    cfgPath,
  );
  const K = Number(metadata.classes);
  if (!(Number.isInteger(K) && K >= 2)) {
    throw new SafetensorsError(`${file}: metadata classes "${metadata.classes}" is not >= 2`);
  }
  const model = createSegModel(gpu, {
    arch: config.model,
    numClasses: K,
    head: config.head,
    outputStride: config.outputStride,
    seed: config.seed,
  });
  const meta = await loadTensors(file, model.stateTensors(), {
    ignoreUnexpected: (n) => n.startsWith("optim."),
  });
  const step = meta.step !== undefined ? Number(meta.step) : null;
  return { model, config, numClasses: K, ckpt: file, runDir: dirname(file), step };
}

/**
 * Records the fused class probabilities of one image `x` [1, 3, H, W] (normalised): a new
 * [K, H, W] tensor, the sum over scales (and the mirrored image) of the softmax of the logits,
 * bilinearly resized to H × W. Nothing is submitted.
 */
export function recordSegProbs(
  gpu: GpuContext,
  model: SegNet,
  x: Tensor,
  opts: { scales: readonly number[]; flip: boolean },
): Tensor {
  // Probabilities are non-negative, so the fusion's ReLU leaves them unchanged.
  return recordFusedMaps(gpu, x, model.options.numClasses, opts, (xs) => {
    const logits = model.forward(xs, null);
    const p = softmaxChannels(gpu, logits);
    logits.dispose();
    return p;
  }, "recordSegProbs");
}

/** The inference setting in words, for log lines and report titles. */
function settingOf(o: { scales: readonly number[]; flip: boolean; crf: boolean }): string {
  return `scales ${o.scales.join(",")}${o.flip ? " + flip" : ""}${o.crf ? " + CRF" : ""}`;
}

/** What {@link predictSegmenter} returns. */
export interface SegPredictResult {
  /** Output folder (holds masks/ and predict.json). */
  out: string;
  /** The mask folder. */
  masks: string;
  /** Images predicted by this call (the others were found written). */
  predicted: number;
  /** Images of the split covered. */
  images: number;
  seconds: number;
  /** The checkpoint file. */
  ckpt: string;
  /** The dataset split the masks are of. */
  dataset: Dataset;
}

/** Writes the segmenter's masks of a split; see the module doc. */
export async function predictSegmenter(
  input: SegEvalInput,
  hooks: CamHooks = {},
): Promise<SegPredictResult> {
  const o = validate(SegEvalSchema, input, "seg predict options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const gpu = hooks.gpu ?? await createGpu();
  const t0 = performance.now();
  try {
    const m = await loadSegModel(gpu, o.ckpt);
    const ds = await openRunDataset(o, m.config, log);
    if (ds.numClasses + 1 !== m.numClasses) {
      throw new CamError(
        `${m.ckpt} predicts ${m.numClasses} classes but ${ds.kind} '${ds.split}' has ` +
          `${ds.numClasses} + background`,
      );
    }
    const out = o.out ?? join(m.runDir, `pred-${o.split}${o.crf ? "-crf" : ""}`);
    const masks = join(out, "masks");
    await Deno.mkdir(masks, { recursive: true });
    const n = Math.min(ds.ids.length, o.limit ?? Infinity);
    const key = {
      ...await checkpointKey(m.ckpt),
      dataset: ds.kind,
      root: ds.root,
      split: ds.split,
      scales: o.scales,
      flip: o.flip,
      crf: o.crf,
    };
    const todo = await imagesToWrite(
      out,
      key,
      ds.ids.slice(0, n),
      (id) => [join(masks, `${id}.png`)],
      log,
    );
    const setting = settingOf(o);
    log(
      `segmenting ${ds.kind} '${ds.split}' (${n} images, ${n - todo.length} already written) ` +
        `with ${m.ckpt} (${m.config.model}, step ${m.step ?? "?"}), ${setting} → ${masks}`,
    );
    const sub = { load: (j: number) => ds.load(todo[j]) };
    let done = 0;
    let pending: Promise<void> = Promise.resolve();
    for await (const s of prefetchSamples(sub, todo.length)) {
      const label = await predictSample(gpu, m.model, s, o);
      await pending;
      pending = encodeLabelPng(label, s.width, s.height, VOC_PALETTE)
        .then((png) => writeFileAtomic(join(masks, `${s.id}.png`), png));
      pending.catch(() => {});
      done++;
      hooks.onProgress?.(done, todo.length);
    }
    await pending;
    m.model.dispose();
    const seconds = (performance.now() - t0) / 1000;
    await writeJsonAtomic(join(out, "predict.json"), {
      ckpt: m.ckpt,
      dataset: ds.kind,
      root: ds.root,
      split: ds.split,
      images: n,
      scales: o.scales,
      flip: o.flip,
      crf: o.crf,
      format: "masks/<id>.png (palette; 0 = background, c+1 = class c)",
    });
    return { out, masks, predicted: done, images: n, seconds, ckpt: m.ckpt, dataset: ds };
  } finally {
    if (!hooks.gpu) gpu.destroy();
  }
}

/** The label map of one sample (a readback of the argmax). */
async function predictSample(
  gpu: GpuContext,
  model: SegNet,
  s: Sample,
  o: { scales: readonly number[]; flip: boolean; crf: boolean; crfOptions?: DenseCrfOptions },
): Promise<Uint8Array> {
  const x = Tensor.fromArray(gpu, rgbToChw(s.rgb, s.width, s.height), [1, 3, s.height, s.width]);
  let probs = recordSegProbs(gpu, model, x, o);
  x.dispose();
  const [K, H, W] = probs.shape;
  if (o.crf) {
    // The CRF's unary is -log of probabilities clipped to [1e-5, 1]: average the runs first.
    const runs = o.scales.length * (o.flip ? 2 : 1);
    pointwise(gpu, "scale", [probs], { alpha: 1 / runs, out: probs });
    const image = Tensor.fromArray(gpu, rgbPlanes(s.rgb, s.width, s.height), [3, H, W]);
    const q = denseCrf(gpu, image, probs, o.crfOptions);
    image.dispose();
    probs.dispose();
    probs = q;
  }
  const arg = argmaxChannels(gpu, probs.reshape([1, K, H, W]));
  probs.dispose();
  const values = await arg.read();
  arg.dispose();
  return Uint8Array.from(values);
}

/**
 * Predicts a split's masks ({@link predictSegmenter}) and scores them against the ground
 * truth: metrics.json + report.html in the prediction folder. Returns the metrics.
 */
export async function evaluateSegmenter(
  input: SegEvalInput,
  hooks: CamHooks = {},
): Promise<Metrics> {
  const o = validate(SegEvalSchema, input, "seg eval options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const gpu = hooks.gpu ?? await createGpu();
  try {
    const p = await predictSegmenter(o, { ...hooks, gpu, log });
    const file = p.ckpt;
    const r = await evaluateMaskFolder({
      gpu,
      dataset: p.dataset,
      masksDir: p.masks,
      split: o.split,
      source: `seg:${file}`,
      limit: o.limit,
      examples: o.examples,
    });
    const setting = settingOf(o);
    const { metricsPath, reportPath } = await writeEvalOutputs(p.out, r.metrics, r.examples, {
      title: `ocr-wsss segmenter evaluation: ${file} (${o.split}; ${setting})`,
    });
    const pct = (x: number | null) => (x === null ? "n/a" : `${(100 * x).toFixed(2)}%`);
    log(
      `segmenter on ${o.split}: mIoU ${pct(r.metrics.miou)}, pixel acc ` +
        `${pct(r.metrics.pixel_acc)}, OC-error rate ${pct(r.metrics.oc_rate)} (tag-free ` +
        `predictions)`,
    );
    log(`wrote ${metricsPath} and ${reportPath}`);
    return r.metrics;
  } finally {
    if (!hooks.gpu) gpu.destroy();
  }
}
