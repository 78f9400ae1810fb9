/**
 * Shared test helpers: one GPU context per test process, seeded random data, tolerant
 * comparisons and central finite differences in f64.
 * @module
 */
import { deepStrictEqual } from "node:assert";
import type { GpuContext } from "../src/gpu/context.ts";
import { createGpu } from "../src/io/gpu.ts";
import { Rng } from "../src/rng.ts";
import type { StepLog } from "../src/train/train.ts";
import { join } from "node:path";

let shared: Promise<GpuContext> | null = null;

/** The test process's GPU context (debug mode: errors name the op). */
export function testGpu(): Promise<GpuContext> {
  shared ??= createGpu({ debug: true });
  return shared;
}

/** Seeded random values in [lo, hi). */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.uniform(lo, hi);
  return out;
}

/** Asserts |a - e| <= atol + rtol·|e| elementwise; the message names the worst index. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: { rtol?: number; atol?: number } = {},
  what = "values",
): void {
  const rtol = tol.rtol ?? 1e-4;
  const atol = tol.atol ?? 1e-5;
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
      if (Number.isNaN(excess)) break;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: index ${worst}: got ${actual[worst]}, expected ${expected[worst]} ` +
        `(rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Largest relative error max|a-e| / max(max|e|, floor). */
export function maxRelError(a: ArrayLike<number>, e: ArrayLike<number>, floor = 1e-6): number {
  let num = 0;
  let den = floor;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - e[i]));
    den = Math.max(den, Math.abs(e[i]));
  }
  return num / den;
}

/**
 * Central finite-difference gradient of a scalar function of `x` (f64), at the given indices
 * (all when omitted).
 */
export function finiteDiff(
  f: (x: Float64Array) => number,
  x: Float64Array,
  eps = 1e-5,
  indices?: number[],
): Float64Array {
  const g = new Float64Array(x.length);
  for (const i of indices ?? [...x.keys()]) {
    const v = x[i];
    x[i] = v + eps;
    const fp = f(x);
    x[i] = v - eps;
    const fm = f(x);
    x[i] = v;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

/** Deep strict equality (node:assert) with an optional message. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

function checkError(
  e: unknown,
  cls?: abstract new (...a: never[]) => Error,
  includes?: string,
): Error {
  if (!(e instanceof Error)) throw new Error(`expected an Error, got ${String(e)}`);
  if (cls && !(e instanceof cls)) {
    const err = e as Error;
    throw new Error(`expected ${cls.name}, got ${err.name}: ${err.message}`);
  }
  if (includes && !e.message.includes(includes)) {
    throw new Error(`expected message to include "${includes}", got: ${e.message}`);
  }
  return e;
}

/** Asserts `fn` throws (optionally of a class, with a message fragment); returns the error. */
export function assertThrows(
  fn: () => unknown,
  cls?: abstract new (...a: never[]) => Error,
  includes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new Error("expected the function to throw");
}

/** Asserts `fn` rejects (optionally of a class, with a message fragment); returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: abstract new (...a: never[]) => Error,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new Error("expected the promise to reject");
}

/** The lines of a run folder's train.jsonl. */
export async function readLog(dir: string): Promise<StepLog[]> {
  const text = await Deno.readTextFile(join(dir, "train.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** The deterministic part of train.jsonl lines (timing fields differ between runs). */
export function losses(log: StepLog[]) {
  return log.map(({ step, lr, loss, loss_cls, loss_ocr, oc_pixels }) => ({
    step,
    lr,
    loss,
    loss_cls,
    loss_ocr,
    oc_pixels,
  }));
}
