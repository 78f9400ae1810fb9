/**
 * The optimizer protocol (per-group learning-rate multipliers, state tensors for checkpoints)
 * and SGD with momentum, weight decay and Nesterov (PyTorch's `torch.optim.SGD`, dampening 0).
 * Each update is one kernel per parameter over the parameter, its grad and its state
 * (`shaders/optim.wgsl`), split past the binding limit; `step` only records dispatches.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { Buffer, Param } from "../autograd/param.ts";
import { elementChunks } from "../ops/planes.ts";

/** The uniform blocks of shaders/optim.wgsl (n: elements of the dispatch's range). */
export const { SgdParams, AdamParams } = declareParams("optim", {
  SgdParams: { n: "u32", lr: "f32", momentum: "f32", wd: "f32", nesterov: "u32" },
  AdamParams: {
    n: "u32",
    lr: "f32",
    beta1: "f32",
    beta2: "f32",
    eps: "f32",
    wd: "f32",
    bc1: "f32",
    bc2_sqrt: "f32",
  },
});

/**
 * Learning-rate multipliers: a parameter's lr = base lr · group multiplier, times `bias` for
 * parameters named `*.bias`. psa's PolyOptimizer groups are {backbone: 1, head: 10, bias: 2}
 * (backbone weights 1x, backbone biases 2x, head weights 10x, head biases 20x).
 */
export interface LrMultipliers {
  /** Multiplier of group "backbone". */
  backbone: number;
  /** Multiplier of group "head". */
  head: number;
  /** Extra multiplier of parameters named `*.bias`, either group. */
  bias: number;
}

/** Default multipliers: head (new classifier) 10x, as psa; biases like weights. */
export const DEFAULT_LR_MULT: LrMultipliers = { backbone: 1, head: 10, bias: 1 };

/** psa/SEAM's PolyOptimizer groups: head 10x, biases 2x (head biases 20x). */
export const PSA_LR_MULT: LrMultipliers = { backbone: 1, head: 10, bias: 2 };

/** The learning rate a parameter gets from base rate `lr` under `mult`. */
export function paramLr(p: Param, lr: number, mult: LrMultipliers): number {
  return lr * mult[p.group] * (p.name.endsWith(".bias") ? mult.bias : 1);
}

/** An optimizer: records in-place updates of parameters from their grads. */
export interface Optimizer {
  /** Records one update of every parameter with base learning rate `lr` (no readback). */
  step(params: Param[], lr: number): void;
  /**
   * The state tensors of these parameters (created as zeros when missing), named
   * `<param name>.<slot>` (`momentum_buffer`, `exp_avg`, `exp_avg_sq`), for checkpoints.
   */
  state(params: Param[]): Buffer[];
  /** Restores state tensors (by name, as from `state`) and the step count. */
  loadState(params: Param[], values: Record<string, ArrayLike<number>>, stepCount: number): void;
  /** Updates recorded so far (AdamW's bias correction uses it). */
  stepCount: number;
  /** Frees the state tensors. */
  dispose(): void;
}

/** Shared machinery: lr multipliers, lazily created zero state, save/restore. */
export abstract class BaseOptimizer implements Optimizer {
  stepCount = 0;
  /** The multipliers in use: {@link DEFAULT_LR_MULT} overridden by the options. */
  readonly lrMult: LrMultipliers;
  readonly #state = new Map<string, Tensor>();

  /** Merges `lrMult` over the defaults and checks them; `name` labels errors. */
  constructor(readonly gpu: GpuContext, readonly name: string, lrMult?: Partial<LrMultipliers>) {
    this.lrMult = { ...DEFAULT_LR_MULT, ...lrMult };
    for (const [k, v] of Object.entries(this.lrMult)) {
      if (!(Number.isFinite(v) && v >= 0)) {
        throw new RangeError(`${name}: bad lr multiplier ${k}=${v}`);
      }
    }
  }

  /** State slot names per parameter (e.g. ["momentum_buffer"]). */
  protected abstract slots(): string[];

  abstract step(params: Param[], lr: number): void;

  /** The state tensor `slot` of `p`, created as zeros on first use. */
  protected slot(p: Param, slot: string): Tensor {
    const key = `${p.name}.${slot}`;
    let t = this.#state.get(key);
    if (!t) {
      t = Tensor.zeros(this.gpu, p.value.shape, key);
      this.#state.set(key, t);
    }
    return t;
  }

  /** Validates a step's inputs. */
  protected check(params: Param[], lr: number): void {
    if (!(Number.isFinite(lr) && lr >= 0)) throw new RangeError(`${this.name}: bad lr ${lr}`);
    const seen = new Set<string>();
    for (const p of params) {
      if (seen.has(p.name)) throw new RangeError(`${this.name}: parameter ${p.name} given twice`);
      seen.add(p.name);
      if (p.grad.size !== p.value.size) {
        throw new RangeError(
          `${this.name}: ${p.name} grad [${p.grad.shape}] differs from value [${p.value.shape}]`,
        );
      }
    }
  }

  /**
   * Records the `entry` kernel of optim.wgsl over `p` (grad as input; value and the state
   * tensors as outputs, `null` binding a dummy), split into binding-sized ranges; `params(n)`
   * packs the uniform block of a range of n elements.
   */
  protected update(
    p: Param,
    entry: string,
    params: (n: number) => ArrayLike<number>,
    state: (Tensor | null)[],
  ): void {
    for (const { start, count } of elementChunks(this.gpu, p.value.size)) {
      this.gpu.dispatch1d({
        name: `${entry}(${p.name})`,
        shader: "optim",
        entry,
        inputs: [p.grad.slice(start, count)],
        outputs: [
          p.value.slice(start, count),
          ...state.map((t) => t?.slice(start, count) ?? this.gpu.dummy),
        ],
        params: params(count),
      }, count);
    }
  }

  state(params: Param[]): Buffer[] {
    return params.flatMap((p) =>
      this.slots().map((s) => ({ name: `${p.name}.${s}`, value: this.slot(p, s) }))
    );
  }

  loadState(params: Param[], values: Record<string, ArrayLike<number>>, stepCount: number): void {
    if (!(Number.isInteger(stepCount) && stepCount >= 0)) {
      throw new RangeError(`${this.name}: bad step count ${stepCount}`);
    }
    const entries = this.state(params);
    for (const { name, value } of entries) {
      const v = values[name];
      if (v === undefined) throw new RangeError(`${this.name}: missing optimizer state ${name}`);
      if (v.length !== value.size) {
        throw new RangeError(
          `${this.name}: optimizer state ${name} has ${v.length} values, expected ${value.size}`,
        );
      }
    }
    for (const { name, value } of entries) {
      const v = values[name];
      value.write(v instanceof Float32Array ? v : Float32Array.from(v));
    }
    this.stepCount = stepCount;
  }

  dispose(): void {
    for (const t of this.#state.values()) t.dispose();
    this.#state.clear();
  }
}

/** Options of {@link SGD}. */
export interface SgdOptions {
  /** Default 0.9. */
  momentum?: number;
  /** L2 weight decay added to the gradient of parameters with `decay` set. Default 0. */
  weightDecay?: number;
  /** Default false. */
  nesterov?: boolean;
  /** Per-group multipliers (default {@link DEFAULT_LR_MULT}). */
  lrMult?: Partial<LrMultipliers>;
}

/**
 * SGD as PyTorch (dampening 0): g = grad + wd·p; buf = μ·buf + g; p -= lr·(nesterov ?
 * g + μ·buf : buf). State: `<param>.momentum_buffer` (none when μ = 0).
 */
export class SGD extends BaseOptimizer {
  /** Momentum μ (0: plain SGD, no state). */
  readonly momentum: number;
  /** L2 weight decay, for parameters with `decay` set. */
  readonly weightDecay: number;
  /** Whether the update uses Nesterov momentum. */
  readonly nesterov: boolean;

  /** An SGD with `opts` (momentum 0.9 by default); throws RangeError on a bad value. */
  constructor(gpu: GpuContext, opts: SgdOptions = {}) {
    super(gpu, "SGD", opts.lrMult);
    this.momentum = opts.momentum ?? 0.9;
    this.weightDecay = opts.weightDecay ?? 0;
    this.nesterov = opts.nesterov ?? false;
    if (!(this.momentum >= 0 && this.momentum < 1)) {
      throw new RangeError(`SGD: bad momentum ${this.momentum}`);
    }
    if (!(this.weightDecay >= 0)) throw new RangeError(`SGD: bad weight decay ${this.weightDecay}`);
    if (this.nesterov && this.momentum === 0) {
      throw new RangeError("SGD: Nesterov momentum requires a momentum");
    }
  }

  /** `momentum_buffer`, or none when μ = 0. */
  protected slots(): string[] {
    return this.momentum !== 0 ? ["momentum_buffer"] : [];
  }

  /** Records one SGD update of `params` with base learning rate `lr` (no readback). */
  step(params: Param[], lr: number): void {
    this.check(params, lr);
    this.stepCount++;
    for (const p of params) {
      const buf = this.momentum !== 0 ? this.slot(p, "momentum_buffer") : null;
      const v = {
        lr: paramLr(p, lr, this.lrMult),
        momentum: this.momentum,
        wd: p.decay ? this.weightDecay : 0,
        nesterov: this.nesterov ? 1 : 0,
      };
      this.update(p, "sgd", (n) => SgdParams.pack({ n, ...v }), [buf]);
    }
  }
}

/** Settings of one {@link sgdStepRef} update. */
export interface SgdStepRefOptions {
  /** This parameter's learning rate (group multipliers applied). */
  lr: number;
  momentum: number;
  /** L2 decay of this parameter (0 when it has no decay). */
  weightDecay: number;
  nesterov: boolean;
  /** The first step (the momentum buffer starts as the gradient). */
  first: boolean;
}

/**
 * CPU reference of one {@link SGD} update of a parameter, in place (f64, PyTorch's formulas,
 * dampening 0): g' = g + wd·p; buf = g' on the first step, then μ·buf + g'; p -= lr·(nesterov
 * ? g' + μ·buf : buf). `buf` may be null when μ = 0.
 */
export function sgdStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  buf: Float64Array | null,
  o: SgdStepRefOptions,
): void {
  const mu = o.momentum;
  for (let i = 0; i < p.length; i++) {
    let d = g[i] + o.weightDecay * p[i];
    if (mu !== 0) {
      buf![i] = o.first ? d : mu * buf![i] + d;
      d = o.nesterov ? d + mu * buf![i] : buf![i];
    }
    p[i] -= o.lr * d;
  }
}
