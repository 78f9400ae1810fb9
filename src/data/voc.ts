/**
 * PASCAL VOC 2012 reader: `VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
 * SegmentationClassAug, Annotations, ImageSets/Segmentation}`.
 *
 * - Split lists by name (`train`, `val`, `trainaug` — also found as `train_aug.txt` — or any
 *   `ImageSets/Segmentation/<name>.txt`) or by path. A line's first token is the id; psa-style
 *   lines (`/JPEGImages/x.jpg /SegmentationClassAug/x.png`) are reduced to `x`.
 * - Masks: palette PNGs from `SegmentationClass/` (stored indices, 255 = void) or grey PNGs
 *   from `SegmentationClassAug/`; splits whose name contains "aug" look in
 *   `SegmentationClassAug/` first. An id without a mask file gets `mask: null`.
 * - Tags: from `Annotations/<id>.xml`, the classes of objects not marked `<difficult>1`; a class
 *   that appears only on difficult objects is not a training tag but is still in `present`
 *   (so predicting it is not an out-of-candidate error). Without an XML file the tags (and
 *   `present`) are the classes found in the mask, which is decoded once at open time.
 * @module
 */
import { BaseDataset, checkLabels, mapLimit, maskClasses, type Sample } from "./base.ts";
import { VOC_CLASSES } from "./classes.ts";
import { DataError, isDir, isFile, readFileOr, readTextOr } from "./errors.ts";
import { decodeImage } from "./image.ts";
import { decodeLabelPng } from "./png.ts";
import { child, childrenNamed, parseXml } from "./xml.ts";

/** Options of {@link openVoc}. */
export interface VocOptions {
  /** The `VOC2012` folder, or a folder holding `VOCdevkit/VOC2012` or `VOC2012`. */
  root: string;
  /** `train`, `val`, `trainaug`, another list name, or a path to a list file. */
  split: string;
  /** Skip and count bad images instead of failing. */
  skipBad?: boolean;
}

/** Finds the VOC2012 folder under `root`; throws {@link DataError} when there is none. */
export function resolveVocRoot(root: string): string {
  for (const cand of [root, `${root}/VOCdevkit/VOC2012`, `${root}/VOC2012`]) {
    if (isDir(`${cand}/JPEGImages`)) return cand;
  }
  if (!isDir(root)) throw new DataError(root, "VOC dataset folder not found");
  throw new DataError(
    root,
    "not a VOC 2012 folder: no JPEGImages/ in it, in VOCdevkit/VOC2012/ or in VOC2012/",
  );
}

function listPath(voc: string, split: string): string {
  if (split.includes("/") || split.endsWith(".txt")) return split;
  const dir = `${voc}/ImageSets/Segmentation`;
  const cands = [`${dir}/${split}.txt`];
  if (split === "trainaug") cands.push(`${dir}/train_aug.txt`);
  return cands.find(isFile) ?? cands[0];
}

/** Parses one VOC annotation XML into training tags and present classes. */
export function parseVocXml(text: string, path: string): { tags: number[]; present: number[] } {
  let root;
  try {
    root = parseXml(text);
  } catch (e) {
    throw new DataError(path, (e as Error).message, { cause: e });
  }
  if (root.name !== "annotation") {
    throw new DataError(path, `root element is <${root.name}>, expected <annotation>`);
  }
  const tags = new Set<number>();
  const present = new Set<number>();
  childrenNamed(root, "object").forEach((obj, k) => {
    const nameEl = child(obj, "name");
    if (!nameEl) throw new DataError(path, `object ${k + 1} has no <name>`);
    const name = nameEl.text.trim();
    const c = VOC_CLASSES.indexOf(name);
    if (c < 0) throw new DataError(path, `object ${k + 1} has unknown class '${name}'`);
    const diff = child(obj, "difficult")?.text.trim() ?? "0";
    if (diff !== "0" && diff !== "1") {
      throw new DataError(path, `object ${k + 1} has <difficult>${diff}</difficult>, expected 0/1`);
    }
    present.add(c);
    if (diff === "0") tags.add(c);
  });
  const sort = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return { tags: sort(tags), present: sort(present) };
}

/** A VOC 2012 split. Open with {@link openVoc}. */
export class VocDataset extends BaseDataset {
  /** The list file read. */
  readonly listFile: string;
  #maskPaths: (string | null)[] = [];
  readonly #vocDir: string;

  private constructor(vocDir: string, split: string, listFile: string, skipBad: boolean) {
    const maskDirs = ["SegmentationClass", "SegmentationClassAug"].filter((d) =>
      isDir(`${vocDir}/${d}`)
    );
    super({
      kind: "voc",
      root: vocDir,
      split,
      classNames: [...VOC_CLASSES],
      skipBad,
      hasMasks: maskDirs.length > 0,
    });
    this.#vocDir = vocDir;
    this.listFile = listFile;
  }

  /** Opens a split: reads the list, checks every image exists, reads tags. */
  static async open(opts: VocOptions): Promise<VocDataset> {
    const voc = resolveVocRoot(opts.root);
    const list = listPath(voc, opts.split);
    const text = await readTextOr(list, `split list '${opts.split}'`);
    const ds = new VocDataset(voc, opts.split, list, opts.skipBad ?? false);
    await ds.#init(text);
    return ds;
  }

  async #init(listText: string): Promise<void> {
    const voc = this.#vocDir;
    const ids = listText.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0).map(
      (l) => {
        const tok = l.split(/\s+/)[0];
        return tok.includes("/") || tok.includes(".")
          ? tok.slice(tok.lastIndexOf("/") + 1).replace(/\.[^.]*$/, "")
          : tok;
      },
    );
    if (ids.length === 0) throw new DataError(this.listFile, "split list is empty");
    const aug = this.split.toLowerCase().includes("aug");
    const maskDirs =
      (aug
        ? ["SegmentationClassAug", "SegmentationClass"]
        : ["SegmentationClass", "SegmentationClassAug"]).filter((d) => isDir(`${voc}/${d}`));
    const haveXml = isDir(`${voc}/Annotations`);
    const C = this.numClasses;
    const results = await mapLimit(ids.length, 16, async (i) => {
      const id = ids[i];
      try {
        const img = `${voc}/JPEGImages/${id}.jpg`;
        if (!isFile(img)) {
          throw new DataError(img, `image listed in ${this.listFile} not found`);
        }
        const mask = maskDirs.map((d) => `${voc}/${d}/${id}.png`).find(isFile) ?? null;
        const xml = `${voc}/Annotations/${id}.xml`;
        if (haveXml && isFile(xml)) {
          return { id, mask, ...parseVocXml(await readTextOr(xml, "annotation"), xml) };
        }
        if (!mask) {
          throw new DataError(
            img,
            "no annotation XML and no mask for this image: its tags cannot be known",
          );
        }
        const png = await decodeLabelPng(await readFileOr(mask, "mask"), mask);
        checkLabels(png.data, png.width, C, mask);
        const tags = maskClasses(png.data, C);
        return { id, mask, tags, present: tags };
      } catch (e) {
        return { id, error: e };
      }
    });
    for (const r of results) {
      if ("error" in r) {
        this.bad(r.id, r.error);
        continue;
      }
      this.ids.push(r.id);
      this.tags.push(r.tags);
      this.present.push(r.present);
      this.#maskPaths.push(r.mask);
    }
    this.finish();
  }

  /** Path of the JPEG of image i. */
  imagePath(i: number): string {
    this.checkIndex(i);
    return `${this.#vocDir}/JPEGImages/${this.ids[i]}.jpg`;
  }

  /** Path of the mask PNG of image i, or null. */
  maskPath(i: number): string | null {
    this.checkIndex(i);
    return this.#maskPaths[i];
  }

  async load(i: number): Promise<Sample> {
    const imgPath = this.imagePath(i);
    const img = await decodeImage(await readFileOr(imgPath, "image"), imgPath);
    let mask: Uint8Array | null = null;
    const mp = this.#maskPaths[i];
    if (mp) {
      const png = await decodeLabelPng(await readFileOr(mp, "mask"), mp);
      if (png.width !== img.width || png.height !== img.height) {
        throw new DataError(
          mp,
          `mask is ${png.width}x${png.height} but its image ${imgPath} is ` +
            `${img.width}x${img.height}`,
        );
      }
      checkLabels(png.data, png.width, this.numClasses, mp);
      mask = png.data;
    }
    return {
      id: this.ids[i],
      width: img.width,
      height: img.height,
      rgb: img.rgb,
      mask,
      tags: this.tags[i],
      present: this.present[i],
    };
  }
}

/** Opens a VOC 2012 split (see the module doc for the conventions). */
export function openVoc(opts: VocOptions): Promise<VocDataset> {
  return VocDataset.open(opts);
}
