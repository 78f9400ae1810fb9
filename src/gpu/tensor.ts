/**
 * A typed f32 tensor (NCHW, row-major) living in a pooled GPU storage buffer.
 * @module
 */
import type { BufferRange, GpuContext } from "./context.ts";

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`bad dimension ${d} in [${shape}]`);
    n *= d;
  }
  return n;
}

/** An f32 tensor on the GPU. Dispose it to return its buffer to the pool. */
export class Tensor {
  #disposed = false;
  /** Number of elements. */
  readonly size: number;

  private constructor(
    readonly gpu: GpuContext,
    readonly shape: readonly number[],
    readonly buffer: GPUBuffer,
  ) {
    this.size = numel(shape);
  }

  /** Bytes of the logical content (4 per element). */
  get bytes(): number {
    return this.size * 4;
  }

  /** An uninitialised tensor. */
  static empty(gpu: GpuContext, shape: readonly number[], label?: string): Tensor {
    const n = numel(shape);
    return new Tensor(gpu, [...shape], gpu.pool.acquire(Math.max(4, n * 4), label));
  }

  /** A tensor of zeros (the fill is recorded in order with other work). */
  static zeros(gpu: GpuContext, shape: readonly number[], label?: string): Tensor {
    const t = Tensor.empty(gpu, shape, label);
    gpu.clear(t.buffer, 0, Math.ceil(Math.max(4, t.bytes) / 4) * 4);
    return t;
  }

  /** A tensor holding a copy of `data` (length must equal the shape's element count). */
  static fromArray(
    gpu: GpuContext,
    data: ArrayLike<number> | Float32Array,
    shape: readonly number[],
    label?: string,
  ): Tensor {
    const n = numel(shape);
    if (data.length !== n) {
      throw new RangeError(`fromArray: ${data.length} values for shape [${shape}] (${n})`);
    }
    const t = Tensor.empty(gpu, shape, label);
    t.write(data instanceof Float32Array ? data : Float32Array.from(data));
    return t;
  }

  /** Records an upload of `data` into this tensor. */
  write(data: Float32Array, offsetElements = 0): void {
    this.#check();
    if (offsetElements + data.length > this.size) {
      throw new RangeError(
        `write of ${data.length} values at ${offsetElements} overflows [${this.shape}]`,
      );
    }
    this.gpu.upload(this.buffer, data, offsetElements * 4);
  }

  /** The storage binding of this tensor's logical bytes. */
  binding(): BufferRange {
    this.#check();
    return { buffer: this.buffer, offset: 0, size: Math.max(4, this.bytes) };
  }

  /** A binding of a range of elements (for ops that split work past binding limits). */
  slice(startElement: number, countElements: number): BufferRange {
    this.#check();
    return { buffer: this.buffer, offset: startElement * 4, size: Math.max(4, countElements * 4) };
  }

  /**
   * A tensor view with another shape of the same size, sharing the buffer (not owning it): for
   * immediate use while this tensor is alive (kernel arguments). See {@link view} for one that
   * can be kept.
   */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new RangeError(`reshape [${this.shape}] → [${shape}]: sizes differ`);
    }
    const t = new Tensor(this.gpu, [...shape], this.buffer);
    t.#view = true;
    return t;
  }
  #view = false;

  /**
   * An owning view with another shape of the same size: it shares the buffer and holds a
   * reference to this tensor until it is disposed itself, so it can be kept, saved by the
   * gradient tape and disposed like any op's result (the tape's reshape, with no copy). Either
   * one counts as {@link shared} while the other is alive, so neither is written in place.
   */
  view(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new RangeError(`view [${this.shape}] → [${shape}]: sizes differ`);
    }
    this.retain();
    const t = new Tensor(this.gpu, [...shape], this.buffer);
    t.#base = this;
    return t;
  }
  #base: Tensor | null = null;

  /** Reads the values back (flushes recorded work). */
  async read(): Promise<Float32Array> {
    this.#check();
    if (this.size === 0) return new Float32Array(0);
    return new Float32Array(await this.gpu.readBytes(this.buffer, 0, this.bytes));
  }

  #refs = 1;

  /**
   * Adds a reference (a layer saving its input for backward retains it); each reference is
   * dropped by one `dispose()`. Returns this tensor.
   */
  retain(): this {
    this.#check();
    this.#refs++;
    return this;
  }

  /**
   * Drops one reference; the buffer returns to the pool when none is left. Views from
   * {@link reshape} share their base's buffer and release nothing themselves; a {@link view}
   * drops its reference to its base.
   */
  dispose(): void {
    if (this.#disposed) return;
    if (--this.#refs > 0) return;
    this.#disposed = true;
    if (this.#base) this.#base.dispose();
    else if (!this.#view) this.gpu.pool.release(this.buffer);
  }

  /**
   * Whether more than one reference to the data is held (a holder must not write into it in
   * place): several references to this tensor, or, for a {@link view}, to its base besides the
   * view's own.
   */
  get shared(): boolean {
    return this.#refs > 1 || (this.#base !== null && this.#base.#refs > 1);
  }

  /** Whether dispose() was called. */
  get disposed(): boolean {
    return this.#disposed;
  }

  #check(): void {
    if (this.#disposed) throw new Error(`tensor [${this.shape}] used after dispose`);
  }
}

/** A named GPU tensor (a model's state entry; what checkpoints save and load). */
export interface NamedTensor {
  /** State key, e.g. `layer1.0.conv1.weight`. */
  name: string;
  /** The tensor saved or loaded under `name`. */
  value: Tensor;
}
