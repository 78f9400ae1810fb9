/**
 * Buffer pool: reuses freed storage buffers by size class and tracks peak bytes.
 *
 * Size classes: 256-byte granularity below 4 KiB, then four classes per power of two
 * (2^k, 1.25·2^k, 1.5·2^k, 1.75·2^k), so at most ~25% of a buffer is slack.
 * @module
 */

/** Usage flags of every pooled buffer: storage, copy source and destination. */
export const POOL_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Rounds a byte count up to its size class. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (b <= 4096) return b;
  const p = 2 ** Math.floor(Math.log2(b));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) {
    if (p * f >= b) return p * f;
  }
  return 2 * p;
}

/** Pool statistics in bytes. */
export interface PoolStats {
  /** Bytes of all buffers the pool created and still owns. */
  allocated: number;
  /** Bytes of buffers handed out and not yet released. */
  inUse: number;
  /** Highest `inUse` seen since creation or the last `resetPeak()`. */
  peakInUse: number;
  /** Highest `allocated` seen. */
  peakAllocated: number;
  /** Number of buffer creations (misses). */
  creations: number;
}

/** A pool of GPU storage buffers keyed by size class. */
export class BufferPool {
  // Free buffers per size class, by creation order, newest first: `acquire` takes the oldest.
  // A canonical choice (rather than the last released) makes every step of a fixed-shape loop
  // get the same buffers in the same roles once the pool has warmed up, whatever order the
  // previous step released them in, so the bind groups recorded for a step can be reused.
  #free = new Map<number, { bufs: GPUBuffer[]; ids: number[] }>();
  #order = new WeakMap<GPUBuffer, number>();
  #created = 0;
  #stats: PoolStats = { allocated: 0, inUse: 0, peakInUse: 0, peakAllocated: 0, creations: 0 };

  /** A pool on `device`; `acquire` throws past `maxBufferSize` bytes (the device limit). */
  constructor(private readonly device: GPUDevice, private readonly maxBufferSize: number) {}

  /** Returns a buffer of at least `bytes` bytes (its content is undefined). */
  acquire(bytes: number, label = "pooled"): GPUBuffer {
    const size = sizeClass(bytes);
    if (size > this.maxBufferSize) {
      throw new RangeError(
        `buffer of ${bytes} bytes exceeds the device's maxBufferSize (${this.maxBufferSize})`,
      );
    }
    const list = this.#free.get(size);
    list?.ids.pop();
    let buf = list?.bufs.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size, usage: POOL_USAGE, label });
      this.#order.set(buf, this.#created++);
      this.#stats.allocated += size;
      this.#stats.creations++;
      this.#stats.peakAllocated = Math.max(this.#stats.peakAllocated, this.#stats.allocated);
    }
    this.#stats.inUse += size;
    this.#stats.peakInUse = Math.max(this.#stats.peakInUse, this.#stats.inUse);
    return buf;
  }

  /** Gives a buffer back for reuse. */
  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.#stats.inUse -= size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = { bufs: [], ids: [] });
    // Binary search in the descending ids: a step releases hundreds of buffers.
    const ids = list.ids;
    const k = this.#order.get(buf) ?? -1;
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ids[mid] > k) lo = mid + 1;
      else hi = mid;
    }
    ids.splice(lo, 0, k);
    list.bufs.splice(lo, 0, buf);
  }

  /** Destroys every free buffer (buffers in use are untouched). */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list.bufs) {
        this.#stats.allocated -= b.size;
        b.destroy();
      }
    }
    this.#free.clear();
  }

  /** A snapshot of the statistics. */
  stats(): PoolStats {
    return { ...this.#stats };
  }

  /** Restarts peak tracking from the current usage. */
  resetPeak(): void {
    this.#stats.peakInUse = this.#stats.inUse;
  }
}
