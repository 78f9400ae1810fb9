/**
 * Trainable parameters and saved state. A parameter's gradient buffer *accumulates*: every
 * consumer of the parameter adds its contribution (shared weights, as in a siamese network,
 * get the sum of both branches' gradients). The trainer clears them with {@link zeroGrads}
 * before each step.
 *
 * Zeroing is lazy and costs no GPU work: a zeroed gradient is only marked, so that its first
 * contribution in the next backward pass overwrites the buffer instead of adding to it (the
 * same bits as adding to zeros, one pass over memory less). A marked gradient that no
 * consumer reaches is cleared at the end of that backward pass ({@link Tape.backward}).
 * @module
 */
import type { NamedTensor, Tensor } from "../gpu/tensor.ts";

/** A trainable parameter with its gradient buffer. */
export interface Param {
  /** torchvision-style name, e.g. `layer1.0.conv1.weight`. */
  name: string;
  /** The parameter's values. */
  value: Tensor;
  /** Gradient buffer, same shape as `value`; accumulates (see the module doc). */
  grad: Tensor;
  /** Learning-rate group. */
  group: "backbone" | "head";
  /** Whether weight decay applies. */
  decay: boolean;
}

/** A non-trainable state tensor saved in checkpoints (e.g. batchnorm running stats). */
export interface Buffer {
  /** torchvision-style name, e.g. `bn1.running_mean`. */
  name: string;
  /** The state's values. */
  value: Tensor;
}

const zeroed = new WeakSet<Param>();

/** Marks the gradients of `params` as zero (lazily; see the module doc). */
export function zeroGrads(params: readonly Param[]): void {
  for (const p of params) zeroed.add(p);
}

/**
 * Claims a parameter's gradient for one contribution: `accumulate` is false for the first
 * contribution after {@link zeroGrads} (write over the buffer), true afterwards (add into it).
 */
export function claimGrad(p: Param): { out: Tensor; accumulate: boolean } {
  const first = zeroed.delete(p);
  return { out: p.grad, accumulate: !first };
}

/** Whether a parameter's gradient is still marked zero (no contribution since zeroGrads). */
export function gradIsZero(p: Param): boolean {
  return zeroed.has(p);
}

/** A model's state by name: its parameters, then its buffers (what checkpoints hold). */
export function namedState(params: readonly Param[], buffers: readonly Buffer[]): NamedTensor[] {
  return [
    ...params.map((p) => ({ name: p.name, value: p.value })),
    ...buffers.map((b) => ({ name: b.name, value: b.value })),
  ];
}

/** Frees every parameter (value and gradient) and buffer of a model. */
export function disposeState(params: readonly Param[], buffers: readonly Buffer[]): void {
  for (const p of params) {
    p.value.dispose();
    p.grad.dispose();
  }
  for (const b of buffers) b.value.dispose();
}
