/**
 * The generic op test: every registered unit (src/registry/ops.ts), every case, through the
 * checks of src/registry/check.ts: GPU forward and backward against the f64 references,
 * central finite differences, the derivative rule on the gradient tape where models use one,
 * and the same on a context with a small storage-binding cap (each unit must split at least
 * one case there).
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { OP_UNITS, TAPE_FUNCTIONS } from "../src/registry/ops.ts";
import { checkUnitCase } from "../src/registry/check.ts";
import { testGpu } from "./util.ts";

/** Bytes per storage binding on the splitting context (512 floats). */
const SMALL_BINDING = 2048;

let small: Promise<GpuContext> | null = null;
function smallGpu(): Promise<GpuContext> {
  small ??= createGpu({ maxBindingBytes: SMALL_BINDING, debug: true });
  return small;
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
  for (const name of Object.keys(TAPE_FUNCTIONS)) {
    if (!names.includes(name)) throw new Error(`tape function for unknown unit ${name}`);
  }
});

for (const unit of OP_UNITS) {
  Deno.test(`op unit ${unit.name}`, async (t) => {
    const gpu = await testGpu();
    const small = await smallGpu();
    let splits = 0;
    for (const [i, c] of unit.cases.entries()) {
      await t.step(`${unit.name}/${c.name}`, async () => {
        const split = await checkUnitCase(gpu, unit, c, 1 + 97 * i, {
          small,
          tape: TAPE_FUNCTIONS[unit.name],
        });
        if (split) splits++;
      });
    }
    if (splits === 0) {
      throw new Error(`${unit.name}: no case was split on the ${SMALL_BINDING}-byte context`);
    }
  });
}
