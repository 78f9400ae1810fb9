/**
 * The final stage: the DeepLab segmenter trained on any method's pseudo masks
 * (docs/segmentation.md): training (`deno task seg`), prediction and evaluation
 * (`deno task eval --ckpt SEG_CKPT`).
 * @module
 */
export * from "./train.ts";
export * from "./predict.ts";
