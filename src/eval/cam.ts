/**
 * CAM evaluation on the GPU (docs/evaluation.md#of-cams-unrestricted), with TypeScript references.
 *
 * Input per image: class activation maps `[C, h, w]` (f32, any sign), the image size H×W,
 * the image's tags and optionally its ground truth. The maps are ReLU'd (default; see
 * docs/evaluation.md#of-cams-unrestricted) and bilinearly upsampled to H×W with PyTorch's `align_corners=false`
 * rule (`src = max((dst + 0.5)·in/out − 0.5, 0)`, lambdas clamped to [0, 1]), on the fly in
 * the kernels (shaders/eval.wgsl); maps already at H×W pass through unchanged.
 *
 * - **Unrestricted-CAM OC-error rate.** Let `M_c` = max over the image of upsampled map c and
 *   `A = max_{c∈tags} M_c`. Pixel p is active when `m(p) = max_c cam_c(p) > 0` and
 *   `m(p) ≥ tau·A` (tau default 0.3); it is OC when `argmax_c cam_c(p)` (lowest index on
 *   ties) is not a tag. OC rate = OC pixels ÷ active pixels, pooled over all images (numerator
 *   and denominator accumulate on the GPU). Images without tags contribute nothing. OC pixels
 *   are also counted by (ground-truth label, OC class); without ground truth the label row
 *   is K ("ignore").
 * - **Pseudo mask at background threshold t** (psa/SEAM): normalised score
 *   `s_c(p) = relu(cam_c(p)) / (relu(M_c) + 1e-5)` for tagged c only; the label is the argmax
 *   over `[t, s_c...]`, i.e. class c+1 when `max s > t` else background (0). Ties: background
 *   first, then the lowest class.
 * - **Threshold sweep.** One pass accumulates, for every threshold, the pseudo mask's
 *   confusion matrix against the ground truth (ignore 255 skipped).
 *
 * Counts are exact (see {@link GpuCounters}).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { planeChunks } from "../gpu/split.ts";
import { checkLabels, type LabelMap } from "./confusion.ts";
import {
  CamParams,
  checkNumClasses,
  GpuCounters,
  pixelChunks,
  tagWords,
  u8Range,
} from "./counters.ts";
import { pseudoMask } from "../cam/pseudo_mask.ts";

/** One image's CAMs for evaluation. */
export interface CamSample {
  /** Image id (named in errors). */
  id: string;
  /** CAMs `[C, h, w]` or `[1, C, h, w]`: a GPU tensor, or CPU values with `camShape`. */
  cam: Tensor | Float32Array;
  /** `[C, h, w]` when `cam` is a Float32Array. */
  camShape?: readonly [number, number, number];
  /** Image width W (the upsampling target). */
  width: number;
  /** Image height H. */
  height: number;
  /** The image's tags (0-based foreground classes). */
  tags: readonly number[];
  /** Ground truth (H×W; 0..C, 255 = ignore) or null. */
  gt?: LabelMap | null;
}

/** Options shared by the CAM kernels. */
export interface CamOptions {
  /** ReLU the CAMs before upsampling (default true, docs/evaluation.md). */
  relu?: boolean;
}

/** Options of {@link CamEvaluator}. */
export interface CamEvaluatorOptions extends CamOptions {
  /** Background thresholds to score (sorted ascending internally; default [0.15]). */
  thresholds?: readonly number[];
  /** Activation ratio tau of the OC-error rate (default 0.3). */
  tau?: number;
  /** Pixels per invocation of the counting kernels (default 64). */
  pixelsPerInvocation?: number;
  /** Drain the u32 counters before this many pixels accumulate (tests lower it). */
  drainPixels?: number;
}

/** Accumulated CAM evaluation counts (exact integers as f64). */
export interface CamCounts {
  /** C. */
  numClasses: number;
  /** Images added. */
  nImages: number;
  /** Images with ground truth (those in the confusion matrices). */
  nGtImages: number;
  /** tau. */
  tau: number;
  /** Background thresholds, ascending. */
  thresholds: number[];
  /** Per threshold: K×K confusion of the pseudo mask (rows = ground truth). */
  confusions: Float64Array[];
  /** Active pixels (the OC rate's denominator). */
  activePixels: number;
  /** Active pixels whose unrestricted argmax is not a tag. */
  ocPixels: number;
  /** (K+1)×K OC pixels by ground-truth row (K = ignore / no ground truth) and OC class. */
  ocPairs: Float64Array;
}

function camParams(o: {
  h: number;
  w: number;
  H: number;
  W: number;
  c0?: number;
  cc?: number;
  base?: number;
  C: number;
  p0?: number;
  np?: number;
  per?: number;
  flags?: number;
  thr?: number;
  nt?: number;
  tags: number[];
}): Uint32Array {
  return CamParams.pack({
    h: o.h,
    w: o.w,
    hh: o.H,
    ww: o.W,
    c0: o.c0 ?? 0,
    cc: o.cc ?? 0,
    base: o.base ?? 0,
    ncls: o.C,
    p0: o.p0 ?? 0,
    np: o.np ?? 0,
    per: o.per ?? 64,
    flags: o.flags ?? 0,
    sy: o.h / o.H,
    sx: o.w / o.W,
    thr: o.thr ?? 0,
    nt: o.nt ?? 0,
    tag_lo: o.tags.slice(0, 4),
    tag_hi: o.tags.slice(4, 8),
  });
}

/** Checks a sample and returns its CAM shape `[C, h, w]`. */
export function validateCamSample(s: CamSample, numClasses: number): [number, number, number] {
  let shape: readonly number[];
  if (s.cam instanceof Float32Array) {
    if (!s.camShape) throw new RangeError(`${s.id}: camShape is required for CPU CAM values`);
    shape = s.camShape;
    if (s.cam.length !== shape[0] * shape[1] * shape[2]) {
      throw new RangeError(`${s.id}: ${s.cam.length} CAM values for shape [${shape}]`);
    }
  } else {
    shape = s.cam.shape.length === 4 && s.cam.shape[0] === 1 ? s.cam.shape.slice(1) : s.cam.shape;
    if (shape.length !== 3) {
      throw new RangeError(
        `${s.id}: CAM tensor must be [C, h, w] or [1, C, h, w], got [${s.cam.shape}]`,
      );
    }
  }
  const [C, h, w] = shape;
  if (C !== numClasses) {
    throw new RangeError(`${s.id}: CAM has ${C} classes, the evaluation expects ${numClasses}`);
  }
  if (!(h >= 1 && w >= 1)) throw new RangeError(`${s.id}: empty CAM [${shape}]`);
  if (!Number.isInteger(s.width) || !Number.isInteger(s.height) || s.width < 1 || s.height < 1) {
    throw new RangeError(`${s.id}: bad image size ${s.width}x${s.height}`);
  }
  if (s.gt) {
    if (s.gt.width !== s.width || s.gt.height !== s.height) {
      throw new RangeError(
        `${s.id}: ground truth is ${s.gt.width}x${s.gt.height} but the image is ` +
          `${s.width}x${s.height}`,
      );
    }
    if (s.gt.data.length !== s.width * s.height) {
      throw new RangeError(
        `${s.id}: ground truth has ${s.gt.data.length} values for ${s.width}x${s.height}`,
      );
    }
    checkLabels(s.gt.data, numClasses, true, `${s.id}: ground truth`, s.width);
  }
  tagWords(s.tags, numClasses, `${s.id}: tags`);
  return [C, h, w];
}

/** Per-image GPU state: per-class maxima and the per-pixel argmax state. */
interface CamState {
  C: number;
  h: number;
  w: number;
  H: number;
  W: number;
  n: number;
  tags: number[];
  /** C order-preserving u32 codes of the per-class maxima. */
  max: GPUBuffer;
  /** 4 u32 per pixel. */
  state: GPUBuffer;
  /** Ground truth (packed u8) or null. */
  gt: GPUBuffer | null;
}

function recordCamState(
  gpu: GpuContext,
  s: CamSample,
  numClasses: number,
  opts: CamOptions,
): CamState {
  const [C, h, w] = validateCamSample(s, numClasses);
  const H = s.height;
  const W = s.width;
  const n = H * W;
  const tags = tagWords(s.tags, numClasses);
  const pool = gpu.pool;
  let camBuffer: GPUBuffer;
  if (s.cam instanceof Float32Array) {
    camBuffer = pool.acquire(s.cam.byteLength, "eval-cam");
    gpu.upload(camBuffer, s.cam);
  } else {
    camBuffer = s.cam.buffer;
  }
  let gt: GPUBuffer | null = null;
  if (s.gt) {
    gt = pool.acquire(Math.ceil(n / 4) * 4, "eval-gt");
    gpu.upload(gt, s.gt.data);
  }
  const max = pool.acquire(C * 4, "eval-cam-max");
  gpu.clear(max, 0, C * 4);
  const state = pool.acquire(n * 16, "eval-cam-state");
  const relu = opts.relu ?? true;
  const seg = 64;
  // Class chunks [c0, c0 + cc) of the CAM planes; the binding starts `base` elements early.
  const chunks = planeChunks(gpu, `eval.cam(${s.id})`, C, [
    { tensor: { buffer: camBuffer, size: C * h * w }, planeSize: h * w },
  ]).map((ch) => ({ c0: ch.first, cc: ch.count, base: ch.offsets[0], range: ch.ranges[0] }));
  for (const ch of chunks) {
    gpu.dispatch1d(
      {
        name: `eval.cam_max(${s.id})`,
        shader: "eval",
        entry: "cam_max",
        inputs: [ch.range],
        outputs: [{ buffer: max, offset: 0, size: C * 4 }],
        params: camParams({
          h,
          w,
          H,
          W,
          C,
          c0: ch.c0,
          cc: ch.cc,
          base: ch.base,
          per: seg,
          flags: relu ? 4 : 0,
          tags,
        }),
      },
      ch.cc * H * Math.ceil(W / seg),
      64,
    );
  }
  const pix = pixelChunks(gpu, n, 16);
  for (const ch of chunks) {
    for (const [p0, np] of pix) {
      gpu.dispatch1d(
        {
          name: `eval.cam_argmax(${s.id})`,
          shader: "eval",
          entry: "cam_argmax",
          inputs: [ch.range, { buffer: max, offset: 0, size: C * 4 }],
          outputs: [{ buffer: state, offset: p0 * 16, size: np * 16 }],
          params: camParams({
            h,
            w,
            H,
            W,
            C,
            c0: ch.c0,
            cc: ch.cc,
            base: ch.base,
            p0,
            np,
            flags: (ch.c0 === 0 ? 1 : 0) | (relu ? 4 : 0),
            tags,
          }),
        },
        np,
        64,
      );
    }
  }
  if (s.cam instanceof Float32Array) pool.release(camBuffer);
  return { C, h, w, H, W, n, tags, max, state, gt };
}

function releaseCamState(gpu: GpuContext, st: CamState): void {
  gpu.pool.release(st.max);
  gpu.pool.release(st.state);
  if (st.gt) gpu.pool.release(st.gt);
}

function recordPseudo(gpu: GpuContext, st: CamState, t: number, out: GPUBuffer, id: string): void {
  for (const [p0, np] of pixelChunks(gpu, st.n, 16)) {
    gpu.dispatch1d(
      {
        name: `eval.cam_pseudo(${id})`,
        shader: "eval",
        entry: "cam_pseudo",
        inputs: [{ buffer: st.state, offset: p0 * 16, size: np * 16 }],
        outputs: [u8Range(out, p0, np)],
        params: camParams({ ...st, p0, np, thr: t }),
      },
      Math.ceil(np / 4),
      64,
    );
  }
}

function checkThreshold(t: number, what = "background threshold"): void {
  if (!Number.isFinite(t)) throw new RangeError(`${what} must be a finite number, got ${t}`);
}

/**
 * The tag-restricted pseudo mask of one image at background threshold `t` (GPU; one
 * readback). Values 0 (background) or c+1 for a tagged class c.
 */
export async function camPseudoMask(
  gpu: GpuContext,
  s: CamSample,
  numClasses: number,
  t: number,
  opts: CamOptions = {},
): Promise<LabelMap> {
  checkThreshold(t);
  const st = recordCamState(gpu, { ...s, gt: null }, numClasses, opts);
  const out = gpu.pool.acquire(Math.ceil(st.n / 4) * 4, "eval-pseudo");
  recordPseudo(gpu, st, t, out, s.id);
  try {
    const bytes = await gpu.readBytes(out, 0, st.n);
    return { width: st.W, height: st.H, data: new Uint8Array(bytes) };
  } finally {
    releaseCamState(gpu, st);
    gpu.pool.release(out);
  }
}

/**
 * GPU accumulator of {@link CamCounts} over a split: `add` records the work for one image
 * (no readback unless a pseudo mask is asked for); `result` reads the counts once.
 */
export class CamEvaluator {
  /** Labels counted: numClasses + 1 (background). */
  readonly k: number;
  /** Background thresholds scored, ascending. */
  readonly thresholds: number[];
  /** Activation ratio of the OC-error rate. */
  readonly tau: number;
  /** Pixels per invocation of the counting kernels. */
  readonly per: number;
  /** Whether the CAMs are ReLU'd before upsampling. */
  readonly relu: boolean;
  #oc: GpuCounters;
  #hist: GpuCounters;
  #thr: Tensor;
  #nImages = 0;
  #nGt = 0;

  /** Allocates the counters for `numClasses` foreground classes; throws RangeError on bad opts. */
  constructor(
    readonly gpu: GpuContext,
    readonly numClasses: number,
    opts: CamEvaluatorOptions = {},
  ) {
    checkNumClasses(numClasses);
    this.k = numClasses + 1;
    this.thresholds = [...(opts.thresholds ?? [0.15])].sort((a, b) => a - b);
    if (this.thresholds.length === 0) throw new RangeError("at least one background threshold");
    for (const t of this.thresholds) checkThreshold(t);
    for (let i = 1; i < this.thresholds.length; i++) {
      if (this.thresholds[i] === this.thresholds[i - 1]) {
        throw new RangeError(`duplicate background threshold ${this.thresholds[i]}`);
      }
    }
    this.tau = opts.tau ?? 0.3;
    checkThreshold(this.tau, "tau");
    this.per = opts.pixelsPerInvocation ?? 64;
    if (!Number.isInteger(this.per) || this.per < 1) {
      throw new RangeError(`pixelsPerInvocation must be a positive integer, got ${this.per}`);
    }
    this.relu = opts.relu ?? true;
    this.#oc = new GpuCounters(gpu, 2 + (this.k + 1) * this.k, opts.drainPixels);
    this.#hist = new GpuCounters(
      gpu,
      this.k * this.k * (this.thresholds.length + 1),
      opts.drainPixels,
    );
    this.#thr = Tensor.fromArray(gpu, this.thresholds, [this.thresholds.length], "eval-thr");
  }

  /**
   * Counts one image. With `pseudoThreshold`, also returns its pseudo mask at that threshold
   * (one readback); otherwise returns null.
   */
  async add(s: CamSample, opts: { pseudoThreshold?: number } = {}): Promise<LabelMap | null> {
    const n = s.width * s.height;
    if (opts.pseudoThreshold !== undefined) checkThreshold(opts.pseudoThreshold);
    const gpu = this.gpu;
    const st = recordCamState(gpu, s, this.numClasses, { relu: this.relu });
    const C = this.numClasses;
    try {
      const limit = Math.min(this.#oc.drainPixels, this.#hist.drainPixels);
      for (const [p0, np] of pixelChunks(gpu, n, 16, limit)) {
        await this.#oc.reserve(np);
        if (s.gt) await this.#hist.reserve(np);
        const stateRange = { buffer: st.state, offset: p0 * 16, size: np * 16 };
        const gtRange = st.gt ? u8Range(st.gt, p0, np) : gpu.dummy;
        if (s.tags.length > 0) {
          gpu.dispatch1d(
            {
              name: `eval.cam_oc(${s.id})`,
              shader: "eval",
              entry: "cam_oc",
              inputs: [stateRange, gtRange, { buffer: st.max, offset: 0, size: C * 4 }],
              outputs: [this.#oc.binding()],
              params: camParams({
                ...st,
                p0,
                np,
                per: this.per,
                flags: st.gt ? 2 : 0,
                thr: this.tau,
              }),
            },
            Math.ceil(np / this.per),
            64,
          );
        }
        if (st.gt) {
          gpu.dispatch1d(
            {
              name: `eval.cam_sweep(${s.id})`,
              shader: "eval",
              entry: "cam_sweep",
              inputs: [stateRange, gtRange, this.#thr.binding()],
              outputs: [this.#hist.binding()],
              params: camParams({ ...st, p0, np, per: this.per, nt: this.thresholds.length }),
            },
            Math.ceil(np / this.per),
            64,
          );
        }
      }
      this.#nImages++;
      if (s.gt) this.#nGt++;
      let mask: LabelMap | null = null;
      if (opts.pseudoThreshold !== undefined) {
        const out = gpu.pool.acquire(Math.ceil(n / 4) * 4, "eval-pseudo");
        recordPseudo(gpu, st, opts.pseudoThreshold, out, s.id);
        try {
          const bytes = await gpu.readBytes(out, 0, n);
          mask = { width: s.width, height: s.height, data: new Uint8Array(bytes) };
        } finally {
          gpu.pool.release(out);
        }
      }
      return mask;
    } finally {
      releaseCamState(gpu, st);
      gpu.flush();
    }
  }

  /** The counts so far (one readback per counter block). */
  async result(): Promise<CamCounts> {
    const k = this.k;
    const T = this.thresholds.length;
    const oc = await this.#oc.read();
    const hist = await this.#hist.read();
    return {
      numClasses: this.numClasses,
      nImages: this.#nImages,
      nGtImages: this.#nGt,
      tau: this.tau,
      thresholds: [...this.thresholds],
      confusions: sweepConfusions(hist, k, T),
      activePixels: oc[0],
      ocPixels: oc[1],
      ocPairs: oc.slice(2),
    };
  }

  /** Releases the GPU buffers. */
  dispose(): void {
    this.#oc.dispose();
    this.#hist.dispose();
    this.#thr.dispose();
  }
}

/**
 * Per-threshold confusion matrices from the sweep histogram `hist[(g*K + c)*(T+1) + b]`
 * (b = number of thresholds below the pixel's score): the pixel is class c at thresholds
 * i < b and background at i ≥ b.
 */
export function sweepConfusions(hist: Float64Array, k: number, T: number): Float64Array[] {
  const out = Array.from({ length: T }, () => new Float64Array(k * k));
  for (let g = 0; g < k; g++) {
    for (let c = 0; c < k; c++) {
      const base = (g * k + c) * (T + 1);
      let total = 0;
      for (let b = 0; b <= T; b++) total += hist[base + b];
      let atMost = 0; // pixels with b <= i: background at threshold i
      for (let i = 0; i < T; i++) {
        atMost += hist[base + i];
        out[i][g * k] += atMost;
        out[i][g * k + c] += total - atMost;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// TypeScript references (f32 arithmetic, same operation order as the kernels).

const f = Math.fround;

/** Source index and lambdas of PyTorch's align_corners=false bilinear rule (f32). */
function srcIndex(d: number, scale: number, n: number): [number, number, number, number] {
  const s = Math.max(f(f(scale * f(d + 0.5)) - 0.5), 0);
  const i0 = Math.min(Math.floor(s), n - 1);
  const i1 = Math.min(i0 + 1, n - 1);
  const l1 = Math.min(Math.max(f(s - i0), 0), 1);
  return [i0, i1, f(1 - l1), l1];
}

/**
 * Reference bilinear upsampling `[C, h, w]` → `[C, H, W]` (PyTorch `F.interpolate(...,
 * mode="bilinear", align_corners=False)` semantics, f32), optionally ReLU'ing the inputs.
 */
export function upsampleBilinearRef(
  src: Float32Array,
  C: number,
  h: number,
  w: number,
  H: number,
  W: number,
  relu = false,
): Float32Array {
  const out = new Float32Array(C * H * W);
  const sy = f(h / H);
  const sx = f(w / W);
  const xs = Array.from({ length: W }, (_, x) => srcIndex(x, sx, w));
  const r = (v: number) => relu ? Math.max(v, 0) : v;
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < H; y++) {
      const [y0, y1, ly0, ly1] = srcIndex(y, sy, h);
      const a = c * h * w + y0 * w;
      const b = c * h * w + y1 * w;
      for (let x = 0; x < W; x++) {
        const [x0, x1, lx0, lx1] = xs[x];
        const top = f(f(lx0 * r(src[a + x0])) + f(lx1 * r(src[a + x1])));
        const bot = f(f(lx0 * r(src[b + x0])) + f(lx1 * r(src[b + x1])));
        out[(c * H + y) * W + x] = f(f(ly0 * top) + f(ly1 * bot));
      }
    }
  }
  return out;
}

/** CPU CAM values of a sample (reads a GPU tensor back). */
async function cpuCam(s: CamSample): Promise<Float32Array> {
  return s.cam instanceof Float32Array ? s.cam : await s.cam.read();
}

/** Per-class maxima of upsampled maps `[C, H*W]`. */
function classMaxima(up: Float32Array, C: number, n: number): Float32Array {
  const m = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    let v = up[c * n];
    for (let i = 1; i < n; i++) if (up[c * n + i] > v) v = up[c * n + i];
    m[c] = v;
  }
  return m;
}

/**
 * Reference pseudo mask of upsampled maps at threshold t (psa/SEAM convention): the tagged
 * classes' normalised scores `relu(up_c) / (relu(M_c) + 1e-5)` (f32) through the one
 * pseudo-mask rule, src/cam/pseudo_mask.ts.
 */
export function pseudoMaskRef(
  up: Float32Array,
  C: number,
  n: number,
  tags: readonly number[],
  t: number,
): Uint8Array {
  const M = classMaxima(up, C, n);
  const tagged = [...new Set(tags)].sort((a, b) => a - b);
  const norm = new Float32Array(tagged.length * n);
  tagged.forEach((c, j) => {
    const denom = f(Math.max(M[c], 0) + f(1e-5));
    for (let i = 0; i < n; i++) norm[j * n + i] = Math.max(up[c * n + i], 0) / denom;
  });
  return pseudoMask(norm, tagged, t, { width: n, height: 1 });
}

/** Reference unrestricted-CAM OC counts of upsampled maps: active, OC and OC pairs. */
export function camOcRef(
  up: Float32Array,
  C: number,
  n: number,
  tags: readonly number[],
  tau: number,
  gt: Uint8Array | null,
): { active: number; oc: number; pairs: Float64Array } {
  const k = C + 1;
  const pairs = new Float64Array((k + 1) * k);
  if (tags.length === 0) return { active: 0, oc: 0, pairs };
  const M = classMaxima(up, C, n);
  let A = 0;
  for (const c of tags) A = Math.max(A, M[c]);
  const thr = f(f(tau) * A);
  const tagged = new Set(tags);
  let active = 0;
  let oc = 0;
  for (let i = 0; i < n; i++) {
    let m = up[i];
    let a = 0;
    for (let c = 1; c < C; c++) {
      if (up[c * n + i] > m) {
        m = up[c * n + i];
        a = c;
      }
    }
    if (!(m > 0 && m >= thr)) continue;
    active++;
    if (tagged.has(a)) continue;
    oc++;
    const g = gt ? (gt[i] === 255 ? k : gt[i]) : k;
    pairs[g * k + a + 1]++;
  }
  return { active, oc, pairs };
}

/** Empty CAM counts. */
export function emptyCamCounts(
  numClasses: number,
  thresholds: readonly number[],
  tau = 0.3,
): CamCounts {
  const k = numClasses + 1;
  const ts = [...thresholds].sort((a, b) => a - b);
  return {
    numClasses,
    nImages: 0,
    nGtImages: 0,
    tau,
    thresholds: ts,
    confusions: ts.map(() => new Float64Array(k * k)),
    activePixels: 0,
    ocPixels: 0,
    ocPairs: new Float64Array((k + 1) * k),
  };
}

/**
 * TypeScript reference of {@link CamEvaluator.add}: upsamples on the CPU, builds the pseudo
 * mask for every threshold and counts its confusion matrix directly.
 */
export async function accumulateCamCounts(
  counts: CamCounts,
  s: CamSample,
  opts: CamOptions = {},
): Promise<void> {
  const C = counts.numClasses;
  const [, h, w] = validateCamSample(s, C);
  const k = C + 1;
  const n = s.width * s.height;
  const up = upsampleBilinearRef(await cpuCam(s), C, h, w, s.height, s.width, opts.relu ?? true);
  const r = camOcRef(up, C, n, s.tags, counts.tau, s.gt?.data ?? null);
  counts.activePixels += r.active;
  counts.ocPixels += r.oc;
  for (let i = 0; i < r.pairs.length; i++) counts.ocPairs[i] += r.pairs[i];
  if (s.gt) {
    counts.thresholds.forEach((t, ti) => {
      const mask = pseudoMaskRef(up, C, n, s.tags, t);
      const cm = counts.confusions[ti];
      for (let i = 0; i < n; i++) {
        const g = s.gt!.data[i];
        if (g !== 255) cm[g * k + mask[i]]++;
      }
    });
    counts.nGtImages++;
  }
  counts.nImages++;
}

/**
 * A heat map for reports: the per-pixel maximum over the tagged classes of the normalised
 * upsampled CAMs `relu(cam_c) / (relu(M_c) + 1e-5)` (the scores the pseudo mask compares with
 * the background threshold), in [0, 1]. CPU; meant for a few example images.
 */
export function camHeatmap(
  cam: Float32Array,
  shape: readonly [number, number, number],
  width: number,
  height: number,
  tags: readonly number[],
  relu = true,
): Float32Array {
  const [C, h, w] = shape;
  if (cam.length !== C * h * w) throw new RangeError(`${cam.length} CAM values for [${shape}]`);
  const n = width * height;
  const up = upsampleBilinearRef(cam, C, h, w, height, width, relu);
  const M = classMaxima(up, C, n);
  const out = new Float32Array(n);
  for (const c of new Set(tags)) {
    const d = f(Math.max(M[c], 0) + f(1e-5));
    for (let i = 0; i < n; i++) out[i] = Math.max(out[i], f(Math.max(up[c * n + i], 0) / d));
  }
  return out;
}
