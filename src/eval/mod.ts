/**
 * Evaluation counts and scores (portable: no file or process I/O): GPU confusion matrix and
 * OC-error counts, CAM evaluation (OC rate, pseudo masks, threshold sweep), metrics and the
 * classification mAP. metrics.json, report.html and mask-folder scoring are in src/methods/cam.
 * @module
 */
export * from "./confusion.ts";
export * from "./cam.ts";
export * from "./metrics.ts";
export { GpuCounters } from "./counters.ts";
