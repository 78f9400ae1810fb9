/**
 * The prior annotation correlation of OCR (DESIGN §4 step 2): `A[c,k] = n(c and k tagged
 * together) / n(c tagged)`, counted once over the training tags, cached beside the dataset.
 * @module
 */
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";

/**
 * Streaming co-occurrence counts: `add` one image's tags at a time, then read the matrix.
 * Repeated tags within one image count once.
 */
export class CooccurrenceCounts {
  /** `counts[c*C + k]` = images tagged with both c and k; the diagonal = images tagged c. */
  readonly counts: Float64Array;
  /** Images added so far. */
  images = 0;

  constructor(readonly numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 1) {
      throw new RangeError(
        `cooccurrence: numClasses must be a positive integer, got ${numClasses}`,
      );
    }
    this.counts = new Float64Array(numClasses * numClasses);
  }

  /** Counts one image's tags (class indices in [0, numClasses)). */
  add(tags: Iterable<number>): void {
    const C = this.numClasses;
    const set = new Set<number>();
    for (const t of tags) {
      if (!Number.isInteger(t) || t < 0 || t >= C) {
        throw new RangeError(
          `cooccurrence: image ${this.images} has tag ${t}, outside [0, ${C})`,
        );
      }
      set.add(t);
    }
    const ks = [...set];
    for (const c of ks) for (const k of ks) this.counts[c * C + k]++;
    this.images++;
  }

  /**
   * The C×C row-major matrix `A[c,k] = n(c,k) / n(c)`, diagonal 1. A class never tagged has
   * no evidence of co-occurring with anything: its row is the identity row (1 on the
   * diagonal, 0 elsewhere).
   */
  matrix(): Float32Array {
    const C = this.numClasses;
    const a = new Float32Array(C * C);
    for (let c = 0; c < C; c++) {
      const n = this.counts[c * C + c];
      for (let k = 0; k < C; k++) {
        a[c * C + k] = c === k ? 1 : n > 0 ? this.counts[c * C + k] / n : 0;
      }
    }
    return a;
  }
}

/**
 * The co-occurrence prior of a list of per-image tag lists (class indices): C×C row-major,
 * `A[c,k] = n(c and k together) / n(c)`, diagonal 1, identity rows for never-tagged classes.
 */
export function cooccurrence(tagLists: number[][], numClasses: number): Float32Array {
  const counts = new CooccurrenceCounts(numClasses);
  for (const t of tagLists) counts.add(t);
  return counts.matrix();
}

const CACHE_VERSION = 1;

interface CacheFile {
  version: number;
  key: string;
  numClasses: number;
  images: number;
  /** C×C co-occurrence counts, row-major (diagonal = per-class image counts). */
  counts: number[];
}

async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function parseCache(text: string, key: string, C: number): CooccurrenceCounts | null {
  let f: CacheFile;
  try {
    f = JSON.parse(text);
  } catch {
    return null;
  }
  if (
    f?.version !== CACHE_VERSION || f.key !== key || f.numClasses !== C ||
    !Number.isInteger(f.images) || !Array.isArray(f.counts) || f.counts.length !== C * C ||
    !f.counts.every((x) => Number.isInteger(x) && x >= 0)
  ) return null;
  const counts = new CooccurrenceCounts(C);
  counts.counts.set(f.counts);
  counts.images = f.images;
  return counts;
}

/** The cache file of a key: `cooccurrence-<C>-<sha256(key) prefix>.json` in `cacheDir`. */
export async function cooccurrenceCachePath(
  cacheDir: string,
  key: string,
  numClasses: number,
): Promise<string> {
  return join(cacheDir, `cooccurrence-${numClasses}-${(await sha256Hex(key)).slice(0, 32)}.json`);
}

/**
 * The co-occurrence prior for `key` (e.g. a hash of the dataset's list file): read from
 * `cacheDir` when a cache file for the same key and class count exists, otherwise counted
 * from `tagLists()` and written there atomically (temp file + rename) as JSON counts. A cache
 * file that is unreadable or belongs to another key is treated as missing and rewritten.
 */
export async function loadOrComputeCooccurrence(
  cacheDir: string,
  key: string,
  tagLists: () => number[][] | Promise<number[][]>,
  numClasses: number,
): Promise<Float32Array> {
  const path = await cooccurrenceCachePath(cacheDir, key, numClasses);
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const cached = text === null ? null : parseCache(text, key, numClasses);
  if (cached) return cached.matrix();
  const counts = new CooccurrenceCounts(numClasses);
  for (const t of await tagLists()) counts.add(t);
  const file: CacheFile = {
    version: CACHE_VERSION,
    key,
    numClasses,
    images: counts.images,
    counts: [...counts.counts],
  };
  await writeJsonAtomic(path, file);
  return counts.matrix();
}
