/**
 * The training loop's view of a dataset: the train stream (resumable from a sample position),
 * the validation batches (no augmentation, fixed order), the co-occurrence prior (cached by
 * the split list's hash) and the config hash that guards resume.
 * @module
 */
import { join } from "node:path";
import { type Dataset, openDataset } from "../data/dataset.ts";
import { type Batch, batches } from "../data/stream.ts";
import { defaultCacheDir } from "../data/synthetic.ts";
import { resolveDataRoot } from "../data/root.ts";
import { hashJson, type TrainConfig } from "../io/config.ts";
import { loadOrComputeCooccurrence } from "./cooccurrence.ts";

/** A batch as the trainer consumes it. */
export interface TrainBatch {
  images: Float32Array;
  tags: Float32Array;
  batchSize: number;
  /** Samples consumed after this batch (resume position). */
  position: number;
}

/** Datasets and streams of one training run. */
export interface TrainingData {
  train: Dataset;
  val: Dataset;
  numClasses: number;
  size: number;
  describe: string;
  root: string;
  kind: "voc" | "coco";
  batches(position: number): AsyncIterator<TrainBatch>;
  valBatches(): AsyncIterable<TrainBatch>;
  prior(): Promise<Float32Array>;
  /** The co-occurrence prior's cache key (see {@link priorCacheKey}). */
  priorKey: string;
  configHash(cfg: HashedConfig): Promise<string>;
}

/** The stream settings a training config carries. */
export interface StreamConfig {
  batch: number;
  /** Crop side S. */
  size: number;
  seed: number;
  prefetch: number;
  /** Scale factors relative to S, flip, colour jitter. */
  augment: { scaleRange: [number, number]; flip: boolean; colorJitter: number };
}

/**
 * The endless, shuffled, augmented training stream of a config from a sample position (full
 * batches only; masks when asked for).
 */
export function trainingStream(
  ds: Dataset,
  cfg: StreamConfig,
  position: number,
  withMasks: boolean,
): AsyncGenerator<Batch> {
  const aug = cfg.augment;
  return batches(ds, {
    batchSize: cfg.batch,
    cropSize: cfg.size,
    seed: cfg.seed,
    position,
    epochs: Infinity,
    shuffle: true,
    prefetch: cfg.prefetch,
    dropLast: true,
    withMasks,
    augment: {
      // Config scale factors are relative to the crop size; the stream takes long-side pixels.
      scaleRange: [
        Math.round(aug.scaleRange[0] * cfg.size),
        Math.round(aug.scaleRange[1] * cfg.size),
      ],
      flip: aug.flip,
      colorJitter: aug.colorJitter,
    },
  });
}

/**
 * The cache key of a training split's co-occurrence prior: the dataset, its split, VOC's tag
 * mode and the split's list hash (ids and tags). The tag mode is named on its own so that a
 * prior counted from one convention's tags is never taken for another's.
 */
export function priorCacheKey(
  ds: Dataset,
  cfg: Pick<TrainConfig, "split" | "tags">,
): string {
  const mode = ds.kind === "voc" ? `:tags=${cfg.tags}` : "";
  return `${ds.kind}:${ds.root}:${cfg.split}${mode}:${ds.listHash}`;
}

/** The data fields of a training config (the CAM classifier's, SEAM's, MCTformer's). */
export type DataConfig = Pick<
  TrainConfig,
  | "dataset"
  | "data"
  | "synthetic"
  | "split"
  | "valSplit"
  | "tags"
  | "batch"
  | "size"
  | "seed"
  | "prefetch"
  | "augment"
>;

/** The fields {@link runConfigHash} leaves out of a config (the rest is hashed). */
export type HashedConfig = { out?: string; logEvery: number; ckptEvery: number; prefetch: number };

/**
 * Opens the train and validation splits of a config (VOC tags as `cfg.tags` says); the train
 * split's warnings (images kept with no tags although their masks show foreground) are
 * logged.
 */
export async function openTrainingData(
  cfg: DataConfig,
  log: (l: string) => void = console.log,
): Promise<TrainingData> {
  const { kind, root, describe } = await resolveDataRoot(cfg, log);
  const train = await openDataset({ kind, root, split: cfg.split, tags: cfg.tags });
  const val = await openDataset({ kind, root, split: cfg.valSplit, tags: cfg.tags });
  logWarnings(train, log);
  const priorKey = priorCacheKey(train, cfg);
  const wrap = async function* (it: AsyncIterable<Batch>): AsyncGenerator<TrainBatch> {
    for await (const b of it) {
      yield { images: b.images, tags: b.tags, batchSize: b.size, position: b.position };
    }
  };
  return {
    train,
    val,
    numClasses: train.numClasses,
    size: train.ids.length,
    describe,
    root,
    kind,
    batches: (position) =>
      wrap(trainingStream(train, cfg, position, false))[Symbol.asyncIterator](),
    valBatches: () =>
      wrap(batches(val, {
        batchSize: cfg.batch,
        cropSize: cfg.size,
        seed: 0,
        position: 0,
        shuffle: false,
        prefetch: cfg.prefetch,
        dropLast: false,
        epochs: 1,
        augment: null,
      })),
    priorKey,
    prior: () =>
      loadOrComputeCooccurrence(
        join(defaultCacheDir(), "cooccurrence"),
        priorKey,
        () => train.ids.map((_, i) => train.tagsOf(i)),
        train.numClasses,
      ),
    configHash: (c) => runConfigHash(c),
  };
}

/**
 * The hash of a run's config that guards `--resume`: the config without the fields that may
 * change on resume without changing the run (out, logEvery, ckptEvery, prefetch), with
 * `extra` fields set over it.
 */
export function runConfigHash(
  cfg: HashedConfig,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const { out: _o, logEvery: _l, ckptEvery: _c, prefetch: _p, ...rest } = cfg;
  return hashJson({ ...rest, ...extra });
}

/** Logs a split's warnings: their count and the first few. */
export function logWarnings(ds: Dataset, log: (l: string) => void, shown = 5): void {
  const w = ds.warnings;
  if (w.length === 0) return;
  log(`warning: ${w.length} image(s) of ${ds.kind} '${ds.split}' to look at:`);
  for (const x of w.slice(0, shown)) log(`  ${x.id}: ${x.path}: ${x.problem}`);
  if (w.length > shown) log(`  ... and ${w.length - shown} more`);
}
