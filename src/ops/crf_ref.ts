/**
 * The dense CRF's options and its f64 CPU references (Krähenbühl & Koltun 2011, as pydensecrf's
 * `DenseCRF2D` computes it; the model and its sources are in docs/crf.md):
 *
 * - {@link denseCrfRef}: the exact mean field, every message an O(N²) sum over all pixel pairs
 *   (the "exact result" both GPU paths are measured against);
 * - {@link PermutohedralRef} and {@link denseCrfLatticeRef}: the approximate path in f64, the
 *   bilateral message through pydensecrf's permutohedral lattice (same elevation, simplex,
 *   barycentric weights, [1 2 1]/2 blur and alpha) and the Gaussian one through the exact
 *   separable blur truncated at {@link GAUSS_TRUNCATE}·sxy, as the GPU lattice path does.
 *
 * Layouts: the image is [3, H, W] (RGB planes, values 0..255, clamped to that range as the
 * uint8 image pydensecrf takes must be), probabilities and Q are [L, H, W]; pixel p = y·W + x
 * has column x and row y.
 * @module
 */

/** The position-only (smoothness) kernel: exp(-|p_i - p_j|² / (2 sxy²)), weight `compat`. */
export interface GaussianKernel {
  /** Spatial standard deviation in pixels (psa: 3). */
  sxy: number;
  /** Potts weight (psa: 3). */
  compat: number;
}

/** The appearance kernel: exp(-|p_i - p_j|²/(2 sxy²) - |I_i - I_j|²/(2 srgb²)). */
export interface BilateralKernel {
  /** Spatial standard deviation in pixels (psa: 80). */
  sxy: number;
  /** Colour standard deviation in 0..255 units (psa: 13). */
  srgb: number;
  /** Potts weight (psa: 10). */
  compat: number;
}

/** Options of the dense CRF (defaults: psa's `crf_inference`). */
export interface DenseCrfOptions {
  /** Mean-field iterations (default 10). */
  iterations?: number;
  /** Default {sxy: 3, compat: 3}; null leaves the kernel out. */
  gaussian?: GaussianKernel | null;
  /** Default {sxy: 80, srgb: 13, compat: 10}; null leaves the kernel out. */
  bilateral?: BilateralKernel | null;
  /** psa's `scale_factor`: both kernels' sxy are divided by it (default 1). */
  scaleFactor?: number;
  /** Probabilities are clipped to [clip, 1] before the log (pydensecrf's default 1e-5). */
  clip?: number;
  /**
   * "exact": O(N²) brute force; "lattice": permutohedral bilateral + separable Gaussian;
   * "auto" (default): exact up to {@link EXACT_MAX_PIXELS} pixels, lattice above.
   */
  method?: "auto" | "exact" | "lattice";
}

/** Options with defaults applied and sxy already divided by the scale factor. */
export interface ResolvedCrf {
  /** Mean-field iterations. */
  iterations: number;
  /** The position-only kernel, or null when left out. */
  gaussian: GaussianKernel | null;
  /** The position + colour kernel, or null when left out. */
  bilateral: BilateralKernel | null;
  /** Lower clip of the probabilities before the log. */
  clip: number;
  /** The path that runs. */
  method: "exact" | "lattice";
}

/**
 * `method: "auto"` runs the exact path up to this many pixels (16x16), the lattice above: the
 * brute force is O(N²) per iteration, and on llvmpipe it already takes ~50x the lattice's time
 * at 64x64 with 4 labels (1.7 s vs 0.03 s for 10 iterations, measured; docs/crf.md).
 */
export const EXACT_MAX_PIXELS = 256;
/** The separable Gaussian of the lattice path is cut at this many standard deviations. */
export const GAUSS_TRUNCATE = 4;
/** pydensecrf's normalisation guard: n = 1/sqrt(Σ k + 1e-20). */
export const NORM_EPS = 1e-20;

/** psa's `crf_inference` defaults. */
export const PSA_CRF: Readonly<Required<Omit<DenseCrfOptions, "method">>> = {
  iterations: 10,
  gaussian: { sxy: 3, compat: 3 },
  bilateral: { sxy: 80, srgb: 13, compat: 10 },
  scaleFactor: 1,
  clip: 1e-5,
};

function positive(op: string, what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new RangeError(`${op}: ${what} must be a finite number > 0, got ${v}`);
  }
  return v;
}

function finite(op: string, what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new RangeError(`${op}: ${what} must be a finite number, got ${v}`);
  }
  return v;
}

/** Validates options and applies the defaults; `pixels` decides `method: "auto"`. */
export function resolveCrfOptions(
  op: string,
  opts: DenseCrfOptions = {},
  pixels = 0,
): ResolvedCrf {
  const it = opts.iterations ?? PSA_CRF.iterations;
  if (!Number.isInteger(it) || it < 0) {
    throw new RangeError(`${op}: iterations must be an integer >= 0, got ${it}`);
  }
  const sf = positive(op, "scaleFactor", opts.scaleFactor ?? 1);
  const clip = positive(op, "clip", opts.clip ?? PSA_CRF.clip);
  if (clip > 1) throw new RangeError(`${op}: clip must be <= 1, got ${clip}`);
  const g = opts.gaussian === undefined ? PSA_CRF.gaussian : opts.gaussian;
  const b = opts.bilateral === undefined ? PSA_CRF.bilateral : opts.bilateral;
  const gaussian = g === null ? null : {
    sxy: positive(op, "gaussian.sxy", g.sxy) / sf,
    compat: finite(op, "gaussian.compat", g.compat),
  };
  const bilateral = b === null ? null : {
    sxy: positive(op, "bilateral.sxy", b.sxy) / sf,
    srgb: positive(op, "bilateral.srgb", b.srgb),
    compat: finite(op, "bilateral.compat", b.compat),
  };
  const m = opts.method ?? "auto";
  if (m !== "auto" && m !== "exact" && m !== "lattice") {
    throw new RangeError(`${op}: method must be "auto", "exact" or "lattice", got ${m}`);
  }
  const method = m === "auto" ? (pixels <= EXACT_MAX_PIXELS ? "exact" : "lattice") : m;
  return { iterations: it, gaussian, bilateral, clip, method };
}

/** Checks host inputs' sizes and values (NaN, L < 1) for the references. */
export function checkCrfHostInputs(
  op: string,
  image: ArrayLike<number>,
  probs: ArrayLike<number>,
  h: number,
  w: number,
  labels: number,
): void {
  for (const [k, v] of [["height", h], ["width", w]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${op}: ${k} must be >= 1, got ${v}`);
  }
  if (!Number.isInteger(labels) || labels < 1) {
    throw new RangeError(`${op}: the label count must be an integer >= 1, got ${labels}`);
  }
  const n = h * w;
  if (image.length !== 3 * n) {
    throw new RangeError(`${op}: image has ${image.length} values, expected 3x${h}x${w}`);
  }
  if (probs.length !== labels * n) {
    throw new RangeError(`${op}: probs has ${probs.length} values, expected ${labels}x${h}x${w}`);
  }
  for (let i = 0; i < probs.length; i++) {
    if (Number.isNaN(probs[i])) throw new RangeError(`${op}: probs[${i}] is NaN`);
  }
  for (let i = 0; i < image.length; i++) {
    if (Number.isNaN(image[i])) throw new RangeError(`${op}: image[${i}] is NaN`);
  }
}

const clamp255 = (v: number) => Math.min(255, Math.max(0, v));

/** -U = log(clip(probs, clip, 1)) ([L, N]). */
function logUnary(probs: ArrayLike<number>, clip: number): Float64Array {
  return Float64Array.from(probs, (v) => Math.log(Math.min(1, Math.max(clip, v))));
}

/** Q = softmax over labels of t ([L, N], in place into q). */
function softmaxInto(q: Float64Array, t: Float64Array, labels: number, n: number): void {
  for (let p = 0; p < n; p++) {
    let m = -Infinity;
    for (let l = 0; l < labels; l++) m = Math.max(m, t[l * n + p]);
    let z = 0;
    for (let l = 0; l < labels; l++) z += Math.exp(t[l * n + p] - m);
    for (let l = 0; l < labels; l++) q[l * n + p] = Math.exp(t[l * n + p] - m) / z;
  }
}

/** Pixel-major features [N, d] of a kernel (x/sxy, y/sxy[, r/srgb, g/srgb, b/srgb]). */
export function crfFeatures(
  image: ArrayLike<number> | null,
  h: number,
  w: number,
  sxy: number,
  srgb?: number,
): { f: Float64Array; d: number } {
  const n = h * w;
  const d = srgb === undefined ? 2 : 5;
  const f = new Float64Array(n * d);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      f[p * d] = x / sxy;
      f[p * d + 1] = y / sxy;
      if (srgb !== undefined) {
        for (let c = 0; c < 3; c++) f[p * d + 2 + c] = clamp255(image![c * n + p]) / srgb;
      }
    }
  }
  return { f, d };
}

/** An exact kernel: k[p·N + q] = exp(-|f_p - f_q|²/2) is recomputed on the fly. */
function exactFilter(
  feat: { f: Float64Array; d: number },
  n: number,
): { norm: Float64Array; apply(v: Float64Array, labels: number): Float64Array } {
  const { f, d } = feat;
  const k = (p: number, q: number) => {
    let s = 0;
    for (let i = 0; i < d; i++) {
      const t = f[p * d + i] - f[q * d + i];
      s += t * t;
    }
    return Math.exp(-0.5 * s);
  };
  const norm = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    let s = 0;
    for (let q = 0; q < n; q++) s += k(p, q);
    norm[p] = 1 / Math.sqrt(s + NORM_EPS);
  }
  return {
    norm,
    // M_p = n_p Σ_q k(p, q) n_q v_q (the centre q = p included).
    apply(v, labels) {
      const out = new Float64Array(labels * n);
      const row = new Float64Array(n);
      for (let p = 0; p < n; p++) {
        for (let q = 0; q < n; q++) row[q] = k(p, q) * norm[q];
        for (let l = 0; l < labels; l++) {
          let s = 0;
          for (let q = 0; q < n; q++) s += row[q] * v[l * n + q];
          out[l * n + p] = norm[p] * s;
        }
      }
      return out;
    },
  };
}

/** A message operator: normalised filtering of label-major values. */
interface Message {
  compat: number;
  apply(q: Float64Array, labels: number): Float64Array;
}

function meanField(
  probs: ArrayLike<number>,
  labels: number,
  n: number,
  r: ResolvedCrf,
  messages: Message[],
): Float64Array {
  const unary = logUnary(probs, r.clip);
  const q = new Float64Array(labels * n);
  softmaxInto(q, unary, labels, n);
  const tmp = new Float64Array(labels * n);
  for (let it = 0; it < r.iterations; it++) {
    tmp.set(unary);
    for (const m of messages) {
      const msg = m.apply(q, labels);
      for (let i = 0; i < tmp.length; i++) tmp[i] += m.compat * msg[i];
    }
    softmaxInto(q, tmp, labels, n);
  }
  return q;
}

/**
 * The exact dense CRF in f64 (O(N²) per message: small images only): image [3, H, W] 0..255,
 * probs [L, H, W]; returns Q [L, H, W]. See docs/crf.md for the formulas.
 */
export function denseCrfRef(
  image: ArrayLike<number>,
  probs: ArrayLike<number>,
  h: number,
  w: number,
  labels: number,
  opts: DenseCrfOptions = {},
): Float64Array {
  const op = "denseCrfRef";
  checkCrfHostInputs(op, image, probs, h, w, labels);
  const r = resolveCrfOptions(op, opts, h * w);
  const n = h * w;
  const messages: Message[] = [];
  for (const k of [r.gaussian, r.bilateral]) {
    if (!k) continue;
    const srgb = "srgb" in k ? (k as BilateralKernel).srgb : undefined;
    const filt = exactFilter(crfFeatures(image, h, w, k.sxy, srgb), n);
    messages.push({ compat: k.compat, apply: (q, l) => filt.apply(q, l) });
  }
  return meanField(probs, labels, n, r, messages);
}

/** Radius in pixels of the truncated separable Gaussian of standard deviation `sxy`. */
export function gaussRadius(sxy: number, h: number, w: number): number {
  return Math.min(Math.ceil(GAUSS_TRUNCATE * sxy), Math.max(h, w) - 1);
}

/**
 * The Gaussian kernel's message through the exact separable blur cut at radius
 * {@link gaussRadius} (f64): the lattice path's Gaussian message.
 */
function separableFilter(h: number, w: number, sxy: number) {
  const r = gaussRadius(sxy, h, w);
  const wt = Float64Array.from({ length: r + 1 }, (_, i) => Math.exp(-0.5 * (i / sxy) ** 2));
  const n = h * w;
  const blur = (v: Float64Array, labels: number) => {
    const t = new Float64Array(labels * n);
    const out = new Float64Array(labels * n);
    for (let l = 0; l < labels; l++) {
      const o = l * n;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          let s = 0;
          for (let dx = -r; dx <= r; dx++) {
            const xx = x + dx;
            if (xx >= 0 && xx < w) s += wt[Math.abs(dx)] * v[o + y * w + xx];
          }
          t[o + y * w + x] = s;
        }
      }
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          let s = 0;
          for (let dy = -r; dy <= r; dy++) {
            const yy = y + dy;
            if (yy >= 0 && yy < h) s += wt[Math.abs(dy)] * t[o + yy * w + x];
          }
          out[o + y * w + x] = s;
        }
      }
    }
    return out;
  };
  const ones = blur(new Float64Array(n).fill(1), 1);
  const norm = Float64Array.from(ones, (s) => 1 / Math.sqrt(s + NORM_EPS));
  return {
    norm,
    apply(v: Float64Array, labels: number) {
      const scaled = Float64Array.from(v, (x, i) => x * norm[i % n]);
      const out = blur(scaled, labels);
      for (let i = 0; i < out.length; i++) out[i] *= norm[i % n];
      return out;
    },
  };
}

/**
 * pydensecrf's permutohedral lattice (permutohedral.cpp, the non-SSE `init` and `seqCompute`)
 * in f64 over pixel-major features [N, d]: vertices are numbered in order of first appearance
 * (its hash table's order), splatting visits pixels in order.
 */
export class PermutohedralRef {
  /** Vertex of pixel p's j-th simplex corner: offsets[p·(d+1) + j]. */
  readonly offsets: Int32Array;
  /** Barycentric weight of that corner. */
  readonly bary: Float64Array;
  /** Vertex keys (first d coordinates), vertex-major. */
  readonly keys: number[][] = [];
  /** Blur neighbours: n1/n2[j·M + v], -1 when absent. */
  readonly n1: Int32Array;
  readonly n2: Int32Array;
  /** Number of lattice vertices. */
  readonly m: number;

  constructor(f: Float64Array, readonly n: number, readonly d: number) {
    const d1 = d + 1;
    this.offsets = new Int32Array(n * d1);
    this.bary = new Float64Array(n * d1);
    const index = new Map<string, number>();
    const find = (key: number[], insert: boolean) => {
      const s = key.join(",");
      let v = index.get(s);
      if (v === undefined && insert) {
        v = this.keys.length;
        index.set(s, v);
        this.keys.push(key.slice());
      }
      return v ?? -1;
    };
    const invStd = Math.sqrt(2 / 3) * d1;
    const scale = Float64Array.from({ length: d }, (_, i) => invStd / Math.sqrt((i + 2) * (i + 1)));
    const el = new Float64Array(d1);
    const rem0 = new Float64Array(d1);
    const rank = new Int32Array(d1);
    const b = new Float64Array(d + 2);
    for (let p = 0; p < n; p++) {
      let sm = 0;
      for (let j = d; j > 0; j--) {
        const cf = f[p * d + j - 1] * scale[j - 1];
        el[j] = sm - j * cf;
        sm += cf;
      }
      el[0] = sm;
      let sum = 0;
      for (let i = 0; i <= d; i++) {
        const v = el[i] / d1;
        const up = Math.ceil(v) * d1;
        const down = Math.floor(v) * d1;
        rem0[i] = up - el[i] < el[i] - down ? up : down;
        sum += rem0[i] / d1;
      }
      rank.fill(0);
      for (let i = 0; i < d; i++) {
        const di = el[i] - rem0[i];
        for (let j = i + 1; j <= d; j++) {
          if (di < el[j] - rem0[j]) rank[i]++;
          else rank[j]++;
        }
      }
      for (let i = 0; i <= d; i++) {
        rank[i] += sum;
        if (rank[i] < 0) {
          rank[i] += d1;
          rem0[i] += d1;
        } else if (rank[i] > d) {
          rank[i] -= d1;
          rem0[i] -= d1;
        }
      }
      b.fill(0);
      for (let i = 0; i <= d; i++) {
        const v = (el[i] - rem0[i]) / d1;
        b[d - rank[i]] += v;
        b[d - rank[i] + 1] -= v;
      }
      b[0] += 1 + b[d + 1];
      const key = new Array<number>(d);
      for (let r = 0; r <= d; r++) {
        for (let i = 0; i < d; i++) key[i] = rem0[i] + (rank[i] <= d - r ? r : r - d1);
        this.offsets[p * d1 + r] = find(key, true);
        this.bary[p * d1 + r] = b[r];
      }
    }
    const m = this.keys.length;
    this.m = m;
    this.n1 = new Int32Array(d1 * m);
    this.n2 = new Int32Array(d1 * m);
    const k1 = new Array<number>(d);
    const k2 = new Array<number>(d);
    for (let j = 0; j <= d; j++) {
      for (let v = 0; v < m; v++) {
        const key = this.keys[v];
        for (let k = 0; k < d; k++) {
          k1[k] = key[k] - 1;
          k2[k] = key[k] + 1;
        }
        if (j < d) {
          k1[j] = key[j] + d;
          k2[j] = key[j] - d;
        }
        this.n1[j * m + v] = find(k1, false);
        this.n2[j * m + v] = find(k2, false);
      }
    }
  }

  /** Splat, blur along each of the d+1 directions, slice (× alpha): values [L, N] → [L, N]. */
  compute(values: ArrayLike<number>, labels: number): Float64Array {
    const { n, d, m } = this;
    const d1 = d + 1;
    const out = new Float64Array(labels * n);
    let a = new Float64Array(m);
    let bb = new Float64Array(m);
    const alpha = 1 / (1 + 2 ** -d);
    for (let l = 0; l < labels; l++) {
      a.fill(0);
      for (let p = 0; p < n; p++) {
        const v = values[l * n + p];
        for (let j = 0; j < d1; j++) a[this.offsets[p * d1 + j]] += this.bary[p * d1 + j] * v;
      }
      for (let j = 0; j <= d; j++) {
        for (let v = 0; v < m; v++) {
          const i1 = this.n1[j * m + v];
          const i2 = this.n2[j * m + v];
          bb[v] = a[v] + 0.5 * ((i1 >= 0 ? a[i1] : 0) + (i2 >= 0 ? a[i2] : 0));
        }
        [a, bb] = [bb, a];
      }
      for (let p = 0; p < n; p++) {
        let s = 0;
        for (let j = 0; j < d1; j++) s += this.bary[p * d1 + j] * a[this.offsets[p * d1 + j]];
        out[l * n + p] = s * alpha;
      }
    }
    return out;
  }
}

/** The bilateral message through the f64 lattice, NORMALIZE_SYMMETRIC as pydensecrf. */
export function latticeFilterRef(
  image: ArrayLike<number>,
  h: number,
  w: number,
  k: BilateralKernel,
) {
  const n = h * w;
  const { f, d } = crfFeatures(image, h, w, k.sxy, k.srgb);
  const lat = new PermutohedralRef(f, n, d);
  const ones = lat.compute(new Float64Array(n).fill(1), 1);
  const norm = Float64Array.from(ones, (s) => 1 / Math.sqrt(s + NORM_EPS));
  return {
    lattice: lat,
    norm,
    apply(v: Float64Array, labels: number) {
      const scaled = Float64Array.from(v, (x, i) => x * norm[i % n]);
      const out = lat.compute(scaled, labels);
      for (let i = 0; i < out.length; i++) out[i] *= norm[i % n];
      return out;
    },
  };
}

/**
 * The GPU lattice path's algorithm in f64: bilateral message through {@link PermutohedralRef},
 * Gaussian message through the separable blur cut at {@link GAUSS_TRUNCATE}·sxy.
 */
export function denseCrfLatticeRef(
  image: ArrayLike<number>,
  probs: ArrayLike<number>,
  h: number,
  w: number,
  labels: number,
  opts: DenseCrfOptions = {},
): Float64Array {
  const op = "denseCrfLatticeRef";
  checkCrfHostInputs(op, image, probs, h, w, labels);
  const r = resolveCrfOptions(op, opts, h * w);
  const n = h * w;
  const messages: Message[] = [];
  if (r.gaussian) {
    const g = separableFilter(h, w, r.gaussian.sxy);
    messages.push({ compat: r.gaussian.compat, apply: (q, l) => g.apply(q, l) });
  }
  if (r.bilateral) {
    const b = latticeFilterRef(image, h, w, r.bilateral);
    messages.push({ compat: r.bilateral.compat, apply: (q, l) => b.apply(q, l) });
  }
  return meanField(probs, labels, n, r, messages);
}
