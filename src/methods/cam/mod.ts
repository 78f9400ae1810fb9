/**
 * The CAM classifier's stages, shared by every method: checkpoint loading, CAM folders
 * (`deno task cam`), evaluate() (`deno task eval`: metrics.json, report.html, mask folders),
 * and the pipeline stages built on them (./stages.ts).
 * @module
 */
export * from "./extract.ts";
export * from "./evaluate.ts";
export * from "./options.ts";
export * from "./cam_folder.ts";
export * from "./report.ts";
export * from "./mask_folder.ts";
