/**
 * The co-occurrence prior of OCR cached on disk: counted once over a dataset's training tags
 * (src/losses/cooccurrence.ts) and kept as JSON counts beside the dataset.
 * @module
 */
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { CooccurrenceCounts } from "../losses/cooccurrence.ts";

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
 * file that is malformed or belongs to another key is treated as missing and rewritten; one
 * that cannot be read or written at all (a folder in its place, no permission) is an error
 * naming the cache file.
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
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(
        `co-occurrence cache ${path}: cannot read it (${(e as Error).message}); remove it or ` +
          `point OCR_WSSS_CACHE at a writable folder`,
        { cause: e },
      );
    }
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
  try {
    await writeJsonAtomic(path, file);
  } catch (e) {
    throw new Error(
      `co-occurrence cache ${path}: cannot write it (${(e as Error).message}); point ` +
        `OCR_WSSS_CACHE at a writable folder`,
      { cause: e },
    );
  }
  return counts.matrix();
}
