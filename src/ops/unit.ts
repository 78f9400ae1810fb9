/**
 * Ops as units: an {@link OpUnit} bundles what one op family needs to be tested and
 * benchmarked in one generic way: small test cases and benchmark shapes, a deterministic
 * input generator, the GPU forward and backward (run on host inputs, returning host outputs
 * and input gradients), the f64 CPU references of both, which inputs are differentiable,
 * tolerances, and the work per case (FLOPs, bytes) for the benchmark. Each op family file
 * exports its unit(s) (built with {@link defineOpUnit}); `./registry.ts` lists them all.
 *
 * Inputs, outputs and gradients are keyed by name (`x`, `weight`, ...). The backward of a
 * unit is the vector-Jacobian product of its forward: given upstream gradients `dy` of the
 * outputs named in {@link OpUnit.gradOutputs}, it returns the gradients of the inputs named
 * in {@link OpUnit.differentiable} (those present in the case), i.e. the gradient of
 * `Σ_o <dy_o, forward(x)_o>`.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { Rng } from "../rng.ts";

/** Host values by name. */
export type HostValues = Record<string, Float32Array>;
/** f64 (or any numeric) values by name, as the references take them. */
export type RefValues = Record<string, ArrayLike<number>>;
/** f64 results of a reference by name. */
export type RefResult = Record<string, Float64Array>;

/** One test case or benchmark shape of a unit. */
export interface OpCase<P> {
  /** Label, e.g. `3x5x13x17 s2 p1`. */
  name: string;
  /** The op's parameters (shapes, options). */
  params: P;
  /**
   * Whether the generic test also runs this case on a context with a small binding cap
   * (default true; false for cases whose single planes do not fit it).
   */
  split?: boolean;
}

/**
 * A comparison tolerance: `|got - want| <= atol + rtol·|want| + maxRel·max|want|` elementwise
 * (each term defaults to 0; an empty object means exact equality).
 */
export interface Tolerance {
  /** Relative to each reference value. */
  rtol?: number;
  /** Absolute. */
  atol?: number;
  /** Relative to the reference's largest magnitude. */
  maxRel?: number;
}

/** Tolerances of a unit's GPU results against its f64 references. */
export interface UnitTolerance {
  /** GPU forward outputs vs the reference forward. */
  forward: Tolerance;
  /** Per-output overrides of `forward`. */
  outputs?: Record<string, Tolerance>;
  /** GPU input gradients vs the reference backward. */
  backward: Tolerance;
  /**
   * Finite-difference check: `|<g, v> - fd| <= fd·Σ|g_ref,i·v_i| + 1e-9` for the GPU gradient
   * g along a random direction v (default 1e-5).
   */
  fd?: number;
  /** Step of the central differences (default 1e-6). */
  fdEps?: number;
}

/** Work of one call, for the benchmark's rates. */
export interface OpCost {
  /** Floating-point operations (multiply-add = 2). */
  flops: number;
  /** Bytes read and written (f32 inputs and outputs, each once). */
  bytes: number;
}

/** Device inputs of a recorded op, with their host copies (for host-side metadata). */
export interface DeviceArgs {
  /** The device tensors by input name. */
  tensors: Record<string, Tensor>;
  /** Their host values, by the same names. */
  host: HostValues;
}

/** A GPU implementation at tensor level: records dispatches, returns new tensors by name. */
export interface RecordedOp<P> {
  /** Label of this implementation in benchmark tables (e.g. "naive kernel"). */
  name: string;
  /** Records the forward; returns its outputs (owned by the caller). */
  forward(gpu: GpuContext, p: P, x: DeviceArgs): Record<string, Tensor>;
  /**
   * Records the backward (and whatever forward work it needs) for upstream gradients `dy`
   * (device and host copies); returns the gradients of the differentiable inputs.
   */
  backward?(gpu: GpuContext, p: P, x: DeviceArgs, dy: DeviceArgs): Record<string, Tensor>;
}

/** One op family as a unit: see the module doc. */
export interface OpUnit<P = unknown> {
  /** Registry name, e.g. `conv2d` (the bench's `--op` value). */
  readonly name: string;
  /** One line: what the op computes. */
  readonly description: string;
  /** Benchmark rate: GFLOP/s for compute-bound ops, GB/s for memory-bound ones. */
  readonly bound: "compute" | "memory";
  /** Input names in order (a case may omit optional ones, e.g. a conv without bias). */
  readonly inputs: readonly string[];
  /** Output names in order. */
  readonly outputs: readonly string[];
  /** Inputs that receive gradients (empty: forward only). */
  readonly differentiable: readonly string[];
  /** Outputs that take an upstream gradient (the rest, e.g. indices or counts, do not). */
  readonly gradOutputs: readonly string[];
  /** Small test cases (the generic test runs every one). */
  readonly cases: readonly OpCase<P>[];
  /** Benchmark cases. */
  readonly benchShapes: readonly OpCase<P>[];
  /** How close the GPU results must be to the references. */
  readonly tolerance: UnitTolerance;
  /** Shapes of a case's inputs by name (absent optional inputs are left out). */
  inputShapes(p: P): Record<string, number[]>;
  /** Shapes of a case's outputs by name (the GPU forward's tensors are checked against them). */
  outputShapes(p: P): Record<string, number[]>;
  /** Deterministic inputs of a case. */
  makeInputs(p: P, seed: number): HostValues;
  /**
   * Throws when generated inputs are unfit for the generic test (e.g. too close to a
   * decision threshold for finite differences); the test calls it on every case.
   */
  validateInputs?(p: P, x: HostValues): void;
  /** Runs the GPU forward on host inputs; returns host outputs by name. */
  gpuForward(gpu: GpuContext, p: P, x: HostValues): Promise<HostValues>;
  /**
   * Runs the GPU backward for upstream gradients `dy` (one per {@link gradOutputs} name);
   * returns the gradients of the differentiable inputs present. Absent for forward-only ops.
   */
  gpuBackward?(gpu: GpuContext, p: P, x: HostValues, dy: HostValues): Promise<HostValues>;
  /** f64 reference forward. */
  refForward(p: P, x: RefValues): RefResult;
  /** f64 reference backward (same contract as {@link gpuBackward}). */
  refBackward?(p: P, x: RefValues, dy: RefValues): RefResult;
  /** Work of the forward and, where there is one, of the backward (for the benchmark). */
  cost(p: P): { forward: OpCost; backward?: OpCost };
  /** The GPU implementation at tensor level (the benchmark times it). */
  readonly gpu: RecordedOp<P>;
  /** The naive reference kernel where one exists (the benchmark's reference). */
  readonly naive?: RecordedOp<P>;
}

/** What {@link defineOpUnit} needs: an {@link OpUnit} without the host-level GPU wrappers. */
export type OpUnitSpec<P> = Omit<OpUnit<P>, "gpuForward" | "gpuBackward" | "gradOutputs"> & {
  /** Default: every output. */
  gradOutputs?: readonly string[];
  /** Outputs whose buffers hold u32 values (read back as numbers). */
  u32Outputs?: readonly string[];
};

/** Uploads host values as tensors of the given shapes. */
export function uploadArgs(
  gpu: GpuContext,
  values: HostValues,
  shapes: Record<string, readonly number[]>,
): DeviceArgs {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(values)) {
    const shape = shapes[k];
    if (!shape) throw new RangeError(`unit: no shape for "${k}"`);
    tensors[k] = Tensor.fromArray(gpu, v, shape);
  }
  return { tensors, host: values };
}

/** Disposes every tensor of one or more records (each tensor once). */
export function disposeAll(...records: Record<string, Tensor>[]): void {
  const seen = new Set<Tensor>();
  for (const r of records) {
    for (const t of Object.values(r)) {
      if (!seen.has(t)) t.dispose();
      seen.add(t);
    }
  }
}

async function readAll(
  gpu: GpuContext,
  out: Record<string, Tensor>,
  u32: readonly string[] = [],
): Promise<HostValues> {
  const names = Object.keys(out);
  const bufs = await gpu.readRanges(
    names.map((k) => ({ buffer: out[k].buffer, offset: 0, size: out[k].bytes })),
  );
  const res: HostValues = {};
  names.forEach((k, i) => {
    res[k] = u32.includes(k)
      ? Float32Array.from(new Uint32Array(bufs[i]))
      : new Float32Array(bufs[i]);
  });
  return res;
}

/**
 * Builds an {@link OpUnit} from its tensor-level GPU implementation: `gpuForward` and
 * `gpuBackward` upload the host inputs, record the op, read the results back with one await
 * and release every tensor.
 */
export function defineOpUnit<P>(spec: OpUnitSpec<P>): OpUnit<P> {
  const { u32Outputs, ...rest } = spec;
  const unit: OpUnit<P> = {
    ...rest,
    gradOutputs: spec.gradOutputs ?? spec.outputs,
    async gpuForward(gpu, p, x) {
      const args = uploadArgs(gpu, x, spec.inputShapes(p));
      const out = spec.gpu.forward(gpu, p, args);
      try {
        const want = spec.outputShapes(p);
        for (const [k, t] of Object.entries(out)) {
          if (want[k] && t.shape.join(",") !== want[k].join(",")) {
            throw new RangeError(
              `${spec.name}: output ${k} is [${t.shape}], expected [${want[k]}]`,
            );
          }
        }
        return await readAll(gpu, out, u32Outputs);
      } finally {
        disposeAll(args.tensors, out);
      }
    },
  };
  const backward = spec.gpu.backward;
  if (backward) {
    unit.gpuBackward = async (gpu, p, x, dy) => {
      const args = uploadArgs(gpu, x, spec.inputShapes(p));
      const dShapes: Record<string, number[]> = {};
      for (const k of Object.keys(dy)) dShapes[k] = [dy[k].length];
      const dargs = uploadArgs(gpu, dy, dShapes);
      const grads = backward(gpu, p, args, dargs);
      try {
        return await readAll(gpu, grads);
      } finally {
        disposeAll(args.tensors, dargs.tensors, grads);
      }
    };
  }
  return unit;
}

/**
 * A case of a unit whose parameters are an NCHW shape and an options object, named
 * `NxCxHxW {options as JSON}`.
 */
export function shapeOptsCase<O>(
  shape: [number, number, number, number],
  opts: O,
  split = true,
): OpCase<{ shape: readonly [number, number, number, number]; opts: O }> {
  return { name: `${shape.join("x")} ${JSON.stringify(opts)}`, params: { shape, opts }, split };
}

/** Seeded uniform values in [lo, hi) (f32). */
export function uniformValues(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.uniform(lo, hi);
  return out;
}

/** Number of elements of a shape. */
export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** f32 bytes of the given shapes (the benchmark's byte counts). */
export function bytesOf(...shapes: (readonly number[])[]): number {
  return 4 * shapes.reduce((a, s) => a + sizeOf(s), 0);
}

/** An upstream-gradient tensor reshaped like `like` (gradients arrive flat). */
export function asShape(t: Tensor, like: readonly number[]): Tensor {
  return t.shape.length === like.length && t.shape.every((d, i) => d === like[i])
    ? t
    : t.reshape(like);
}

/**
 * A unit with its parameter type erased, for lists of units: its functions are only ever
 * called with the parameters of its own cases, which keeps this sound.
 */
export type AnyOpUnit = OpUnit<unknown>;

/** Erases a unit's parameter type (see {@link AnyOpUnit}). */
export function eraseUnit<P>(unit: OpUnit<P>): AnyOpUnit {
  return unit as unknown as AnyOpUnit;
}
