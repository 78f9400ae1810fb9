/**
 * Optimizers (SGD with momentum, AdamW) and learning-rate schedules.
 * @module
 */
export * from "./sgd.ts";
export * from "./adamw.ts";
export * from "./schedule.ts";
