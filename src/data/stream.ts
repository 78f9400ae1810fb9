/**
 * Streaming a dataset as GPU-ready batches: an async iterator with a bounded prefetch queue
 * (decoding and augmenting the next batches while the consumer works), a deterministic order
 * and augmentation from the seed, and an exact resume point.
 *
 * Order and resume: slot `p` (counted from 0 over all epochs) is image
 * `order(epoch = floor(p / n))[p mod n]`, where the epoch's order is a shuffle seeded by
 * (seed, epoch). Sample augmentation draws from an RNG seeded by (seed, epoch, image index),
 * so a batch depends only on its slots: `batches(ds, {...opts, position: b.position})`
 * continues exactly after batch `b`. Batches never straddle epochs. With `dropLast` an epoch's
 * final short batch is dropped (its slots are skipped). With the dataset's `skipBad`, an image
 * that fails to load is counted in `ds.skipped` and the batch is filled from the next slots.
 * @module
 */
import { Rng } from "../rng.ts";
import { applyAugment, type AugmentOptions, checkAugment, sampleAugParams } from "./augment.ts";
import type { Dataset } from "./base.ts";
import { mixSeed } from "./hash.ts";

/** Options of {@link batches}. */
export interface BatchOptions {
  /** Samples per batch B. */
  batchSize: number;
  /** Output side S: images are S×S. */
  cropSize: number;
  /** Seeds the order and the augmentation (non-negative integer). */
  seed: number;
  /** Epochs to run from epoch 0 (default 1; `Infinity` for an endless stream). */
  epochs?: number;
  /** Start at the beginning of this epoch (ignored when `position` is given). */
  epochStart?: number;
  /** Start at this slot: the `position` of the last batch consumed. */
  position?: number;
  /** Training augmentation; null/omitted: long side S, centred, no flip or jitter. */
  augment?: AugmentOptions | null;
  /** Batches prepared ahead of the consumer (default 2; 0 = prepare on demand). */
  prefetch?: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Return masks (default: when the dataset has masks). */
  withMasks?: boolean;
  /** Drop each epoch's final short batch (default false). */
  dropLast?: boolean;
  /** Alias of `dropLast`. */
  drop_last?: boolean;
}

/** One batch, NCHW, ready to upload. */
export interface Batch {
  /** [B, 3, S, S] ImageNet mean/std normalised; padding = 0 (the mean). */
  images: Float32Array;
  /** [B, C] multi-hot training tags. */
  tags: Float32Array;
  /** [B, S, S] labels (0 bg, 1..C, 255 ignore/padding), or null without masks. */
  masks: Uint8Array | null;
  /** Image ids of the samples, in batch order. */
  ids: string[];
  /** Dataset indices of the samples. */
  indices: number[];
  /** Samples in this batch (B, or fewer for an epoch's last batch). */
  size: number;
  /** The epoch the batch belongs to. */
  epoch: number;
  /** Slots consumed so far: pass as `position` to resume after this batch. */
  position: number;
}

interface Prepared {
  index: number;
  id: string;
  image: Float32Array;
  mask: Uint8Array | null;
  tags: number[];
}

type Outcome = { ok: Prepared | null } | { error: unknown };

/** The image order of one epoch. */
export function epochOrder(n: number, seed: number, epoch: number, shuffle: boolean): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  return shuffle ? new Rng(mixSeed(seed, epoch, 0x0de7)).shuffle(order) : order;
}

function checkInt(name: string, v: number, min: number): void {
  if (!(Number.isInteger(v) && v >= min)) {
    throw new RangeError(`batches: ${name} must be an integer >= ${min}, got ${v}`);
  }
}

/**
 * Streams `ds` as batches (see the module doc for order, resume and skipping). Options are
 * checked up front; load errors surface when their batch is reached.
 */
export async function* batches(ds: Dataset, opts: BatchOptions): AsyncGenerator<Batch> {
  const B = opts.batchSize, S = opts.cropSize;
  checkInt("batchSize", B, 1);
  checkInt("cropSize", S, 1);
  checkInt("seed", opts.seed, 0);
  const epochs = opts.epochs ?? 1;
  if (!(epochs === Infinity || (Number.isInteger(epochs) && epochs >= 0))) {
    throw new RangeError(`batches: epochs must be a non-negative integer or Infinity`);
  }
  const prefetch = opts.prefetch ?? 2;
  checkInt("prefetch", prefetch, 0);
  const aug = opts.augment ?? null;
  if (aug) checkAugment(aug, S);
  const n = ds.ids.length;
  if (n === 0) throw new Error(`batches: dataset ${ds.kind} '${ds.split}' has no images`);
  const dropLast = opts.dropLast ?? opts.drop_last ?? false;
  if (dropLast && n < B) {
    throw new RangeError(`batches: ${n} images < batchSize ${B} with dropLast: no batch at all`);
  }
  const shuffle = opts.shuffle ?? true;
  const withMasks = opts.withMasks ?? ds.hasMasks;
  const C = ds.numClasses;
  let p = opts.position ?? (opts.epochStart ?? 0) * n;
  checkInt("position", p, 0);
  const end = epochs * n;

  let orderEpoch = -1;
  let order: number[] = [];
  const slotIndex = (slot: number): [number, number] => {
    const e = Math.floor(slot / n);
    if (e !== orderEpoch) {
      order = epochOrder(n, opts.seed, e, shuffle);
      orderEpoch = e;
    }
    return [e, order[slot - e * n]];
  };

  const prepare = async (slot: number): Promise<Outcome> => {
    try {
      const [e, i] = slotIndex(slot);
      const s = await ds.tryLoad(i);
      if (!s) return { ok: null };
      const rng = new Rng(mixSeed(opts.seed, e, i, 0xa09));
      const params = sampleAugParams(rng, s.width, s.height, S, aug);
      const image = new Float32Array(3 * S * S);
      const mask = withMasks ? new Uint8Array(S * S) : null;
      applyAugment(s.rgb, s.mask, s.width, s.height, S, params, image, 0, mask, 0);
      return { ok: { index: i, id: s.id, image, mask, tags: s.tags } };
    } catch (error) {
      return { error };
    }
  };

  // Slots are prepared one after another in slot order (a chain), so the head of the queue is
  // always the first to finish; the consumer overlaps with the chain while it awaits.
  const queue = new Map<number, Promise<Outcome>>();
  let chain: Promise<unknown> = Promise.resolve();
  let next = p;
  const fill = (limit: number) => {
    while (next < end && next < limit) {
      const slot = next;
      const pr = chain.then(() => prepare(slot));
      chain = pr;
      queue.set(slot, pr);
      next++;
    }
  };
  const take = async (slot: number): Promise<Outcome> => {
    fill(slot + 1);
    const pr = queue.get(slot) ?? prepare(slot);
    queue.delete(slot);
    return await pr;
  };

  let epochHadSample = false;
  let fullEpoch = p % n === 0;
  while (p < end) {
    const epoch = Math.floor(p / n);
    const epochEnd = (epoch + 1) * n;
    const got: Prepared[] = [];
    while (got.length < B && p < epochEnd) {
      if (dropLast && epochEnd - p < B - got.length) {
        for (; p < epochEnd; p++) queue.delete(p); // too few slots left to fill this batch
        break;
      }
      const r = await take(p);
      p++;
      fill(p + prefetch * B);
      if ("error" in r) throw r.error;
      if (r.ok) got.push(r.ok);
    }
    if (got.length > 0) epochHadSample = true;
    if (p === epochEnd) {
      if (fullEpoch && !epochHadSample) {
        throw new Error(`batches: no image of ${ds.kind} '${ds.split}' could be loaded`);
      }
      epochHadSample = false;
      fullEpoch = true;
    }
    if (got.length === 0 || (got.length < B && dropLast)) continue;
    const b = got.length, SS = S * S;
    const images = new Float32Array(b * 3 * SS);
    const tags = new Float32Array(b * C);
    const masks = withMasks ? new Uint8Array(b * SS) : null;
    got.forEach((g, k) => {
      images.set(g.image, k * 3 * SS);
      for (const t of g.tags) tags[k * C + t] = 1;
      if (masks && g.mask) masks.set(g.mask, k * SS);
    });
    yield {
      images,
      tags,
      masks,
      ids: got.map((g) => g.id),
      indices: got.map((g) => g.index),
      size: b,
      epoch,
      position: p,
    };
  }
}
