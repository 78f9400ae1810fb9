/**
 * AdamW (PyTorch's `torch.optim.AdamW`, amsgrad off): decoupled weight decay, bias-corrected
 * moments. One kernel per parameter (`shaders/optim.wgsl`); `step` only records dispatches.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { Param } from "../autograd/param.ts";
import { AdamParams, BaseOptimizer, type LrMultipliers, paramLr } from "./sgd.ts";

/** Options of {@link AdamW}. */
export interface AdamWOptions {
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled decay (p *= 1 - lr·wd) for parameters with `decay` set. Default 0.01. */
  weightDecay?: number;
  /** Per-group multipliers (default head 10x). */
  lrMult?: Partial<LrMultipliers>;
}

/**
 * AdamW: p *= 1 - lr·wd; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
 * p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps), t = step count after increment.
 * State: `<param>.exp_avg`, `<param>.exp_avg_sq` and the shared step count.
 */
export class AdamW extends BaseOptimizer {
  /** Decay rate of the first moment m. */
  readonly beta1: number;
  /** Decay rate of the second moment v. */
  readonly beta2: number;
  /** Added to the bias-corrected sqrt(v) in the denominator. */
  readonly eps: number;
  /** Decoupled decay rate, for parameters with `decay` set. */
  readonly weightDecay: number;

  /** An AdamW with `opts` (PyTorch's defaults); throws RangeError on a bad value. */
  constructor(gpu: GpuContext, opts: AdamWOptions = {}) {
    super(gpu, "AdamW", opts.lrMult);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    for (const [k, v] of [["beta1", this.beta1], ["beta2", this.beta2]] as const) {
      if (!(v >= 0 && v < 1)) throw new RangeError(`AdamW: bad ${k} ${v}`);
    }
    if (!(this.eps > 0)) throw new RangeError(`AdamW: bad eps ${this.eps}`);
    if (!(this.weightDecay >= 0)) {
      throw new RangeError(`AdamW: bad weight decay ${this.weightDecay}`);
    }
  }

  /** The moments m and v: `exp_avg`, `exp_avg_sq`. */
  protected slots(): string[] {
    return ["exp_avg", "exp_avg_sq"];
  }

  /** Records one AdamW update of `params` with base learning rate `lr` (no readback). */
  step(params: Param[], lr: number): void {
    this.check(params, lr);
    this.stepCount++;
    const t = this.stepCount;
    const bc1 = 1 - this.beta1 ** t;
    const bc2Sqrt = Math.sqrt(1 - this.beta2 ** t);
    for (const p of params) {
      const v = {
        lr: paramLr(p, lr, this.lrMult),
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        wd: p.decay ? this.weightDecay : 0,
        bc1,
        bc2_sqrt: bc2Sqrt,
      };
      this.update(
        p,
        "adamw",
        (n) => AdamParams.pack({ n, ...v }),
        [this.slot(p, "exp_avg"), this.slot(p, "exp_avg_sq")],
      );
    }
  }
}

/** Settings of one {@link adamwStepRef} update. */
export interface AdamWStepRefOptions {
  /** The step count after this step's increment (1 for the first step). */
  step: number;
  /** This parameter's learning rate (group multipliers applied). */
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled decay of this parameter (0 when it has no decay). */
  weightDecay: number;
}

/**
 * CPU reference of one {@link AdamW} update of a parameter and its moments, in place (f64,
 * PyTorch's single-tensor AdamW): p *= 1 - lr·wd; m += (1-β1)(g - m); v = β2·v + (1-β2)·g²;
 * p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 */
export function adamwStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  o: AdamWStepRefOptions,
): void {
  const bc1 = 1 - o.beta1 ** o.step;
  const bc2 = 1 - o.beta2 ** o.step;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - o.lr * o.weightDecay;
    m[i] += (1 - o.beta1) * (g[i] - m[i]);
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
    p[i] -= (o.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + o.eps);
  }
}
