/**
 * The generic checks of an op unit (src/ops/unit.ts), shared by the generic test
 * (tests/ops_test.ts) and by anyone adding an op: for one case, (a) the GPU forward against
 * the f64 reference forward, (b) the GPU backward against the f64 reference backward and
 * against central differences of the f64 reference forward along random directions (the
 * reference gradient too, to f64 precision), (c) the op's derivative rule on the gradient
 * tape (./ops.ts TAPE_FUNCTIONS) against the reference backward, and, on a context with a
 * small storage-binding cap, (a) and (b) again so that the split paths run.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { Tape } from "../autograd/tape.ts";
import {
  type HostValues,
  type OpCase,
  type OpUnit,
  type RefResult,
  type RefValues,
  type Tolerance,
  uniformValues,
  uploadArgs,
} from "../ops/unit.ts";
import type { TapeFunction } from "./ops.ts";

/** Throws unless |got - want| <= atol + rtol·|want| + maxRel·max|want| everywhere. */
export function checkClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tolerance,
  what: string,
): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  }
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  const { rtol = 0, atol = 0, maxRel = 0 } = tol;
  for (let i = 0; i < want.length; i++) {
    const [a, e] = [got[i], want[i]];
    const same = a === e || (Number.isNaN(a) && Number.isNaN(e));
    if (!same && !(Math.abs(a - e) <= atol + rtol * Math.abs(e) + maxRel * scale)) {
      throw new Error(
        `${what}: index ${i}: got ${a}, expected ${e} (${JSON.stringify(tol)}, max|e| ${scale})`,
      );
    }
  }
}

function sameKeys(got: object, want: object, what: string): void {
  const a = Object.keys(got).sort().join(",");
  const b = Object.keys(want).sort().join(",");
  if (a !== b) throw new Error(`${what}: got [${a}], expected [${b}]`);
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** L(x) = Σ_o <dy_o, ref(x)_o> over the outputs that take a gradient. */
function lossOf(unit: OpUnit, p: unknown, x: RefValues, dy: RefValues): number {
  const y = unit.refForward(p, x);
  let s = 0;
  for (const k of unit.gradOutputs) s += dot(dy[k], y[k]);
  return s;
}

export interface CaseData {
  x: HostValues;
  dy: HostValues;
  ref: RefResult;
  refGrad: RefResult | null;
}

export function caseData(unit: OpUnit, c: OpCase<unknown>, seed: number): CaseData {
  const x = unit.makeInputs(c.params, seed);
  unit.validateInputs?.(c.params, x);
  const ref = unit.refForward(c.params, x);
  const dy: HostValues = {};
  unit.gradOutputs.forEach((k, i) => dy[k] = uniformValues(ref[k].length, seed + 100 + i));
  const refGrad = unit.refBackward ? unit.refBackward(c.params, x, dy) : null;
  return { x, dy, ref, refGrad };
}

export async function checkForward(gpu: GpuContext, unit: OpUnit, c: OpCase<unknown>, d: CaseData) {
  const got = await unit.gpuForward(gpu, c.params, d.x);
  sameKeys(got, d.ref, `${unit.name} ${c.name}: outputs`);
  for (const k of unit.outputs) {
    const tol = unit.tolerance.outputs?.[k] ?? unit.tolerance.forward;
    checkClose(got[k], d.ref[k], tol, `${unit.name} ${c.name}: forward ${k}`);
  }
}

export async function gpuGrads(
  gpu: GpuContext,
  unit: OpUnit,
  c: OpCase<unknown>,
  d: CaseData,
): Promise<HostValues> {
  const got = await unit.gpuBackward!(gpu, c.params, d.x, d.dy);
  sameKeys(got, d.refGrad!, `${unit.name} ${c.name}: gradients`);
  for (const k of Object.keys(d.refGrad!)) {
    checkClose(got[k], d.refGrad![k], unit.tolerance.backward, `${unit.name} ${c.name}: d${k}`);
  }
  return got;
}

/**
 * Central differences of the f64 reference loss along two random directions per
 * differentiable input, against the reference gradient (f64: 1e-6) and the GPU gradient
 * (the unit's fd tolerance), both relative to Σ|g_ref,i·v_i|.
 */
export function checkFiniteDifferences(
  unit: OpUnit,
  c: OpCase<unknown>,
  d: CaseData,
  got: HostValues,
  seed: number,
): void {
  const eps = unit.tolerance.fdEps ?? 1e-6;
  const tol = unit.tolerance.fd ?? 1e-5;
  for (const [ki, k] of Object.keys(d.refGrad!).entries()) {
    for (let r = 0; r < 2; r++) {
      const v = uniformValues(d.x[k].length, seed + 1000 + 10 * ki + r);
      const shifted = (s: number) => {
        const xs: RefValues = { ...d.x, [k]: Float64Array.from(d.x[k], (a, i) => a + s * v[i]) };
        return lossOf(unit, c.params, xs, d.dy);
      };
      const fd = (shifted(eps) - shifted(-eps)) / (2 * eps);
      const g = d.refGrad![k];
      let scale = 0;
      for (let i = 0; i < v.length; i++) scale += Math.abs(g[i] * v[i]);
      const what = `${unit.name} ${c.name}: d${k} along direction ${r}`;
      const eRef = Math.abs(dot(g, v) - fd);
      if (!(eRef <= 1e-6 * scale + 1e-9)) {
        throw new Error(`${what}: reference <g, v> ${dot(g, v)} vs finite difference ${fd}`);
      }
      const eGpu = Math.abs(dot(got[k], v) - fd);
      if (!(eGpu <= tol * scale + 1e-9)) {
        throw new Error(`${what}: GPU <g, v> ${dot(got[k], v)} vs finite difference ${fd}`);
      }
    }
  }
}

/**
 * Runs a case through the op's differentiable function on a tape (its differentiable inputs
 * watched as leaves), backward from the case's upstream gradients, and compares the leaves'
 * gradients with the f64 reference backward.
 */
export async function checkTapeRule(
  gpu: GpuContext,
  unit: OpUnit,
  fn: TapeFunction,
  c: OpCase<unknown>,
  d: CaseData,
): Promise<void> {
  const what = `${unit.name} ${c.name}: tape rule`;
  const args = uploadArgs(gpu, d.x, unit.inputShapes(c.params));
  const tape = new Tape(gpu);
  const leaves = Object.keys(d.refGrad!).map((k) => [k, tape.watch(args.tensors[k])] as const);
  const out = fn(tape, c.params, args.tensors);
  const seeds = unit.gradOutputs.map((k): [Tensor, Tensor] => {
    if (!out[k]) throw new Error(`${what}: the function returned no output ${k}`);
    return [out[k], Tensor.fromArray(gpu, d.dy[k], out[k].shape)];
  });
  const grads = tape.backward(seeds, leaves.map(([, t]) => t));
  try {
    const missing = leaves.filter((_, i) => !grads[i]).map(([k]) => k);
    if (missing.length) throw new Error(`${what}: no gradient reached ${missing}`);
    const values = await gpu.readRanges(grads.map((g) => g!.binding()));
    leaves.forEach(([k], i) => {
      const got = new Float32Array(values[i], 0, d.refGrad![k].length);
      checkClose(got, d.refGrad![k], unit.tolerance.backward, `${what}: d${k}`);
    });
  } finally {
    for (const g of grads) g?.dispose();
    for (const t of Object.values(out)) t.dispose();
    for (const t of Object.values(args.tensors)) t.dispose();
  }
}

/** Options of {@link checkUnitCase}. */
export interface CheckOptions {
  /** A context with a small storage-binding cap: the split paths run there too. */
  small?: GpuContext;
  /** The op's differentiable function, when models use it on the tape. */
  tape?: TapeFunction;
}

/**
 * Every check of one case (see the module doc). Returns whether the case was split on the
 * small context (it recorded more dispatches there than on `gpu`).
 */
export async function checkUnitCase(
  gpu: GpuContext,
  unit: OpUnit,
  c: OpCase<unknown>,
  seed: number,
  opts: CheckOptions = {},
): Promise<boolean> {
  const d = caseData(unit, c, seed);
  const n0 = gpu.dispatchCount;
  await checkForward(gpu, unit, c, d);
  const dispatches = gpu.dispatchCount - n0;
  if (unit.gpuBackward && d.refGrad) {
    const got = await gpuGrads(gpu, unit, c, d);
    checkFiniteDifferences(unit, c, d, got, seed);
    if (opts.tape) await checkTapeRule(gpu, unit, opts.tape, c, d);
  }
  const sg = opts.small;
  if (!sg || c.split === false) return false;
  const s0 = sg.dispatchCount;
  await checkForward(sg, unit, c, d);
  const split = sg.dispatchCount - s0 > dispatches;
  if (unit.gpuBackward && d.refGrad) await gpuGrads(sg, unit, c, d);
  return split;
}
