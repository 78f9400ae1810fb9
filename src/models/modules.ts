/**
 * Modules: objects that own parameters (torchvision / timm names, learning-rate groups) and
 * write only their forward pass. Each forward takes the step's {@link Tape} (null for inference);
 * the differentiable ops of src/autograd/functions.ts record the backward on it, so no
 * module has a backward method.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { Rng } from "../rng.ts";
import type { Buffer, Param } from "../autograd/param.ts";
import type { Tape } from "../autograd/tape.ts";
import * as F from "../autograd/functions.ts";
import { type Conv2dOptions, convPair, type Pair } from "../ops/conv.ts";
import type { BatchNormTensors } from "../ops/batchnorm.ts";
import { type MaxPoolOptions, poolGeometry } from "../ops/pool.ts";
import { checkResizeOptions, type ResizeOptions } from "../ops/resize.ts";

/** A module: forward on a tape, its parameters and its non-trainable state. */
export interface Module {
  /** y = f(x); records on `tape` when given (training), else inference. */
  forward(x: Tensor, tape: Tape | null): Tensor;
  /** Trainable parameters. */
  params(): Param[];
  /** Non-trainable state saved in checkpoints (e.g. batchnorm running statistics). */
  buffers?(): Buffer[];
}

/** Constructor options of {@link Conv2d} (PyTorch's Conv2d arguments, groups = 1). */
export interface Conv2dLayerOptions {
  /** Name prefix of the parameters, e.g. `layer1.0.conv1` → `layer1.0.conv1.weight`. */
  name: string;
  /** Input channels. */
  inChannels: number;
  /** Output channels. */
  outChannels: number;
  /** Kernel size. */
  kernel: Pair;
  /** Default 1. */
  stride?: Pair;
  /** Zero padding per side, default 0. */
  padding?: Pair;
  /** Default 1. */
  dilation?: Pair;
  /** Whether the layer has a bias (default false, as in torchvision's ResNet convs). */
  bias?: boolean;
  /** Learning-rate group (default `backbone`). */
  group?: "backbone" | "head";
}

/** A parameter holding `value`, with a zero gradient buffer (for modules and models). */
export function param(
  gpu: GpuContext,
  name: string,
  value: Float32Array,
  shape: number[],
  group: Param["group"],
  decay: boolean,
): Param {
  return {
    name,
    value: Tensor.fromArray(gpu, value, shape),
    grad: Tensor.zeros(gpu, shape),
    group,
    decay,
  };
}

/**
 * A 2-D convolution. Weights are Kaiming-normal initialised (fan_out, ReLU gain: std
 * sqrt(2 / (O·KH·KW)), as torchvision's ResNet); a bias, if any, is uniform in ±1/sqrt(fan_in)
 * (PyTorch's default). Weight decay applies to the weight, not to the bias.
 */
export class Conv2d implements Module {
  /** `<name>.weight`, [O, I, KH, KW]. */
  readonly weight: Param;
  /** `<name>.bias`, [O], or null. */
  readonly bias: Param | null;
  /** Geometry passed to the ops. */
  readonly geometry: Conv2dOptions;

  /** Creates and initialises the parameters from `rng`. */
  constructor(readonly gpu: GpuContext, readonly options: Conv2dLayerOptions, rng: Rng) {
    const { inChannels: ci, outChannels: co, name } = options;
    const [kh, kw] = convPair(options.kernel, 1, "kernel");
    for (const [k, v] of [["inChannels", ci], ["outChannels", co]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`Conv2d ${name}: bad ${k} ${v}`);
    }
    this.geometry = {
      stride: convPair(options.stride, 1, "stride"),
      padding: convPair(options.padding, 0, "padding"),
      dilation: convPair(options.dilation, 1, "dilation"),
    };
    const group = options.group ?? "backbone";
    const std = Math.sqrt(2 / (co * kh * kw));
    this.weight = param(
      gpu,
      `${name}.weight`,
      rng.normals(co * ci * kh * kw, std),
      [co, ci, kh, kw],
      group,
      true,
    );
    if (options.bias) {
      const bound = 1 / Math.sqrt(ci * kh * kw);
      const b = new Float32Array(co);
      for (let i = 0; i < co; i++) b[i] = rng.uniform(-bound, bound);
      this.bias = param(gpu, `${name}.bias`, b, [co], group, false);
    } else this.bias = null;
  }

  /** y = conv(x) (+ bias). */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.conv2d(tape, x, this.weight.value, this.bias?.value ?? null, this.geometry);
  }

  /** The weight, then the bias if any. */
  params(): Param[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
}

/** Options of {@link BatchNorm2d}. */
export interface BatchNorm2dOptions {
  /** Default 1e-5. */
  eps?: number;
  /** Default 0.1. */
  momentum?: number;
  /** Use running statistics even when training (psa's frozen BN). Default false. */
  frozen?: boolean;
  /** Whether weight/bias are trained. Default true. */
  affineTrainable?: boolean;
  /** Learning-rate group of weight/bias. Default "backbone". */
  group?: "backbone" | "head";
  /** Whether weight decay applies to weight/bias. Default false. */
  decay?: boolean;
  /**
   * Apply the ReLU that follows in the batchnorm's own kernels, forward and backward (a
   * `BatchNorm2d` then `ReLU` pair at the cost of the batchnorm alone; see
   * {@link F.batchNorm2d}). No parameter or checkpoint name changes. Default false.
   */
  relu?: boolean;
}

/**
 * `BatchNorm2d`. Names: `<prefix>.weight`, `<prefix>.bias` (params, or buffers when
 * `affineTrainable` is false), `<prefix>.running_mean`, `<prefix>.running_var` (buffers).
 * Initialised as PyTorch: weight 1, bias 0, running mean 0, running var 1.
 *
 * With a tape and not `frozen`: batch statistics and a running-stat update (PyTorch's train
 * mode); with a tape and `frozen`: running statistics, gradients flow to x (and to weight/bias
 * when they are trainable); without a tape: running statistics (eval mode). With `relu`, every
 * mode returns relu(batchnorm(x)) from the same kernels (the backbones' BN + ReLU pairs).
 */
export class BatchNorm2d implements Module {
  /** `<prefix>.weight` (gamma), [C]. */
  readonly weight: Param;
  /** `<prefix>.bias` (beta), [C]. */
  readonly bias: Param;
  /** `<prefix>.running_mean`, [C]. */
  readonly runningMean: Buffer;
  /** `<prefix>.running_var`, [C]. */
  readonly runningVar: Buffer;
  /** Added to the variance before the square root. */
  eps: number;
  /** Running-stat momentum (PyTorch convention: new = (1-m)·old + m·batch). */
  momentum: number;
  /** Use running statistics even with a tape (see the class doc). */
  frozen: boolean;
  /** Whether weight/bias are params (trained) rather than buffers. */
  affineTrainable: boolean;
  /** Whether the output is relu(batchnorm(x)) (the fused ReLU). */
  relu: boolean;

  /** Creates the `channels` per-channel tensors named `<prefix>.*`, initialised as PyTorch. */
  constructor(
    readonly gpu: GpuContext,
    readonly channels: number,
    readonly prefix: string,
    opts: BatchNorm2dOptions = {},
  ) {
    if (!Number.isInteger(channels) || channels < 1) {
      throw new RangeError(`BatchNorm2d ${prefix}: bad channel count ${channels}`);
    }
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    this.frozen = opts.frozen ?? false;
    this.affineTrainable = opts.affineTrainable ?? true;
    this.relu = opts.relu ?? false;
    const full = (v: number) => new Float32Array(channels).fill(v);
    const p = (name: string, v: number) =>
      param(
        gpu,
        `${prefix}.${name}`,
        full(v),
        [channels],
        opts.group ?? "backbone",
        opts.decay ?? false,
      );
    this.weight = p("weight", 1);
    this.bias = p("bias", 0);
    this.runningMean = {
      name: `${prefix}.running_mean`,
      value: Tensor.fromArray(gpu, full(0), [channels]),
    };
    this.runningVar = {
      name: `${prefix}.running_var`,
      value: Tensor.fromArray(gpu, full(1), [channels]),
    };
  }

  /** The tensors the batchnorm ops take. */
  tensors(): BatchNormTensors {
    return {
      weight: this.weight.value,
      bias: this.bias.value,
      runningMean: this.runningMean.value,
      runningVar: this.runningVar.value,
    };
  }

  /** Normalises `x` ([N, C, H, W]), then the ReLU if fused; see the class doc for the modes. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.batchNorm2d(tape, x, this.tensors(), {
      training: tape !== null && !this.frozen,
      eps: this.eps,
      momentum: this.momentum,
      relu: this.relu,
    });
  }

  /** weight and bias when trainable, else none. */
  params(): Param[] {
    return this.affineTrainable ? [this.weight, this.bias] : [];
  }

  /** Running stats, plus weight and bias when they are frozen (so checkpoints keep them). */
  buffers(): Buffer[] {
    const b: Buffer[] = [this.runningMean, this.runningVar];
    if (!this.affineTrainable) {
      b.unshift({ name: this.weight.name, value: this.weight.value }, {
        name: this.bias.name,
        value: this.bias.value,
      });
    }
    return b;
  }
}

/** Options of the activation modules. */
export interface ActivationOptions {
  /**
   * Write the result over the input. The returned tensor is then the input itself with one
   * more reference (dispose both as usual). Only safe when no recorded op saved that input
   * (true after a batchnorm without the fused ReLU, which saves its own input, not its
   * output; with `relu` it saves its output for the mask).
   */
  inplace?: boolean;
}

/** A pointwise activation module (ReLU or ELU); see {@link F.activation}. */
export class Activation implements Module {
  /** Whether the forward writes over its input. */
  readonly inplace: boolean;

  /** An activation applying `fn`. */
  constructor(readonly fn: F.ActivationName, opts: ActivationOptions = {}) {
    this.inplace = opts.inplace ?? false;
  }

  /** Applies the activation (in place when configured). */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.activation(tape, this.fn, x, this.inplace);
  }

  /** No parameters. */
  params(): Param[] {
    return [];
  }
}

/** `ReLU`: y = max(x, 0). */
export class ReLU extends Activation {
  /** A ReLU module (in place with `opts.inplace`). */
  constructor(opts: ActivationOptions = {}) {
    super("relu", opts);
  }
}

/** `ELU` (alpha 1, psa's AffinityNet heads). */
export class ELU extends Activation {
  /** An ELU module (in place with `opts.inplace`). */
  constructor(opts: ActivationOptions = {}) {
    super("elu", opts);
  }
}

/** `MaxPool2d` (default 3x3, stride 2, padding 1: the ResNet stem pool). */
export class MaxPool2d implements Module {
  /** A max pool with the geometry `opts`; throws RangeError on a bad one. */
  constructor(readonly opts: MaxPoolOptions = {}) {
    poolGeometry("MaxPool2d", opts);
  }

  /** Pools. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.maxPool2d(tape, x, this.opts);
  }

  /** No parameters. */
  params(): Param[] {
    return [];
  }
}

/** A bilinear resize as a module (e.g. upsampling class maps). */
export class BilinearResize implements Module {
  /** A resize with `opts`; throws on bad options. */
  constructor(readonly opts: ResizeOptions) {
    checkResizeOptions(opts);
  }

  /** Resizes. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.resizeBilinear(tape, x, this.opts);
  }

  /** No parameters. */
  params(): Param[] {
    return [];
  }
}

/** Runs modules in order. */
export class Sequential implements Module {
  /** Runs `layers` in order. */
  constructor(readonly layers: Module[]) {}

  /** The layers' forwards in order (intermediate results are released as they are used). */
  forward(x: Tensor, tape: Tape | null): Tensor {
    let h = x;
    for (const l of this.layers) {
      const y = l.forward(h, tape);
      if (h !== x) h.dispose();
      h = y;
    }
    return h === x ? h.retain() : h;
  }

  /** Every layer's parameters, in order. */
  params(): Param[] {
    return this.layers.flatMap((l) => l.params());
  }

  /** Every layer's buffers, in order. */
  buffers(): Buffer[] {
    return this.layers.flatMap((l) => l.buffers?.() ?? []);
  }
}

/**
 * `count` samples of a normal distribution N(0, std²) truncated to [lo, hi] (rejected and
 * drawn again), as timm's `trunc_normal_(t, std, a=-2, b=2)`: its bounds are absolute, so at
 * std 0.02 (ViT weights, position embeddings, class tokens) they are a hundred standard
 * deviations out and the samples are plain normals.
 */
export function truncNormals(rng: Rng, count: number, std: number, lo = -2, hi = 2): Float32Array {
  if (!(lo < 0 && hi > 0 && std > 0)) {
    throw new RangeError(`truncNormals: bad range [${lo}, ${hi}] or std ${std}`);
  }
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let v: number;
    do v = rng.normal() * std; while (v < lo || v > hi);
    out[i] = v;
  }
  return out;
}

/** Options of {@link Linear}. */
export interface LinearOptions {
  /** Name prefix of the parameters, e.g. `blocks.0.attn.qkv` → `blocks.0.attn.qkv.weight`. */
  name: string;
  /** Input features K. */
  inFeatures: number;
  /** Output features N. */
  outFeatures: number;
  /** Whether the layer has a bias (default true). */
  bias?: boolean;
  /** Learning-rate group (default `backbone`). */
  group?: "backbone" | "head";
}

/**
 * `nn.Linear` over the last dim, y [..., N] = x [..., K]·Wᵀ + b, initialised as timm's ViT
 * (`_init_weights`): weight truncated normal with std 0.02, bias 0. Weight decay applies to the
 * weight, not to the bias (timm's optimizer groups).
 */
export class Linear implements Module {
  /** `<name>.weight`, [N, K]. */
  readonly weight: Param;
  /** `<name>.bias`, [N], or null. */
  readonly bias: Param | null;

  /** Creates and initialises the parameters from `rng`. */
  constructor(readonly gpu: GpuContext, readonly options: LinearOptions, rng: Rng) {
    const { inFeatures: k, outFeatures: n, name } = options;
    for (const [what, v] of [["inFeatures", k], ["outFeatures", n]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`Linear ${name}: bad ${what} ${v}`);
    }
    const group = options.group ?? "backbone";
    this.weight = param(gpu, `${name}.weight`, truncNormals(rng, n * k, 0.02), [n, k], group, true);
    this.bias = (options.bias ?? true)
      ? param(gpu, `${name}.bias`, new Float32Array(n), [n], group, false)
      : null;
  }

  /** y = x·Wᵀ (+ b). */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.linear(tape, x, this.weight.value, this.bias?.value ?? null);
  }

  /** The weight, then the bias if any. */
  params(): Param[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
}

/**
 * `nn.LayerNorm(dim, eps)` over the last dim (biased variance, affine), weight 1 and bias 0 as
 * PyTorch initialises them; no weight decay (timm's groups). Names `<prefix>.weight`,
 * `<prefix>.bias`.
 */
export class LayerNorm implements Module {
  /** `<prefix>.weight` (gamma), [dim]. */
  readonly weight: Param;
  /** `<prefix>.bias` (beta), [dim]. */
  readonly bias: Param;

  /** A layer norm over `dim` features (eps default 1e-6, DeiT's). */
  constructor(
    readonly gpu: GpuContext,
    readonly dim: number,
    readonly prefix: string,
    readonly eps = 1e-6,
    group: "backbone" | "head" = "backbone",
  ) {
    if (!Number.isInteger(dim) || dim < 1) {
      throw new RangeError(`LayerNorm ${prefix}: bad dim ${dim}`);
    }
    const full = (v: number) => new Float32Array(dim).fill(v);
    this.weight = param(gpu, `${prefix}.weight`, full(1), [dim], group, false);
    this.bias = param(gpu, `${prefix}.bias`, full(0), [dim], group, false);
  }

  /** Normalises each row of x [..., dim]. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    return F.layerNorm(tape, x, this.weight.value, this.bias.value, this.eps);
  }

  /** weight, bias. */
  params(): Param[] {
    return [this.weight, this.bias];
  }
}
