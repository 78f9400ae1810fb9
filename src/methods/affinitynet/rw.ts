/**
 * `deno task rw`: psa's random-walk pseudo masks from a trained AffinityNet and a CAM folder.
 *
 * Per image (psa's `infer_aff.py`, on the GPU but for the small CAM pooling):
 * 1. the CAM folder's normalised tagged CAMs [T, H, W] get background channels
 *    `(1 - max_t cam)^alpha`, one per swept alpha, in front, are zero-padded to multiples of 8
 *    and average-pooled 8x8 to the feature grid ({@link camsWithBackground});
 * 2. AffinityNet (eval mode) gives the features of the whole image, {@link pairwiseAffinity}
 *    their affinities within the radius (the one the AffinityNet was trained with, from its
 *    checkpoint's metadata; {@link resolveWalkRadius}), {@link randomWalk} the walked CAMs
 *    (`A^beta`, column-normalised, 2^logt steps, logt by default psa's 8 scaled to the grid:
 *    {@link autoLogt});
 * 3. the walked CAMs are bilinearly resized to the padded image size and read back; per alpha
 *    the mask is the argmax over [its background channel, the T class channels] (background
 *    first on ties), cropped: label 0 = background, tags[t]+1 for class channel t
 *    ({@link walkedMasks}). The walk is linear in its input, so every alpha of a sweep comes
 *    from one walk.
 *
 * With `crf`, step 3's argmax runs on the walked scores refined by the dense CRF on the image
 * ({@link crfWalkedMasks}).
 *
 * Writes `<out>/masks/<id>.png` for one alpha, or `<out>/alpha-<a>/masks/<id>.png` per alpha of
 * a sweep (VOC palette, atomically; score them with `deno task eval --masks DIR`), and
 * `<out>/rw.json`.
 * @module
 */
import { dirname, join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { createGpu } from "../../io/gpu.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { resizeBilinear } from "../../ops/resize.ts";
import { type AffinityNet, createAffinityNet } from "./model.ts";
import { loadTensors } from "../../io/checkpoint.ts";
import { readSafetensorsHeader } from "../../io/safetensors.ts";
import { writeFileAtomic, writeJsonAtomic } from "../../io/atomic.ts";
import { validate } from "../../io/config.ts";
import { openDataset } from "../../data/dataset.ts";
import { encodeLabelPng, VOC_PALETTE } from "../../data/png.ts";
import { readCamFolder, readImageCams } from "../cam/cam_folder.ts";
import { AFFINITY_RADIUS, pairwiseAffinity } from "../../ops/affinity.ts";
import { randomWalk } from "./random_walk.ts";
import {
  type CamHooks,
  prefetchSamples,
  resolveCheckpoint,
  rgbPlanes,
  rgbToChw,
} from "../cam/extract.ts";
import type { GpuContext } from "../../gpu/context.ts";
import type { DenseCrfOptions } from "../../ops/crf.ts";
import { crfArgmax } from "./labels.ts";
import { CamError } from "../cam/options.ts";
import { checkpointKey, imagesToWrite } from "../cam/resume.ts";
import { pseudoMask } from "../../cam/pseudo_mask.ts";

/** Options of {@link computeRandomWalk} (`deno task rw`). */
export const RwSchema = z.object({
  /** AffinityNet checkpoint, or its run folder. */
  ckpt: z.string().min(1),
  /** CAM folder written by `deno task cam` (the split to refine). */
  cams: z.string().min(1),
  /** Output folder; default `<affinity run>/rw-<split>`. */
  out: z.string().min(1).optional(),
  /** Affinity exponent (psa: 8). */
  beta: z.number().positive().default(8),
  /**
   * log2 of the walk length, or `"auto"` (default): psa's 8 scaled to the image's feature grid
   * ({@link autoLogt}), which is psa's 8 on VOC-sized grids and shorter on small ones.
   */
  logt: z.union([z.literal("auto"), z.number().int().min(0).max(12)]).default("auto"),
  /** Background exponent(s): bg = (1 - max cam)^alpha; several give one mask folder each. */
  alpha: z.union([z.number().positive(), z.array(z.number().positive()).min(1).max(16)])
    .default(8)
    .transform((a) => (Array.isArray(a) ? a : [a]))
    .refine((a) => new Set(a).size === a.length, "alphas must not repeat"),
  /** Refine the walked scores with the dense CRF before the argmax. */
  crf: z.boolean().default(false),
  /** Only the first `limit` images of the split. */
  limit: z.number().int().positive().optional(),
  /**
   * Pair radius of the affinities; default: the one the AffinityNet was trained with (its
   * checkpoint's metadata). One that differs from the checkpoint's is used with a warning.
   */
  radius: z.number().int().min(2).max(16).optional(),
}).strict();

/** Cells of psa's feature grid on VOC (448 px crops at stride 8: 56 x 56), where logt is 8. */
export const PSA_GRID_CELLS = 56 * 56;

/**
 * The walk length for a grid of `cells` feature pixels: psa's 2^8 steps on its 56 x 56 grid,
 * scaled in proportion to the cells (a walk spreads over an area that grows with its length),
 * `round(8 + log2(cells / 3136))`, clamped to [0, 12]. A VOC image (about 63 x 47 cells) gets
 * 8, the synthetic data's 16 x 16 grid 4. Measured on the built-in data (seed 0, val): logt 4
 * scores RW mIoU 0.345 where psa's fixed 8 scores 0.302 (docs in the README's AffinityNet
 * section).
 */
export function autoLogt(cells: number): number {
  if (!(cells > 0)) throw new RangeError(`autoLogt: bad grid of ${cells} cells`);
  return Math.min(12, Math.max(0, Math.round(8 + Math.log2(cells / PSA_GRID_CELLS))));
}

/** Input of {@link computeRandomWalk}. */
export type RwInput = z.input<typeof RwSchema>;

/** What {@link computeRandomWalk} returns. */
export interface RwResult {
  /** Output folder (masks/ and rw.json). */
  out: string;
  /** Images processed. */
  images: number;
  /** Wall time in seconds. */
  seconds: number;
  /** The mask folder of each alpha. */
  masks: { alpha: number; dir: string }[];
}

/**
 * psa's CAM input of the walk: channels `0..A-1` = `(1 - max_t cams)^alphas[a]` (1 without
 * tags), then the T CAMs; zero-padded to [8h, 8w] (h = ceil(H/8)) and average-pooled 8x8:
 * returns [A+T, h, w].
 */
export function camsWithBackground(
  cams: Float32Array,
  T: number,
  H: number,
  W: number,
  alphas: readonly number[],
  stride = 8,
): { data: Float32Array; h: number; w: number } {
  const h = Math.ceil(H / stride), w = Math.ceil(W / stride);
  const n = H * W;
  if (cams.length !== T * n) {
    throw new RangeError(`rw: ${cams.length} CAM values for ${T}x${H}x${W}`);
  }
  const A = alphas.length;
  const hw = h * w;
  const out = new Float32Array((A + T) * hw);
  const inv = 1 / (stride * stride);
  for (let p = 0; p < n; p++) {
    const y = Math.floor(p / W), x = p % W;
    const cell = Math.floor(y / stride) * w + Math.floor(x / stride);
    let m = 0;
    for (let t = 0; t < T; t++) {
      const v = cams[t * n + p];
      if (v > m) m = v;
      out[(A + t) * hw + cell] += v * inv;
    }
    const r = Math.max(0, 1 - m);
    for (let a = 0; a < A; a++) out[a * hw + cell] += r ** alphas[a] * inv;
  }
  return { data: out, h, w };
}

/**
 * The masks of walked CAMs `up` [A+T, Hp, Wp] (A background channels, then T classes; Hp x Wp
 * the padded size): per background channel a, the H x W crop of the argmax over
 * [bg_a, class channels] (background first, then the lower channel, on ties), labelled 0 or
 * `classes[t] + 1` (the pseudo-mask rule of src/cam/pseudo_mask.ts with a background plane).
 */
export function walkedMasks(
  up: Float32Array,
  A: number,
  classes: readonly number[],
  Hp: number,
  Wp: number,
  H: number,
  W: number,
): Uint8Array[] {
  const T = classes.length;
  const n = Hp * Wp;
  if (up.length !== (A + T) * n) {
    throw new RangeError(`rw masks: ${up.length} values for ${A + T}x${Hp}x${Wp}`);
  }
  return Array.from({ length: A }, (_, a) =>
    pseudoMask(up, classes, { offset: a * n }, {
      width: W,
      height: H,
      rowStride: Wp,
      planeStride: n,
      offset: A * n,
    }));
}

/**
 * The masks of walked CAMs `up` (as {@link walkedMasks}) refined by the dense CRF on the image
 * `image` [3, H, W] (RGB 0..255, psa's CRF settings unless `crf` says otherwise): per
 * background channel a, the H x W crop of [bg_a, class channels], normalised per pixel to sum
 * 1 (the walk's scores as probabilities; negatives as 0), through the CRF, then the argmax
 * (background first on ties), labelled 0 or `classes[t] + 1`. One CRF build and one readback
 * for all alphas.
 */
export async function crfWalkedMasks(
  gpu: GpuContext,
  image: Tensor,
  up: Float32Array,
  A: number,
  classes: readonly number[],
  Hp: number,
  Wp: number,
  crf: DenseCrfOptions = {},
): Promise<Uint8Array[]> {
  const [, H, W] = image.shape;
  const T = classes.length;
  const np = Hp * Wp;
  const n = H * W;
  if (up.length !== (A + T) * np) {
    throw new RangeError(`rw masks: ${up.length} values for ${A + T}x${Hp}x${Wp}`);
  }
  const maps = Array.from({ length: A }, (_, a) => {
    const probs = new Float32Array((T + 1) * n);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const p = y * W + x, q = y * Wp + x;
        let sum = 0;
        for (let l = 0; l <= T; l++) {
          const v = Math.max(0, up[(l === 0 ? a : A + l - 1) * np + q]);
          probs[l * n + p] = v;
          sum += v;
        }
        const inv = sum > 0 ? 1 / sum : 0;
        for (let l = 0; l <= T; l++) {
          probs[l * n + p] = sum > 0 ? probs[l * n + p] * inv : 1 / (T + 1);
        }
      }
    }
    return probs;
  });
  const read = await crfArgmax(gpu, image, maps, T + 1, crf);
  return read.map((idx) => {
    const mask = new Uint8Array(n);
    for (let p = 0; p < n; p++) mask[p] = idx[p] === 0 ? 0 : classes[idx[p] - 1] + 1;
    return mask;
  });
}

/**
 * Loads an AffinityNet checkpoint written by `deno task affinity`, with the pair radius its
 * metadata records (null for checkpoints written before the radius was stored).
 */
export async function loadAffinityNet(
  gpu: Parameters<typeof createAffinityNet>[0],
  ckpt: string,
): Promise<{ model: AffinityNet; ckpt: string; runDir: string; radius: number | null }> {
  const file = await resolveCheckpoint(ckpt);
  const { metadata } = await readSafetensorsHeader(file);
  if (metadata.kind !== "affinitynet") {
    throw new CamError(
      `${file} is not an AffinityNet checkpoint (train one with deno task affinity)`,
    );
  }
  const radius = checkpointRadius(metadata, file);
  const arch = metadata.arch as "tiny" | "resnet18" | "resnet34" | "resnet50" | "resnet101";
  const model = createAffinityNet(gpu, { arch });
  await loadTensors(file, model.stateTensors(), {
    ignoreUnexpected: (n) => n.startsWith("optim."),
  });
  return { model, ckpt: file, runDir: dirname(file), radius };
}

/**
 * The pair radius an AffinityNet checkpoint's metadata records (`radius`), or null when it
 * has none; a value that is not an integer radius is an error naming the file.
 */
export function checkpointRadius(metadata: Record<string, string>, file: string): number | null {
  if (metadata.radius === undefined) return null;
  const r = Number(metadata.radius);
  if (!(Number.isInteger(r) && r >= 2 && r <= 16)) {
    throw new CamError(`${file}: metadata radius "${metadata.radius}" is not an integer 2..16`);
  }
  return r;
}

/**
 * The radius to walk with: the explicit one (`--radius`) if given, with a warning when the
 * checkpoint records another; else the checkpoint's; else (a checkpoint written before the
 * radius was stored) psa's {@link AFFINITY_RADIUS}, with a note.
 */
export function resolveWalkRadius(
  explicit: number | undefined,
  recorded: number | null,
  ckpt: string,
  log: (l: string) => void,
): number {
  if (explicit !== undefined) {
    if (recorded !== null && recorded !== explicit) {
      log(
        `warning: --radius ${explicit} differs from the radius ${recorded} ${ckpt} was ` +
          `trained with; walking with ${explicit}`,
      );
    }
    return explicit;
  }
  if (recorded !== null) return recorded;
  log(
    `note: ${ckpt} records no pair radius (written before it was stored); walking with ` +
      `${AFFINITY_RADIUS}, pass --radius if it was trained with another`,
  );
  return AFFINITY_RADIUS;
}

/** `deno task rw`: random-walk pseudo masks of a CAM folder's images (see the module doc). */
export async function computeRandomWalk(input: RwInput, hooks: CamHooks = {}): Promise<RwResult> {
  const o = validate(RwSchema, input, "rw options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const cf = await readCamFolder(o.cams);
  const gpu = hooks.gpu ?? await createGpu();
  const t0 = performance.now();
  try {
    const loaded = await loadAffinityNet(gpu, o.ckpt);
    const { model, ckpt, runDir } = loaded;
    const radius = resolveWalkRadius(o.radius, loaded.radius, ckpt, log);
    const ds = await openDataset({ kind: cf.kind, root: cf.root, split: cf.split, tags: cf.tags });
    const out = o.out ?? join(runDir, `rw-${cf.split}`);
    const n = Math.min(ds.ids.length, cf.images, o.limit ?? Infinity);
    log(
      `random walk (beta ${o.beta}, logt ${o.logt}, alpha ${o.alpha.join(",")}, radius ` +
        `${radius}) of ${n} images ` +
        `of ${cf.kind} '${cf.split}' with ${ckpt}, CAMs from ${cf.dir} → ${out}`,
    );
    const A = o.alpha.length;
    const masks = o.alpha.map((alpha) => ({
      alpha,
      dir: A === 1 ? join(out, "masks") : join(out, `alpha-${alpha}`, "masks"),
    }));
    for (const m of masks) await Deno.mkdir(m.dir, { recursive: true });
    const key = {
      ...await checkpointKey(ckpt),
      cams: cf.dir,
      beta: o.beta,
      logt: o.logt,
      alpha: o.alpha,
      radius,
      crf: o.crf,
    };
    const todo = await imagesToWrite(
      out,
      key,
      ds.ids.slice(0, n),
      (id) => masks.map((m) => join(m.dir, `${id}.png`)),
      log,
    );
    let done = n - todo.length;
    const logts = new Set<number>();
    let pending: Promise<void> = Promise.resolve();
    const left = { load: (j: number) => ds.load(todo[j]) };
    for await (const s of prefetchSamples(left, todo.length)) {
      const c = await readImageCams(cf.dir, s.id, s);
      const T = c.classes.length;
      const pooled = camsWithBackground(c.cams, T, s.height, s.width, o.alpha);
      const K = A + T;
      const x = Tensor.fromArray(gpu, rgbToChw(s.rgb, s.width, s.height), [
        1,
        3,
        s.height,
        s.width,
      ]);
      const feat = model.forward(x, null);
      x.dispose();
      const [, , fh, fw] = feat.shape;
      if (fh !== pooled.h || fw !== pooled.w) {
        throw new Error(`rw: features ${fh}x${fw} vs CAM grid ${pooled.h}x${pooled.w}`);
      }
      const aff = pairwiseAffinity(gpu, feat, radius);
      feat.dispose();
      const camT = Tensor.fromArray(gpu, pooled.data, [K, fh, fw]);
      const logt = o.logt === "auto" ? autoLogt(fh * fw) : o.logt;
      logts.add(logt);
      const walked = randomWalk(gpu, aff, camT, { beta: o.beta, logt, radius });
      aff.dispose();
      camT.dispose();
      walked.labels.dispose();
      const up = resizeBilinear(gpu, walked.cams.reshape([1, K, fh, fw]), {
        size: [8 * fh, 8 * fw],
      });
      walked.cams.dispose();
      const values = await up.read();
      up.dispose();
      let perAlpha: Uint8Array[];
      if (o.crf) {
        const image = Tensor.fromArray(gpu, rgbPlanes(s.rgb, s.width, s.height), [
          3,
          s.height,
          s.width,
        ]);
        perAlpha = await crfWalkedMasks(gpu, image, values, A, c.classes, 8 * fh, 8 * fw);
        image.dispose();
      } else {
        perAlpha = walkedMasks(values, A, c.classes, 8 * fh, 8 * fw, s.height, s.width);
      }
      await pending;
      pending = Promise.all(perAlpha.map(async (mask, a) => {
        const png = await encodeLabelPng(mask, s.width, s.height, VOC_PALETTE);
        await writeFileAtomic(join(masks[a].dir, `${s.id}.png`), png);
      })).then(() => {});
      pending.catch(() => {});
      done++;
      hooks.onProgress?.(done, n);
    }
    await pending;
    model.dispose();
    const seconds = (performance.now() - t0) / 1000;
    await writeJsonAtomic(join(out, "rw.json"), {
      ckpt,
      cams: cf.dir,
      dataset: cf.kind,
      root: cf.root,
      split: cf.split,
      images: done,
      beta: o.beta,
      logt: o.logt,
      // The walk lengths this call used (one value unless "auto" met images of different
      // sizes; images written by an interrupted call are not counted).
      logts: [...logts].sort((a, b) => a - b),
      radius,
      alpha: o.alpha,
      crf: o.crf,
      masks: masks.map((m) => ({ alpha: m.alpha, dir: m.dir })),
      format: "<dir>/<id>.png (palette; 0 = background, c+1 = class c)",
      seconds,
    });
    return { out, images: done, seconds, masks };
  } finally {
    if (!hooks.gpu) gpu.destroy();
  }
}
