/**
 * Label PNGs read back through a decoder that is not the project's: imagescript (an npm
 * dependency with its own inflate and PNG code) decodes palette and grey PNGs to RGBA colours,
 * and the colours are mapped back to label indices through a palette. The round-trip and CAM
 * tests use it so that a mask written by `encodeLabelPng` is not only ever read back by
 * `decodeLabelPng`, its twin.
 * @module
 */
// @ts-types="../src/data/imagescript.d.ts"
import { decode, Image } from "npm:imagescript@1.3.1";

/** A label image decoded by imagescript. */
export interface IndependentMask {
  width: number;
  height: number;
  /** Label indices, row-major. */
  data: Uint8Array;
}

async function rgba(bytes: Uint8Array, what: string): Promise<Image> {
  const img = await decode(bytes);
  if (!(img instanceof Image)) throw new Error(`${what}: imagescript did not return an image`);
  return img;
}

/**
 * Decodes a palette PNG with imagescript and maps every RGBA colour back to its index in
 * `palette` (RGB triples; the colours must be distinct). Throws on a colour the palette does
 * not hold or a pixel that is not opaque, naming `what` and the pixel.
 */
export async function decodePaletteMask(
  bytes: Uint8Array,
  palette: Uint8Array,
  what = "png",
): Promise<IndependentMask> {
  const index = new Map<number, number>();
  for (let i = 0; i < palette.length / 3; i++) {
    const key = (palette[3 * i] << 16) | (palette[3 * i + 1] << 8) | palette[3 * i + 2];
    if (index.has(key)) throw new Error(`palette colours ${index.get(key)} and ${i} are equal`);
    index.set(key, i);
  }
  const img = await rgba(bytes, what);
  const { width, height, bitmap: px } = img;
  const data = new Uint8Array(width * height);
  for (let i = 0; i < data.length; i++) {
    const [r, g, b, a] = [px[4 * i], px[4 * i + 1], px[4 * i + 2], px[4 * i + 3]];
    const v = index.get((r << 16) | (g << 8) | b);
    if (v === undefined || a !== 255) {
      throw new Error(
        `${what}: pixel (${i % width}, ${Math.floor(i / width)}) has colour ` +
          `(${r}, ${g}, ${b}, ${a}), not an opaque palette colour`,
      );
    }
    data[i] = v;
  }
  return { width, height, data };
}

/** Decodes an 8-bit grey PNG with imagescript (R = G = B = the label, opaque). */
export async function decodeGreyMask(bytes: Uint8Array, what = "png"): Promise<IndependentMask> {
  const img = await rgba(bytes, what);
  const { width, height, bitmap: px } = img;
  const data = new Uint8Array(width * height);
  for (let i = 0; i < data.length; i++) {
    const [r, g, b, a] = [px[4 * i], px[4 * i + 1], px[4 * i + 2], px[4 * i + 3]];
    if (r !== g || g !== b || a !== 255) {
      throw new Error(`${what}: pixel ${i} is (${r}, ${g}, ${b}, ${a}), not an opaque grey`);
    }
    data[i] = r;
  }
  return { width, height, data };
}

/**
 * Colours of the PASCAL VOC devkit's colour map (VOCdevkit `labelcolormap`) for a few labels,
 * written out from the devkit documentation rather than computed: background, the first
 * classes, person (15), tvmonitor (20) and the void label 255.
 */
export const VOC_DEVKIT_COLOURS: ReadonlyArray<[number, [number, number, number]]> = [
  [0, [0, 0, 0]],
  [1, [128, 0, 0]],
  [2, [0, 128, 0]],
  [3, [128, 128, 0]],
  [4, [0, 0, 128]],
  [5, [128, 0, 128]],
  [15, [192, 128, 128]],
  [20, [0, 64, 128]],
  [255, [224, 224, 192]],
];
