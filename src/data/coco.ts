/**
 * MS COCO 2014 reader: `<root>/{train2014,val2014}/` and
 * `<root>/annotations/instances_{train,val}2014.json`.
 *
 * - The JSON is parsed once at open; an index image → annotations is kept (segmentations as
 *   stored), masks are rasterised on each `load` and never cached.
 * - Categories are mapped from their ids to contiguous indices in ascending id order; names
 *   are kept (`classNames`).
 * - Masks: annotations painted in file order (later over earlier) with class index + 1;
 *   `iscrowd` annotations painted as 255 (ignore). Polygons (several per object), uncompressed
 *   RLE (`counts` array, column-major) and compressed-string RLE are supported, with
 *   pycocotools' semantics.
 * - Tags: the categories of all the image's annotations, crowd ones included (the class is
 *   in the picture); `present` = tags.
 * - Checked at open: JSON syntax and shape, unknown category ids, polygons with an odd number
 *   of coordinates or non-numbers, RLE sizes differing from the image, RLE counts not covering
 *   the image, missing image files. With `skipBad` the image concerned is skipped and counted.
 * @module
 */
import { BaseDataset, type Sample } from "./base.ts";
import { CategoryMap } from "./classes.ts";
import { checkRle, paintRle, polygonToRle, rleFromString } from "./coco_rle.ts";
import { DataError, isDir, isFile, readFileOr, readTextOr } from "./errors.ts";
import { decodeImage } from "./image.ts";

/** Options of {@link openCoco}. */
export interface CocoOptions {
  /** The folder holding `annotations/` and the image folders. */
  root: string;
  /** `train`, `val` (→ `train2014`, `val2014`) or a folder name such as `val2017`. */
  split: string;
  /** Skip and count bad images instead of failing. */
  skipBad?: boolean;
  /** Annotation file; default `<root>/annotations/instances_<folder>.json`. */
  annotations?: string;
}

/** A segmentation as stored: polygons, or RLE counts (array or compressed string). */
export type CocoSegmentation =
  | { type: "polygons"; polygons: number[][] }
  | { type: "rle"; counts: number[] | string };

interface Ann {
  id: unknown;
  cls: number;
  crowd: boolean;
  seg: CocoSegmentation;
}

interface ImageEntry {
  id: number;
  file: string;
  width: number;
  height: number;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

/**
 * Validates one annotation's `segmentation` for an image of height×width; returns the
 * normalised form or throws `Error` saying what is wrong.
 */
export function parseSegmentation(seg: unknown, height: number, width: number): CocoSegmentation {
  if (Array.isArray(seg)) {
    seg.forEach((p, k) => {
      if (!Array.isArray(p)) throw new Error(`polygon ${k} is ${describe(p)}, not a list`);
      if (p.length % 2 !== 0) {
        throw new Error(`polygon ${k} has an odd number of coordinates (${p.length})`);
      }
      const bad = p.findIndex((v) => typeof v !== "number" || !Number.isFinite(v));
      if (bad >= 0) throw new Error(`polygon ${k} coordinate ${bad} is ${describe(p[bad])}`);
    });
    return { type: "polygons", polygons: seg as number[][] };
  }
  if (seg && typeof seg === "object") {
    const { counts, size } = seg as { counts?: unknown; size?: unknown };
    if (
      !Array.isArray(size) || size.length !== 2 || !size.every((v) => Number.isInteger(v))
    ) {
      throw new Error(`RLE 'size' is ${describe(size)}, expected [height, width]`);
    }
    if (size[0] !== height || size[1] !== width) {
      throw new Error(
        `RLE size [${size}] differs from the image size [${height}, ${width}] (height, width)`,
      );
    }
    let c: number[];
    if (typeof counts === "string") c = rleFromString(counts);
    else if (Array.isArray(counts)) c = counts as number[];
    else throw new Error(`RLE 'counts' is ${describe(counts)}, expected a list or a string`);
    checkRle(c, height, width);
    return { type: "rle", counts: counts as number[] | string };
  }
  throw new Error(`segmentation is ${describe(seg)}, expected polygons or an RLE object`);
}

/** Paints one segmentation into a row-major label mask. */
export function paintSegmentation(
  seg: CocoSegmentation,
  height: number,
  width: number,
  target: Uint8Array,
  value: number,
): void {
  if (seg.type === "polygons") {
    for (const p of seg.polygons) {
      paintRle(polygonToRle(p, height, width), height, width, target, value);
    }
  } else {
    const counts = typeof seg.counts === "string" ? rleFromString(seg.counts) : seg.counts;
    paintRle(counts, height, width, target, value);
  }
}

/** Resolves the image folder name for a split name (`train` → `train2014`). */
export function cocoFolder(split: string): string {
  return /\d{4}$/.test(split) ? split : `${split}2014`;
}

/** A COCO split. Open with {@link openCoco}. */
export class CocoDataset extends BaseDataset {
  /** The annotation file read. */
  readonly annotationFile: string;
  /** Category ids in class-index order. */
  readonly categoryIds: number[];
  readonly #imageDir: string;
  #images: ImageEntry[] = [];
  #anns: Ann[][] = [];

  private constructor(
    root: string,
    split: string,
    annFile: string,
    imageDir: string,
    cats: CategoryMap,
    skipBad: boolean,
  ) {
    super({ kind: "coco", root, split, classNames: cats.names, skipBad, hasMasks: true });
    this.annotationFile = annFile;
    this.categoryIds = cats.ids;
    this.#imageDir = imageDir;
  }

  /** Opens a split: parses and checks the annotation file, builds the index. */
  static async open(opts: CocoOptions): Promise<CocoDataset> {
    const root = opts.root;
    if (!isDir(root)) throw new DataError(root, "COCO dataset folder not found");
    const folder = cocoFolder(opts.split);
    const annFile = opts.annotations ?? `${root}/annotations/instances_${folder}.json`;
    const imageDir = `${root}/${folder}`;
    const text = await readTextOr(annFile, `annotation file for split '${opts.split}'`);
    if (!isDir(imageDir)) throw new DataError(imageDir, "COCO image folder not found");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new DataError(annFile, `not valid JSON (${(e as Error).message})`, { cause: e });
    }
    const j = json as { images?: unknown; annotations?: unknown; categories?: unknown };
    for (const key of ["images", "annotations", "categories"] as const) {
      if (!json || typeof json !== "object" || !Array.isArray(j[key])) {
        throw new DataError(annFile, `no '${key}' list: not a COCO instances file`);
      }
    }
    const catList = j.categories as { id: unknown; name: unknown }[];
    catList.forEach((c, k) => {
      if (!c || !Number.isInteger(c.id) || typeof c.name !== "string") {
        throw new DataError(annFile, `category ${k} needs an integer 'id' and a string 'name'`);
      }
    });
    let cats: CategoryMap;
    try {
      cats = new CategoryMap(catList as { id: number; name: string }[]);
    } catch (e) {
      throw new DataError(annFile, (e as Error).message);
    }
    const ds = new CocoDataset(root, opts.split, annFile, imageDir, cats, opts.skipBad ?? false);
    ds.#init(j.images as unknown[], j.annotations as unknown[], cats);
    return ds;
  }

  #init(images: unknown[], anns: unknown[], cats: CategoryMap): void {
    const file = this.annotationFile;
    const byId = new Map<number, number>();
    const entries: ImageEntry[] = [];
    images.forEach((raw, k) => {
      const im = raw as { id?: unknown; file_name?: unknown; width?: unknown; height?: unknown };
      if (
        !im || !Number.isInteger(im.id) || typeof im.file_name !== "string" ||
        !Number.isInteger(im.width) || !Number.isInteger(im.height) ||
        (im.width as number) < 1 || (im.height as number) < 1
      ) {
        throw new DataError(
          file,
          `image entry ${k} needs integer 'id', 'width', 'height' and a string 'file_name'`,
        );
      }
      if (byId.has(im.id as number)) throw new DataError(file, `duplicate image id ${im.id}`);
      byId.set(im.id as number, entries.length);
      entries.push({
        id: im.id as number,
        file: im.file_name as string,
        width: im.width as number,
        height: im.height as number,
      });
    });
    const perImage: Ann[][] = entries.map(() => []);
    const broken: (DataError | null)[] = entries.map(() => null);
    anns.forEach((raw, k) => {
      const a = raw as {
        id?: unknown;
        image_id?: unknown;
        category_id?: unknown;
        segmentation?: unknown;
        iscrowd?: unknown;
      };
      const name = `annotation ${a?.id ?? `#${k}`}`;
      const slot = byId.get(a?.image_id as number);
      if (slot === undefined) {
        this.bad(name, new DataError(file, `${name} refers to unknown image id ${a?.image_id}`));
        return;
      }
      if (broken[slot]) return;
      const im = entries[slot];
      const cls = cats.indexOf(a.category_id as number);
      try {
        if (cls < 0) throw new Error(`unknown category id ${JSON.stringify(a.category_id)}`);
        const seg = parseSegmentation(a.segmentation, im.height, im.width);
        perImage[slot].push({ id: a.id, cls, crowd: a.iscrowd === 1 || a.iscrowd === true, seg });
      } catch (e) {
        broken[slot] = new DataError(file, `${name} (image ${im.id}): ${(e as Error).message}`);
      }
    });
    entries.forEach((im, slot) => {
      const id = im.file.replace(/\.[^./]*$/, "");
      const err = broken[slot] ??
        (isFile(`${this.#imageDir}/${im.file}`)
          ? null
          : new DataError(`${this.#imageDir}/${im.file}`, `image listed in ${file} not found`));
      if (err) {
        this.bad(id, err);
        return;
      }
      const tags = [...new Set(perImage[slot].map((a) => a.cls))].sort((x, y) => x - y);
      this.ids.push(id);
      this.tags.push(tags);
      this.present.push(tags);
      this.#images.push(im);
      this.#anns.push(perImage[slot]);
    });
    this.finish();
  }

  /** Path of the image file of image i. */
  imagePath(i: number): string {
    this.checkIndex(i);
    return `${this.#imageDir}/${this.#images[i].file}`;
  }

  /** The COCO image id of image i. */
  imageId(i: number): number {
    this.checkIndex(i);
    return this.#images[i].id;
  }

  /** The label mask of image i rasterised from its annotations (no image decode). */
  maskOf(i: number): Uint8Array {
    this.checkIndex(i);
    const { width, height } = this.#images[i];
    const mask = new Uint8Array(width * height);
    for (const a of this.#anns[i]) {
      paintSegmentation(a.seg, height, width, mask, a.crowd ? 255 : a.cls + 1);
    }
    return mask;
  }

  async load(i: number): Promise<Sample> {
    const path = this.imagePath(i);
    const img = await decodeImage(await readFileOr(path, "image"), path);
    const e = this.#images[i];
    if (img.width !== e.width || img.height !== e.height) {
      throw new DataError(
        path,
        `image is ${img.width}x${img.height} but ${this.annotationFile} says ` +
          `${e.width}x${e.height}`,
      );
    }
    return {
      id: this.ids[i],
      width: img.width,
      height: img.height,
      rgb: img.rgb,
      mask: this.maskOf(i),
      tags: this.tags[i],
      present: this.present[i],
    };
  }
}

/** Opens a COCO split (see the module doc for the conventions). */
export function openCoco(opts: CocoOptions): Promise<CocoDataset> {
  return CocoDataset.open(opts);
}
