/**
 * CAM inference (DESIGN §3, §6): checkpoint loading, multi-scale + flip CAM fusion on the GPU,
 * psa/SEAM normalised CAMs and pseudo masks, and the evaluation entry point.
 * @module
 */
export * from "./fuse.ts";
export * from "./extract.ts";
export * from "./evaluate.ts";
export * from "./options.ts";
export * from "./cam_folder.ts";
export * from "../methods/affinitynet/rw.ts";
