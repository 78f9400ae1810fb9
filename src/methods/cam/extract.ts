/**
 * CAM inference from a trained checkpoint, the psa/SEAM way (the file side of src/cam):
 *
 * 1. {@link loadCamModel} reads `config.json` beside the checkpoint (architecture, output
 *    stride), takes the number of classes from the checkpoint's `classifier.weight`, and loads
 *    the weights (optimizer state in the file is ignored).
 * 2. {@link recordSampleCams}, per image: src/cam/image.ts's `recordImageCams`, the
 *    multi-scale + flip fused CAMs on the GPU (the **unrestricted** CAMs, all C classes, not
 *    normalised: what the OC-error rate is measured on).
 * 3. psa/SEAM convention: the CAMs of the image's tagged classes, each divided by its maximum
 *    (+1e-5), are the normalised CAMs (`normalizeTagged`); the pseudo mask at background
 *    threshold t is argmax over [t, normalised CAMs] (background first on ties, then the lower
 *    class), labels 0 = background, c+1 = tagged class c (src/cam/pseudo_mask.ts).
 *
 * {@link computeCams} runs this over a dataset split and writes, per image (atomically):
 * - `<out>/cams/<id>.safetensors`: tensor `cams` F32 [T, H, W] (the T tagged classes'
 *   normalised CAMs, in class order; T may be 0) and tensor `classes` F32 [T] (their 0-based
 *   class indices), metadata `id`, `classes` (JSON list), `class_names` (JSON list), `scales`,
 *   `flip`, `height`, `width`. Any safetensors reader opens them (Python:
 *   `safetensors.numpy.load_file`).
 * - `<out>/masks/<id>.png`: the pseudo mask as a palette PNG (VOC palette), ready for
 *   `deno task eval --masks <out>/masks`.
 * - `<out>/cam.json`: the settings, image count and timing.
 * @module
 */
import { dirname, join } from "node:path";
import { z } from "npm:zod@4.6.7";
import type { GpuContext } from "../../gpu/context.ts";
import { createGpu } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { createModel } from "../../models/cam_net.ts";
import { loadTensors } from "../../io/checkpoint.ts";
import {
  ConfigError,
  SyntheticSchema,
  type TrainConfig,
  TrainConfigSchema,
  validate,
} from "../../io/config.ts";
import { exists, writeFileAtomic, writeJsonAtomic } from "../../io/atomic.ts";
import { checkpointKey, imagesToWrite } from "./resume.ts";
import {
  readSafetensorsHeader,
  SafetensorsError,
  serializeSafetensors,
} from "../../io/safetensors.ts";
import { type Dataset, openDataset, type Sample } from "../../data/dataset.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../../data/augment.ts";
import { encodeLabelPng, VOC_PALETTE } from "../../data/png.ts";
import { resolveDataRoot } from "../../data/root.ts";
import { normalizeTagged } from "../../cam/fuse.ts";
import { type CamModel, type ImageCamOptions, recordImageCams } from "../../cam/image.ts";
import { pseudoMaskFromNormalized } from "../../cam/pseudo_mask.ts";
import { CamError, type CamRunInput, CamRunSchema, readCamJson } from "./options.ts";

/** A checkpoint's model, ready for inference. */
export interface LoadedCamModel {
  /** The classifier (or another method's CAM model), weights loaded from the checkpoint. */
  model: CamModel;
  /** The run's training config (from config.json; another method's run: its CAM fields). */
  config: RunConfig;
  /** Number of foreground classes C (from the checkpoint's classifier). */
  numClasses: number;
  /** The checkpoint file. */
  ckpt: string;
  /** The folder holding it (the run folder). */
  runDir: string;
  /** Training step recorded in the checkpoint, or null. */
  step: number | null;
}

/** The checkpoint file of `path`: the path itself, or `last.safetensors` in a folder. */
export async function resolveCheckpoint(path: string): Promise<string> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CamError(`checkpoint ${path} not found (expected runs/NAME/last.safetensors)`);
    }
    throw e;
  }
  if (!st.isDirectory) return path;
  const file = join(path, "last.safetensors");
  if (!(await exists(file))) throw new CamError(`no checkpoint last.safetensors in ${path}`);
  return file;
}

/**
 * Loads another method's CAM-producing checkpoint for inference (its run's config.json names
 * the method in `method`): the model and its foreground class count. See
 * {@link registerCamModelLoader}.
 */
export type CamModelLoader = (
  gpu: GpuContext,
  file: string,
  config: Record<string, unknown>,
) => Promise<{ model: CamModel; numClasses: number; step: number | null }>;

const CAM_MODEL_LOADERS = new Map<string, CamModelLoader>();

/**
 * Registers the CAM model loader of a method whose training run writes `method: NAME` in its
 * config.json (SEAM): {@link loadCamModel}, and so `deno task cam` / `eval` and the pipeline's
 * CAM stages, then load its checkpoints through it.
 */
export function registerCamModelLoader(method: string, load: CamModelLoader): void {
  CAM_MODEL_LOADERS.set(method, load);
}

async function rawRunConfig(ckpt: string): Promise<{ path: string; json: unknown }> {
  const path = join(dirname(ckpt), "config.json");
  const json = await readCamJson(
    path,
    `no config.json beside checkpoint ${ckpt} (looked for ${path}); it names the model ` +
      `architecture and data: keep the checkpoint in the run folder written by deno task train`,
  );
  return { path, json };
}

/**
 * A run's training config as the CAM tools read it: the CAM classifier's fields. The run of
 * another method (SEAM, MCTformer) keeps its own fields besides, read by its loader, and may
 * name a model that is not one of the CAM classifier's backbones (`vit-tiny`).
 */
export type RunConfig = Omit<TrainConfig, "model"> & { model: string };

/** The CAM fields of another method's run config (its model is the method's to check). */
const ForeignRunSchema = TrainConfigSchema.extend({ model: z.string().min(1) }).strip();

/**
 * Reads and validates the training config saved beside a checkpoint (`config.json` in the
 * same folder); errors say what is missing. Another method's run (its config names the
 * `method`) is read for its CAM fields only.
 */
export async function readRunConfig(ckpt: string): Promise<RunConfig> {
  const { path, json } = await rawRunConfig(ckpt);
  // Runs saved before the generator had versions trained on v1: say so before the default
  // (v2) fills the field.
  const synth = (json as { synthetic?: Record<string, unknown> })?.synthetic;
  if (synth && typeof synth === "object" && synth.variant === undefined) synth.variant = "v1";
  // Another method's run (SEAM's, MCTformer's: `method` names it) extends the CAM config with
  // its own fields: the CAM fields are read, the rest left to the method.
  const method = (json as { method?: unknown })?.method;
  if (typeof method === "string") return validate(ForeignRunSchema, json, path);
  return validate(TrainConfigSchema, json, path);
}

/**
 * Loads a checkpoint written by `deno task train` (or a run folder holding one) for
 * inference. Errors name the missing checkpoint or config.json, or the mismatching tensors.
 */
export async function loadCamModel(gpu: GpuContext, ckpt: string): Promise<LoadedCamModel> {
  const file = await resolveCheckpoint(ckpt);
  const config = await readRunConfig(file);
  const raw = (await rawRunConfig(file)).json as Record<string, unknown>;
  const loader = typeof raw.method === "string" ? CAM_MODEL_LOADERS.get(raw.method) : undefined;
  if (loader) {
    const r = await loader(gpu, file, raw);
    return { ...r, config, ckpt: file, runDir: dirname(file) };
  }
  if (typeof raw.method === "string") {
    throw new CamError(
      `${file}: a ${raw.method} run, whose CAM loader is not registered (import ` +
        `src/methods/${raw.method}/cams.ts, as tasks/cam.ts does)`,
    );
  }
  const shape = (await readSafetensorsHeader(file)).shapes.get("classifier.weight");
  if (!shape) {
    throw new SafetensorsError(
      `${file}: no tensor "classifier.weight" (not a CAM classifier checkpoint)`,
    );
  }
  const numClasses = shape[0];
  if (!(Number.isInteger(numClasses) && numClasses > 0)) {
    throw new SafetensorsError(`${file}: classifier.weight has bad shape [${shape}]`);
  }
  const cnn = validate(TrainConfigSchema, config, join(dirname(file), "config.json"));
  const model = createModel(gpu, {
    arch: cnn.model,
    numClasses,
    outputStride: cnn.outputStride,
    seed: cnn.seed,
  });
  const meta = await loadTensors(file, model.stateTensors(), {
    ignoreUnexpected: (n) => n.startsWith("optim."),
  });
  const step = meta.step !== undefined ? Number(meta.step) : null;
  return { model, config, numClasses, ckpt: file, runDir: dirname(file), step };
}

/** ImageNet-normalised CHW f32 values of an HWC RGB image (no resizing). */
export function rgbToChw(rgb: Uint8Array, width: number, height: number): Float32Array {
  const n = width * height;
  if (rgb.length !== 3 * n) {
    throw new RangeError(`rgbToChw: ${rgb.length} bytes for a ${width}x${height} RGB image`);
  }
  const out = new Float32Array(3 * n);
  for (let k = 0; k < 3; k++) {
    const m = IMAGENET_MEAN[k], s = 1 / IMAGENET_STD[k];
    for (let i = 0; i < n; i++) out[k * n + i] = (rgb[3 * i + k] / 255 - m) * s;
  }
  return out;
}

/** RGB planes [3, H, W] with values 0..255 of an HWC RGB image (the CRF's colour features). */
export function rgbPlanes(rgb: Uint8Array, width: number, height: number): Float32Array {
  const n = width * height;
  if (rgb.length !== 3 * n) {
    throw new RangeError(`rgbPlanes: ${rgb.length} bytes for a ${width}x${height} RGB image`);
  }
  const out = new Float32Array(3 * n);
  for (let k = 0; k < 3; k++) for (let i = 0; i < n; i++) out[k * n + i] = rgb[3 * i + k];
  return out;
}

/** {@link recordImageCams} of a decoded dataset sample (uploads its normalised pixels). */
export function recordSampleCams(
  gpu: GpuContext,
  model: CamModel,
  s: Pick<Sample, "rgb" | "width" | "height">,
  opts: ImageCamOptions = {},
): Tensor {
  const x = Tensor.fromArray(gpu, rgbToChw(s.rgb, s.width, s.height), [1, 3, s.height, s.width]);
  try {
    return recordImageCams(gpu, model, x, opts);
  } finally {
    x.dispose();
  }
}

/**
 * A run's dataset split for CAM work: explicit options first, then the run's config (VOC tags
 * in the run's tag mode, so the CAMs are those of the classes the run trained on).
 */
export async function openRunDataset(
  o: {
    data?: string;
    dataset?: "synthetic" | "voc" | "coco";
    synthetic?: TrainConfig["synthetic"];
    split: string;
  },
  run: Pick<TrainConfig, "dataset" | "data" | "synthetic" | "tags"> | null,
  log: (l: string) => void,
): Promise<Dataset> {
  const kind = o.dataset ?? (o.data ? (run?.dataset === "coco" ? "coco" : "voc") : undefined) ??
    run?.dataset ?? "synthetic";
  if (kind === "synthetic" && o.data) {
    throw new ConfigError(`--data ${o.data} was given with --dataset synthetic; drop one of them`);
  }
  const data = o.data ?? (run?.dataset === kind ? run.data : undefined);
  const synthetic = o.synthetic ?? run?.synthetic ?? SyntheticSchema.parse({});
  const root = await resolveDataRoot({ dataset: kind, data, synthetic }, log);
  return await openDataset({
    kind: root.kind,
    root: root.root,
    split: o.split,
    tags: run?.tags ?? "mask",
  });
}

/** Checks that the model's classes match the dataset's. */
export function checkClasses(m: LoadedCamModel, ds: Dataset): void {
  if (m.numClasses !== ds.numClasses) {
    throw new CamError(
      `${m.ckpt} predicts ${m.numClasses} classes but ${ds.kind} '${ds.split}' has ` +
        `${ds.numClasses}: evaluate on the data the model was trained for`,
    );
  }
}

/** Hooks of {@link computeCams} and {@link evaluate}. */
export interface CamHooks {
  /** Reuse a GPU context (tests, scripts); default: a new one, destroyed at the end. */
  gpu?: GpuContext;
  /** Log lines (default console.log). */
  log?: (line: string) => void;
  /** Called after each image. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link computeCams} returns. */
export interface CamRunResult {
  /** Output folder. */
  out: string;
  /** Images of the folder (written by this call or found written by an interrupted one). */
  images: number;
  /** Images this call computed. */
  computed: number;
  /** Wall time in seconds. */
  seconds: number;
  /** The dataset split's ids, in processing order. */
  ids: string[];
}

/**
 * Loads dataset samples in order, one ahead of the consumer (decode overlaps GPU work).
 */
export async function* prefetchSamples(
  ds: Pick<Dataset, "load">,
  n: number,
): AsyncGenerator<Sample> {
  let next = n > 0 ? ds.load(0) : null;
  for (let i = 0; i < n; i++) {
    const cur = next!;
    next = i + 1 < n ? ds.load(i + 1) : null;
    next?.catch(() => {}); // surfaced when awaited
    yield await cur;
  }
}

/**
 * `deno task cam`: CAMs of a dataset split from a checkpoint, written per image as tagged
 * normalised CAM arrays and pseudo-mask palette PNGs (see the module doc for the files).
 * Options are validated ({@link CamRunSchema}); default output `<run>/cam-<split>`.
 */
export async function computeCams(input: CamRunInput, hooks: CamHooks = {}): Promise<CamRunResult> {
  const o = validate(CamRunSchema, input, "cam options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const gpu = hooks.gpu ?? await createGpu();
  const t0 = performance.now();
  try {
    const m = await loadCamModel(gpu, o.ckpt);
    const ds = await openRunDataset(o, m.config, log);
    checkClasses(m, ds);
    const out = o.out ?? join(m.runDir, `cam-${o.split}`);
    const n = Math.min(ds.ids.length, o.limit ?? Infinity);
    log(
      `CAMs of ${m.ckpt} (${m.config.model}, step ${m.step ?? "?"}) on ${ds.kind} ` +
        `'${ds.split}' (${n} images), scales ${o.scales.join(",")}${o.flip ? " + flip" : ""}, ` +
        `bg ${o.bg} → ${out}`,
    );
    await Deno.mkdir(join(out, "masks"), { recursive: true });
    if (o.saveCams) await Deno.mkdir(join(out, "cams"), { recursive: true });
    const names = ds.classNames;
    const key = {
      ...await checkpointKey(m.ckpt),
      dataset: ds.kind,
      root: ds.root,
      split: ds.split,
      scales: o.scales,
      flip: o.flip,
      bg: o.bg,
      saveCams: o.saveCams,
    };
    const ids = ds.ids.slice(0, n);
    const todo = await imagesToWrite(out, key, ids, (id) => [
      join(out, "masks", `${id}.png`),
      ...(o.saveCams ? [join(out, "cams", `${id}.safetensors`)] : []),
    ], log);
    let pending: Promise<void> = Promise.resolve();
    let done = n - todo.length;
    const left = { load: (j: number) => ds.load(todo[j]) };
    for await (const s of prefetchSamples(left, todo.length)) {
      const acc = recordSampleCams(gpu, m.model, s, o);
      const hw = s.width * s.height;
      let norm: Float32Array = new Float32Array(0);
      if (s.tags.length > 0) {
        const t = normalizeTagged(gpu, acc, s.tags);
        acc.dispose();
        norm = await t.read();
        t.dispose();
      } else {
        acc.dispose();
      }
      const mask = pseudoMaskFromNormalized(norm, s.tags, hw, o.bg);
      await pending;
      pending = writeImageOutputs(out, s, norm, mask, {
        saveCams: o.saveCams,
        meta: {
          class_names: JSON.stringify(s.tags.map((c) => names[c])),
          scales: o.scales.join(","),
          flip: String(o.flip),
        },
      });
      pending.catch(() => {}); // surfaced by the next await
      done++;
      hooks.onProgress?.(done, n);
    }
    await pending;
    const seconds = (performance.now() - t0) / 1000;
    await writeJsonAtomic(join(out, "cam.json"), {
      ckpt: m.ckpt,
      step: m.step,
      dataset: ds.kind,
      root: ds.root,
      split: ds.split,
      tags: m.config.tags,
      images: n,
      scales: o.scales,
      flip: o.flip,
      bg: o.bg,
      cams: o.saveCams ? "cams/<id>.safetensors: cams F32 [T,H,W], classes F32 [T]" : null,
      masks: "masks/<id>.png (palette; 0 = background, c+1 = class c)",
      seconds,
    });
    return { out, images: n, computed: todo.length, seconds, ids };
  } finally {
    if (!hooks.gpu) gpu.destroy();
  }
}

async function writeImageOutputs(
  out: string,
  s: Sample,
  norm: Float32Array,
  mask: Uint8Array,
  o: { saveCams: boolean; meta: Record<string, string> },
): Promise<void> {
  const png = await encodeLabelPng(mask, s.width, s.height, VOC_PALETTE);
  await writeFileAtomic(join(out, "masks", `${s.id}.png`), png);
  if (!o.saveCams) return;
  const bytes = serializeSafetensors([
    ["cams", { shape: [s.tags.length, s.height, s.width], data: norm }],
    ["classes", { shape: [s.tags.length], data: Float32Array.from(s.tags) }],
  ], {
    id: s.id,
    classes: JSON.stringify(s.tags),
    height: String(s.height),
    width: String(s.width),
    ...o.meta,
  });
  await writeFileAtomic(join(out, "cams", `${s.id}.safetensors`), bytes);
}
