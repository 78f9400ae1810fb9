/**
 * Evaluation (DESIGN §6): GPU confusion matrix and OC-error counts, CAM evaluation (OC rate,
 * pseudo masks, threshold sweep), metrics.json and report.html, mask-folder evaluation.
 * @module
 */
export * from "./confusion.ts";
export * from "./cam.ts";
export * from "./metrics.ts";
export * from "./report.ts";
export * from "./folder.ts";
export { GpuCounters } from "./counters.ts";
