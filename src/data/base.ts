/**
 * The dataset interface shared by the VOC and COCO readers, and their common bookkeeping:
 * per-image tags, bad entries skipped and counted (`skipBad`), label-value checks and the
 * split-list hash used as a cache key.
 * @module
 */
import { createHash } from "node:crypto";
import { DataError } from "./errors.ts";

/** One decoded dataset image with its annotations. */
export interface Sample {
  /** The image id (the split list entry, e.g. VOC `2007_000032`). */
  id: string;
  /** Image width in pixels. */
  width: number;
  /** Image height in pixels. */
  height: number;
  /** HWC RGB, 3 bytes per pixel. */
  rgb: Uint8Array;
  /** HW labels: 0 = background, 1..C = class, 255 = ignore; null when the split has none. */
  mask: Uint8Array | null;
  /** Image-level training tags: sorted 0-based foreground class indices. */
  tags: number[];
  /**
   * Classes present in the image for OC evaluation: `tags` plus classes the annotations show
   * that are not training tags (VOC: objects of the XML, difficult ones included, and the
   * mask's classes). Sorted 0-based indices.
   */
  present: number[];
}

/** A dataset entry that was skipped with `skipBad`. */
export interface SkippedItem {
  /** The image id (or a description for entries without one). */
  id: string;
  /** The file at fault. */
  path: string;
  /** What was wrong. */
  problem: string;
}

/**
 * A dataset entry that is kept but worth a look (e.g. a VOC image trained with no tags although
 * its mask shows foreground); the trainer prints them.
 */
export interface DataWarning {
  /** The image id. */
  id: string;
  /** The file the warning is about. */
  path: string;
  /** What is odd about it. */
  problem: string;
}

/** A split of a dataset on disk. */
export interface Dataset {
  /** Which reader produced it. */
  readonly kind: "voc" | "coco";
  /** The dataset folder as resolved (VOC: the `VOC2012` folder; COCO: the folder above `annotations/`). */
  readonly root: string;
  /** The split as requested (name or list path). */
  readonly split: string;
  /** Image ids in list order (entries skipped at open time are left out). */
  readonly ids: string[];
  /** Number of foreground classes C (VOC 20, COCO = number of categories). */
  readonly numClasses: number;
  /** Foreground class names in index order. */
  readonly classNames: string[];
  /** Whether samples come with masks. */
  readonly hasMasks: boolean;
  /** Training tags of image i (no image decode). */
  tagsOf(i: number): number[];
  /** Classes present in image i, for OC evaluation (tags + annotated non-tag classes). */
  presentOf(i: number): number[];
  /** Decodes image i; throws {@link DataError} naming the file on any bad input. */
  load(i: number): Promise<Sample>;
  /** Like load, but with `skipBad` a bad entry is counted in `skipped` and null returned. */
  tryLoad(i: number): Promise<Sample | null>;
  /** Whether bad entries are skipped and counted instead of failing. */
  readonly skipBad: boolean;
  /** Number of entries skipped so far (at open time, plus distinct images that failed to load). */
  readonly skipped: number;
  /** The skipped entries with their problems. */
  readonly skippedItems: readonly SkippedItem[];
  /** Entries kept at open time but worth a look (see {@link DataWarning}). */
  readonly warnings: readonly DataWarning[];
  /** SHA-256 (hex) of the kind, the ids and their tags: a cache key for per-split statistics. */
  readonly listHash: string;
}

/**
 * A view of the first `images` samples of `ds` whose samples carry other masks: `mask(s)`
 * gives the mask of a loaded sample (psa's affinity labels from CAMs, a folder of pseudo
 * masks). Bad masks fail; they are never skipped.
 */
export function withMasks(
  ds: Dataset,
  mask: (s: Sample) => Promise<Uint8Array>,
  images = ds.ids.length,
): Dataset {
  const load = async (i: number): Promise<Sample> => {
    const s = await ds.load(i);
    return { ...s, mask: await mask(s) };
  };
  return {
    kind: ds.kind,
    root: ds.root,
    split: ds.split,
    ids: ds.ids.slice(0, images),
    numClasses: ds.numClasses,
    classNames: ds.classNames,
    hasMasks: true,
    tagsOf: (i) => ds.tagsOf(i),
    presentOf: (i) => ds.presentOf(i),
    load,
    tryLoad: load,
    skipBad: false,
    get skipped() {
      return ds.skipped;
    },
    get skippedItems() {
      return ds.skippedItems;
    },
    get warnings() {
      return ds.warnings;
    },
    listHash: ds.listHash,
  };
}

/** Options of {@link BaseDataset}. */
export interface BaseInit {
  kind: "voc" | "coco";
  root: string;
  split: string;
  classNames: string[];
  skipBad: boolean;
  hasMasks: boolean;
}

/** Common implementation: subclasses fill ids/tags and implement `load`. */
export abstract class BaseDataset implements Dataset {
  readonly kind: "voc" | "coco";
  readonly root: string;
  readonly split: string;
  readonly classNames: string[];
  readonly skipBad: boolean;
  readonly hasMasks: boolean;
  ids: string[] = [];
  protected tags: number[][] = [];
  protected present: number[][] = [];
  readonly #skipped: SkippedItem[] = [];
  /** Filled by subclasses at open time. */
  protected readonly warningList: DataWarning[] = [];
  readonly #badLoads = new Set<number>();
  listHash = "";

  constructor(init: BaseInit) {
    this.kind = init.kind;
    this.root = init.root;
    this.split = init.split;
    this.classNames = init.classNames;
    this.skipBad = init.skipBad;
    this.hasMasks = init.hasMasks;
  }

  get numClasses(): number {
    return this.classNames.length;
  }

  get skipped(): number {
    return this.#skipped.length;
  }

  get skippedItems(): readonly SkippedItem[] {
    return this.#skipped;
  }

  get warnings(): readonly DataWarning[] {
    return this.warningList;
  }

  tagsOf(i: number): number[] {
    this.checkIndex(i);
    return this.tags[i];
  }

  presentOf(i: number): number[] {
    this.checkIndex(i);
    return this.present[i];
  }

  abstract load(i: number): Promise<Sample>;

  async tryLoad(i: number): Promise<Sample | null> {
    try {
      return await this.load(i);
    } catch (e) {
      if (!this.skipBad || !(e instanceof DataError)) throw e;
      if (!this.#badLoads.has(i)) {
        this.#badLoads.add(i);
        this.#skipped.push({ id: this.ids[i], path: e.path, problem: e.problem });
      }
      return null;
    }
  }

  /** Open-time bad entry: throws unless skipBad, in which case it is recorded. */
  protected bad(id: string, e: unknown): void {
    if (!this.skipBad || !(e instanceof DataError)) throw e;
    this.#skipped.push({ id, path: e.path, problem: e.problem });
  }

  protected checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.ids.length) {
      throw new RangeError(
        `${this.kind} ${this.split}: index ${i} out of range 0..${this.ids.length - 1}`,
      );
    }
  }

  /** Computes `listHash` once ids and tags are final. */
  protected finish(): void {
    const h = createHash("sha256");
    h.update(`${this.kind}\n${this.numClasses}\n`);
    this.ids.forEach((id, i) => h.update(`${id}\t${this.tags[i].join(",")}\n`));
    this.listHash = h.digest("hex");
  }
}

/**
 * Checks that every label is 0..numClasses or 255; throws {@link DataError} naming `path`, the
 * first bad value and its pixel otherwise.
 */
export function checkLabels(mask: Uint8Array, width: number, numClasses: number, path: string) {
  for (let p = 0; p < mask.length; p++) {
    const v = mask[p];
    if (v > numClasses && v !== 255) {
      throw new DataError(
        path,
        `mask value ${v} at pixel (x=${p % width}, y=${Math.floor(p / width)}) is out of ` +
          `range (expected 0..${numClasses} or 255)`,
      );
    }
  }
}

/** Sorted 0-based foreground classes found in a (checked) label mask. */
export function maskClasses(mask: Uint8Array, numClasses: number): number[] {
  const seen = new Uint8Array(numClasses + 1);
  for (let p = 0; p < mask.length; p++) {
    const v = mask[p];
    if (v !== 0 && v <= numClasses) seen[v] = 1;
  }
  const out: number[] = [];
  for (let c = 1; c <= numClasses; c++) if (seen[c]) out.push(c - 1);
  return out;
}

/** Runs `fn` over 0..n-1 with at most `limit` calls in flight; results in index order. */
export async function mapLimit<T>(
  n: number,
  limit: number,
  fn: (i: number) => Promise<T>,
): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return out;
}
