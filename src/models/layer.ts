/**
 * The layer protocol: explicit forward/backward, no hidden tape (PyTorch's autograd.Function
 * idea kept explicit).
 *
 * - `forward(x, ctx)` returns a new tensor owned by the caller. With a `ctx` (training) it
 *   saves what backward needs there, `retain()`ing any tensor it keeps.
 * - `backward(ctx, dy)` returns dx (owned by the caller), writes (overwrites) the gradients of
 *   its own parameters, and disposes what it saved. It never disposes `dy`.
 * - Parameters carry a group (`backbone` or `head`, for psa's 10x head learning rate) and
 *   whether weight decay applies.
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";

/** A trainable parameter with its gradient buffer. */
export interface Param {
  /** torchvision-style name, e.g. `layer1.0.conv1.weight`. */
  name: string;
  value: Tensor;
  grad: Tensor;
  /** Learning-rate group. */
  group: "backbone" | "head";
  /** Whether weight decay applies. */
  decay: boolean;
}

/** A non-trainable state tensor saved in checkpoints (e.g. batchnorm running stats). */
export interface Buffer {
  name: string;
  value: Tensor;
}

/** Per-call saved state for backward. */
export class Ctx {
  readonly saved: Tensor[] = [];
  /** Small non-tensor values (shapes, flags). */
  readonly meta: Record<string, unknown> = {};

  /** Retains and stores a tensor; returns it. */
  save(t: Tensor): Tensor {
    this.saved.push(t.retain());
    return t;
  }

  /** Disposes everything saved. */
  release(): void {
    for (const t of this.saved.splice(0)) t.dispose();
  }
}

/** A layer with explicit forward and backward. */
export interface Layer {
  forward(x: Tensor, ctx: Ctx | null): Tensor;
  backward(ctx: Ctx, dy: Tensor): Tensor;
  params(): Param[];
  buffers?(): Buffer[];
}
