/**
 * The part of imagescript's API used here. Its own declaration file has syntax that
 * `deno doc` cannot parse, so `image.ts` takes its types from this file instead.
 * @module
 */

/** A decoded RGBA image. */
export class Image {
  constructor(width: number, height: number);
  readonly width: number;
  readonly height: number;
  /** RGBA bytes, row-major. */
  bitmap: Uint8ClampedArray;
  /** Baseline JPEG with the given quality (1-100). */
  encodeJPEG(quality?: number): Promise<Uint8Array>;
  /** PNG (RGBA). */
  encode(compression?: number): Promise<Uint8Array>;
}

/** Decodes PNG / JPEG / TIFF / GIF bytes. */
export function decode(data: Uint8Array | ArrayBuffer): Promise<Image | unknown>;
