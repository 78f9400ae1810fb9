/**
 * The dense CRF's bilateral message through a permutohedral lattice (Adams, Baek & Davis 2010,
 * as pydensecrf's permutohedral.cpp) built and applied on the GPU, deterministically: no hash
 * table and no atomics. Kernels: `shaders/lattice.wgsl` (its header lists them).
 *
 * Build (once per image, {@link BilateralLattice}): every pixel's 6 simplex corners become
 * entries (key, e = p·6 + j); a merge sort (register runs, merge-path passes) orders them by key
 * then e; a three-pass integer scan over "new key" flags numbers the M distinct vertices; each
 * vertex keeps its key and the first entry of its segment, each entry its vertex; blur
 * neighbours are found once by binary search among the sorted vertex keys. Filtering
 * ({@link BilateralLattice.filter}) splats per fixed chunk of sorted entries (in-order sums per
 * vertex, chunk partials combined in chunk order), blurs along the 6 directions and slices per
 * pixel. The number of vertices M stays on the GPU (no readback): buffers are sized for the
 * worst case M = 6N, and vertex kernels loop over the vertices with a stride. No invocation
 * runs a long serial loop (llvmpipe ends an invocation's loops silently after 65535 iterations
 * in all; docs/crf.md).
 *
 * Limits: keys pack five 16-bit coordinates, checked on the host from the image size and the
 * kernel's standard deviations; every binding (the largest is the lattice values, 24·N·L
 * bytes) must fit `maxStorageBufferBindingSize`, or a RangeError names that limit.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { BilateralKernel } from "./crf_ref.ts";

const { LatParams } = declareParams("lattice", {
  LatParams: {
    N: "u32",
    W: "u32",
    nreal: "u32",
    L: "u32",
    mmax: "u32",
    k: "u32",
    mode: "u32",
    dir: "u32",
    count: "u32",
    stride: "u32",
    voff: "u32",
    sxy: "f32",
    srgb: "f32",
  },
});

const D = 5;
const D1 = 6;
const KEY_LIMIT = 32767;
/** Entries per run of the merge sort's first pass (MS_RUN in lattice.wgsl). */
const SORT_RUN = 16;
/** Outputs per invocation of a merge pass (MS_OUT in lattice.wgsl; divides 2·SORT_RUN). */
const MERGE_OUT = 32;
/** Sorted entries per chunk of the vertex numbering (SCC in lattice.wgsl). */
const VERT_CHUNK = 128;
/** Sorted entries per splat chunk (SPC in lattice.wgsl). */
const SPLAT_CHUNK = 64;
/**
 * Invocations of a vertex kernel: they loop over the M vertices (known on the GPU only) with
 * this stride (a multiple of their workgroup size, 64: every invocation has its own residue),
 * so that a lattice with few vertices does not pay for 6N idle invocations. At most 256
 * vertices per invocation (for M = 6N): llvmpipe ends an invocation's loops silently after
 * 65535 iterations in all (its shared loop limiter), and the neighbour search takes ~130 per
 * vertex.
 */
function vertexStride(nreal: number): number {
  return Math.ceil(Math.min(nreal, Math.max(4096, nreal / 256)) / 64) * 64;
}

/** The largest |lattice coordinate| a kernel can produce on an h x w image (plus margin). */
export function latticeCoordinateBound(h: number, w: number, k: BilateralKernel): number {
  const fmax = [(w - 1) / k.sxy, (h - 1) / k.sxy, 255 / k.srgb, 255 / k.srgb, 255 / k.srgb];
  const invStd = Math.sqrt(2 / 3) * D1;
  const cf = fmax.map((f, i) => f * invStd / Math.sqrt((i + 2) * (i + 1)));
  const total = cf.reduce((a, b) => a + b, 0);
  let bound = total;
  for (let j = 1; j <= D; j++) bound = Math.max(bound, total + j * cf[j - 1]);
  // Rounding to the 0-coloured point (≤ 3), the rank wrap (6), the corner offset (≤ 6) and
  // the blur neighbours (≤ 5).
  return bound + 20;
}

/**
 * The largest storage binding (bytes) of the lattice path on an h x w image with `labels`
 * labels: the sorted entries (16·6N), the blur neighbours
 * (2·6·6N u32) or the lattice values (4·6N·L).
 */
export function latticeMaxBinding(h: number, w: number, labels: number): number {
  const nreal = D1 * h * w;
  return Math.max(16 * nreal, 2 * D1 * nreal * 4, 4 * nreal * labels);
}

/** Throws a RangeError naming the binding limit when `bytes` exceed it. */
export function checkBinding(gpu: GpuContext, op: string, what: string, bytes: number): void {
  if (bytes > gpu.maxBindingBytes) {
    throw new RangeError(
      `${op}: ${what} needs a ${bytes}-byte storage binding, over this device's ` +
        `maxStorageBufferBindingSize (${gpu.maxBindingBytes} bytes); use a smaller image ` +
        `or fewer labels`,
    );
  }
}

/** The bilateral kernel's lattice of one image: build once, filter several value maps. */
export class BilateralLattice {
  /** Pixels. */
  readonly n: number;
  /** Lattice entries (6 per pixel) = the most vertices there can be. */
  readonly nreal: number;
  /** The symmetric normaliser nb_p = 1/sqrt(lattice(1)_p + 1e-20), [N]. */
  readonly norm: Tensor;
  #sent: Tensor;
  #seg: Tensor;
  #uniq: Tensor;
  #corner: Tensor;
  #count: Tensor;
  #nbr: Tensor;
  #disposed = false;

  /**
   * Records the lattice build of `image` ([3, H, W], 0..255) for kernel `k` (sxy already
   * scaled) into the current encoder.
   */
  constructor(
    readonly gpu: GpuContext,
    image: Tensor,
    readonly h: number,
    readonly w: number,
    readonly kernel: BilateralKernel,
    readonly op = "denseCrf",
  ) {
    const n = h * w;
    this.n = n;
    const nreal = n * D1;
    this.nreal = nreal;
    const bound = latticeCoordinateBound(h, w, kernel);
    if (bound > KEY_LIMIT) {
      throw new RangeError(
        `${op}: the bilateral lattice's coordinates reach ${Math.ceil(bound)}, past the ` +
          `16-bit key range (${KEY_LIMIT}): sxy ${kernel.sxy} / srgb ${kernel.srgb} are too ` +
          `small for a ${h}x${w} image; use method "exact"`,
      );
    }
    checkBinding(gpu, op, "the lattice's sorted entries", nreal * 16);
    checkBinding(gpu, op, "the lattice's blur neighbours", 2 * D1 * nreal * 4);
    const base = {
      N: n,
      W: w,
      nreal,
      L: 1,
      mmax: nreal,
      k: 0,
      mode: 0,
      dir: 0,
      stride: vertexStride(nreal),
      voff: 0,
    };
    const pk = (o: Partial<typeof base> & { count?: number } = {}) =>
      LatParams.pack({ ...base, count: 0, sxy: kernel.sxy, srgb: kernel.srgb, ...o });
    const ent = Tensor.empty(gpu, [nreal * 4], "crf.lattice.entries");
    const corner = Tensor.empty(gpu, [2 * nreal], "crf.lattice.corners");
    gpu.dispatch1d(
      {
        name: `${op}.lattice.keys`,
        shader: "lattice",
        entry: "lat_keys",
        inputs: [image],
        outputs: [ent, corner],
        params: pk(),
      },
      n,
      64,
    );
    // Merge sort: runs of 16 sorted in registers, then merge passes of doubling width
    // (ping-pong between two buffers; the last pass's output is kept).
    let sorted = ent;
    gpu.dispatch1d(
      {
        name: `${op}.lattice.sort`,
        shader: "lattice",
        entry: "sort_runs",
        outputs: [ent],
        params: pk(),
      },
      Math.ceil(nreal / SORT_RUN),
      64,
    );
    if (nreal > SORT_RUN) {
      let other = Tensor.empty(gpu, [nreal * 4], "crf.lattice.entries");
      for (let k = SORT_RUN; k < nreal; k *= 2) {
        gpu.dispatch1d(
          {
            name: `${op}.lattice.sort`,
            shader: "lattice",
            entry: "merge_pass",
            inputs: [sorted],
            outputs: [other],
            params: pk({ k }),
          },
          Math.ceil(nreal / MERGE_OUT),
          64,
        );
        [sorted, other] = [other, sorted];
      }
      other.dispose();
    }
    // Vertex numbering: "new key" counts per chunk, their serial scan, then each chunk's
    // entries numbered in order (the segment table, the vertex keys, each corner's vertex and
    // the splat's sorted entries).
    const chunks = Math.ceil(nreal / VERT_CHUNK);
    const sums = Tensor.empty(gpu, [chunks], "crf.lattice.chunk_counts");
    gpu.dispatch1d(
      {
        name: `${op}.lattice.vertices`,
        shader: "lattice",
        entry: "vert_count",
        inputs: [sorted],
        outputs: [sums],
        params: pk(),
      },
      chunks,
      64,
    );
    gpu.dispatch({
      name: `${op}.lattice.vertices`,
      shader: "lattice",
      entry: "vert_offsets",
      outputs: [sums],
      params: pk(),
      workgroups: [1],
    });
    const scan = Tensor.empty(gpu, [nreal], "crf.lattice.segments");
    const uniq = Tensor.empty(gpu, [(nreal + 1) * 4], "crf.lattice.vertices");
    const count = Tensor.empty(gpu, [4], "crf.lattice.count");
    const sent = Tensor.empty(gpu, [2 * nreal], "crf.lattice.sorted");
    gpu.dispatch1d(
      {
        name: `${op}.lattice.vertices`,
        shader: "lattice",
        entry: "vert_write",
        inputs: [sorted, sums],
        outputs: [scan, uniq, corner, count, sent],
        params: pk(),
      },
      chunks,
      64,
    );
    sums.dispose();
    sorted.dispose();
    const nbr = Tensor.empty(gpu, [2 * D1 * nreal], "crf.lattice.neighbours");
    gpu.dispatch1d(
      {
        name: `${op}.lattice.neighbours`,
        shader: "lattice",
        entry: "lat_neighbors",
        inputs: [uniq, count],
        outputs: [nbr],
        params: pk(),
      },
      base.stride,
      64,
    );
    this.#sent = sent;
    this.#seg = scan;
    this.#uniq = uniq;
    this.#corner = corner;
    this.#count = count;
    this.#nbr = nbr;
    const ones = this.#blurred(null, 1, 1, undefined, 0);
    this.norm = this.#slice(ones, 1, 1);
    ones.dispose();
  }

  /**
   * Records alpha·slice(blur(splat(nb·values))) for values [L, N] (label-major): the lattice
   * sum Σ_q k(f_p, f_q)·nb_q·v_q, not yet multiplied by nb_p (`scale` [N] replaces nb_q: ones
   * give the plain lattice sum). Returns [L, N] (caller owns).
   */
  filter(values: Tensor, labels: number, scale: Tensor = this.norm): Tensor {
    if (this.#disposed) throw new Error(`${this.op}: lattice used after dispose`);
    const a = this.#blurred(values, labels, 0, scale, 0);
    const out = this.#slice(a, labels, 0);
    a.dispose();
    return out;
  }

  /**
   * Records blur(splat(values)) for values already multiplied by the normaliser, pixel-major
   * from element `offset` (a multiple of 4) of `values`: [N, 4·ceil(L/4)] (the labels padded
   * to groups of 4). Returns the lattice values [Mmax, L] before the slice (caller owns), for
   * a kernel that slices them itself (the CRF's update).
   */
  blurredScaled(values: Tensor, labels: number, offset: number): Tensor {
    if (this.#disposed) throw new Error(`${this.op}: lattice used after dispose`);
    return this.#blurred(values, labels, 2, undefined, offset);
  }

  /** Per entry e = p·6 + j: (vertex of pixel p's corner j, bits of its barycentric weight). */
  get corners(): Tensor {
    return this.#corner;
  }

  #pk(L: number, mode: number, o: Record<string, number> = {}): Uint32Array {
    return LatParams.pack({
      N: this.n,
      W: this.w,
      nreal: this.nreal,
      L,
      mmax: this.nreal,
      k: 0,
      mode,
      dir: 0,
      count: 0,
      stride: vertexStride(this.nreal),
      voff: 0,
      sxy: this.kernel.sxy,
      srgb: this.kernel.srgb,
      ...o,
    });
  }

  #checkValues(L: number): void {
    checkBinding(
      this.gpu,
      this.op,
      `the lattice values (${this.nreal} vertices x ${L} labels)`,
      4 * this.nreal * L,
    );
  }

  /** Splat (mode 0: scale·values, 1: ones, 2: values as they are) and blur: [Mmax, L]. */
  #blurred(
    values: Tensor | null,
    L: number,
    mode: 0 | 1 | 2,
    scale: Tensor | undefined,
    voff: number,
  ): Tensor {
    const gpu = this.gpu;
    const op = this.op;
    this.#checkValues(L);
    const chunks = Math.ceil(this.nreal / SPLAT_CHUNK);
    checkBinding(gpu, op, `the splat's partial sums (${chunks} chunks)`, 8 * chunks * L);
    let a = Tensor.empty(gpu, [this.nreal * L], "crf.lattice.values");
    const part = Tensor.empty(gpu, [2 * chunks * L], "crf.lattice.partials");
    gpu.dispatch1d(
      {
        name: `${op}.lattice.splat`,
        shader: "lattice",
        entry: "lat_splat",
        inputs: [
          this.#sent,
          this.#seg,
          mode === 0 ? values! : gpu.dummy,
          mode === 2 ? values! : gpu.dummy,
          scale ?? gpu.dummy,
        ],
        outputs: [a, part],
        params: this.#pk(L, mode, { voff }),
      },
      chunks,
      64,
    );
    const stride = vertexStride(this.nreal);
    gpu.dispatch({
      name: `${op}.lattice.splat`,
      shader: "lattice",
      entry: "lat_splat_combine",
      inputs: [this.#uniq, this.#count, part],
      outputs: [a],
      params: this.#pk(L, mode),
      workgroups: [stride / 64, Math.ceil(L / 4)],
    });
    part.dispose();
    let b = Tensor.empty(gpu, [this.nreal * L], "crf.lattice.values");
    for (let dir = 0; dir <= D; dir++) {
      gpu.dispatch1d(
        {
          name: `${op}.lattice.blur`,
          shader: "lattice",
          entry: "lat_blur",
          inputs: [a, this.#nbr, this.#count],
          outputs: [b],
          params: this.#pk(L, mode, { dir }),
        },
        stride,
        64,
      );
      [a, b] = [b, a];
    }
    b.dispose();
    return a;
  }

  /** Slice (mode 1: 1/sqrt(· + 1e-20)): [L, N]. */
  #slice(a: Tensor, L: number, mode: 0 | 1): Tensor {
    const out = Tensor.empty(this.gpu, [L, this.n], "crf.lattice.out");
    this.gpu.dispatch1d(
      {
        name: `${this.op}.lattice.slice`,
        shader: "lattice",
        entry: "lat_slice",
        inputs: [a, this.#corner],
        outputs: [out],
        params: this.#pk(L, mode),
      },
      this.n,
      64,
    );
    return out;
  }

  /** The number of lattice vertices, read back (for tests and the benchmark). */
  async vertexCount(): Promise<number> {
    const [buf] = await this.gpu.readRanges([{ buffer: this.#count.buffer, offset: 0, size: 4 }]);
    return new Uint32Array(buf)[0];
  }

  /** Releases the lattice's buffers. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const t of [this.#sent, this.#seg, this.#uniq, this.#corner, this.#count, this.#nbr]) {
      t.dispose();
    }
    this.norm.dispose();
  }
}
