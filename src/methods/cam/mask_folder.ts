/**
 * Evaluation of a folder of predicted masks written by any tool (this one, psa, SEAM...):
 * palette or grey PNGs named `<id>.png`, scored against a dataset's ground truth with the GPU
 * confusion matrix, plus the OC-error rate of the masks against the image tags.
 * @module
 */
import { join } from "node:path";
import type { GpuContext } from "../../gpu/context.ts";
import { decodeLabelPng, type LabelImage } from "../../data/png.ts";
import type { Dataset } from "../../data/base.ts";
import { type MaskCounts, MaskEvaluator } from "../../eval/confusion.ts";
import { maskMetrics, type Metrics } from "../../eval/metrics.ts";
import type { ReportExample } from "./report.ts";

/** The part of a {@link Dataset} (src/data/dataset.ts) that mask-folder evaluation uses. */
export type EvalDataset = Pick<Dataset, "ids" | "numClasses" | "classNames" | "load">;

/** Options of {@link evaluateMaskFolder}. */
export interface MaskFolderOptions {
  /** The GPU that counts. */
  gpu: GpuContext;
  /** The ground truth: ids, classes and labelled samples. */
  dataset: EvalDataset;
  /** Folder holding `<id>.png` for every image of the dataset. */
  masksDir: string;
  /** Split name for metrics.json (default "val"). */
  split?: string;
  /** Source description for metrics.json (default "masks:<masksDir>"). */
  source?: string;
  /** Evaluate only the first `limit` images. */
  limit?: number;
  /** Number of report examples to keep (default 6). */
  examples?: number;
  /** Called after each image. */
  onProgress?: (done: number, total: number) => void;
}

/** Result of a folder evaluation. */
export interface MaskFolderResult {
  /** The accumulated confusion counts. */
  counts: MaskCounts;
  /** Metrics computed from `counts`. */
  metrics: Metrics;
  /** The first `examples` images, for the report. */
  examples: ReportExample[];
}

/** Reads the label PNG `path` of image `id`; errors name the image and the file. */
export async function readMaskPng(path: string, id: string): Promise<LabelImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`no prediction for image ${id}: ${path} not found`);
    }
    throw new Error(`cannot read prediction ${path}: ${(e as Error).message}`);
  }
  return await decodeLabelPng(bytes, path);
}

/**
 * Checks that the folder `masksDir` holds `<id>.png` for every id: errors name the folder, or
 * the number of missing files and the first few ids (all found up front, before any work).
 */
export async function checkMaskFolder(
  masksDir: string,
  ids: readonly string[],
  what = "masks",
): Promise<void> {
  try {
    if (!(await Deno.stat(masksDir)).isDirectory) {
      throw new Error(`mask folder ${masksDir} is not a directory`);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`mask folder ${masksDir} not found`);
    throw e;
  }
  const missing: string[] = [];
  await Promise.all(ids.map(async (id) => {
    try {
      await Deno.stat(join(masksDir, `${id}.png`));
    } catch {
      missing.push(id);
    }
  }));
  if (missing.length) {
    missing.sort();
    throw new Error(
      `${missing.length} of ${ids.length} ${what} missing in ${masksDir} (expected <id>.png): ` +
        `${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}`,
    );
  }
}

/**
 * Scores `<masksDir>/<id>.png` against the dataset's ground truth. The OC-error rate uses each
 * sample's `present` classes (its tags plus classes seen only on objects marked difficult),
 * so predicting a difficult-only class is not an OC error. Errors (each naming the file or
 * image): missing folder; missing PNGs (all listed up front, before any work); undecodable
 * PNG; a mask whose size differs from its image; labels outside 0..C. Images without ground
 * truth count towards the OC rate only.
 */
export async function evaluateMaskFolder(opts: MaskFolderOptions): Promise<MaskFolderResult> {
  const { gpu, dataset, masksDir } = opts;
  const n = Math.min(dataset.ids.length, opts.limit ?? Infinity);
  const ids = dataset.ids.slice(0, n);
  await checkMaskFolder(masksDir, ids, "predictions");
  const C = dataset.numClasses;
  const ev = new MaskEvaluator(gpu, C);
  const examples: ReportExample[] = [];
  const keep = opts.examples ?? 6;
  let withGt = 0;
  const fetchOne = (i: number) =>
    Promise.all([
      dataset.load(i),
      readMaskPng(join(masksDir, `${ids[i]}.png`), ids[i]),
    ]);
  try {
    let next = n > 0 ? fetchOne(0) : null;
    for (let i = 0; i < n; i++) {
      const [item, pred] = await next!;
      next = i + 1 < n ? fetchOne(i + 1) : null;
      next?.catch(() => {}); // surfaced when awaited
      const gt = item.mask ?? new Uint8Array(item.width * item.height).fill(255);
      if (item.mask) withGt++;
      const path = join(masksDir, `${item.id}.png`);
      try {
        await ev.add({
          id: item.id,
          gt: { width: item.width, height: item.height, data: gt },
          pred: { width: pred.width, height: pred.height, data: pred.data },
          tags: item.present,
        });
      } catch (e) {
        throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
      }
      if (examples.length < keep) {
        examples.push({
          id: item.id,
          width: item.width,
          height: item.height,
          rgb: item.rgb,
          gt: item.mask,
          pred: pred.data,
        });
      }
      opts.onProgress?.(i + 1, n);
    }
    const counts = await ev.result();
    const metrics = maskMetrics(counts, {
      classNames: dataset.classNames,
      split: opts.split ?? "val",
      source: opts.source ?? `masks:${masksDir}`,
    });
    metrics.n_gt_images = withGt;
    return { counts, metrics, examples };
  } finally {
    ev.dispose();
  }
}
