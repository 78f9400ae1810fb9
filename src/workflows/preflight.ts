/**
 * The checks `deno task pipeline` makes before its first stage, so that a run on real data
 * fails at once with one clear error rather than hours in: the `--weights` file (present, and a
 * backbone of the chosen model by its tensor names: only the safetensors header is read), the
 * dataset folder (the splits the stages read), the nested option objects (`train`, `affinity`,
 * `rw`, `seg`, validated against their task's schema), AffinityNet's crop against its pair
 * radius, `camsSplit` against `trainLimit`, and the run folder (a `pipeline.json` of another
 * method or dataset).
 * @module
 */
import { join } from "node:path";
import { type z, ZodObject, ZodOptional } from "npm:zod@4.6.7";
import { exists } from "../io/atomic.ts";
import {
  AffinityConfigSchema,
  ConfigError,
  MCTFORMER_ARCHS,
  SegConfigSchema,
  type TrainConfig,
  TrainConfigSchema,
} from "../io/config.ts";
import { readSafetensorsHeader } from "../io/safetensors.ts";
import { RwSchema } from "../methods/affinitynet/rw.ts";
import { AFFINITY_RADIUS, pairGrid } from "../ops/affinity.ts";
import { camData, type CamStageOptions } from "../methods/cam/stages.ts";
import { cocoFolder } from "../data/coco.ts";
import { resolveVocRoot } from "../data/voc.ts";

/** Blocks per stage of each ResNet (torchvision), and whether it uses bottlenecks. */
const RESNETS: Record<string, { blocks: number[]; bottleneck: boolean }> = {
  resnet18: { blocks: [2, 2, 2, 2], bottleneck: false },
  resnet34: { blocks: [3, 4, 6, 3], bottleneck: false },
  resnet50: { blocks: [3, 4, 6, 3], bottleneck: true },
  resnet101: { blocks: [3, 4, 23, 3], bottleneck: true },
};

/**
 * Tensor names a `model` backbone must have in a torchvision weights file (the stem, the last
 * block of each stage, its last conv), and names it must not have (a bottleneck's conv3 in a
 * basic-block ResNet's file, and the reverse a missing one catches).
 */
export function backboneNames(model: string): { required: string[]; absent: string[] } {
  if ((MCTFORMER_ARCHS as readonly string[]).includes(model)) {
    // A DeiT (timm ViT) or MCTformer-V2 state (docs/mctformer.md#deit-weights).
    const vit = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"];
    return { required: vit, absent: ["conv1.weight"] };
  }
  const r = RESNETS[model];
  if (!r) return { required: ["conv1.weight"], absent: [] };
  const last = r.bottleneck ? "conv3" : "conv2";
  const required = ["conv1.weight", "bn1.weight"];
  r.blocks.forEach((n, i) => required.push(`layer${i + 1}.${n - 1}.${last}.weight`));
  const absent = r.bottleneck ? [] : ["layer1.0.conv3.weight"];
  return { required, absent };
}

/** Where the weights of `model` come from, for an error message. */
function convertHint(model: string): string {
  return (MCTFORMER_ARCHS as readonly string[]).includes(model)
    ? "convert DeiT weights: docs/mctformer.md#deit-weights"
    : `convert ${model}'s torchvision ImageNet weights: README`;
}

/** Checks a weights file for a `model` backbone from its header; throws a ConfigError. */
export async function checkWeights(path: string, model: string, flag = "--weights") {
  if (!await exists(path)) {
    throw new ConfigError(`${flag} ${path}: no such file (${convertHint(model)})`);
  }
  let names: Set<string>;
  try {
    names = new Set((await readSafetensorsHeader(path)).shapes.keys());
  } catch (e) {
    throw new ConfigError(`${flag} ${path}: not a safetensors file: ${(e as Error).message}`);
  }
  const { required, absent } = backboneNames(model);
  const missing = required.filter((n) => !names.has(n));
  const extra = absent.filter((n) => names.has(n));
  if (missing.length || extra.length) {
    throw new ConfigError(
      `${flag} ${path}: not a ${model} backbone: ` +
        (missing.length ? `no tensor ${missing.join(", ")}` : `has ${extra.join(", ")}`) +
        ` (${names.size} tensors; pass --model to match the file, or ${convertHint(model)})`,
    );
  }
}

/** Checks that a VOC or COCO folder has the given splits; throws a ConfigError naming them. */
export async function checkSplits(
  kind: "voc" | "coco",
  root: string,
  splits: string[],
): Promise<void> {
  const missing: string[] = [];
  let where: string;
  if (kind === "voc") {
    let voc: string;
    try {
      voc = resolveVocRoot(root);
    } catch (e) {
      throw new ConfigError(`--data ${root}: ${(e as Error).message}`);
    }
    where = `${voc}/ImageSets/Segmentation`;
    for (const s of new Set(splits)) {
      const cands = s.includes("/") || s.endsWith(".txt")
        ? [s]
        : [`${where}/${s}.txt`, ...(s === "trainaug" ? [`${where}/train_aug.txt`] : [])];
      let found = false;
      for (const c of cands) if (await exists(c)) found = true;
      if (!found) missing.push(`${s} (${cands[0]})`);
    }
  } else {
    if (!await exists(root)) throw new ConfigError(`--data ${root}: COCO folder not found`);
    where = `${root}/annotations`;
    for (const s of new Set(splits)) {
      const f = cocoFolder(s);
      const ann = `${where}/instances_${f}.json`;
      if (!await exists(ann)) missing.push(`${s} (${ann})`);
      else if (!await exists(`${root}/${f}`)) missing.push(`${s} (${root}/${f}/)`);
    }
  }
  if (missing.length) {
    throw new ConfigError(
      `--data ${root}: the ${kind} dataset lacks the split${missing.length > 1 ? "s" : ""} ` +
        `the pipeline reads: ${missing.join(", ")}`,
    );
  }
}

/** Validates a nested option object against its task's schema (every field optional). */
function checkNested(
  o: Record<string, unknown>,
  key: string,
  schema: z.ZodObject,
  source: string,
) {
  const v = o[key];
  if (v === undefined) return;
  const r = schema.partial().safeParse(v);
  if (!r.success) {
    throw new ConfigError(
      r.error.issues.map((i) => `${source}: ${[key, ...i.path].join(".")}: ${i.message}`)
        .join("\n"),
    );
  }
}

/**
 * Validates the nested option objects of method options `o` (`train`, `affinity`, `rw`, `seg`)
 * against their task's schema, every field optional (`train`: `trainSchema`, the method's
 * training config; default the CAM classifier's); errors name `source` and the field
 * (`cfg.json: train.batch: ...`).
 */
export function checkNestedOptions(
  o: Record<string, unknown>,
  source: string,
  trainSchema: z.ZodObject = TrainConfigSchema,
): void {
  checkNested(o, "train", trainSchema, source);
  checkNested(o, "affinity", AffinityConfigSchema, source);
  checkNested(o, "rw", RwSchema, source);
  checkNested(o, "seg", SegConfigSchema, source);
}

/** The output stride of AffinityNet's features, on which its pairs are drawn. */
const AFFINITY_STRIDE = 8;

/**
 * Checks that AffinityNet's training crop gives a feature grid large enough for its pair radius
 * (psa's pair layout, {@link pairGrid}); throws a ConfigError naming the options. `crop` is
 * the crop side in pixels (the padded ResNet and `tiny` stems give a grid of ceil(crop / 8)).
 */
export function checkAffinityCrop(crop: number, radius: number): void {
  const g = Math.ceil(crop / AFFINITY_STRIDE);
  try {
    pairGrid(g, g, radius);
  } catch {
    const need = AFFINITY_STRIDE * (2 * radius - 2) + 1;
    throw new ConfigError(
      `affinity: a ${crop} px crop gives AffinityNet a ${g}x${g} grid (stride ` +
        `${AFFINITY_STRIDE}), too small for radius ${radius}: set affinity.size to at least ` +
        `${need} or affinity.radius to at most ${Math.floor((g + 1) / 2)}`,
    );
  }
}

/**
 * The schema of a method's `train` option (its training stage's config): the method's own when
 * its option schema types `train` as an object (MCTformer's), else the CAM classifier's
 * {@link TrainConfigSchema} (a method whose `train` is a record of the CAM classifier's fields).
 */
export function methodTrainSchema(methodSchema: unknown): z.ZodObject {
  const shape = (methodSchema as { shape?: Record<string, unknown> }).shape;
  let t = shape?.train;
  if (t instanceof ZodOptional) t = t.unwrap();
  return t instanceof ZodObject ? t : TrainConfigSchema;
}

/**
 * The checks before a pipeline's first stage (see the module doc): `o` the resolved method
 * options, `out` the run folder, `stageNames` the method's stages in order (the first is what
 * `--from` names to redo them all), `trainSchema` the method's training config
 * ({@link methodTrainSchema}). Throws a ConfigError.
 */
export async function preflight(
  o: CamStageOptions & { method: string; from?: string; [k: string]: unknown },
  out: string,
  stageNames: readonly string[],
  source = "pipeline options",
  trainSchema: z.ZodObject = TrainConfigSchema,
): Promise<void> {
  const firstStage = stageNames[0];
  checkNestedOptions(o, source, trainSchema);
  // The run folder: an earlier run of another method or on other data.
  const saved = join(out, "pipeline.json");
  if (await exists(saved)) {
    let prev: CamStageOptions & { method?: string };
    try {
      prev = JSON.parse(await Deno.readTextFile(saved));
    } catch {
      prev = { method: undefined } as unknown as CamStageOptions;
    }
    if (prev.method !== undefined && prev.method !== o.method) {
      throw new ConfigError(
        `${saved}: this folder holds a ${prev.method} run, not ${o.method}: pick another --out`,
      );
    }
    const was = JSON.stringify(camData(prev)), now = JSON.stringify(camData(o));
    if (prev.method !== undefined && was !== now && o.from !== firstStage) {
      throw new ConfigError(
        `${saved}: this folder's run is on ${describeData(prev)}, not ${describeData(o)}: ` +
          `pick another --out, or pass --from ${firstStage} to redo every stage on the new data`,
      );
    }
  }
  const t = (o.train ?? {}) as Partial<TrainConfig>;
  const model = t.model ?? (trainSchema.parse({}) as { model: string }).model;
  if (stageNames.includes("affinity")) {
    const a = (o.affinity ?? {}) as { size?: number; radius?: number };
    checkAffinityCrop(
      a.size ?? t.size ?? (trainSchema.parse({}) as { size?: number }).size ??
        TrainConfigSchema.parse({}).size,
      a.radius ?? AFFINITY_RADIUS,
    );
  }
  const camsSplit = o.camsSplit ?? "train";
  if (camsSplit !== "train" && o.trainLimit !== undefined) {
    throw new ConfigError(
      `camsSplit ${camsSplit} with trainLimit ${o.trainLimit}: the train-split scores need ` +
        `the CAMs of the first ${o.trainLimit} train images, which the first ${o.trainLimit} ` +
        `${camsSplit} images need not hold; drop trainLimit, or pass --cams-split train for a ` +
        "quick run",
    );
  }
  if (t.weights !== undefined) await checkWeights(t.weights, model);
  const segWeights = (o.seg as { weights?: unknown } | undefined)?.weights;
  if (typeof segWeights === "string") {
    const segModel = (o.seg as { model?: string }).model ?? model;
    await checkWeights(segWeights, segModel, "seg.weights");
  }
  const d = camData(o);
  if (d.dataset !== "synthetic") {
    if (!d.data) {
      throw new ConfigError(`--dataset ${d.dataset} needs --data DIR (the dataset root)`);
    }
    const evalSplit = o.evalSplit ?? "val";
    await checkSplits(d.dataset, d.data, [
      t.split ?? "train",
      "train", // the train-split scores
      camsSplit, // the CAMs AffinityNet and the segmenter learn from
      t.valSplit ?? "val",
      evalSplit,
    ]);
  }
}

/** The data of a run's options, in words. */
function describeData(o: CamStageOptions): string {
  const d = camData(o);
  return d.dataset === "synthetic"
    ? `the synthetic data (${JSON.stringify(d.synthetic)})`
    : `${d.dataset} at ${d.data}`;
}
