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
 * - Tags (`tags` option, {@link VocTagMode}; docs/data.md#image-tags): by default the classes
 *   in the mask (`SegmentationClassAug/<id>.png`, else `SegmentationClass/<id>.png`; 0 and 255
 *   are not classes), decoded once at open time; `present` adds every class of the XML's
 *   objects. `xml` takes the classes of all XML objects, `xml-nondifficult` those of objects not
 *   marked `<difficult>1` (`present`: all XML objects). An image whose mask shows foreground
 *   never gets an empty tag list silently: an XML that lists no objects then is a
 *   {@link DataError}; with `xml-nondifficult`, an image whose objects are all difficult keeps
 *   its empty tags (that mode's convention) and is listed in `warnings`.
 * @module
 */
import {
  BaseDataset,
  checkLabels,
  type DataWarning,
  mapLimit,
  maskClasses,
  type Sample,
} from "./base.ts";
import { VOC_CLASSES, VOC_TAG_MODES, type VocTagMode } from "./classes.ts";
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
  /** Where the training tags come from (default `mask`; see {@link VocTagMode}). */
  tags?: VocTagMode;
}

export type { VocTagMode };

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

/** Sorted union of two sorted class lists. */
function union(a: number[], b: number[]): number[] {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

/** A VOC 2012 split. Open with {@link openVoc}. */
export class VocDataset extends BaseDataset {
  /** The list file read. */
  readonly listFile: string;
  /** Where the training tags came from. */
  readonly tagMode: VocTagMode;
  #maskPaths: (string | null)[] = [];
  readonly #vocDir: string;

  private constructor(
    vocDir: string,
    split: string,
    listFile: string,
    skipBad: boolean,
    tagMode: VocTagMode,
  ) {
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
    this.tagMode = tagMode;
  }

  /** Opens a split: reads the list, checks every image exists, reads tags. */
  static async open(opts: VocOptions): Promise<VocDataset> {
    const mode = opts.tags ?? "mask";
    if (!VOC_TAG_MODES.includes(mode)) {
      throw new RangeError(
        `openVoc: tags must be one of ${VOC_TAG_MODES.join(", ")}, got '${String(mode)}'`,
      );
    }
    const voc = resolveVocRoot(opts.root);
    const list = listPath(voc, opts.split);
    const text = await readTextOr(list, `split list '${opts.split}'`);
    const ds = new VocDataset(voc, opts.split, list, opts.skipBad ?? false, mode);
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
    const present = (d: string) => isDir(`${voc}/${d}`);
    const aug = this.split.toLowerCase().includes("aug");
    // The mask a sample carries: the split's own kind first.
    const maskDirs =
      (aug
        ? ["SegmentationClassAug", "SegmentationClass"]
        : ["SegmentationClass", "SegmentationClassAug"]).filter(present);
    // The mask tags are read from: SegmentationClassAug first whatever the split, so that an
    // image has the same tags in every split list (on real VOC both folders hold the same
    // labels for the images they share).
    const tagMaskDirs = ["SegmentationClassAug", "SegmentationClass"].filter(present);
    const haveXml = isDir(`${voc}/Annotations`);
    const C = this.numClasses;
    const mode = this.tagMode;
    const names = (cs: number[]) => cs.map((c) => VOC_CLASSES[c]).join(", ");
    const results = await mapLimit(ids.length, 16, async (i) => {
      const id = ids[i];
      try {
        const img = `${voc}/JPEGImages/${id}.jpg`;
        if (!isFile(img)) {
          throw new DataError(img, `image listed in ${this.listFile} not found`);
        }
        const mask = maskDirs.map((d) => `${voc}/${d}/${id}.png`).find(isFile) ?? null;
        const tagMask = tagMaskDirs.map((d) => `${voc}/${d}/${id}.png`).find(isFile) ?? null;
        const xmlPath = `${voc}/Annotations/${id}.xml`;
        const xml = haveXml && isFile(xmlPath)
          ? parseVocXml(await readTextOr(xmlPath, "annotation"), xmlPath)
          : null;
        // The one decode of the tag mask at open time, done only where the mode needs it.
        const classesOfMask = async (path: string) => {
          const png = await decodeLabelPng(await readFileOr(path, "mask"), path);
          checkLabels(png.data, png.width, C, path);
          return maskClasses(png.data, C);
        };
        let warning: DataWarning | null = null;
        let tags: number[], classes: number[];
        if (tagMask && (mode === "mask" || !xml)) {
          tags = await classesOfMask(tagMask);
          classes = union(tags, xml?.present ?? []);
        } else if (xml) {
          // mode "mask" without a mask file takes all the XML's objects, as "xml" does.
          tags = mode === "xml-nondifficult" ? xml.tags : xml.present;
          classes = xml.present;
          const shown = tags.length === 0 && tagMask ? await classesOfMask(tagMask) : [];
          if (shown.length > 0 && xml.present.length === 0) {
            throw new DataError(
              xmlPath,
              `lists no objects but the mask ${tagMask} shows ${names(shown)}: the image ` +
                `would train with no tags (fix the XML or use tags "mask")`,
            );
          }
          if (shown.length > 0) {
            warning = {
              id,
              path: xmlPath,
              problem: `all its objects are difficult: no training tags with tags ` +
                `"xml-nondifficult" although the mask ${tagMask} shows ${names(shown)}`,
            };
          }
        } else {
          throw new DataError(
            img,
            "no annotation XML and no mask for this image: its tags cannot be known",
          );
        }
        return { id, mask, tags, present: classes, warning };
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
      if (r.warning) this.warningList.push(r.warning);
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
