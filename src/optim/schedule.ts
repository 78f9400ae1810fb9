/**
 * Learning-rate schedules (pure functions of the step).
 * @module
 */

function checkSteps(what: string, step: number, maxStep: number): void {
  if (!(Number.isInteger(maxStep) && maxStep > 0)) {
    throw new RangeError(`${what}: maxStep must be a positive integer, got ${maxStep}`);
  }
  if (!(Number.isFinite(step) && step >= 0)) throw new RangeError(`${what}: bad step ${step}`);
}

/**
 * psa/SEAM's poly schedule: lr = base·(1 - step/maxStep)^power (power 0.9), 0 from maxStep on.
 */
export function polyLr(base: number, step: number, maxStep: number, power = 0.9): number {
  checkSteps("polyLr", step, maxStep);
  return base * Math.pow(Math.max(0, 1 - step / maxStep), power);
}

/** Options of {@link cosineLr}. */
export interface CosineOptions {
  /** Linear warm-up steps from `warmupStart` to `base` (default 0). */
  warmupSteps?: number;
  /** lr at step 0 of the warm-up (default 0). */
  warmupStart?: number;
  /** Floor reached at maxStep (default 0). */
  min?: number;
}

/**
 * Cosine decay with optional linear warm-up (the ViT/MCTformer recipe):
 * warm-up lr = start + (base - start)·step/warmup; then
 * lr = min + (base - min)·(1 + cos(π·t))/2 with t = (step - warmup)/(maxStep - warmup).
 */
export function cosineLr(
  base: number,
  step: number,
  maxStep: number,
  opts: CosineOptions = {},
): number {
  checkSteps("cosineLr", step, maxStep);
  const warm = opts.warmupSteps ?? 0;
  if (!(Number.isInteger(warm) && warm >= 0 && warm < maxStep)) {
    throw new RangeError(`cosineLr: warmupSteps must be an integer in [0, maxStep), got ${warm}`);
  }
  const min = opts.min ?? 0;
  if (step < warm) {
    const start = opts.warmupStart ?? 0;
    return start + (base - start) * step / warm;
  }
  const t = Math.min(1, (step - warm) / (maxStep - warm));
  return min + (base - min) * 0.5 * (1 + Math.cos(Math.PI * t));
}
