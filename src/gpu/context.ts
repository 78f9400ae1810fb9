/**
 * The GPU runtime: adapter + device, a pipeline cache keyed by shader + entry + constants,
 * a buffer pool, one recording command encoder per step, uniform parameter arena, readback
 * and error scopes turned into TypeScript errors naming the op.
 * @module
 */
import { BufferPool, sizeClass } from "./pool.ts";
import {
  composeShader,
  expandTemplate,
  loadShaderSource,
  PRELUDE,
  SHADER_NAMES,
} from "./shaders.ts";

/** Options of {@link createGpu}. */
export interface GpuOptions {
  /** Print adapter vendor/architecture/description and fallback status. */
  verbose?: boolean;
  /** Wrap every dispatch in error scopes; errors surface at the next flush naming the op. */
  debug?: boolean;
  /** Override for `navigator.gpu` (tests pass `null` to simulate a missing WebGPU). */
  gpuApi?: GPU | null;
  /** Artificial cap on bytes per storage binding, below the device's own (tests use it). */
  maxBindingBytes?: number;
  /** Optional features to request when the adapter offers them (e.g. "shader-f16"). */
  optionalFeatures?: GPUFeatureName[];
  /**
   * Time every dispatch with timestamp queries (each dispatch in its own pass); see
   * {@link GpuContext.profileReport}. Needs the adapter's "timestamp-query" feature.
   */
  profile?: boolean;
  /** Where to print verbose lines (default console.error). */
  log?: (line: string) => void;
}

/** Errors about the GPU runtime (missing adapter, failed ops, device loss). */
export class GpuError extends Error {
  /** Always "GpuError". */
  override name = "GpuError";
}

/** How to get a WebGPU adapter on a machine without one. */
export const ADAPTER_HELP: string =
  "Deno exposes WebGPU as navigator.gpu. Without a GPU, install a CPU " +
  "adapter: Mesa's llvmpipe for GL (Debian/Ubuntu: `apt-get install libegl1 libgl1-mesa-dri`) " +
  "or lavapipe for Vulkan (`apt-get install mesa-vulkan-drivers`, then set " +
  "DENO_WEBGPU_BACKEND=vulkan). On a machine with a GPU, install its Vulkan driver.";

/** A binding: a whole buffer, or a byte range of one. */
export interface BufferRange {
  /** The buffer bound. */
  buffer: GPUBuffer;
  /** Byte offset of the range (default 0). */
  offset?: number;
  /** Bytes of the range (default: the rest of the buffer). */
  size?: number;
}

/** Something that can be bound as storage: a tensor-like object or a raw range. */
export type Bindable = BufferRange | { binding(): BufferRange };

/** One compute dispatch. */
export interface DispatchSpec {
  /** Op name used in error messages. */
  name?: string;
  /** Shader family (a file in `shaders/`). */
  shader: string;
  /** Entry point in that file. */
  entry: string;
  /** Pipeline-overridable constants (never mutated once dispatched: keys are memoised). */
  constants?: Record<string, number>;
  /**
   * `{{KEY}}` template substitutions (part of the pipeline key; never mutated once dispatched:
   * the key of an object is memoised).
   */
  defines?: Record<string, string | number>;
  /** Read-only storage bindings: @binding(0..). */
  inputs?: Bindable[];
  /** Read-write storage bindings, after the inputs. */
  outputs?: Bindable[];
  /**
   * Uniform parameters as u32 words, bound after the outputs: normally from the kernel's
   * declared struct (`ParamStruct.pack`, ./kernel.ts); raw words for ad-hoc shaders (use
   * {@link f32bits} for floats).
   */
  params?: ArrayLike<number>;
  /** Workgroup counts. */
  workgroups: [number, number?, number?];
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
/** The u32 bit pattern of an f32 value (for packing float uniforms among u32 words). */
export function f32bits(x: number): number {
  F32[0] = x;
  return U32[0];
}

const UNIFORM_CHUNK = 64 * 1024;
/**
 * A cached pipeline with its bind-group layout and that layout's key (`nIn/nOut/uniform`): bind
 * groups are shared by every pipeline of one layout.
 */
interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: string;
  bgl: GPUBindGroupLayout;
}

/** Most bind groups {@link GpuContext} keeps for reuse before it starts over. */
const BIND_GROUP_CACHE = 8192;

function toRange(b: Bindable): BufferRange {
  return "binding" in b ? b.binding() : b;
}

/**
 * Owns the device and everything needed to record and submit compute work.
 * Ops record into one command encoder; `flush()` submits it. Readbacks flush first.
 */
export class GpuContext {
  /** The pool that storage buffers come from. */
  readonly pool: BufferPool;
  /** Bytes one storage binding may span (device limit or the artificial test cap). */
  readonly maxBindingBytes: number;
  /** Whether the device has shader-f16. */
  readonly hasF16: boolean;
  #sources = new Map<string, string>();
  #composed = new Map<string, string>();
  #modules = new Map<string, GPUShaderModule>();
  #pipelines = new Map<string, CachedPipeline>();
  #layouts = new Map<string, { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout }>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #chunks: GPUBuffer[] = [];
  #chunkData: Uint8Array<ArrayBuffer>[] = [];
  #chunkIndex = 0;
  #chunkOffset = 0;
  #afterFlush: (() => void)[] = [];
  #pendingErrors: Promise<string | null>[] = [];
  #lost: string | null = null;
  #dummy: GPUBuffer | null = null;
  #staging = new Map<number, GPUBuffer[]>();
  #profiler: Profiler | null = null;
  // Bind groups by layout + bound ranges. A training step binds the same pooled buffers and
  // the same uniform-arena slots in the same order every step, and creating a bind group was
  // the largest CPU cost of recording a dispatch; a buffer's id is never reused, so a key that
  // names a destroyed buffer just stops matching.
  #bindGroups = new Map<string, GPUBindGroup>();
  #bufferIds = new WeakMap<GPUBuffer, number>();
  #nextBufferId = 1;
  // Content ids of defines/constants objects (see #pipeline).
  #idOf = new WeakMap<object, number>();
  #idOfJson = new Map<string, number>();
  #limits: GPUSupportedLimits;
  /** Dispatches recorded since creation (for benchmarks/diagnostics). */
  dispatchCount = 0;
  /** Bind groups created since creation (a cached one is not counted again). */
  bindGroupsCreated = 0;
  /** Compute pipelines created since creation (each compiles its shader variant). */
  pipelinesCreated = 0;

  /**
   * Wraps an opened device ({@link createGpu} does this); `debug` wraps every dispatch in error
   * scopes; `maxBindingBytes` caps storage bindings below the device limit.
   */
  constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly debug: boolean,
    maxBindingBytes?: number,
  ) {
    this.#limits = device.limits;
    this.pool = new BufferPool(device, device.limits.maxBufferSize);
    this.maxBindingBytes = Math.min(
      device.limits.maxStorageBufferBindingSize,
      maxBindingBytes ?? Infinity,
    );
    this.hasF16 = device.features.has("shader-f16");
    device.lost.then((info) => {
      this.#lost = `GPU device lost (${info.reason}): ${info.message}`;
      if (info.reason !== "destroyed") console.error(this.#lost);
    });
    device.addEventListener("uncapturederror", (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      console.error(`uncaptured WebGPU error: ${e.message}`);
    });
  }

  /** Starts per-dispatch GPU timing (timestamp queries); false if the device lacks them. */
  startProfile(): boolean {
    if (!this.device.features.has("timestamp-query")) return false;
    this.#profiler ??= new Profiler(this);
    return true;
  }

  /**
   * Ends profiling: resolves the timestamps and returns GPU milliseconds per op name, sorted
   * by total time.
   */
  async profileReport(): Promise<{ name: string; calls: number; ms: number }[]> {
    const p = this.#profiler;
    this.#profiler = null;
    if (!p) return [];
    return await p.report();
  }

  /** Adapter description line: vendor, architecture, description, fallback flag. */
  describe(): string {
    const i = this.adapter.info;
    return `${i.description || i.device || "unknown adapter"} (vendor ${i.vendor || "?"}, ` +
      `architecture ${i.architecture || "?"}, fallback ${i.isFallbackAdapter})`;
  }

  /** Registers shader source by name (used for preloaded files and tests). */
  addShader(name: string, source: string): void {
    this.#sources.set(name, source);
    this.#composed.delete(name);
  }

  /** Loads shader files by name, and the prelude (no-op for ones already loaded). */
  async loadShaders(names: readonly string[]): Promise<void> {
    await Promise.all(
      [PRELUDE, ...names].filter((n) => !this.#sources.has(n)).map(async (n) =>
        this.addShader(n, await loadShaderSource(n))
      ),
    );
  }

  /** A shader's source with its uniform structs and the prelude (see composeShader). */
  #code(shader: string): string {
    let code = this.#composed.get(shader);
    if (code === undefined) {
      const src = this.#sources.get(shader);
      if (src === undefined) {
        throw new GpuError(`shader "${shader}" is not loaded (add it to SHADER_NAMES)`);
      }
      const prelude = this.#sources.get(PRELUDE);
      if (prelude === undefined) throw new GpuError(`the shader prelude is not loaded`);
      code = composeShader(shader, src, prelude);
      this.#composed.set(shader, code);
    }
    return code;
  }

  #module(shader: string, defines?: Record<string, string | number>): GPUShaderModule {
    const key = defines ? `${shader}|${JSON.stringify(defines)}` : shader;
    let m = this.#modules.get(key);
    if (!m) {
      const src = this.#code(shader);
      const code = defines ? expandTemplate(src, defines) : src;
      m = this.device.createShaderModule({ code, label: key });
      this.#modules.set(key, m);
    }
    return m;
  }

  #layout(nIn: number, nOut: number, uniform: boolean) {
    const key = `${nIn}/${nOut}/${uniform}`;
    let l = this.#layouts.get(key);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [];
      for (let i = 0; i < nIn + nOut; i++) {
        entries.push({
          binding: i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: i < nIn ? "read-only-storage" : "storage" },
        });
      }
      if (uniform) {
        entries.push({
          binding: nIn + nOut,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: "uniform" },
        });
      }
      const bgl = this.device.createBindGroupLayout({ entries, label: key });
      l = { bgl, pl: this.device.createPipelineLayout({ bindGroupLayouts: [bgl] }) };
      this.#layouts.set(key, l);
    }
    return l;
  }

  /** The cached pipeline for a dispatch shape (shader, entry, constants, defines, layout). */
  pipeline(spec: Omit<DispatchSpec, "workgroups">): GPUComputePipeline {
    return this.#pipeline(spec).pipeline;
  }

  #pipeline(spec: Omit<DispatchSpec, "workgroups">): CachedPipeline {
    const nIn = spec.inputs?.length ?? 0;
    const nOut = spec.outputs?.length ?? 0;
    const uni = spec.params !== undefined;
    const layout = `${nIn}/${nOut}/${uni}`;
    // This runs for every dispatch of every step, and generated kernels' defines hold
    // kilobytes of WGSL: each distinct content gets a small id, memoised per object (ops keep
    // their defines in caches), so the key stays short to build and to hash.
    const key = `${spec.shader}|${spec.entry}|${layout}|` +
      (spec.constants ? this.#contentId(spec.constants) : "") + "|" +
      (spec.defines ? this.#contentId(spec.defines) : "");
    let p = this.#pipelines.get(key);
    if (!p) {
      const { bgl, pl } = this.#layout(nIn, nOut, uni);
      const pipeline = this.device.createComputePipeline({
        layout: pl,
        label: `${spec.shader}.${spec.entry}`,
        compute: {
          module: this.#module(spec.shader, spec.defines),
          entryPoint: spec.entry,
          constants: spec.constants,
        },
      });
      p = { pipeline, layout, bgl };
      this.pipelinesCreated++;
      this.#pipelines.set(key, p);
    }
    return p;
  }

  #contentId(o: object): number {
    let id = this.#idOf.get(o);
    if (id === undefined) {
      const json = JSON.stringify(o);
      id = this.#idOfJson.get(json);
      if (id === undefined) this.#idOfJson.set(json, id = this.#idOfJson.size);
      this.#idOf.set(o, id);
    }
    return id;
  }

  #bufferId(b: GPUBuffer): number {
    let id = this.#bufferIds.get(b);
    if (id === undefined) this.#bufferIds.set(b, id = this.#nextBufferId++);
    return id;
  }

  /** The bind group of `ranges` for a pipeline, from the cache when the same ranges repeat. */
  #bindGroup(p: CachedPipeline, ranges: BufferRange[], name: string): GPUBindGroup {
    let key = p.layout;
    for (const r of ranges) key += `|${this.#bufferId(r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}`;
    let bg = this.#bindGroups.get(key);
    if (!bg) {
      // A bound on the cache's size: steps of a fixed shape need a few hundred entries, and a
      // run that keeps changing shapes (multi-scale inference) only loses its hit rate.
      if (this.#bindGroups.size >= BIND_GROUP_CACHE) this.#bindGroups.clear();
      bg = this.device.createBindGroup({
        layout: p.bgl,
        entries: ranges.map((r, i) => ({
          binding: i,
          resource: { buffer: r.buffer, offset: r.offset ?? 0, size: r.size },
        })),
        label: name,
      });
      this.bindGroupsCreated++;
      this.#bindGroups.set(key, bg);
    }
    return bg;
  }

  /** The command encoder being recorded (created on demand). Ends any open compute pass. */
  encoder(): GPUCommandEncoder {
    this.#checkLost();
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.encoder().beginComputePass();
    return this.#pass;
  }

  #uniform(words: ArrayLike<number>): BufferRange {
    // Every uniform slot is bound with at least 256 bytes: wgpu's late binding-size check can
    // compare a bind group against the previous pipeline's struct size within one compute pass
    // (seen with Deno 2.9.6), so a binding never smaller than any params struct avoids it.
    const bytes = Math.max(256, Math.ceil(words.length * 4 / 16) * 16);
    if (bytes > UNIFORM_CHUNK) throw new GpuError(`uniform block of ${bytes} bytes is too large`);
    if (this.#chunkOffset + bytes > UNIFORM_CHUNK) {
      this.#chunkIndex++;
      this.#chunkOffset = 0;
    }
    if (this.#chunkIndex === this.#chunks.length) {
      this.#chunks.push(this.device.createBuffer({
        size: UNIFORM_CHUNK,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: "uniform-arena",
      }));
      this.#chunkData.push(new Uint8Array(UNIFORM_CHUNK));
    }
    const off = this.#chunkOffset;
    const dst = new Uint32Array(this.#chunkData[this.#chunkIndex].buffer, off, bytes / 4);
    dst.fill(0);
    if (words instanceof Uint32Array) dst.set(words);
    else for (let i = 0; i < words.length; i++) dst[i] = words[i];
    const align = this.#limits.minUniformBufferOffsetAlignment;
    this.#chunkOffset = Math.ceil((off + bytes) / align) * align;
    return { buffer: this.#chunks[this.#chunkIndex], offset: off, size: bytes };
  }

  /** Records one compute dispatch into the current encoder. */
  dispatch(spec: DispatchSpec): void {
    this.#checkLost();
    const name = spec.name ?? `${spec.shader}.${spec.entry}`;
    if (this.debug) {
      this.device.pushErrorScope("out-of-memory");
      this.device.pushErrorScope("validation");
    }
    const [x, y = 1, z = 1] = spec.workgroups;
    const lim = this.#limits.maxComputeWorkgroupsPerDimension;
    if (x > lim || y > lim || z > lim) {
      throw new GpuError(`${name}: workgroup count ${x}x${y}x${z} exceeds ${lim} per dimension`);
    }
    const cached = this.#pipeline(spec);
    const pipeline = cached.pipeline;
    const ranges = [...(spec.inputs ?? []), ...(spec.outputs ?? [])].map(toRange);
    for (const r of ranges) {
      const size = r.size ?? r.buffer.size - (r.offset ?? 0);
      if (size > this.maxBindingBytes) {
        throw new GpuError(
          `${name}: binding of ${size} bytes exceeds maxStorageBufferBindingSize ` +
            `(${this.maxBindingBytes}); the op must split its work`,
        );
      }
    }
    if (spec.params !== undefined) ranges.push(this.#uniform(spec.params));
    const bg = this.#bindGroup(cached, ranges, name);
    if (x > 0 && y > 0 && z > 0 && this.#profiler) {
      const q = this.#profiler.slot(name);
      const pass = this.encoder().beginComputePass({
        timestampWrites: {
          querySet: q.set,
          beginningOfPassWriteIndex: q.index,
          endOfPassWriteIndex: q.index + 1,
        },
      });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
      this.dispatchCount++;
    } else if (x > 0 && y > 0 && z > 0) {
      const pass = this.#computePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(x, y, z);
      this.dispatchCount++;
    }
    if (this.debug) {
      // Submit each dispatch on its own so that encoding errors land in this op's scope.
      this.#submit(false);
      const v = this.device.popErrorScope();
      const o = this.device.popErrorScope();
      this.#pendingErrors.push(
        Promise.all([v, o]).then(([a, b]) => {
          const e = a ?? b;
          return e ? `${name}: ${e.message}` : null;
        }),
      );
    }
  }

  /**
   * Dispatches a 1-D kernel over `n` items with `wgSize` invocations per workgroup, splitting
   * the workgroup count over x and y when it exceeds the per-dimension limit. Shaders compute
   * the flat index as `gid.x + gid.y * nwg.x * WG` (with `@builtin(num_workgroups) nwg`)
   * and must bounds-check against `n`.
   */
  dispatch1d(spec: Omit<DispatchSpec, "workgroups">, n: number, wgSize = 256): void {
    this.dispatch({
      ...spec,
      workgroups: grid1d(n, wgSize, this.limits.maxComputeWorkgroupsPerDimension),
    });
  }

  /** A small zeroed storage buffer to bind where a kernel ignores a binding. */
  get dummy(): BufferRange {
    this.#dummy ??= this.device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
    return { buffer: this.#dummy, offset: 0, size: 256 };
  }

  /** Device limits (read once: the getter of the device builds them on every access). */
  get limits(): GPUSupportedLimits {
    return this.#limits;
  }

  /** Runs `fn` after the next flush (used to release staging buffers). */
  afterFlush(fn: () => void): void {
    this.#afterFlush.push(fn);
  }

  /** Submits everything recorded so far (uniform arena writes first). */
  flush(): void {
    this.#submit(this.debug);
  }

  #submit(ownScope: boolean): void {
    this.#checkLost();
    if (!this.#encoder) {
      for (const f of this.#afterFlush.splice(0)) f();
      return;
    }
    const enc = this.encoder();
    this.#encoder = null;
    for (let i = 0; i <= this.#chunkIndex && i < this.#chunks.length; i++) {
      const used = i < this.#chunkIndex ? UNIFORM_CHUNK : this.#chunkOffset;
      if (used > 0) this.device.queue.writeBuffer(this.#chunks[i], 0, this.#chunkData[i], 0, used);
    }
    this.#chunkIndex = 0;
    this.#chunkOffset = 0;
    if (ownScope) this.device.pushErrorScope("validation");
    this.device.queue.submit([enc.finish()]);
    if (ownScope) {
      this.#pendingErrors.push(
        this.device.popErrorScope().then((e) => e ? `submit: ${e.message}` : null),
      );
    }
    for (const f of this.#afterFlush.splice(0)) f();
  }

  /** Flushes and waits until the GPU has finished; throws errors captured in debug mode. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.checkErrors();
  }

  /** Throws the first error captured by debug-mode error scopes (naming the op). */
  async checkErrors(): Promise<void> {
    const errs = (await Promise.all(this.#pendingErrors.splice(0))).filter((e) => e !== null);
    if (errs.length) throw new GpuError(`WebGPU error in ${errs[0]}`);
    this.#checkLost();
  }

  /** Reads `size` bytes of a buffer at `offset` back to the CPU (flushes first). */
  async readBytes(
    buffer: GPUBuffer,
    offset = 0,
    size = buffer.size - offset,
  ): Promise<ArrayBuffer> {
    return (await this.readRanges([{ buffer, offset, size }]))[0];
  }

  /**
   * Reads several byte ranges back with one staging buffer and one await (each await of the
   * queue costs ~11 ms on CPU adapters). Flushes first.
   */
  async readRanges(ranges: BufferRange[]): Promise<ArrayBuffer[]> {
    const spans = ranges.map((r) => {
      const size = r.size ?? r.buffer.size - (r.offset ?? 0);
      return { ...r, size, padded: Math.ceil(size / 4) * 4 };
    });
    const starts: number[] = [];
    let total = 0;
    for (const s of spans) {
      starts.push(total);
      total += s.padded;
    }
    const staging = this.device.createBuffer({
      size: Math.max(4, total),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "readback",
    });
    const enc = this.encoder();
    spans.forEach((s, i) => {
      if (s.padded) enc.copyBufferToBuffer(s.buffer, s.offset ?? 0, staging, starts[i], s.padded);
    });
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
      const mapped = staging.getMappedRange();
      const out = spans.map((s, i) => mapped.slice(starts[i], starts[i] + s.size));
      staging.unmap();
      await this.checkErrors();
      return out;
    } finally {
      staging.destroy();
    }
  }

  /**
   * Records a CPU→GPU upload of `data` into `buffer` at `offset`, ordered with the recorded
   * work: the data goes to a pooled staging buffer and a copy is recorded, so a pooled buffer
   * reused within one recording is never overwritten before earlier commands ran.
   */
  upload(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    const bytes = data.byteLength;
    if (bytes === 0) return;
    const padded = Math.ceil(bytes / 4) * 4;
    const size = sizeClass(padded);
    const staging = this.#staging.get(size)?.pop() ?? this.device.createBuffer({
      size,
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label: "upload",
    });
    // queue.writeBuffer lands before the next submit's commands and after earlier submits,
    // and the staging buffer is not reused before this recording is submitted.
    const src = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, bytes);
    if (padded === bytes) {
      this.device.queue.writeBuffer(staging, 0, src);
    } else {
      const tmp = new Uint8Array(padded);
      tmp.set(src);
      this.device.queue.writeBuffer(staging, 0, tmp);
    }
    this.encoder().copyBufferToBuffer(staging, 0, buffer, offset, padded);
    this.afterFlush(() => {
      let list = this.#staging.get(size);
      if (!list) this.#staging.set(size, list = []);
      list.push(staging);
    });
  }

  /** Records a fill with zeros of a byte range. */
  clear(buffer: GPUBuffer, offset = 0, size?: number): void {
    this.encoder().clearBuffer(buffer, offset, size);
  }

  #checkLost(): void {
    if (this.#lost) throw new GpuError(this.#lost);
  }

  /** Releases the device. */
  destroy(): void {
    this.#pass = null;
    this.#encoder = null;
    this.#bindGroups.clear();
    this.pool.trim();
    for (const c of this.#chunks) c.destroy();
    for (const list of this.#staging.values()) list.forEach((b) => b.destroy());
    this.device.destroy();
  }
}

/** Timestamp-query bookkeeping for {@link GpuContext.startProfile}. */
class Profiler {
  #sets: GPUQuerySet[] = [];
  #names: string[] = [];
  static readonly PER_SET = 4096;

  constructor(readonly gpu: GpuContext) {}

  slot(name: string): { set: GPUQuerySet; index: number } {
    const i = this.#names.length;
    const setIndex = Math.floor((2 * i) / Profiler.PER_SET);
    if (setIndex === this.#sets.length) {
      this.#sets.push(
        this.gpu.device.createQuerySet({ type: "timestamp", count: Profiler.PER_SET }),
      );
    }
    this.#names.push(name);
    return { set: this.#sets[setIndex], index: (2 * i) % Profiler.PER_SET };
  }

  async report(): Promise<{ name: string; calls: number; ms: number }[]> {
    const totals = new Map<string, { calls: number; ms: number }>();
    for (let s = 0; s < this.#sets.length; s++) {
      const count = Math.min(Profiler.PER_SET, 2 * this.#names.length - s * Profiler.PER_SET);
      const buf = this.gpu.device.createBuffer({
        size: count * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      this.gpu.encoder().resolveQuerySet(this.#sets[s], 0, count, buf, 0);
      const ts = new BigUint64Array(await this.gpu.readBytes(buf, 0, count * 8));
      buf.destroy();
      this.#sets[s].destroy();
      for (let k = 0; k < count; k += 2) {
        const name = this.#names[(s * Profiler.PER_SET + k) / 2];
        const t = totals.get(name) ?? { calls: 0, ms: 0 };
        t.calls++;
        t.ms += Number(ts[k + 1] - ts[k]) / 1e6;
        totals.set(name, t);
      }
    }
    return [...totals].map(([name, t]) => ({ name, ...t })).sort((a, b) => b.ms - a.ms);
  }
}

/** Workgroup counts covering `n` items, split over x and y past the per-dimension limit. */
export function grid1d(n: number, wgSize: number, limit = 65535): [number, number] {
  const groups = Math.ceil(n / wgSize);
  if (groups <= limit) return [groups, 1];
  const y = Math.ceil(groups / limit);
  return [Math.ceil(groups / y), y];
}

/**
 * Acquires an adapter and device and preloads the shaders. Throws a {@link GpuError} that says
 * how to get an adapter when WebGPU or an adapter is missing. Portable (no runtime API beyond
 * WebGPU and fetch); under Deno, src/io/gpu.ts's `createGpu` (what mod.ts exports) also
 * quiets the Vulkan loader's warning on headless machines.
 */
export async function createGpu(opts: GpuOptions = {}): Promise<GpuContext> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const api = "gpuApi" in opts ? opts.gpuApi : (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!api) {
    throw new GpuError(`WebGPU is not available (navigator.gpu is undefined). ${ADAPTER_HELP}`);
  }
  const adapter = await api.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new GpuError(`no WebGPU adapter found. ${ADAPTER_HELP}`);
  }
  const wanted = [
    ...(opts.optionalFeatures ?? []),
    ...(opts.profile ? ["timestamp-query" as const] : []),
  ];
  const features = wanted.filter((f) => adapter.features.has(f));
  const lim = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: {
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: lim.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: lim.maxComputeWorkgroupSizeY,
    },
  });
  const gpu = new GpuContext(adapter, device, opts.debug ?? false, opts.maxBindingBytes);
  if (opts.verbose) {
    log(`WebGPU adapter: ${gpu.describe()}`);
    log(
      `  limits: maxStorageBufferBindingSize ${lim.maxStorageBufferBindingSize}, ` +
        `workgroup storage ${lim.maxComputeWorkgroupStorageSize}, ` +
        `invocations ${lim.maxComputeInvocationsPerWorkgroup}, features ${
          [...device.features].join(",") || "none"
        }`,
    );
  }
  await gpu.loadShaders(SHADER_NAMES);
  if (opts.profile && !gpu.startProfile()) log("profiling: the adapter has no timestamp-query");
  return gpu;
}
