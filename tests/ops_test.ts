/**
 * The generic op test: for every registered unit (src/registry/ops.ts) and every case,
 * (a) the GPU forward against the f64 reference forward, (b) the GPU backward against the
 * f64 reference backward and against central differences of the f64 reference forward along
 * random directions (the reference gradient too, to f64 precision), and (c) the same forward
 * and backward on a context with a small storage-binding cap, so that the split paths run
 * (each unit must split at least one case there).
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { OP_UNITS } from "../src/registry/ops.ts";
import type {
  HostValues,
  OpCase,
  OpUnit,
  RefResult,
  RefValues,
  Tolerance,
} from "../src/ops/unit.ts";
import { uniformValues } from "../src/ops/unit.ts";
import { testGpu } from "./util.ts";

/** Bytes per storage binding on the splitting context (512 floats). */
const SMALL_BINDING = 2048;

let small: Promise<GpuContext> | null = null;
function smallGpu(): Promise<GpuContext> {
  small ??= createGpu({ maxBindingBytes: SMALL_BINDING, debug: true });
  return small;
}

/** Throws unless |got - want| <= atol + rtol·|want| + maxRel·max|want| everywhere. */
function checkClose(
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

interface CaseData {
  x: HostValues;
  dy: HostValues;
  ref: RefResult;
  refGrad: RefResult | null;
}

function caseData(unit: OpUnit, c: OpCase<unknown>, seed: number): CaseData {
  const x = unit.makeInputs(c.params, seed);
  unit.validateInputs?.(c.params, x);
  const ref = unit.refForward(c.params, x);
  const dy: HostValues = {};
  unit.gradOutputs.forEach((k, i) => dy[k] = uniformValues(ref[k].length, seed + 100 + i));
  const refGrad = unit.refBackward ? unit.refBackward(c.params, x, dy) : null;
  return { x, dy, ref, refGrad };
}

async function checkForward(gpu: GpuContext, unit: OpUnit, c: OpCase<unknown>, d: CaseData) {
  const got = await unit.gpuForward(gpu, c.params, d.x);
  sameKeys(got, d.ref, `${unit.name} ${c.name}: outputs`);
  for (const k of unit.outputs) {
    const tol = unit.tolerance.outputs?.[k] ?? unit.tolerance.forward;
    checkClose(got[k], d.ref[k], tol, `${unit.name} ${c.name}: forward ${k}`);
  }
}

async function gpuGrads(
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
function checkFiniteDifferences(
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

Deno.test("op registry: unique names, consistent declarations", () => {
  const names = OP_UNITS.map((u) => u.name);
  if (new Set(names).size !== names.length) throw new Error(`duplicate names: ${names}`);
  for (const u of OP_UNITS) {
    const sub = (a: readonly string[], b: readonly string[], what: string) => {
      const extra = a.filter((k) => !b.includes(k));
      if (extra.length) throw new Error(`${u.name}: ${what} not declared: ${extra}`);
    };
    sub(u.differentiable, u.inputs, "differentiable inputs");
    sub(u.gradOutputs, u.outputs, "gradient outputs");
    if (u.cases.length === 0 || u.benchShapes.length === 0) throw new Error(`${u.name}: no cases`);
    if (u.differentiable.length > 0 && !(u.gpuBackward && u.refBackward)) {
      throw new Error(`${u.name}: differentiable inputs but no backward`);
    }
    for (const c of [...u.cases, ...u.benchShapes]) {
      const shapes = u.inputShapes(c.params);
      sub(Object.keys(shapes), u.inputs, `inputs of ${c.name}`);
      sub(Object.keys(u.outputShapes(c.params)), u.outputs, `outputs of ${c.name}`);
    }
  }
});

for (const unit of OP_UNITS) {
  Deno.test(`op unit ${unit.name}`, async (t) => {
    const gpu = await testGpu();
    let splits = 0;
    for (const [i, c] of unit.cases.entries()) {
      await t.step(`${unit.name}/${c.name}`, async () => {
        const seed = 1 + 97 * i;
        const d = caseData(unit, c, seed);
        const n0 = gpu.dispatchCount;
        await checkForward(gpu, unit, c, d);
        const dispatches = gpu.dispatchCount - n0;
        if (unit.gpuBackward && d.refGrad) {
          const got = await gpuGrads(gpu, unit, c, d);
          checkFiniteDifferences(unit, c, d, got, seed);
        }
        if (c.split === false) return;
        const sg = await smallGpu();
        const s0 = sg.dispatchCount;
        await checkForward(sg, unit, c, d);
        if (sg.dispatchCount - s0 > dispatches) splits++;
        if (unit.gpuBackward && d.refGrad) await gpuGrads(sg, unit, c, d);
      });
    }
    if (splits === 0) {
      throw new Error(`${unit.name}: no case was split on the ${SMALL_BINDING}-byte context`);
    }
  });
}
