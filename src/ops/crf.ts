/**
 * Dense CRF (Krähenbühl & Koltun 2011) as pydensecrf's `DenseCRF2D` computes it (psa's
 * `crf_inference`: a Gaussian and a bilateral Potts kernel, NORMALIZE_SYMMETRIC, mean field),
 * on the GPU. The model, formulas, defaults and sources: docs/crf.md. Two paths:
 *
 * - **exact** (`shaders/crf_exact.wgsl`): every message a brute-force sum over all pixel pairs
 *   (O(N²) per iteration), equal to the f64 reference {@link denseCrfRef} within f32 rounding;
 *   the default up to {@link EXACT_MAX_PIXELS} pixels;
 * - **lattice**: the bilateral message through a permutohedral lattice built on the GPU
 *   (./permutohedral.ts), the Gaussian one through an exact separable blur truncated at
 *   {@link GAUSS_TRUNCATE}·sxy (`shaders/crf_gauss.wgsl`: taps unrolled per radius; its update
 *   kernel also slices the lattice and takes the softmax); the f64 reference of this algorithm
 *   is {@link denseCrfLatticeRef}.
 *
 * {@link DenseCrf} builds what depends on the image once (features and normalisers, or the
 * lattice) and runs any number of probability maps on it; {@link denseCrf} is the one-call
 * form. Everything records into the current command encoder; nothing is read back.
 *
 * The op unit {@link denseCrfUnit} (forward only, the exact path against the f64 reference) is
 * not in the registry (src/registry/ops.ts): the generic test requires every unit to split
 * some case on a context whose storage bindings hold 2 KiB, and the CRF does not split its
 * work past the binding limit (it refuses with a RangeError naming the limit; one image's
 * lattice cannot be cut into independent pieces). tests/crf_test.ts runs the unit's cases
 * through the generic checks (`checkUnitCase`) without that context. The lattice path has no
 * unit: its reference is a different function (the approximation), tested there too.
 * @module
 */
import { type GpuContext, grid1d } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { BilateralLattice, checkBinding } from "./permutohedral.ts";
import {
  type DenseCrfOptions,
  denseCrfRef,
  gaussRadius,
  resolveCrfOptions,
  type ResolvedCrf,
} from "./crf_ref.ts";
import { defineOpUnit, type OpCase, type OpUnit, uniformValues } from "./unit.ts";

export {
  type BilateralKernel,
  crfFeatures,
  denseCrfLatticeRef,
  type DenseCrfOptions,
  denseCrfRef,
  EXACT_MAX_PIXELS,
  GAUSS_TRUNCATE,
  type GaussianKernel,
  latticeFilterRef,
  PermutohedralRef,
  PSA_CRF,
  resolveCrfOptions,
  type ResolvedCrf,
} from "./crf_ref.ts";
export { BilateralLattice } from "./permutohedral.ts";

const crfFields = {
  N: "u32",
  W: "u32",
  H: "u32",
  L: "u32",
  has_g: "u32",
  has_b: "u32",
  mode: "u32",
  radius: "u32",
  cg: "f32",
  cb: "f32",
  clip: "f32",
  sg: "f32",
  sb: "f32",
  srgb: "f32",
} as const;
const { CrfParams } = declareParams("crf", { CrfParams: crfFields });
// The same layout: CrfParams.pack serves both files.
declareParams("crf_gauss", { CrfGaussParams: crfFields });
const { CrfExactParams } = declareParams("crf_exact", {
  CrfExactParams: { N: "u32", has_g: "u32", has_b: "u32", cg: "f32", cb: "f32" },
});

/** The exact path's largest label count (its private accumulator). */
export const EXACT_MAX_LABELS = 96;

/** Checks an image tensor [3, H, W] and returns [H, W]. */
function imageShape(op: string, image: Tensor): [number, number] {
  const s = image.shape;
  if (s.length !== 3 || s[0] !== 3 || !(s[1] >= 1 && s[2] >= 1)) {
    throw new RangeError(`${op}: image must be [3, H, W] (RGB planes, 0..255), got [${s}]`);
  }
  return [s[1], s[2]];
}

/** Pixels per invocation of gauss_h (along a row) and of update (along a column). */
const GAUSS_HB = 8;
const GAUSS_VB = 8;
const gaussDefines = new Map<string, Record<string, string | number>>();
/** The largest Gaussian radius whose taps are unrolled (larger ones loop: compile time). */
const GAUSS_UNROLL_MAX = 24;
/** The most labels whose softmax shaders/crf_gauss.wgsl's update keeps in registers. */
const GAUSS_PRIVATE_LABELS = 32;
/**
 * shaders/crf_gauss.wgsl's unrolled bodies for radius r: B outputs per invocation, the taps
 * d = -r .. B - 1 + r in increasing order, each added to the outputs k with |d - k| <= r.
 */
function gaussDefine(r: number, labels: number): Record<string, string | number> {
  const priv = labels <= GAUSS_PRIVATE_LABELS;
  const key = `${r}/${priv ? labels : 0}`;
  let d = gaussDefines.get(key);
  if (d) return d;
  // Unrolled: the weights in registers; past GAUSS_UNROLL_MAX, a loop reading them.
  const weights = (buf: string) =>
    r > GAUSS_UNROLL_MAX
      ? ""
      : Array.from({ length: r + 1 }, (_, i) => `  let w${i} = ${buf}[wo + ${i}u];`).join("\n");
  const acc = (name: string, nb: number, indent: string) =>
    Array.from({ length: nb }, (_, k) => `${indent}var ${name}${k} = 0.0;`).join("\n");
  const body = (
    name: string,
    nb: number,
    pos: string,
    limit: string,
    load: (at: string) => string,
    wt: string,
  ) => {
    if (r > GAUSS_UNROLL_MAX) {
      // A loop over the taps (same order), the weights read from `buf` as needed.
      const adds = Array.from(
        { length: nb },
        (_, k) => `if (abs(d - ${k}) <= ${r}) { ${name}${k} += ${wt}(u32(abs(d - ${k}))) * v; }`,
      );
      return [
        `      for (var d = -${r}; d < ${nb + r}; d++) {`,
        `        let at = ${pos} + d;`,
        `        if (at >= 0 && at < ${limit}) {`,
        `          let v = ${load("at")};`,
        ...adds.map((a) => `          ${a}`),
        `        }`,
        `      }`,
      ].join("\n");
    }
    const lines: string[] = [];
    for (let t = -r; t <= nb - 1 + r; t++) {
      const adds: string[] = [];
      for (let k = 0; k < nb; k++) {
        if (Math.abs(t - k) <= r) adds.push(`${name}${k} += w${Math.abs(t - k)} * v;`);
      }
      const at = `${pos} + ${t < 0 ? `(${t})` : t}`;
      const cond = t < 0 ? `${at} >= 0` : t > 0 ? `${at} < ${limit}` : "true";
      lines.push(`      if (${cond}) { let v = ${load(at)}; ${adds.join(" ")} }`);
    }
    return lines.join("\n");
  };
  const hStore = Array.from(
    { length: GAUSS_HB },
    (_, k) => k === 0 ? "  gh_t[o] = s0;" : `  if (x0 + ${k} < iW) { gh_t[o + ${k}u] = s${k}; }`,
  ).join("\n");
  d = {
    NLP: priv ? labels : 1,
    PRIV: priv ? "true" : "false",
    HB: GAUSS_HB,
    VB: GAUSS_VB,
    H_WEIGHTS: weights("gh_pix"),
    H_ACC: acc("s", GAUSS_HB, "  "),
    H_BODY: body("s", GAUSS_HB, "x0", "iW", (at) => `gh_val(base + u32(${at}))`, "gh_w"),
    H_STORE: hStore,
    V_WEIGHTS: weights("up_pix"),
    V_ACC: acc("g", GAUSS_VB, "    "),
    V_BODY: body("g", GAUSS_VB, "iy0", "iH", (at) => `up_t[base + u32(${at}) * W]`, "up_w"),
    V_LIST: Array.from({ length: GAUSS_VB }, (_, k) => `g${k}`).join(", "),
  };
  gaussDefines.set(key, d);
  return d;
}

const exactDefines = new Map<number, Record<string, string | number>>();
function exactDefine(labels: number): Record<string, string | number> {
  let d = exactDefines.get(labels);
  if (!d) {
    const body = Array.from(
      { length: labels },
      (_, l) => `    acc[${l}] += w * ex_q[${l}u * N + q];`,
    ).join("\n");
    d = { NL: labels, ACC_BODY: body };
    exactDefines.set(labels, d);
  }
  return d;
}

/**
 * A dense CRF bound to one image: the constructor records the image-only work (exact path:
 * features and both normalisers; lattice path: the bilateral lattice and the Gaussian
 * normaliser), {@link run} the mean field of one probability map. Dispose when done.
 *
 * ```ts
 * const crf = new DenseCrf(gpu, image, { method: "auto" }); // image [3, H, W], 0..255
 * const qa = crf.run(probsA); // [L, H, W] each, caller owns
 * const qb = crf.run(probsB);
 * crf.dispose();
 * ```
 */
export class DenseCrf {
  /** The resolved options (sxy divided by the scale factor, method decided). */
  readonly options: ResolvedCrf;
  /** Image height in pixels. */
  readonly h: number;
  /** Image width in pixels. */
  readonly w: number;
  /** The bilateral lattice (lattice path with a bilateral kernel), else null. */
  readonly lattice: BilateralLattice | null = null;
  #feat: Tensor | null = null;
  #ng: Tensor | null = null;
  #nb: Tensor | null = null;
  /** Lattice path: per-pixel constants [ng (N), nb (N), Gaussian weights (radius + 1)]. */
  #pix: Tensor | null = null;
  #disposed = false;
  readonly #op = "denseCrf";

  /** Records the image-only work for `image` [3, H, W] (RGB 0..255) on `gpu`. */
  constructor(readonly gpu: GpuContext, image: Tensor, opts: DenseCrfOptions = {}) {
    const op = this.#op;
    const [h, w] = imageShape(op, image);
    this.h = h;
    this.w = w;
    const r = resolveCrfOptions(op, opts, h * w);
    this.options = r;
    const n = h * w;
    const g = r.gaussian;
    const b = r.bilateral;
    const base = {
      N: n,
      W: w,
      H: h,
      L: 1,
      has_g: g ? 1 : 0,
      has_b: b ? 1 : 0,
      mode: 0,
      radius: 0,
      cg: g?.compat ?? 0,
      cb: b?.compat ?? 0,
      clip: r.clip,
      sg: g?.sxy ?? 1,
      sb: b?.sxy ?? 1,
      srgb: b?.srgb ?? 1,
    };
    if (r.method === "exact") {
      checkBinding(gpu, op, "the exact path's features", 32 * n);
      const feat = Tensor.empty(gpu, [8 * n], "crf.features");
      gpu.dispatch1d(
        {
          name: `${op}.features`,
          shader: "crf",
          entry: "exact_features",
          inputs: [image],
          outputs: [feat],
          params: CrfParams.pack(base),
        },
        n,
        64,
      );
      this.#ng = Tensor.empty(gpu, [n], "crf.norm_g");
      this.#nb = Tensor.empty(gpu, [n], "crf.norm_b");
      gpu.dispatch1d(
        {
          name: `${op}.norm`,
          shader: "crf",
          entry: "exact_norm",
          inputs: [feat],
          outputs: [this.#ng, this.#nb],
          params: CrfParams.pack(base),
        },
        n,
        64,
      );
      this.#feat = feat;
      return;
    }
    const radius = g ? gaussRadius(g.sxy, h, w) : 0;
    const pix = Tensor.empty(gpu, [2 * n + radius + 1], "crf.pixel_constants");
    this.#pix = pix;
    if (g) {
      gpu.dispatch1d(
        {
          name: `${op}.gauss_weights`,
          shader: "crf",
          entry: "gauss_weights",
          outputs: [pix],
          params: this.#params({}),
        },
        radius + 1,
        64,
      );
      const t = this.#gaussH(null, 1, 1);
      gpu.dispatch1d(
        {
          name: `${op}.gauss_norm`,
          shader: "crf",
          entry: "gauss_norm",
          inputs: [t],
          outputs: [pix],
          params: this.#params({}),
        },
        n,
        64,
      );
      t.dispose();
    }
    if (b) {
      this.lattice = new BilateralLattice(gpu, image, h, w, b, op);
      gpu.encoder().copyBufferToBuffer(this.lattice.norm.buffer, 0, pix.buffer, 4 * n, 4 * n);
    }
  }

  /** The Gaussian's radius (0 without one). */
  get #radius(): number {
    const g = this.options.gaussian;
    return g ? gaussRadius(g.sxy, this.h, this.w) : 0;
  }

  #params(o: Partial<Parameters<typeof CrfParams.pack>[0]>): Uint32Array {
    const r = this.options;
    return CrfParams.pack({
      N: this.h * this.w,
      W: this.w,
      H: this.h,
      L: 1,
      has_g: r.gaussian ? 1 : 0,
      has_b: r.bilateral ? 1 : 0,
      mode: 0,
      radius: r.gaussian ? gaussRadius(r.gaussian.sxy, this.h, this.w) : 0,
      cg: r.gaussian?.compat ?? 0,
      cb: r.bilateral?.compat ?? 0,
      clip: r.clip,
      sg: r.gaussian?.sxy ?? 1,
      sb: r.bilateral?.sxy ?? 1,
      srgb: r.bilateral?.srgb ?? 1,
      ...o,
    });
  }

  #grid2(op: string, labels: number, items = this.h * this.w): [number, number] {
    const x = Math.ceil(items / 64);
    const lim = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > lim) throw new RangeError(`${op}: ${this.h}x${this.w} pixels are too many`);
    return [x, labels];
  }

  /**
   * Horizontal pass of the separable Gaussian of `v` (ng·Q, [L, N] from element 0; mode 1: of
   * ones), GAUSS_HB pixels of a row per invocation.
   */
  #gaussH(v: Tensor | null, labels: number, mode: 0 | 1): Tensor {
    const t = Tensor.empty(this.gpu, [labels, this.h * this.w], "crf.gauss_t");
    this.gpu.dispatch({
      name: `${this.#op}.gauss_h`,
      shader: "crf_gauss",
      entry: "gauss_h",
      defines: gaussDefine(this.#radius, 1),
      inputs: [v ?? this.gpu.dummy, this.#pix!],
      outputs: [t],
      params: this.#params({ L: labels, mode }),
      workgroups: this.#grid2(this.#op, labels, Math.ceil(this.w / GAUSS_HB) * this.h),
    });
    return t;
  }

  /**
   * Records the mean field of `probs` ([L, H, W], any non-negative scores; clipped to
   * [clip, 1] before the log) on this image; returns Q [L, H, W] (caller owns).
   * `iterations` overrides the constructor's.
   */
  run(probs: Tensor, iterations = this.options.iterations): Tensor {
    const op = this.#op;
    if (this.#disposed) throw new Error(`${op}: used after dispose`);
    const s = probs.shape;
    if (s.length !== 3 || s[1] !== this.h || s[2] !== this.w) {
      throw new RangeError(
        `${op}: probs must be [L, ${this.h}, ${this.w}] like the image, got [${s}]`,
      );
    }
    const L = s[0];
    if (!(L >= 1)) throw new RangeError(`${op}: the label count must be >= 1, got ${L}`);
    if (!Number.isInteger(iterations) || iterations < 0) {
      throw new RangeError(`${op}: iterations must be an integer >= 0, got ${iterations}`);
    }
    const gpu = this.gpu;
    const n = this.h * this.w;
    const exact = this.options.method === "exact";
    if (exact && L > EXACT_MAX_LABELS) {
      throw new RangeError(
        `${op}: the exact path takes at most ${EXACT_MAX_LABELS} labels, got ${L}; use ` +
          `method "lattice"`,
      );
    }
    checkBinding(gpu, op, `probabilities [${L}, ${this.h}, ${this.w}]`, 4 * L * n);
    const lu = Tensor.empty(gpu, [L, n], "crf.log_unary");
    let q = Tensor.empty(gpu, [L, this.h, this.w], "crf.q");
    // Lattice path: the next messages' inputs, written by the softmax kernels: ng·Q [L, N]
    // label-major, then from qbOffset nb·Q [N, L4] pixel-major (labels padded to L4 = a
    // multiple of 4; shaders/crf.wgsl's qb_offset).
    const qbOffset = Math.ceil((L * n) / 4) * 4;
    const scaledLen = qbOffset + n * Math.ceil(L / 4) * 4;
    const scaled = !exact && iterations > 0 ? Tensor.empty(gpu, [scaledLen], "crf.q_scaled") : null;
    if (scaled) checkBinding(gpu, op, `the scaled probabilities (${L} labels)`, 4 * scaledLen);
    gpu.dispatch1d(
      {
        name: `${op}.unary`,
        shader: "crf",
        entry: "unary_init",
        inputs: [probs, this.#pix ?? probs],
        outputs: [lu, q, scaled ?? gpu.dummy],
        params: this.#params({ L, mode: scaled ? 1 : 0 }),
      },
      n,
      64,
    );
    const r = this.options;
    for (let it = 0; it < iterations; it++) {
      const next = Tensor.empty(gpu, [L, this.h, this.w], "crf.q");
      if (exact) {
        const def = exactDefine(L);
        gpu.dispatch({
          name: `${op}.exact_step`,
          shader: "crf_exact",
          entry: "exact_step",
          defines: def,
          inputs: [lu, q, this.#feat!, this.#ng!, this.#nb!],
          outputs: [next],
          params: CrfExactParams.pack({
            N: n,
            has_g: r.gaussian ? 1 : 0,
            has_b: r.bilateral ? 1 : 0,
            cg: r.gaussian?.compat ?? 0,
            cb: r.bilateral?.compat ?? 0,
          }),
          workgroups: grid1d(n, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
        });
      } else {
        const t = r.gaussian ? this.#gaussH(scaled, L, 0) : null;
        const a = this.lattice ? this.lattice.blurredScaled(scaled!, L, qbOffset) : null;
        gpu.dispatch(
          {
            name: `${op}.update`,
            shader: "crf_gauss",
            entry: "update",
            defines: gaussDefine(this.#radius, L),
            inputs: [
              lu,
              t ?? gpu.dummy,
              a ?? gpu.dummy,
              this.lattice?.corners ?? gpu.dummy,
              this.#pix!,
            ],
            outputs: [next, scaled!],
            params: this.#params({ L, mode: it + 1 < iterations ? 1 : 0 }),
            workgroups: this.#grid2(op, 1, this.w * Math.ceil(this.h / GAUSS_VB)),
          },
        );
        t?.dispose();
        a?.dispose();
      }
      q.dispose();
      q = next;
    }
    scaled?.dispose();
    lu.dispose();
    return q;
  }

  /** Releases the image's features, normalisers and lattice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#feat?.dispose();
    if (this.lattice) this.lattice.dispose();
    else this.#nb?.dispose();
    this.#ng?.dispose();
    this.#pix?.dispose();
  }
}

/**
 * Records the dense CRF of `probs` [L, H, W] on `image` [3, H, W] (RGB, 0..255); returns Q
 * [L, H, W] (caller owns). To run several probability maps on one image, use {@link DenseCrf}.
 */
export function denseCrf(
  gpu: GpuContext,
  image: Tensor,
  probs: Tensor,
  opts: DenseCrfOptions = {},
): Tensor {
  const crf = new DenseCrf(gpu, image, opts);
  try {
    return crf.run(probs);
  } finally {
    crf.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Op unit (forward only: the exact path against the f64 reference).

/** Parameters of a {@link denseCrfUnit} case. */
export interface CrfCase {
  h: number;
  w: number;
  labels: number;
  opts: DenseCrfOptions;
}

const crfCase = (h: number, w: number, labels: number, opts: DenseCrfOptions = {}) =>
  ({
    name: `${labels}x${h}x${w} ${JSON.stringify(opts)}`,
    params: { h, w, labels, opts: { method: "exact", ...opts } as DenseCrfOptions },
    split: false,
  }) satisfies OpCase<CrfCase>;

/** The exact dense CRF as a forward-only op unit. */
export const denseCrfUnit: OpUnit<CrfCase> = defineOpUnit<CrfCase>({
  name: "dense_crf",
  description: "dense CRF mean field (pydensecrf DenseCRF2D), exact O(N²) GPU path",
  bound: "compute",
  inputs: ["image", "probs"],
  outputs: ["q"],
  differentiable: [],
  cases: [
    crfCase(7, 9, 3),
    crfCase(5, 6, 2, { iterations: 3, gaussian: { sxy: 2, compat: 4 }, bilateral: null }),
    crfCase(6, 4, 21, { bilateral: { sxy: 4, srgb: 20, compat: 5 }, iterations: 4 }),
  ],
  benchShapes: [crfCase(32, 32, 21)],
  tolerance: { forward: { atol: 2e-5 }, backward: {} },
  inputShapes: (p) => ({ image: [3, p.h, p.w], probs: [p.labels, p.h, p.w] }),
  outputShapes: (p) => ({ q: [p.labels, p.h, p.w] }),
  makeInputs: (p, seed) => ({
    image: uniformValues(3 * p.h * p.w, seed, 0, 255).map(Math.round),
    probs: uniformValues(p.labels * p.h * p.w, seed + 1, 0, 1),
  }),
  refForward: (p, x) => ({ q: denseCrfRef(x.image, x.probs, p.h, p.w, p.labels, p.opts) }),
  cost: (p) => {
    const n = p.h * p.w;
    const it = p.opts.iterations ?? 10;
    return {
      forward: { flops: it * n * n * (2 * p.labels + 30), bytes: 4 * n * (3 + 2 * p.labels) },
    };
  },
  gpu: {
    name: "brute-force kernel",
    forward: (gpu, p, { tensors: t }) => ({ q: denseCrf(gpu, t.image, t.probs, p.opts) }),
  },
});
