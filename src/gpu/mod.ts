/**
 * GPU runtime: context, tensors, pool, shaders.
 * @module
 */
export * from "./context.ts";
export * from "./tensor.ts";
export * from "./pool.ts";
export * from "./shaders.ts";
