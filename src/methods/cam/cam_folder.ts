/**
 * Reading a CAM folder written by `deno task cam` (src/methods/cam/extract.ts): its `cam.json` (which
 * checkpoint and dataset split the CAMs come from) and the per-image normalised tagged CAMs
 * `cams/<id>.safetensors`, with errors naming the file and the fix.
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { validate } from "../../io/config.ts";
import { VOC_TAG_MODES, type VocTagMode } from "../../data/classes.ts";
import { parseSafetensors, SafetensorsError } from "../../io/safetensors.ts";
import { CamError, readCamJson } from "./options.ts";

const CamJsonSchema = z.object({
  ckpt: z.string().nullable().optional(),
  dataset: z.enum(["voc", "coco"]),
  root: z.string().min(1),
  split: z.string().min(1),
  tags: z.enum(VOC_TAG_MODES).optional(),
  cams: z.string().nullable().optional(),
  images: z.number().int().min(0),
}).loose();

/** What a CAM folder's cam.json says. */
export interface CamFolder {
  /** The folder. */
  dir: string;
  /** The CAM classifier checkpoint the CAMs came from, if recorded. */
  ckpt: string | null;
  /** Dataset kind of the images. */
  kind: "voc" | "coco";
  /** Dataset root folder. */
  root: string;
  /** Dataset split the CAMs cover. */
  split: string;
  /** VOC tag mode the split was opened with (cam.json files without it: `mask`). */
  tags: VocTagMode;
  /** Images with CAMs: the first `images` ids of the split (deno task cam --limit). */
  images: number;
}

/** Reads and checks a CAM folder's cam.json; errors name the file and the fix. */
export async function readCamFolder(dir: string): Promise<CamFolder> {
  const path = join(dir, "cam.json");
  const json = await readCamJson(
    path,
    `${dir} is not a CAM folder: no ${path} (write one with deno task cam --ckpt ...)`,
  );
  const c = validate(CamJsonSchema, json, path);
  if (c.cams === null) {
    throw new CamError(`${path}: the CAMs were written with --no-cams; rerun deno task cam`);
  }
  return {
    dir,
    ckpt: c.ckpt ?? null,
    kind: c.dataset,
    root: c.root,
    split: c.split,
    tags: c.tags ?? "mask",
    images: c.images,
  };
}

/** One image's normalised tagged CAMs from a CAM folder. */
export interface ImageCams {
  /** [T, height, width], values in [0, 1]. */
  cams: Float32Array;
  /** The T classes (0-based). */
  classes: number[];
  /** CAM height in pixels. */
  height: number;
  /** CAM width in pixels. */
  width: number;
}

/**
 * Reads `<dir>/cams/<id>.safetensors` (see src/methods/cam/extract.ts); with `image`, CAMs of another
 * size are an error. Errors name the file.
 */
export async function readImageCams(
  dir: string,
  id: string,
  image?: { width: number; height: number },
): Promise<ImageCams> {
  const path = join(dir, "cams", `${id}.safetensors`);
  let st;
  try {
    st = parseSafetensors(await Deno.readFile(path), path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CamError(`no CAMs for image ${id}: ${path} is missing (rerun deno task cam)`);
    }
    if (e instanceof SafetensorsError) throw new CamError(e.message);
    throw new CamError(`${path}: cannot read: ${(e as Error).message}`);
  }
  const cams = st.tensors.get("cams");
  const classes = st.tensors.get("classes");
  if (!cams || !classes || cams.shape.length !== 3 || classes.shape.length !== 1) {
    throw new CamError(`${path}: expected tensors cams [T, H, W] and classes [T]`);
  }
  const [T, height, width] = cams.shape;
  if (classes.shape[0] !== T) {
    throw new CamError(`${path}: ${T} CAMs but ${classes.shape[0]} classes`);
  }
  if (image && (image.height !== height || image.width !== width)) {
    throw new CamError(
      `${path}: CAMs are ${width}x${height} but image ${id} is ${image.width}x${image.height}`,
    );
  }
  return {
    cams: cams.data,
    classes: Array.from(classes.data, Math.round),
    height,
    width,
  };
}
