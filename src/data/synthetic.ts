/**
 * The built-in synthetic datasets (docs/data.md#the-built-in-synthetic-dataset): small images (~128 px) with 1–3 objects of the
 * 20 VOC classes, written as a PASCAL VOC 2012 tree and an MS COCO 2014 tree that the readers
 * in this folder open like the real ones.
 *
 * What makes it hard in the way real data is:
 * - Confusable groups share one body shape, one colour palette and one texture and differ only
 *   by a small class-specific part: cat/dog (pointed ears + raised tail vs drooping ears +
 *   snout), cow/horse/sheep (horns / dark mane / black face), bus/car/train (destination sign /
 *   roof cabin / slanted nose with headlight), bicycle/motorbike (thin diamond frame + pedal vs
 *   engine block + tank), chair/sofa (tall legs vs armrests on a low base).
 * - Realistic co-occurrence: riders on bicycles, motorbikes and horses; chairs and bottles with
 *   dining tables; chairs, TVs and pets with sofas; herds; traffic. Scene context (indoor wall
 *   and floor, outdoor sky and grass, water, open sky) follows the objects.
 * - Occlusion (objects drawn far to near), truncation at the border, VOC-style 1-pixel void
 *   (255) bands along object outlines, and `difficult` objects (small or mostly hidden; void in
 *   the VOC masks, `<difficult>1` in the XML).
 * The intended effect: a small CNN can learn the classes from the parts (classification
 * works) while its CAMs spread the shared body evidence to the wrong class of the group
 * (out-of-candidate errors). The targets (docs/data.md; tiny model without OCR: mAP ≥ 0.8,
 * unrestricted-CAM OC-error rate ≥ 15%) must be checked with the trainer; see
 * `SYNTH_VERSION` when changing anything that alters the bytes.
 *
 * Everything is deterministic from the seed: each image has its own RNG stream derived from
 * (seed, tree, split, index), JPEGs come from imagescript's deterministic encoder, PNGs from
 * `encodeLabelPng`, JSON and XML from fixed templates.
 * @module
 */
import { Rng } from "../rng.ts";
import { mixSeed as mix } from "./hash.ts";
import { COCO_CATEGORIES, VOC_CLASSES, VOC_TO_COCO_NAME } from "./classes.ts";
import { maskBox, paintRle, polygonToRle, rleEncode, rleToString } from "./coco_rle.ts";
import { encodeJpeg } from "./image.ts";
import { encodeLabelPng, VOC_PALETTE } from "./png.ts";

/**
 * The generator versions. `v1` is the first one (small objects, about 10% foreground), kept
 * reachable so that old numbers can be reproduced; `v2` (the default) has VOC-like object
 * sizes (see {@link SYNTH_VARIANTS}).
 */
export type SynthVariant = "v1" | "v2";

/** What distinguishes one generator version from another. */
export interface VariantSpec {
  /** Part of the cache folder name and of the written metadata; never reused. */
  version: number;
  /** Image sizes [width, height] drawn per image. */
  sizes: readonly [number, number][];
  /** Multiplies every class's nominal size. */
  objectScale: number;
  /** Multiplies the class-specific parts (1 = as designed). */
  partScale: number;
  /** How much farther (higher in the image) objects shrink: size × (1 - p + p·depth). */
  perspective: number;
  /** Lower bound of the per-object random size factor (upper bound 1.12). */
  minSizeFactor: number;
  /**
   * Class-specific parts in a colour of their own (cat ears pink, a dog's ears dark and its
   * nose black) instead of a shade of the body: a cue a small CNN learns in few steps.
   */
  vividParts: boolean;
  /** Probability that a confusable class takes one of its own colours (see OWN_COLOURS). */
  ownColour: number;
  /**
   * Probability that a standing object is shifted sideways to fit inside the image (the rest
   * keep their random position and may be cut by the border).
   */
  fit: number;
}

/**
 * The generator versions' settings. v2 scales objects so that about 30% of the pixels are
 * foreground (VOC: roughly a quarter to a third), with the class-specific parts scaled up so
 * that they stay a small but learnable share of the object.
 */
export const SYNTH_VARIANTS: Readonly<Record<SynthVariant, VariantSpec>> = {
  v1: {
    version: 1,
    sizes: [[128, 128], [128, 96], [96, 128], [128, 112], [112, 128]],
    objectScale: 1,
    partScale: 1,
    perspective: 0.25,
    minSizeFactor: 0.78,
    vividParts: false,
    ownColour: 0,
    fit: 0,
  },
  v2: {
    version: 2,
    sizes: [[128, 128], [128, 96], [96, 128], [128, 112], [112, 128]],
    objectScale: 1.4,
    partScale: 2,
    perspective: 0.15,
    minSizeFactor: 0.85,
    vividParts: true,
    ownColour: 0.7,
    fit: 0.6,
  },
};

/** The generator version every task uses unless told otherwise. */
export const DEFAULT_SYNTH_VARIANT: SynthVariant = "v2";

/** The version number of the default generator (part of the cache folder name). */
export const SYNTH_VERSION: number = SYNTH_VARIANTS[DEFAULT_SYNTH_VARIANT].version;

function variantSpec(variant: SynthVariant): VariantSpec {
  const spec = SYNTH_VARIANTS[variant];
  if (!spec) {
    throw new Error(
      `synthetic: unknown generator variant '${variant}' (${
        Object.keys(SYNTH_VARIANTS).join(", ")
      })`,
    );
  }
  return spec;
}

/** Dataset sizes. */
export type SynthSize = "tiny" | "small" | "medium";

/** Images per split for each size. */
export const SYNTH_SIZES: Readonly<
  Record<SynthSize, { vocTrain: number; vocVal: number; cocoTrain: number; cocoVal: number }>
> = {
  tiny: { vocTrain: 24, vocVal: 12, cocoTrain: 16, cocoVal: 8 },
  small: { vocTrain: 1000, vocVal: 250, cocoTrain: 300, cocoVal: 100 },
  medium: { vocTrain: 4000, vocVal: 1000, cocoTrain: 1200, cocoVal: 400 },
};

/** Which image stream a scene belongs to. */
export type SceneStream = "voc-train" | "voc-val" | "coco-train" | "coco-val";
const STREAM_IDS: Record<SceneStream, number> = {
  "voc-train": 1,
  "voc-val": 2,
  "coco-train": 3,
  "coco-val": 4,
};

type RGB = [number, number, number];
type Tex =
  | "plain"
  | "fur"
  | "patches"
  | "metal"
  | "fabric"
  | "wood"
  | "leaf"
  | "glass"
  | "screen"
  | "spokes"
  | "feather";

interface PartSpec {
  /** Polygon in object units: x toward the facing side, y down, origin at the ground contact. */
  poly: number[];
  color: RGB;
  tex: Tex;
}

/** One object of a generated scene. */
export interface SceneObject {
  /** 0-based VOC class index. */
  cls: number;
  /** The part polygons in pixel coordinates (2-decimal precision), drawn in order. */
  polygons: number[][];
  /** Union of the part polygons, row-major 0/1 (the full shape, occluded pixels included). */
  shape: Uint8Array;
  /** Pixels of the object visible in the final image. */
  visibleArea: number;
  /** Marked `<difficult>1` in the VOC XML and void (255) in the VOC mask. */
  difficult: boolean;
  /** The object touches the image border. */
  truncated: boolean;
  /** How the COCO tree stores this object. */
  cocoSeg: "polygons" | "rle" | "rle-string";
  /** COCO `iscrowd` (painted 255 in COCO masks). */
  crowd: boolean;
}

/** A generated image with its ground truth. */
export interface Scene {
  width: number;
  height: number;
  /** HWC RGB before JPEG compression. */
  rgb: Uint8Array;
  /** Objects in drawing order (far to near). */
  objects: SceneObject[];
  /** Index of the object owning each pixel, -1 for background. */
  owner: Int16Array;
  /** The VOC mask: class + 1, 0 background, 255 on outlines and difficult objects. */
  vocMask: Uint8Array;
  /** The COCO mask: objects painted in order with class + 1, crowd objects as 255. */
  cocoMask: Uint8Array;
  /** VOC training tags: classes of non-difficult objects (sorted). */
  vocTags: number[];
  /** All classes of the image (sorted). */
  present: number[];
}

// ---------------------------------------------------------------------------------------------
// Small deterministic helpers

function hash3(x: number, y: number, s: number): number {
  let h = (Math.imul(x, 374761393) + Math.imul(y, 668265263) + Math.imul(s, 0x27d4eb2d)) | 0;
  h = Math.imul(h ^ (h >>> 13), 1274126177);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

/** Smooth value noise in [0, 1). */
function vnoise(x: number, y: number, s: number): number {
  const xi = Math.floor(x), yi = Math.floor(y);
  const fx = x - xi, fy = y - yi;
  const sx = fx * fx * (3 - 2 * fx), sy = fy * fy * (3 - 2 * fy);
  const a = hash3(xi, yi, s), b = hash3(xi + 1, yi, s);
  const c = hash3(xi, yi + 1, s), d = hash3(xi + 1, yi + 1, s);
  return (a + (b - a) * sx) * (1 - sy) + (c + (d - c) * sx) * sy;
}

const clamp8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[r.int(xs.length)];
const jitter = (
  r: Rng,
  c: RGB,
  d: number,
): RGB => [c[0] + r.uniform(-d, d), c[1] + r.uniform(-d, d), c[2] + r.uniform(-d, d)];
const scaleRgb = (c: RGB, f: number): RGB => [c[0] * f, c[1] * f, c[2] * f];

function ellipse(cx: number, cy: number, rx: number, ry: number, n = 18): number[] {
  const p: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = (2 * Math.PI * i) / n;
    p.push(cx + rx * Math.cos(a), cy + ry * Math.sin(a));
  }
  return p;
}
const rect = (x0: number, y0: number, x1: number, y1: number) => [x0, y0, x1, y0, x1, y1, x0, y1];
function bar(x0: number, y0: number, x1: number, y1: number, t: number): number[] {
  const dx = x1 - x0, dy = y1 - y0, l = Math.hypot(dx, dy) || 1;
  const nx = (-dy / l) * t / 2, ny = (dx / l) * t / 2;
  return [x0 + nx, y0 + ny, x1 + nx, y1 + ny, x1 - nx, y1 - ny, x0 - nx, y0 - ny];
}

// ---------------------------------------------------------------------------------------------
// Classes

const C = Object.fromEntries(VOC_CLASSES.map((n, i) => [n, i])) as Record<string, number>;

const PET_COLOURS: RGB[] = [[200, 120, 50], [120, 120, 125], [110, 75, 45], [215, 195, 155], [
  55,
  48,
  45,
]];
const FARM_COLOURS: RGB[] = [[140, 90, 55], [222, 216, 205], [190, 150, 100], [70, 58, 50]];
const VEHICLE_COLOURS: RGB[] = [[190, 40, 40], [40, 70, 170], [220, 190, 50], [215, 215, 220], [
  50,
  130,
  70,
]];
const FRAME_COLOURS: RGB[] = [[200, 30, 30], [30, 60, 180], [35, 35, 38], [185, 185, 195], [
  40,
  140,
  60,
]];
const FABRIC_COLOURS: RGB[] = [[160, 50, 50], [60, 80, 140], [70, 110, 70], [190, 170, 130], [
  110,
  110,
  115,
]];
const SKIN: RGB[] = [[235, 200, 170], [200, 150, 110], [140, 95, 65], [90, 60, 45]];
const CLOTHES: RGB[] = [
  [200, 40, 40],
  [40, 60, 150],
  [240, 240, 235],
  [40, 40, 40],
  [
    230,
    180,
    40,
  ],
  [60, 130, 60],
  [150, 80, 160],
];

/**
 * Each confusable class's own colours (indices into its group's palette): real cats and dogs,
 * cows and sheep differ in their colour statistics, but the ranges overlap.
 */
const OWN_COLOURS: Record<string, number[]> = {
  cat: [0, 1],
  dog: [2, 3, 4],
  cow: [1, 3],
  horse: [0, 2],
  sheep: [1],
  bus: [2, 0],
  car: [1, 3, 4],
  train: [3, 4],
  bicycle: [0, 1, 4],
  motorbike: [2, 3],
  chair: [1, 2],
  sofa: [0, 3, 4],
};

/**
 * The body colour of a confusable class: with probability `ownColour` one of the class's own
 * colours, else any colour of the group (v1 always the latter, with no extra draw).
 */
function groupColour(r: Rng, cls: number, palette: RGB[], v: VariantSpec): RGB {
  if (v.ownColour > 0 && r.next() < v.ownColour) {
    return palette[pick(r, OWN_COLOURS[VOC_CLASSES[cls]])];
  }
  return pick(r, palette);
}

function petParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  const k = v.partScale;
  const body = jitter(r, groupColour(r, cls, PET_COLOURS, v), 12);
  const dark = scaleRgb(body, 0.7);
  const p: PartSpec[] = [];
  const add = (poly: number[], color = body, tex: Tex = "fur") => p.push({ poly, color, tex });
  add(bar(-0.34, -0.42, -0.5, cls === C.cat ? -0.7 : -0.5, 0.05)); // tail
  for (const x of [-0.25, -0.13, 0.15, 0.25]) add(rect(x - 0.03, -0.3, x + 0.03, 0));
  add(ellipse(0, -0.38, 0.36, 0.17));
  add(ellipse(0.38, -0.55, 0.13, 0.12));
  if (cls === C.cat) {
    const ear = v.vividParts ? jitter(r, [235, 120, 160], 10) : dark;
    add([0.29, -0.62, 0.31, -0.62 - 0.16 * k, 0.37, -0.65], ear);
    add([0.4, -0.66, 0.46, -0.66 - 0.15 * k, 0.49, -0.62], ear);
  } else {
    const ear = v.vividParts ? jitter(r, [45, 30, 22], 8) : dark;
    add(ellipse(0.29, -0.52, 0.04 * k, 0.1 * k), ear);
    add(ellipse(0.47, -0.52, 0.04 * k, 0.1 * k), ear);
    add(
      ellipse(0.52, -0.5, 0.065 * k, 0.045 * k),
      v.vividParts ? [20, 20, 22] : scaleRgb(body, 0.85),
    );
  }
  return p;
}

function farmParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  const k = v.partScale;
  const body = jitter(r, groupColour(r, cls, FARM_COLOURS, v), 12);
  const p: PartSpec[] = [];
  const add = (poly: number[], color = body, tex: Tex = "patches") => p.push({ poly, color, tex });
  add(bar(-0.37, -0.55, -0.43, -0.3, 0.03));
  for (const x of [-0.28, -0.16, 0.14, 0.26]) add(rect(x - 0.03, -0.38, x + 0.03, 0));
  add(ellipse(0, -0.5, 0.38, 0.17));
  add([0.25, -0.58, 0.33, -0.45, 0.45, -0.7, 0.38, -0.8]);
  add(ellipse(0.46, -0.76, 0.1, 0.07));
  if (cls === C.cow) {
    const bone: RGB = [232, 222, 190];
    add([0.4, -0.81, 0.38, -0.81 - 0.1 * k, 0.44, -0.82], bone, "plain");
    add([0.47, -0.82, 0.5, -0.82 - 0.1 * k, 0.51, -0.8], bone, "plain");
  } else if (cls === C.horse) {
    add([0.3, -0.6, 0.38, -0.8 - 0.02 * k, 0.42 + 0.03 * k, -0.79, 0.34 + 0.03 * k, -0.57], [
      40,
      30,
      25,
    ], "fur");
  } else {
    add(ellipse(0.49, -0.75, 0.07 * k, 0.055 * k), [40, 35, 35], "plain");
  }
  return p;
}

function vehicleParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  const k = v.partScale;
  const body = jitter(r, groupColour(r, cls, VEHICLE_COLOURS, v), 10);
  const glass: RGB = [170, 200, 230];
  const p: PartSpec[] = [];
  const add = (poly: number[], color = body, tex: Tex = "metal") => p.push({ poly, color, tex });
  if (cls === C.car) {
    add([-0.22, -0.35, 0.22, -0.35, 0.14, -0.35 - 0.13 * k, -0.14, -0.35 - 0.13 * k]);
    add(rect(-0.1, -0.35 - 0.1 * k, 0.1, -0.36), glass, "glass");
  }
  if (cls === C.train) {
    add([0.49, -0.36, 0.49, -0.08, 0.5 + 0.13 * k, -0.08]);
  }
  add(rect(-0.5, -0.36, 0.5, -0.08));
  for (let i = 0; i < 4; i++) {
    add(rect(-0.43 + i * 0.22, -0.32, -0.29 + i * 0.22, -0.22), glass, "glass");
  }
  for (const x of [-0.32, 0.32]) add(ellipse(x, -0.075, 0.075, 0.075, 14), [28, 28, 30], "plain");
  if (cls === C.bus) add(rect(0.28, -0.355, 0.28 + 0.18 * k, -0.325), [250, 200, 40], "plain");
  if (cls === C.train) {
    add(ellipse(0.53, -0.15, 0.025 * k, 0.025 * k, 10), [255, 250, 200], "plain");
  }
  return p;
}

function cycleParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  const k = v.partScale;
  const frame = jitter(r, groupColour(r, cls, FRAME_COLOURS, v), 10);
  const p: PartSpec[] = [];
  const add = (poly: number[], color = frame, tex: Tex = "metal") => p.push({ poly, color, tex });
  for (const x of [-0.3, 0.3]) {
    add(ellipse(x, -0.2, 0.19, 0.19, 20), [25, 25, 25], "plain");
    add(ellipse(x, -0.2, 0.13, 0.13, 20), [150, 150, 155], "spokes");
  }
  if (cls === C.bicycle) {
    const t = 0.03 * k;
    add(bar(-0.3, -0.2, -0.08, -0.5, t));
    add(bar(-0.08, -0.5, 0.24, -0.48, t));
    add(bar(-0.3, -0.2, 0.02, -0.22, t));
    add(bar(0.02, -0.22, -0.08, -0.5, t));
    add(bar(0.02, -0.22, 0.24, -0.48, t));
    add(rect(-0.01, -0.2, 0.07 * k, -0.17), [40, 40, 40], "plain");
  } else {
    add(rect(-0.12, -0.38, -0.12 + 0.26 * k, -0.16), [70, 70, 75]);
    add(ellipse(0.06, -0.44, 0.15 * k, 0.06 * k));
    add(bar(-0.05, -0.2, -0.35, -0.27, 0.04), [160, 160, 165]);
  }
  add(bar(0.3, -0.2, 0.22, -0.55, 0.035));
  add(rect(0.16, -0.58, 0.3, -0.54), [40, 40, 40], "plain");
  add(rect(-0.16, -0.55, -0.02, -0.5), [40, 40, 40], "plain");
  return p;
}

function furnitureParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  const k = v.partScale;
  const fabric = jitter(r, groupColour(r, cls, FABRIC_COLOURS, v), 10);
  const wood: RGB = [95, 62, 35];
  const p: PartSpec[] = [];
  const add = (poly: number[], color = fabric, tex: Tex = "fabric") => p.push({ poly, color, tex });
  if (cls === C.chair) {
    for (const x of [-0.31, 0.31]) add(rect(x - 0.025 * k, -0.3, x + 0.025 * k, 0), wood, "wood");
  } else {
    for (const x of [-0.4, 0.4]) add(rect(x - 0.025, -0.12, x + 0.025, 0), wood, "wood");
    add(rect(-0.46, -0.3, 0.46, -0.12));
  }
  add(rect(-0.35, -0.85, 0.35, -0.42));
  add(rect(-0.37, -0.45, 0.37, -0.3), scaleRgb(fabric, 1.1));
  if (cls === C.sofa) {
    const w = 0.11 * k;
    add(rect(-0.35 - w, -0.58, -0.35, -0.18), scaleRgb(fabric, 0.9));
    add(rect(0.35, -0.58, 0.35 + w, -0.18), scaleRgb(fabric, 0.9));
  }
  return p;
}

function otherParts(r: Rng, cls: number): PartSpec[] {
  const p: PartSpec[] = [];
  const add = (poly: number[], color: RGB, tex: Tex) => p.push({ poly, color, tex });
  switch (cls) {
    case C.aeroplane: {
      const body = jitter(
        r,
        pick(r, [[225, 225, 230], [190, 195, 205], [150, 155, 165]] as RGB[]),
        8,
      );
      const accent = jitter(r, pick(r, CLOTHES), 10);
      add([-0.05, -0.32, 0.1, -0.32, -0.12, -0.52, -0.2, -0.52], scaleRgb(body, 0.85), "metal");
      add(ellipse(0, -0.3, 0.5, 0.07, 22), body, "metal");
      add([-0.05, -0.29, 0.12, -0.29, -0.12, -0.06, -0.22, -0.06], body, "metal");
      add([-0.5, -0.3, -0.4, -0.3, -0.5, -0.5], accent, "plain");
      break;
    }
    case C.bird: {
      const body = jitter(
        r,
        pick(r, [[120, 80, 50], [50, 90, 170], [180, 40, 40], [40, 40, 45], [
          220,
          190,
          60,
        ]] as RGB[]),
        12,
      );
      add(bar(-0.02, -0.18, -0.04, 0, 0.02), [200, 140, 60], "plain");
      add(bar(0.06, -0.18, 0.08, 0, 0.02), [200, 140, 60], "plain");
      add([-0.26, -0.3, -0.5, -0.38, -0.48, -0.24], scaleRgb(body, 0.8), "feather");
      add(ellipse(0, -0.3, 0.3, 0.14), body, "feather");
      add(ellipse(0.28, -0.42, 0.1, 0.1), body, "feather");
      add([0.37, -0.46, 0.49, -0.42, 0.37, -0.38], [235, 150, 40], "plain");
      add(ellipse(-0.04, -0.33, 0.19, 0.08), scaleRgb(body, 0.7), "feather");
      break;
    }
    case C.boat: {
      const hull = jitter(
        r,
        pick(r, [[150, 90, 50], [230, 230, 235], [40, 60, 120], [170, 40, 40]] as RGB[]),
        10,
      );
      add(rect(-0.02, -0.9, 0.02, -0.2), [100, 70, 40], "wood");
      add([0.03, -0.85, 0.03, -0.24, 0.36, -0.24], [240, 238, 230], "fabric");
      add(rect(-0.3, -0.3, -0.1, -0.19), [210, 210, 215], "plain");
      add([-0.5, -0.2, 0.5, -0.2, 0.38, 0, -0.38, 0], hull, "wood");
      break;
    }
    case C.bottle: {
      const glass = jitter(
        r,
        pick(r, [[40, 110, 50], [110, 60, 20], [150, 190, 200]] as RGB[]),
        10,
      );
      add(rect(-0.12, -0.6, 0.12, 0), glass, "glass");
      add([-0.12, -0.6, 0.12, -0.6, 0.05, -0.75, -0.05, -0.75], glass, "glass");
      add(rect(-0.05, -0.9, 0.05, -0.74), glass, "glass");
      add(rect(-0.06, -1, 0.06, -0.9), jitter(r, pick(r, CLOTHES), 10), "plain");
      add(rect(-0.12, -0.42, 0.12, -0.2), jitter(r, [235, 230, 215], 10), "plain");
      break;
    }
    case C.diningtable: {
      const wood = jitter(r, pick(r, [[120, 80, 45], [160, 115, 70], [90, 55, 30]] as RGB[]), 10);
      const cloth = r.next() < 0.4;
      for (const x of [-0.425, 0.425]) add(rect(x - 0.03, -0.41, x + 0.03, 0), wood, "wood");
      add(rect(-0.46, -0.45, 0.46, -0.4), scaleRgb(wood, 0.85), "wood");
      add(
        rect(-0.5, -0.5, 0.5, -0.44),
        cloth ? jitter(r, [235, 235, 230], 8) : wood,
        cloth ? "fabric" : "wood",
      );
      break;
    }
    case C.person: {
      const skin = jitter(r, pick(r, SKIN), 8);
      const shirt = jitter(r, pick(r, CLOTHES), 12);
      const pants = jitter(
        r,
        pick(r, [[40, 50, 90], [40, 40, 40], [120, 100, 70], [90, 90, 95]] as RGB[]),
        10,
      );
      add(rect(-0.11, -0.44, -0.02, 0), pants, "fabric");
      add(rect(0.02, -0.44, 0.11, 0), pants, "fabric");
      add(bar(-0.12, -0.77, -0.2, -0.48, 0.06), shirt, "fabric");
      add(bar(0.12, -0.77, 0.2, -0.48, 0.06), shirt, "fabric");
      add(ellipse(-0.2, -0.46, 0.03, 0.03, 10), skin, "plain");
      add(ellipse(0.2, -0.46, 0.03, 0.03, 10), skin, "plain");
      add(rect(-0.13, -0.8, 0.13, -0.42), shirt, "fabric");
      add(rect(-0.03, -0.84, 0.03, -0.79), skin, "plain");
      add(ellipse(0, -0.9, 0.075, 0.085), skin, "plain");
      add(
        ellipse(0, -0.95, 0.08, 0.045),
        jitter(
          r,
          pick(r, [[40, 30, 20], [110, 70, 30], [
            200,
            170,
            90,
          ], [20, 20, 20]] as RGB[]),
          8,
        ),
        "fur",
      );
      break;
    }
    case C.pottedplant: {
      const green = jitter(r, [60, 130, 50], 15);
      for (let i = 0; i < 5; i++) {
        add(
          ellipse(
            r.uniform(-0.16, 0.16),
            r.uniform(-0.78, -0.45),
            r.uniform(0.1, 0.18),
            r.uniform(0.08, 0.16),
          ),
          scaleRgb(green, r.uniform(0.8, 1.15)),
          "leaf",
        );
      }
      add([-0.18, -0.32, 0.18, -0.32, 0.13, 0, -0.13, 0], jitter(r, [180, 90, 50], 10), "plain");
      break;
    }
    default: { // tvmonitor
      add(rect(-0.2, -0.06, 0.2, 0), [35, 35, 40], "plain");
      add(rect(-0.05, -0.16, 0.05, -0.05), [35, 35, 40], "plain");
      add(rect(-0.5, -0.8, 0.5, -0.15), jitter(r, [30, 30, 35], 6), "plain");
      add(
        rect(-0.44, -0.75, 0.44, -0.2),
        jitter(
          r,
          pick(r, [[70, 120, 200], [60, 170, 120], [
            200,
            120,
            70,
          ], [150, 150, 170]] as RGB[]),
          20,
        ),
        "screen",
      );
    }
  }
  return p;
}

/** The parts of one object, drawn as the generator version says. */
function classParts(r: Rng, cls: number, v: VariantSpec): PartSpec[] {
  if (cls === C.cat || cls === C.dog) return petParts(r, cls, v);
  if (cls === C.cow || cls === C.horse || cls === C.sheep) return farmParts(r, cls, v);
  if (cls === C.bus || cls === C.car || cls === C.train) return vehicleParts(r, cls, v);
  if (cls === C.bicycle || cls === C.motorbike) return cycleParts(r, cls, v);
  if (cls === C.chair || cls === C.sofa) return furnitureParts(r, cls, v);
  return otherParts(r, cls);
}

/**
 * Nominal size (fraction of the image's larger side) of each class; equal within a confusable
 * group so that size gives no cue.
 */
const BASE_SIZE: Record<string, number> = {
  aeroplane: 0.8,
  bicycle: 0.56,
  bird: 0.35,
  boat: 0.6,
  bottle: 0.32,
  bus: 0.75,
  car: 0.75,
  cat: 0.5,
  chair: 0.64,
  cow: 0.6,
  diningtable: 0.7,
  dog: 0.5,
  horse: 0.6,
  motorbike: 0.56,
  person: 0.62,
  pottedplant: 0.45,
  sheep: 0.6,
  sofa: 0.52,
  train: 0.75,
  tvmonitor: 0.45,
};

const INDOOR = new Set([C.bottle, C.chair, C.diningtable, C.pottedplant, C.sofa, C.tvmonitor]);

/** [companion class (-1 = the same class), probability] per primary class. */
const COMPANIONS: Record<string, [number, number][]> = {
  aeroplane: [[-1, 0.15]],
  bicycle: [[C.person, 0.7], [C.car, 0.08]],
  bird: [[-1, 0.25]],
  boat: [[C.person, 0.3], [-1, 0.2]],
  bottle: [[C.diningtable, 0.55], [C.person, 0.2]],
  bus: [[C.car, 0.3], [C.person, 0.2]],
  car: [[-1, 0.3], [C.person, 0.2], [C.bus, 0.08]],
  cat: [[C.sofa, 0.2], [C.chair, 0.1], [C.dog, 0.06]],
  chair: [[C.diningtable, 0.45], [C.sofa, 0.2], [C.person, 0.15], [C.pottedplant, 0.1]],
  cow: [[-1, 0.35], [C.person, 0.1]],
  diningtable: [[C.chair, 0.7], [C.bottle, 0.45], [C.person, 0.25], [C.pottedplant, 0.1]],
  dog: [[C.person, 0.3], [C.sofa, 0.12], [C.cat, 0.06]],
  horse: [[C.person, 0.5], [-1, 0.15]],
  motorbike: [[C.person, 0.7], [C.car, 0.08]],
  person: [
    [C.dog, 0.1],
    [C.bicycle, 0.08],
    [C.horse, 0.06],
    [C.motorbike, 0.06],
    [C.car, 0.08],
    [
      C.bottle,
      0.05,
    ],
    [C.chair, 0.05],
    [-1, 0.2],
  ],
  pottedplant: [[C.chair, 0.2], [C.sofa, 0.1], [C.diningtable, 0.15]],
  sheep: [[-1, 0.4], [C.person, 0.1]],
  sofa: [[C.chair, 0.3], [C.tvmonitor, 0.2], [C.cat, 0.12], [C.dog, 0.12], [C.person, 0.15]],
  train: [[C.person, 0.1]],
  tvmonitor: [[C.sofa, 0.3], [C.chair, 0.2], [C.pottedplant, 0.1]],
};

const RIDEABLE: Record<number, { scale: number; seat: number }> = {
  [C.bicycle]: { scale: 1.0, seat: 0.4 },
  [C.motorbike]: { scale: 0.95, seat: 0.36 },
  [C.horse]: { scale: 0.8, seat: 0.48 },
};

// ---------------------------------------------------------------------------------------------
// Scene layout and rendering

interface Placed {
  cls: number;
  s: number;
  ox: number;
  oy: number;
  flip: boolean;
  key: number;
  parts: PartSpec[];
}

type Background = (x: number, y: number) => RGB;

function makeBackground(r: Rng, kind: string, h: number, horizon: number): Background {
  const ns = r.int(1 << 30);
  if (kind === "indoor") {
    const wall = jitter(
      r,
      pick(r, [[225, 215, 195], [200, 210, 220], [235, 225, 210], [
        190,
        200,
        180,
      ]] as RGB[]),
      10,
    );
    const floor = jitter(
      r,
      pick(r, [[150, 110, 75], [120, 120, 125], [170, 140, 100]] as RGB[]),
      10,
    );
    return (x, y) => {
      if (y < horizon) {
        const f = 0.92 + 0.08 * vnoise(x / 16, y / 16, ns);
        return scaleRgb(wall, f);
      }
      const f = 0.85 + 0.15 * vnoise(x / 3, (y - horizon) / 12, ns + 1);
      return scaleRgb(floor, f);
    };
  }
  const sky: RGB = jitter(r, [135, 185, 235], 15);
  if (kind === "sky") {
    return (x, y) => {
      const cloud = Math.max(0, vnoise(x / 20, y / 12, ns) - 0.55) * 2.2;
      const base = scaleRgb(sky, 0.85 + 0.25 * (y / h));
      return [
        base[0] + (245 - base[0]) * cloud,
        base[1] + (245 - base[1]) * cloud,
        base[2] + (250 - base[2]) * cloud,
      ];
    };
  }
  const ground: RGB = kind === "water" ? jitter(r, [50, 100, 150], 12) : jitter(
    r,
    pick(r, [[90, 140, 60], [110, 150, 70], [150, 140, 110], [120, 120, 120]] as RGB[]),
    12,
  );
  return (x, y) => {
    if (y < horizon) {
      const cloud = Math.max(0, vnoise(x / 20, y / 10, ns) - 0.6) * 2;
      const base = scaleRgb(sky, 0.9 + 0.15 * (y / Math.max(1, horizon)));
      return [
        base[0] + (240 - base[0]) * cloud,
        base[1] + (240 - base[1]) * cloud,
        base[2] +
        (245 - base[2]) * cloud,
      ];
    }
    const f = kind === "water"
      ? 0.85 + 0.2 * Math.sin((y - horizon) * 1.3 + 3 * vnoise(x / 10, y / 4, ns))
      : 0.8 + 0.3 * vnoise(x / 4, y / 4, ns + 3);
    return scaleRgb(ground, f);
  };
}

function texColour(t: Tex, c: RGB, lx: number, ly: number, seed: number): RGB {
  switch (t) {
    case "plain":
      return c;
    case "fur": {
      const f = 0.82 + 0.3 * vnoise(lx / 2.5, ly / 5, seed) +
        0.08 * Math.sin((lx + 2 * vnoise(lx / 6, ly / 6, seed + 1)) * 1.2);
      return scaleRgb(c, f);
    }
    case "feather":
      return scaleRgb(c, 0.85 + 0.25 * vnoise(lx / 1.5, ly / 3, seed));
    case "patches": {
      const n = vnoise(lx / 7, ly / 7, seed);
      const f = 0.88 + 0.18 * vnoise(lx / 2, ly / 2, seed + 2);
      return n > 0.62
        ? scaleRgb([230, 225, 215], f)
        : n < 0.25
        ? scaleRgb(c, 0.65 * f)
        : scaleRgb(c, f);
    }
    case "metal": {
      const band = Math.exp(-((((ly % 13) + 13) % 13 - 4) ** 2) / 4);
      const f = 0.9 + 0.2 * band + 0.04 * vnoise(lx / 4, ly / 4, seed);
      return scaleRgb(c, f);
    }
    case "fabric": {
      const weave = ((Math.floor(lx / 2) + Math.floor(ly / 2)) & 1) ? 0.94 : 1.04;
      return scaleRgb(c, weave * (0.95 + 0.08 * vnoise(lx / 5, ly / 5, seed)));
    }
    case "wood": {
      const g = Math.sin(ly * 1.1 + 4 * vnoise(lx / 12, ly / 3, seed));
      return scaleRgb(c, 0.9 + 0.12 * g);
    }
    case "leaf":
      return scaleRgb(c, 0.7 + 0.5 * vnoise(lx / 2, ly / 2, seed));
    case "glass": {
      const hl = Math.exp(-((((lx % 9) + 9) % 9 - 2) ** 2) / 2);
      return [
        c[0] + (255 - c[0]) * 0.45 * hl,
        c[1] + (255 - c[1]) * 0.45 * hl,
        c[2] +
        (255 - c[2]) * 0.45 * hl,
      ];
    }
    case "screen": {
      const f = (((ly % 3) + 3) % 3 === 0 ? 0.8 : 1) * (0.85 + 0.3 * vnoise(lx / 8, ly / 8, seed));
      return scaleRgb(c, f);
    }
    case "spokes": {
      const a = Math.atan2(ly, lx);
      return scaleRgb(c, Math.cos(a * 8) > 0.6 ? 0.6 : 1.05);
    }
  }
}

function chooseClasses(r: Rng): { primary: number; list: number[] } {
  const weights = VOC_CLASSES.map((_, c) => (c === C.person ? 3.5 : 1));
  let t = r.uniform(0, weights.reduce((a, b) => a + b, 0));
  let primary = 0;
  for (; primary < weights.length - 1; primary++) {
    t -= weights[primary];
    if (t < 0) break;
  }
  const list = [primary];
  for (const [c, p] of COMPANIONS[VOC_CLASSES[primary]]) {
    if (list.length >= 3) break;
    if (r.next() < p) list.push(c < 0 ? primary : c);
  }
  if (list.length < 3 && r.next() < 0.08) list.push(r.int(VOC_CLASSES.length));
  return { primary, list };
}

function layout(
  r: Rng,
  list: number[],
  w: number,
  h: number,
  horizon: number,
  kind: string,
  spec: VariantSpec,
): Placed[] {
  const L = Math.max(w, h);
  const n = list.length;
  const placed: Placed[] = [];
  const rider = list.findIndex((c) => RIDEABLE[c] !== undefined);
  const table = list.indexOf(C.diningtable);
  list.forEach((cls, i) => {
    let s = BASE_SIZE[VOC_CLASSES[cls]] * spec.objectScale * L *
      r.uniform(spec.minSizeFactor, 1.12) * (n > 1 ? 0.85 : 1);
    let ox = r.uniform(0.22, 0.78) * w;
    let oy: number;
    const flying = (cls === C.aeroplane && kind === "sky") || (cls === C.bird && kind === "sky");
    if (flying) oy = r.uniform(0.45, 0.85) * h;
    else if (kind === "water" && cls === C.boat) {
      oy = r.uniform(horizon + 0.3 * (h - horizon), h - 2);
    } else oy = r.uniform(Math.min(horizon + 0.25 * (h - horizon), h - 4), h - 1);
    let key = oy;
    const base = i > 0 && cls === C.person && rider >= 0 && rider < i && placed[rider] &&
        !placed.some((q) => q.key === placed[rider].key + 0.5)
      ? placed[rider]
      : null;
    if (base) {
      const { scale, seat } = RIDEABLE[base.cls];
      s = base.s * scale;
      ox = base.ox + r.uniform(-0.06, 0.06) * base.s;
      oy = base.oy - seat * base.s + 0.25 * s;
      key = base.key + 0.5;
    } else if (i > 0 && cls === C.bottle && table >= 0 && table < i) {
      const t = placed[table];
      s = t.s * r.uniform(0.3, 0.4);
      ox = t.ox + r.uniform(-0.38, 0.38) * t.s;
      oy = t.oy - 0.48 * t.s;
      key = t.key + 0.4;
    } else if (i > 0 && cls === C.chair && table >= 0 && table < i) {
      const t = placed[table];
      s = t.s * r.uniform(0.7, 0.8);
      ox = t.ox + (r.next() < 0.5 ? -1 : 1) * r.uniform(0.3, 0.5) * t.s;
      oy = Math.min(h - 1, t.oy + r.uniform(-3, 6));
      key = oy;
    } else if (!flying) {
      if (spec.fit > 0 && r.next() < spec.fit) {
        // Half-width of the standing shapes is at most about s/2: keep them in the frame.
        const half = Math.min(0.5 * s, 0.5 * w);
        ox = Math.min(Math.max(ox, half), w - half);
        oy = Math.min(oy, h - 3);
      }
      // Perspective: farther (higher) objects are smaller.
      const depth = Math.min(1, Math.max(0, (oy - horizon) / Math.max(1, h - horizon)));
      s *= 1 - spec.perspective + (spec.perspective + 0.1) * depth;
    }
    const flip = r.next() < 0.5; // drawn before the parts: the order of draws is the bytes
    placed.push({ cls, s, ox, oy, flip, key, parts: classParts(r, cls, spec) });
  });
  return placed.sort((a, b) => a.key - b.key);
}

function toPixels(p: Placed, poly: number[]): number[] {
  const out = new Array<number>(poly.length);
  for (let i = 0; i < poly.length; i += 2) {
    const x = p.ox + (p.flip ? -poly[i] : poly[i]) * p.s;
    const y = p.oy + poly[i + 1] * p.s;
    out[i] = Math.round(x * 100) / 100;
    out[i + 1] = Math.round(y * 100) / 100;
  }
  return out;
}

/**
 * Generates scene `index` of a stream deterministically from `seed` (no I/O): the image, its
 * objects and the VOC and COCO masks that the written trees encode.
 */
export function generateScene(
  seed: number,
  stream: SceneStream,
  index: number,
  variant: SynthVariant = DEFAULT_SYNTH_VARIANT,
): Scene {
  const spec = variantSpec(variant);
  const r = new Rng(mix(seed, STREAM_IDS[stream], index, 0x5eed));
  const [w, h] = pick(r, spec.sizes);
  const N = w * h;
  for (let attempt = 0;; attempt++) {
    const { primary, list } = chooseClasses(r);
    const kind = primary === C.boat
      ? "water"
      : primary === C.aeroplane && r.next() < 0.8
      ? "sky"
      : primary === C.bird && r.next() < 0.4
      ? "sky"
      : INDOOR.has(primary) || ((primary === C.cat || primary === C.dog) && r.next() < 0.5)
      ? "indoor"
      : "outdoor";
    const horizon = kind === "sky" ? -1 : r.uniform(0.35, 0.6) * h;
    const bg = makeBackground(r, kind, h, horizon);
    let placed = layout(r, list, w, h, horizon, kind, spec);
    const partMap = new Int32Array(N).fill(-1);
    let shapes: Uint8Array[] = [];
    let polys: number[][][] = [];
    let partInfo: { obj: number; part: PartSpec; seed: number }[] = [];
    const raster = () => {
      partMap.fill(-1);
      shapes = [];
      polys = [];
      partInfo = [];
      placed.forEach((p, o) => {
        const shape = new Uint8Array(N);
        const pp: number[][] = [];
        for (const part of p.parts) {
          const poly = toPixels(p, part.poly);
          const rle = polygonToRle(poly, h, w);
          paintRle(rle, h, w, shape, 1);
          pp.push(poly);
          partInfo.push({ obj: o, part, seed: mix(seed, index, o, pp.length) & 0xffff });
          paintRle(rle, h, w, partMap, partInfo.length - 1);
        }
        shapes.push(shape);
        polys.push(pp);
      });
    };
    raster();
    // Drop objects that end up mostly hidden or out of the frame.
    for (;;) {
      const vis = new Array<number>(placed.length).fill(0);
      for (let q = 0; q < N; q++) if (partMap[q] >= 0) vis[partInfo[partMap[q]].obj]++;
      const drop = placed.findIndex((_, o) => {
        const area = shapes[o].reduce((a, b) => a + b, 0);
        return vis[o] < Math.max(40, 0.25 * area);
      });
      if (drop < 0) break;
      placed = placed.filter((_, o) => o !== drop);
      raster();
    }
    if (placed.length === 0) {
      if (attempt < 20) continue;
      throw new Error(`synthetic scene ${stream}/${index}: could not place any object`);
    }
    return finishScene(r, w, h, bg, placed, shapes, polys, partMap, partInfo);
  }
}

function finishScene(
  r: Rng,
  w: number,
  h: number,
  bg: Background,
  placed: Placed[],
  shapes: Uint8Array[],
  polys: number[][][],
  partMap: Int32Array,
  partInfo: { obj: number; part: PartSpec; seed: number }[],
): Scene {
  const N = w * h;
  const owner = new Int16Array(N).fill(-1);
  for (let q = 0; q < N; q++) if (partMap[q] >= 0) owner[q] = partInfo[partMap[q]].obj;
  const light = r.uniform(0.9, 1.1);
  const noiseSeed = r.int(1 << 30);
  const rgb = new Uint8Array(N * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const q = y * w + x;
      let c: RGB;
      if (partMap[q] < 0) c = bg(x, y);
      else {
        const { obj, part, seed } = partInfo[partMap[q]];
        const p = placed[obj];
        const lx = p.flip ? p.ox - x : x - p.ox;
        c = texColour(part.tex, part.color, lx, y - p.oy, seed);
        const shade = 1.06 - 0.12 * Math.min(1, Math.max(0, (y - (p.oy - p.s)) / p.s));
        c = scaleRgb(c, shade);
      }
      const n = (hash3(x, y, noiseSeed) - 0.5) * 10;
      rgb[q * 3] = clamp8(c[0] * light + n);
      rgb[q * 3 + 1] = clamp8(c[1] * light + n);
      rgb[q * 3 + 2] = clamp8(c[2] * light + n);
    }
  }
  const objects: SceneObject[] = placed.map((p, o) => {
    let visible = 0, area = 0;
    for (let q = 0; q < N; q++) {
      if (owner[q] === o) visible++;
      area += shapes[o][q];
    }
    const { bbox } = maskBox(shapes[o], h, w);
    const truncated = bbox[0] === 0 || bbox[1] === 0 || bbox[0] + bbox[2] >= w ||
      bbox[1] + bbox[3] >= h;
    const difficult = (visible < 150 || visible < 0.5 * area) && r.next() < 0.5;
    const u = r.next();
    const crowd = u < 0.05;
    const cocoSeg = crowd || u > 0.9 ? "rle" : u > 0.75 ? "rle-string" : "polygons";
    return {
      cls: p.cls,
      polygons: polys[o],
      shape: shapes[o],
      visibleArea: visible,
      difficult,
      truncated,
      cocoSeg,
      crowd,
    };
  });
  const vocMask = new Uint8Array(N);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const q = y * w + x;
      const o = owner[q];
      if (o < 0) continue;
      const edge = (x > 0 && owner[q - 1] !== o) || (x < w - 1 && owner[q + 1] !== o) ||
        (y > 0 && owner[q - w] !== o) || (y < h - 1 && owner[q + w] !== o);
      vocMask[q] = edge || objects[o].difficult ? 255 : objects[o].cls + 1;
    }
  }
  const cocoMask = new Uint8Array(N);
  for (let q = 0; q < N; q++) {
    const o = owner[q];
    if (o >= 0) cocoMask[q] = objects[o].crowd ? 255 : objects[o].cls + 1;
  }
  const sorted = (xs: number[]) => [...new Set(xs)].sort((a, b) => a - b);
  return {
    width: w,
    height: h,
    rgb,
    objects,
    owner,
    vocMask,
    cocoMask,
    vocTags: sorted(objects.filter((o) => !o.difficult).map((o) => o.cls)),
    present: sorted(objects.map((o) => o.cls)),
  };
}

// ---------------------------------------------------------------------------------------------
// Writing the trees

/** Options of {@link synthesize}. */
export interface SynthOptions {
  /** Output folder (created); receives `VOCdevkit/` and `coco/`. */
  out: string;
  /** Generator seed (integer 0..2^32-1). */
  seed: number;
  /** How many images (see {@link SYNTH_SIZES}). */
  size: SynthSize;
  /** Generator version (default {@link DEFAULT_SYNTH_VARIANT}). */
  variant?: SynthVariant;
  /** Called now and then with the images written so far. */
  onProgress?: (done: number, total: number) => void;
}

/** VOC ids of a split (`syn_train_000000`, ...). */
export function synthVocId(split: "train" | "val", i: number): string {
  return `syn_${split}_${String(i).padStart(6, "0")}`;
}

function vocXml(id: string, sc: Scene, version: number): string {
  const objs = sc.objects.map((o) => {
    const { bbox } = maskBox(o.shape, sc.height, sc.width);
    return `\t<object>
\t\t<name>${VOC_CLASSES[o.cls]}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>${o.truncated ? 1 : 0}</truncated>
\t\t<difficult>${o.difficult ? 1 : 0}</difficult>
\t\t<bndbox>
\t\t\t<xmin>${bbox[0] + 1}</xmin>
\t\t\t<ymin>${bbox[1] + 1}</ymin>
\t\t\t<xmax>${bbox[0] + bbox[2]}</xmax>
\t\t\t<ymax>${bbox[1] + bbox[3]}</ymax>
\t\t</bndbox>
\t</object>
`;
  }).join("");
  return `<annotation>
\t<folder>VOC2012</folder>
\t<filename>${id}.jpg</filename>
\t<source>
\t\t<database>ocr-wsss synthetic (v${version})</database>
\t</source>
\t<size>
\t\t<width>${sc.width}</width>
\t\t<height>${sc.height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>1</segmented>
${objs}</annotation>
`;
}

const COCO_ID_OF_NAME = new Map(COCO_CATEGORIES.map((c) => [c.name, c.id]));

/** COCO category id of a VOC class index. */
export function cocoIdOfVoc(cls: number): number {
  return COCO_ID_OF_NAME.get(VOC_TO_COCO_NAME[cls])!;
}

function cocoAnnotation(sc: Scene, o: SceneObject, id: number, imageId: number) {
  const { bbox, area } = maskBox(o.shape, sc.height, sc.width);
  let segmentation: unknown;
  if (o.cocoSeg === "polygons") segmentation = o.polygons;
  else {
    const counts = rleEncode(o.shape, sc.height, sc.width);
    segmentation = {
      counts: o.cocoSeg === "rle-string" ? rleToString(counts) : counts,
      size: [sc.height, sc.width],
    };
  }
  return {
    id,
    image_id: imageId,
    category_id: cocoIdOfVoc(o.cls),
    segmentation,
    area,
    bbox,
    iscrowd: o.crowd ? 1 : 0,
  };
}

/**
 * Writes the synthetic VOC tree (`out/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass (palette),
 * SegmentationClassAug (grey), Annotations, ImageSets/Segmentation/{train,val,trainaug}.txt}`)
 * and COCO tree (`out/coco/{train2014, val2014, annotations/instances_{train,val}2014.json}`).
 * Same seed and size → same bytes.
 */
export async function synthesize(
  opts: SynthOptions,
): Promise<{ vocRoot: string; cocoRoot: string }> {
  const sizes = SYNTH_SIZES[opts.size];
  if (!sizes) throw new Error(`synthesize: unknown size '${opts.size}' (tiny, small, medium)`);
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 0xffffffff) {
    throw new Error(`synthesize: seed must be an integer in 0..2^32-1, got ${opts.seed}`);
  }
  const variant = opts.variant ?? DEFAULT_SYNTH_VARIANT;
  const { version } = variantSpec(variant);
  const vocRoot = `${opts.out}/VOCdevkit/VOC2012`;
  const cocoRoot = `${opts.out}/coco`;
  for (
    const d of [
      "JPEGImages",
      "SegmentationClass",
      "SegmentationClassAug",
      "Annotations",
      "ImageSets/Segmentation",
    ]
  ) {
    await Deno.mkdir(`${vocRoot}/${d}`, { recursive: true });
  }
  for (const d of ["train2014", "val2014", "annotations"]) {
    await Deno.mkdir(`${cocoRoot}/${d}`, { recursive: true });
  }
  const total = sizes.vocTrain + sizes.vocVal + sizes.cocoTrain + sizes.cocoVal;
  let done = 0;
  const tick = () => {
    done++;
    if (opts.onProgress && (done % 100 === 0 || done === total)) opts.onProgress(done, total);
  };
  for (const split of ["train", "val"] as const) {
    const n = split === "train" ? sizes.vocTrain : sizes.vocVal;
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = synthVocId(split, i);
      const sc = generateScene(opts.seed, `voc-${split}`, i, variant);
      await Deno.writeFile(
        `${vocRoot}/JPEGImages/${id}.jpg`,
        await encodeJpeg(sc.rgb, sc.width, sc.height),
      );
      await Deno.writeFile(
        `${vocRoot}/SegmentationClass/${id}.png`,
        await encodeLabelPng(sc.vocMask, sc.width, sc.height, VOC_PALETTE),
      );
      await Deno.writeFile(
        `${vocRoot}/SegmentationClassAug/${id}.png`,
        await encodeLabelPng(sc.vocMask, sc.width, sc.height),
      );
      await Deno.writeTextFile(`${vocRoot}/Annotations/${id}.xml`, vocXml(id, sc, version));
      ids.push(id);
      tick();
    }
    const list = ids.join("\n") + "\n";
    await Deno.writeTextFile(`${vocRoot}/ImageSets/Segmentation/${split}.txt`, list);
    if (split === "train") {
      await Deno.writeTextFile(`${vocRoot}/ImageSets/Segmentation/trainaug.txt`, list);
    }
  }
  for (const split of ["train", "val"] as const) {
    const n = split === "train" ? sizes.cocoTrain : sizes.cocoVal;
    const folder = `${split}2014`;
    const images = [];
    const annotations = [];
    for (let i = 0; i < n; i++) {
      const imageId = i + 1;
      const file = `COCO_${folder}_${String(imageId).padStart(12, "0")}.jpg`;
      const sc = generateScene(opts.seed, `coco-${split}`, i, variant);
      await Deno.writeFile(
        `${cocoRoot}/${folder}/${file}`,
        await encodeJpeg(sc.rgb, sc.width, sc.height),
      );
      images.push({ id: imageId, file_name: file, width: sc.width, height: sc.height });
      for (const o of sc.objects) {
        annotations.push(cocoAnnotation(sc, o, annotations.length + 1, imageId));
      }
      tick();
    }
    const json = {
      info: {
        description: `ocr-wsss synthetic COCO-format set (generator v${version})`,
        version: String(version),
        year: 2014,
      },
      licenses: [],
      images,
      annotations,
      categories: COCO_CATEGORIES,
    };
    await Deno.writeTextFile(
      `${cocoRoot}/annotations/instances_${folder}.json`,
      JSON.stringify(json),
    );
  }
  return { vocRoot, cocoRoot };
}

/** The cache folder: `$OCR_WSSS_CACHE`, else `$XDG_CACHE_HOME/ocr-wsss`, else `~/.cache/ocr-wsss`. */
export function defaultCacheDir(): string {
  const env = (k: string) => {
    try {
      return Deno.env.get(k) || undefined;
    } catch {
      return undefined;
    }
  };
  const own = env("OCR_WSSS_CACHE");
  if (own) return own;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/ocr-wsss`;
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new Error("no cache folder: set OCR_WSSS_CACHE (or HOME / XDG_CACHE_HOME)");
  return `${home}/.cache/ocr-wsss`;
}

/** Options of {@link ensureSynthetic}. */
export interface EnsureSyntheticOptions {
  /** Generator seed (default 0). */
  seed?: number;
  /** Default "small". */
  size?: SynthSize;
  /** Generator version (default {@link DEFAULT_SYNTH_VARIANT}). */
  variant?: SynthVariant;
  /** Default {@link defaultCacheDir}(). */
  cacheDir?: string;
  /** Called now and then while generating. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Returns the synthetic trees for (seed, size), generating them once into
 * `<cacheDir>/synthetic-v<version>-seed<seed>-<size>`. Generation goes to a temporary folder
 * renamed into place when complete, so an interrupted run is never taken as a finished set;
 * concurrent callers race harmlessly (the loser discards its copy).
 */
export async function ensureSynthetic(
  opts: EnsureSyntheticOptions = {},
): Promise<{ vocRoot: string; cocoRoot: string }> {
  const seed = opts.seed ?? 0;
  const size = opts.size ?? "small";
  const cache = opts.cacheDir ?? defaultCacheDir();
  const variant = opts.variant ?? DEFAULT_SYNTH_VARIANT;
  const { version } = variantSpec(variant);
  const dir = `${cache}/synthetic-v${version}-seed${seed}-${size}`;
  const roots = { vocRoot: `${dir}/VOCdevkit/VOC2012`, cocoRoot: `${dir}/coco` };
  try {
    if (Deno.statSync(dir).isDirectory) return roots;
  } catch {
    // not there yet
  }
  await Deno.mkdir(cache, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: cache, prefix: `.tmp-synthetic-v${version}-` });
  try {
    await synthesize({ out: tmp, seed, size, variant, onProgress: opts.onProgress });
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      // Another process finished first: use its copy.
      if (!(Deno.statSync(dir).isDirectory)) throw e;
      await Deno.remove(tmp, { recursive: true });
    }
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return roots;
}
