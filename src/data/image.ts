/**
 * Colour image decode/encode through imagescript (`npm:imagescript@1.3.1`), wrapped so that a
 * failure names the file. Images are HWC RGB `Uint8Array`s.
 * @module
 */
// @ts-types="./imagescript.d.ts"
import { decode, Image } from "npm:imagescript@1.3.1";
import { DataError } from "./errors.ts";

/** An 8-bit RGB image, row-major HWC. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/**
 * Decodes a JPEG or PNG (any colour type imagescript reads) to RGB. Throws {@link DataError}
 * naming `path` when the bytes cannot be decoded (truncated, corrupt or not an image).
 */
export async function decodeImage(bytes: Uint8Array, path: string): Promise<RgbImage> {
  let img: Image;
  try {
    const d = await decode(bytes);
    if (!(d instanceof Image)) throw new Error("animated images are not supported");
    img = d;
  } catch (e) {
    const kind = bytes[0] === 0xff && bytes[1] === 0xd8
      ? "JPEG"
      : bytes[0] === 0x89 && bytes[1] === 0x50
      ? "PNG"
      : "image";
    throw new DataError(
      path,
      `cannot decode ${kind} (${(e as Error).message}): the file is truncated or corrupt`,
      { cause: e },
    );
  }
  const { width, height } = img;
  const src = img.bitmap;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = src[i];
    rgb[j + 1] = src[i + 1];
    rgb[j + 2] = src[i + 2];
  }
  return { width, height, rgb };
}

/** Encodes an RGB image as a baseline JPEG (deterministic bytes for the same input). */
export async function encodeJpeg(
  rgb: Uint8Array,
  width: number,
  height: number,
  quality = 90,
): Promise<Uint8Array> {
  if (rgb.length !== width * height * 3) {
    throw new RangeError(`encodeJpeg: ${rgb.length} bytes for a ${width}x${height} RGB image`);
  }
  const img = new Image(width, height);
  const dst = img.bitmap;
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    dst[i] = rgb[j];
    dst[i + 1] = rgb[j + 1];
    dst[i + 2] = rgb[j + 2];
    dst[i + 3] = 255;
  }
  return await img.encodeJPEG(quality);
}
