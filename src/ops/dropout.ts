/**
 * Dropout (PyTorch's `F.dropout`, inverted scaling): `y = x·m/(1-p)` with a keep mask `m`
 * computed in the shader from a hash of (seed, element index), so no mask is stored and the
 * backward recomputes it: dropout is linear in x, so `dx = dropout(dy)` with the same seed.
 * Element i is kept when `hash32(i ^ hash32(seed)) >= floor(p·2^32)` ({@link dropoutKeep};
 * hash32 is Chris Wellons' lowbias32, the same integer steps in WGSL and TypeScript), so the
 * mask is the same whatever the chunking and the f64 reference reproduces it exactly.
 * Kernel: `shaders/dropout.wgsl`.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { elementChunks } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import { defineOpUnit, type OpCase, type OpUnit, uniformValues } from "./unit.ts";

/** The uniform block of shaders/dropout.wgsl. */
const { DropoutParams } = declareParams("dropout", {
  DropoutParams: { n: "u32", start: "u32", seed: "u32", threshold: "u32", scale: "f32" },
});

/** Chris Wellons' lowbias32 integer hash (u32 → u32), as `lowbias32` in the shader. */
export function hash32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** Options of {@link dropout}. */
export interface DropoutOptions {
  /** Drop probability in [0, 1). */
  p: number;
  /** Seed of the mask (a u32; a new one per step and per layer). */
  seed: number;
}

function checkOptions(op: string, o: DropoutOptions): void {
  if (!(Number.isFinite(o.p) && o.p >= 0 && o.p < 1)) {
    throw new RangeError(`${op}: drop probability must be in [0, 1), got ${o.p}`);
  }
  if (!(Number.isInteger(o.seed) && o.seed >= 0 && o.seed <= 0xffffffff)) {
    throw new RangeError(`${op}: seed must be a u32, got ${o.seed}`);
  }
}

/** The keep threshold on the hash: floor(p·2^32). */
function threshold(p: number): number {
  return Math.min(Math.floor(p * 2 ** 32), 0xffffffff);
}

/** Whether element `i` is kept under `seed` at drop probability `p` (the shader's test). */
export function dropoutKeep(seed: number, i: number, p: number): boolean {
  return hash32((i ^ hash32(seed)) >>> 0) >= threshold(p);
}

/**
 * A per-layer seed from a step's seed: hash32 of `seed` mixed with the layer index `k`, so two
 * dropout layers of one forward never share a mask.
 */
export function dropoutSeed(seed: number, k: number): number {
  return hash32((hash32(seed >>> 0) + Math.imul(k + 1, 0x9e3779b9)) >>> 0);
}

/** Records y = x·m/(1-p) (see the module doc); any shape, split past the binding limit. */
export function dropout(gpu: GpuContext, x: Tensor, opts: DropoutOptions): Tensor {
  const op = "dropout";
  checkOptions(op, opts);
  if (x.size >= 2 ** 32) throw new RangeError(`${op}: ${x.size} elements exceed 2^32`);
  const y = Tensor.empty(gpu, x.shape);
  const scale = 1 / (1 - opts.p);
  for (const { start, count } of elementChunks(gpu, x.size)) {
    gpu.dispatch1d({
      name: op,
      shader: "dropout",
      entry: "apply",
      inputs: [x.slice(start, count)],
      outputs: [y.slice(start, count)],
      params: DropoutParams.pack({
        n: count,
        start,
        seed: opts.seed,
        threshold: threshold(opts.p),
        scale,
      }),
    }, count);
  }
  return y;
}

/** CPU reference of {@link dropout} (f64), the same mask; also its backward applied to dy. */
export function dropoutRef(x: ArrayLike<number>, opts: DropoutOptions): Float64Array {
  checkOptions("dropoutRef", opts);
  const scale = 1 / (1 - opts.p);
  return Float64Array.from(
    { length: x.length },
    (_, i) => (dropoutKeep(opts.seed, i, opts.p) ? x[i] * scale : 0),
  );
}

/** Parameters of a {@link dropoutUnit} case. */
export interface DropoutCase {
  n: number;
  p: number;
  seed: number;
}

const dCase = (n: number, p: number, seed: number): OpCase<DropoutCase> => ({
  name: `n${n} p${p} seed ${seed}`,
  params: { n, p, seed },
});

/** Dropout as an op unit (1037 elements split into several chunks on the small context). */
export const dropoutUnit: OpUnit<DropoutCase> = defineOpUnit<DropoutCase>({
  name: "dropout",
  description: "dropout y = x·m/(1-p), mask from a hash of (seed, index)",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [dCase(1037, 0.5, 7), dCase(1037, 0.1, 0xfffffff0), dCase(300, 0, 3), dCase(1, 0.5, 1)],
  benchShapes: [dCase(1 << 22, 0.5, 1)],
  tolerance: { forward: { rtol: 1e-6 }, backward: { rtol: 1e-6 } },
  inputShapes: (p) => ({ x: [p.n] }),
  outputShapes: (p) => ({ y: [p.n] }),
  makeInputs: (p, seed) => ({ x: uniformValues(p.n, seed, -2, 2) }),
  refForward: (p, x) => ({ y: dropoutRef(x.x, p) }),
  refBackward: (p, _x, d) => ({ x: dropoutRef(d.y, p) }),
  cost: (p) => ({
    forward: { flops: p.n, bytes: 8 * p.n },
    backward: { flops: p.n, bytes: 8 * p.n },
  }),
  gpu: {
    name: "hash-mask kernel",
    forward: (gpu, p, { tensors: t }) => ({ y: dropout(gpu, t.x, p) }),
    backward: (gpu, p, _x, { tensors: d }) => ({ x: dropout(gpu, d.y, p) }),
  },
});
