/**
 * The gradient tape: define-by-run reverse-mode differentiation over GPU tensors.
 *
 * During a training forward pass every differentiable op (src/autograd/functions.ts) records
 * one entry: its inputs, its outputs, the tensors it saved and a backward rule. Only entries
 * with an input that needs a gradient are recorded (the image needs none, so the first
 * convolution never computes an input gradient). {@link Tape.backward} walks the entries in
 * reverse, hands each rule the gradients of its outputs, and collects the gradients it gives
 * its inputs:
 *
 * - **Fan-out is summed.** A tensor with several consumers (a residual input, a shared
 *   weight, CAMs feeding two losses) receives one contribution per consumer; the tape adds
 *   them. Rules whose kernels can add into an existing buffer ask for a {@link GradSink}
 *   instead and write in place, so the sum costs no extra pass.
 * - **Parameters accumulate** into their own `grad` buffers (see src/autograd/param.ts); the
 *   trainer zeroes them between steps.
 * - **Saved tensors are released** as soon as their entry's rule has run (or, for an entry
 *   that no gradient reaches, when the walk passes it).
 * - **In-place ops** record an output that is the same tensor object as their input: the walk
 *   takes the output's gradient before the rule gives the input's, so the two never mix.
 *
 * Everything is recorded into the GPU context's current command encoder; nothing is awaited.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { pointwise } from "../ops/pointwise.ts";
import { claimGrad, gradIsZero, type Param } from "./param.ts";

/** Where a rule writes an input's gradient in place (`accumulate`: add into `out`). */
export interface GradSink {
  /** The gradient buffer to write. */
  out: Tensor;
  /** Add into `out` (true) or overwrite it (false). */
  accumulate: boolean;
}

/** What a backward rule sees of the tape. */
export interface GradContext {
  /** The gradient of output `i` (null when none reached it); owned by the tape. */
  dy(i?: number): Tensor | null;
  /** Whether input `j` needs a gradient. */
  needs(j: number): boolean;
  /** Gives input `j` its gradient contribution; the tape takes ownership (and sums). */
  give(j: number, grad: Tensor): void;
  /**
   * A buffer to write input `j`'s gradient contribution into. With `zeroed`, a fresh buffer
   * is cleared first (for kernels that only write part of it, always with accumulate).
   */
  sink(j: number, opts?: { zeroed?: boolean }): GradSink;
}

/** A backward rule. */
export type BackwardRule = (g: GradContext) => void;

interface Entry {
  name: string;
  inputs: (Tensor | null)[];
  outputs: Tensor[];
  saved: Tensor[];
  backward: BackwardRule;
}

/** A define-by-run gradient tape for one forward/backward pass (see the module doc). */
export class Tape {
  #entries: Entry[] = [];
  #needs = new WeakSet<Tensor>();
  #params = new Map<Tensor, Param>();
  #grads = new Map<Tensor, Tensor>();
  #done = false;

  /** A tape whose leaves needing gradients are `params` (their values). */
  constructor(readonly gpu: GpuContext, params: readonly Param[] = []) {
    for (const p of params) {
      this.#params.set(p.value, p);
      this.#needs.add(p.value);
    }
  }

  /** Marks a leaf tensor (not a parameter) as needing a gradient; returns it. */
  watch(t: Tensor): Tensor {
    this.#needs.add(t);
    return t;
  }

  /** Whether `t` needs a gradient (a watched leaf, a parameter, or computed from one). */
  needsGrad(t: Tensor | null): boolean {
    return t !== null && this.#needs.has(t);
  }

  /** Number of entries recorded. */
  get length(): number {
    return this.#entries.length;
  }

  /**
   * Records an op. Nothing is recorded (and nothing retained) when no input needs a
   * gradient. Otherwise the `saved` tensors are retained until the rule has run, and the
   * outputs are marked as needing gradients.
   */
  record(
    name: string,
    inputs: (Tensor | null)[],
    outputs: Tensor[],
    backward: BackwardRule,
    saved: Tensor[] = [],
  ): void {
    if (this.#done) throw new Error(`tape: ${name} recorded after backward()`);
    if (!inputs.some((t) => this.needsGrad(t))) return;
    for (const t of saved) t.retain();
    for (const t of outputs) this.#needs.add(t);
    this.#entries.push({ name, inputs, outputs, saved, backward });
  }

  /**
   * Runs the backward pass from `seeds` (a tensor and the gradient of the loss with respect
   * to it; the tape takes ownership of these gradients). Parameter gradients accumulate into
   * their `grad` buffers. Returns the gradients of the `keep` tensors (watched leaves or
   * intermediates, null where none arrived), owned by the caller; every other gradient and
   * saved tensor is released. A tape runs backward once.
   */
  backward(seeds: [Tensor, Tensor][], keep: Tensor[] = []): (Tensor | null)[] {
    if (this.#done) throw new Error("tape: backward() called twice");
    this.#done = true;
    for (const [t, g] of seeds) {
      if (g.size !== t.size) {
        throw new RangeError(`tape: seed gradient [${g.shape}] does not match [${t.shape}]`);
      }
      this.#give(t, g);
    }
    const keepSet = new Set(keep);
    const kept = new Map<Tensor, Tensor>();
    for (let e = this.#entries.length - 1; e >= 0; e--) {
      const entry = this.#entries[e];
      const dys = entry.outputs.map((o) => {
        const g = this.#grads.get(o) ?? null;
        this.#grads.delete(o);
        // An in-place op's output is its input: what is kept is the earliest value's gradient.
        if (g && keepSet.has(o) && !entry.inputs.includes(o)) kept.set(o, g.retain());
        return g;
      });
      if (dys.some((d) => d !== null)) entry.backward(this.#context(entry, dys));
      for (const d of dys) d?.dispose();
      for (const t of entry.saved) t.dispose();
    }
    this.#entries = [];
    const result = keep.map((t) => {
      const g = this.#grads.get(t) ?? kept.get(t) ?? null;
      this.#grads.delete(t);
      kept.delete(t);
      return g;
    });
    for (const g of kept.values()) g.dispose();
    for (const g of this.#grads.values()) g.dispose();
    this.#grads.clear();
    // Parameters no gradient reached: their zero is made real now.
    for (const p of this.#params.values()) {
      if (gradIsZero(p)) {
        const s = claimGrad(p);
        this.gpu.clear(s.out.buffer, 0, paddedBytes(s.out));
      }
    }
    return result;
  }

  /** Releases what is saved without running backward (e.g. a step abandoned on error). */
  dispose(): void {
    for (const e of this.#entries) for (const t of e.saved) t.dispose();
    this.#entries = [];
    for (const g of this.#grads.values()) g.dispose();
    this.#grads.clear();
    this.#done = true;
  }

  #context(entry: Entry, dys: (Tensor | null)[]): GradContext {
    const input = (j: number): Tensor => {
      const t = entry.inputs[j];
      if (!t || !this.needsGrad(t)) {
        throw new Error(`tape: ${entry.name} gave a gradient to input ${j}, which needs none`);
      }
      return t;
    };
    return {
      dy: (i = 0) => dys[i] ?? null,
      needs: (j) => this.needsGrad(entry.inputs[j] ?? null),
      give: (j, grad) => this.#give(input(j), grad),
      sink: (j, opts) => this.#sink(input(j), opts?.zeroed ?? false),
    };
  }

  /** Adds a contribution to t's gradient (taking ownership of `grad`). */
  #give(t: Tensor, grad: Tensor): void {
    const p = this.#params.get(t);
    if (p) {
      const s = claimGrad(p);
      if (s.accumulate) pointwise(this.gpu, "add", [s.out, grad], { out: s.out });
      else {this.gpu.encoder().copyBufferToBuffer(
          grad.buffer,
          0,
          s.out.buffer,
          0,
          paddedBytes(s.out),
        );}
      grad.dispose();
      return;
    }
    const prev = this.#grads.get(t);
    if (!prev) {
      this.#grads.set(t, grad);
      return;
    }
    // prev + grad (commutative, so the order of contributions does not change the bits).
    if (prev.shared || prev === grad) {
      this.#grads.set(t, pointwise(this.gpu, "add", [prev, grad]));
      prev.dispose();
    } else {
      pointwise(this.gpu, "add", [prev, grad], { out: prev });
    }
    grad.dispose();
  }

  #sink(t: Tensor, zeroed: boolean): GradSink {
    const p = this.#params.get(t);
    if (p) {
      const s = claimGrad(p);
      if (zeroed && !s.accumulate) {
        this.gpu.clear(s.out.buffer, 0, paddedBytes(s.out));
        return { out: s.out, accumulate: true };
      }
      return s;
    }
    const prev = this.#grads.get(t);
    if (!prev) {
      const out = zeroed ? Tensor.zeros(this.gpu, t.shape) : Tensor.empty(this.gpu, t.shape);
      this.#grads.set(t, out);
      return { out, accumulate: zeroed };
    }
    if (!prev.shared) return { out: prev, accumulate: true };
    // Another entry still holds prev: accumulate into a copy.
    const out = Tensor.empty(this.gpu, t.shape);
    this.gpu.encoder().copyBufferToBuffer(prev.buffer, 0, out.buffer, 0, paddedBytes(out));
    prev.dispose();
    this.#grads.set(t, out);
    return { out, accumulate: true };
  }
}

function paddedBytes(t: Tensor): number {
  return Math.ceil(Math.max(4, t.bytes) / 4) * 4;
}
