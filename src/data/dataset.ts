/**
 * Opening a dataset split on disk: `openDataset({kind, root, split, skipBad, tags})` gives a
 * {@link Dataset} for PASCAL VOC 2012 or MS COCO 2014 (see `voc.ts` and `coco.ts` for the
 * exact conventions).
 * @module
 */
import type { Dataset } from "./base.ts";
import type { VocTagMode } from "./classes.ts";
import { openCoco } from "./coco.ts";
import { openVoc } from "./voc.ts";

export type { Dataset, DataWarning, Sample, SkippedItem } from "./base.ts";
export type { VocTagMode } from "./classes.ts";
export { DataError } from "./errors.ts";

/** Options of {@link openDataset}. */
export interface OpenDatasetOptions {
  /** The on-disk format. */
  kind: "voc" | "coco";
  /** VOC: the VOC2012 folder or one above it; COCO: the folder holding `annotations/`. */
  root: string;
  /** VOC: train/val/trainaug/list name or list path; COCO: train/val or a folder name. */
  split: string;
  /** Skip and count bad entries (see `Dataset.skipped`) instead of failing. */
  skipBad?: boolean;
  /**
   * VOC: where the training tags come from (default `mask`, see docs/data.md#image-tags).
   * COCO's tags are always its annotations' categories; this is ignored there.
   */
  tags?: VocTagMode;
}

/**
 * Opens a dataset split. Throws `DataError` naming the file when the folder, list or
 * annotation file is missing or malformed, or (without `skipBad`) when an entry is bad.
 */
export function openDataset(opts: OpenDatasetOptions): Promise<Dataset> {
  switch (opts.kind) {
    case "voc":
      return openVoc(opts);
    case "coco":
      return openCoco(opts);
    default:
      throw new Error(`openDataset: unknown kind '${(opts as { kind: unknown }).kind}'`);
  }
}
