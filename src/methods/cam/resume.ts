/**
 * Per-image resume of the writers that fill a folder image by image (CAM folders, random-walk
 * masks): a killed run continues at the next unwritten image instead of from zero, which is
 * what an 82,783-image COCO split needs.
 * @module
 */
import { join } from "node:path";
import { exists, writeJsonAtomic } from "../../io/atomic.ts";
import { stableStringify } from "../../io/config.ts";
import { readSafetensorsHeader } from "../../io/safetensors.ts";

/**
 * The checkpoint part of a writer's settings key: the file, and the step and config hash its
 * metadata records (a retrained checkpoint at the same path is another key).
 */
export async function checkpointKey(
  ckpt: string,
): Promise<{ ckpt: string; step: string | null; configHash: string | null }> {
  const m = (await readSafetensorsHeader(ckpt)).metadata;
  return { ckpt, step: m.step ?? null, configHash: m.config_hash ?? null };
}

/** The file that records which settings a folder's per-image outputs were written with. */
export const PROGRESS_FILE = "progress.json";

/**
 * The images (indices into `ids`) a writer into `out` still has to write. The run's `key` (the
 * settings that decide the outputs: checkpoint and its step and config hash, options) is kept
 * in `<out>/progress.json`, written before any image. With the same key, an image whose
 * outputs (`outputsOf(id)`, paths) all exist is skipped: each is written atomically, so an
 * existing file is complete. With another key, or none recorded, every image is written again.
 */
export async function imagesToWrite(
  out: string,
  key: unknown,
  ids: readonly string[],
  outputsOf: (id: string) => string[],
  log: (l: string) => void,
): Promise<number[]> {
  const path = join(out, PROGRESS_FILE);
  const want = stableStringify(key);
  let same = false;
  if (await exists(path)) {
    try {
      same = stableStringify(JSON.parse(await Deno.readTextFile(path)).key) === want;
    } catch {
      same = false;
    }
    if (!same) log(`${out} was written with other settings: writing every image again`);
  }
  await writeJsonAtomic(path, { key });
  if (!same) return ids.map((_, i) => i);
  const todo: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const outs = outputsOf(ids[i]);
    if (!(await Promise.all(outs.map(exists))).every(Boolean)) todo.push(i);
  }
  if (todo.length < ids.length) {
    log(`resuming: ${ids.length - todo.length} of ${ids.length} images already written`);
  }
  return todo;
}
