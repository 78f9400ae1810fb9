/**
 * ReLU and ELU layers and the residual add(+ReLU) of ResNet blocks, on the pointwise op table
 * (`relu`, `relu_bwd`, `elu`, `elu_bwd`, `add`, `add_relu`).
 *
 * Backward uses the forward's output y, not its input: relu'(x) = [x > 0] = [y > 0], so an
 * in-place forward (y written over x) loses nothing backward needs.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { Ctx, Layer, Param } from "../models/layer.ts";
import { pointwise } from "./pointwise.ts";

/** Options of {@link ReLU} and {@link ResidualAdd}. */
export interface ActivationOptions {
  /**
   * Write the result over the (first) input. The returned tensor is then the input itself
   * with one more reference (dispose both as usual). Only safe when no other layer saved that
   * input for its backward (true after batchnorm, which saves its own input, not its output).
   */
  inplace?: boolean;
}

/**
 * A pointwise activation layer on the op table: `fwd` forward, `bwd` backward from the saved
 * output (both ReLU and ELU have derivatives expressible through their output).
 */
export class Activation implements Layer {
  /** Whether the forward writes over its input. */
  readonly inplace: boolean;

  /** An activation from its forward and backward table entries. */
  constructor(
    readonly gpu: GpuContext,
    readonly fwd: "relu" | "elu",
    readonly bwd: "relu_bwd" | "elu_bwd",
    opts: ActivationOptions = {},
  ) {
    this.inplace = opts.inplace ?? false;
  }

  /** Applies the activation (in place when configured); saves the output in ctx. */
  forward(x: Tensor, ctx: Ctx | null): Tensor {
    const y = this.inplace
      ? pointwise(this.gpu, this.fwd, [x], { out: x }).retain()
      : pointwise(this.gpu, this.fwd, [x]);
    ctx?.save(y);
    return y;
  }

  /** dx from the saved output and dy; releases ctx. */
  backward(ctx: Ctx, dy: Tensor): Tensor {
    const [y] = ctx.saved;
    const dx = pointwise(this.gpu, this.bwd, [y, dy]);
    ctx.release();
    return dx;
  }

  /** No parameters. */
  params(): Param[] {
    return [];
  }
}

/** `ReLU` layer: y = max(x, 0); backward dx = dy·[y > 0] from the saved output. */
export class ReLU extends Activation {
  /** A ReLU layer (in place when `opts.inplace`). */
  constructor(gpu: GpuContext, opts: ActivationOptions = {}) {
    super(gpu, "relu", "relu_bwd", opts);
  }
}

/** `ELU` layer (alpha 1, psa's AffinityNet heads); backward dx = dy·(y > 0 ? 1 : y + 1). */
export class ELU extends Activation {
  /** An ELU layer (in place when `opts.inplace`). */
  constructor(gpu: GpuContext, opts: ActivationOptions = {}) {
    super(gpu, "elu", "elu_bwd", opts);
  }
}

/**
 * Residual add of a ResNet block, optionally followed by ReLU: y = a + b or relu(a + b).
 * Two inputs, so not a {@link Layer}; backward returns the one gradient both inputs receive.
 */
export class ResidualAdd {
  readonly inplace: boolean;

  constructor(readonly gpu: GpuContext, readonly relu = true, opts: ActivationOptions = {}) {
    this.inplace = opts.inplace ?? false;
  }

  /** y = (relu)(a + b), written over `a` when in place. Saves y when relu and ctx is given. */
  forward(a: Tensor, b: Tensor, ctx: Ctx | null): Tensor {
    const op = this.relu ? "add_relu" : "add";
    const y = this.inplace
      ? pointwise(this.gpu, op, [a, b], { out: a }).retain()
      : pointwise(this.gpu, op, [a, b]);
    if (ctx && this.relu) ctx.save(y);
    return y;
  }

  /**
   * The gradient of both a and b: dy masked by [y > 0] with relu, else a copy of dy (a new
   * tensor either way, owned by the caller). Releases ctx.
   */
  backward(ctx: Ctx, dy: Tensor): Tensor {
    const dx = this.relu
      ? pointwise(this.gpu, "relu_bwd", [ctx.saved[0], dy])
      : pointwise(this.gpu, "scale", [dy], { alpha: 1 });
    ctx.release();
    return dx;
  }
}
