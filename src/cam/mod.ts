/**
 * CAM computation on the GPU (portable: no file or process I/O): multi-scale + flip CAM fusion
 * of one image, psa/SEAM normalised tag CAMs, and the pseudo-mask rule. The CAM *stages*
 * (checkpoints, dataset splits, CAM folders, evaluate()) are in src/methods/cam.
 * @module
 */
export * from "./fuse.ts";
export * from "./image.ts";
export * from "./pseudo_mask.ts";
