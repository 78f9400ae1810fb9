/**
 * The Out-of-Candidate Rectification (OCR) loss of docs/ocr.md: options, the WebGPU
 * implementation (forward and backward recorded without readback) and a plain f64 TypeScript
 * reference with the same definition.
 *
 * Per image with candidate tags `Y` and class maps `z[c,p]` (pre-ReLU):
 * 1. `o(p) = argmax_c z[c,p]` over all C classes (lowest index on ties). Pixel p is OC when
 *    `Y` is not empty, `o(p) ∉ Y` and `relu(z[o,p]) >= tauAct * max_{p', k∈Y} relu(z[k,p'])`.
 *    (When every candidate activation of the image is ≤ 0 that maximum is 0, so every pixel
 *    whose argmax is a non-candidate is OC.)
 * 3. `P[k,p] = softmax_k(z[k,p] / T)` over the C classes, a constant.
 * 4. `r(k,p) = alpha * A[o,k] + (1 - alpha) * P[k,p] / max_{j∈Y} P[j,p]` for `k ∈ Y`;
 *    IC group = `{k ∈ Y : r >= tauRel}` plus the candidate with the highest r (lowest index
 *    on ties); OC group = `{j ∉ Y : z_j > min_{i∈IC} z_i - m}` plus `o`.
 * 5. `l(p) = softplus(LSE_{j∈OC} z_j + LSE_{i∈IC}(-z_i) + m)`, groups held constant.
 *
 * Loss = `lambda * sum_{p OC} l(p) / normaliser` with normaliser `B*H*W` (`norm: "all"`) or
 * `max(1, #OC pixels)` (`norm: "oc"`). Gradient into IC and OC members (`grad: "both"`) or
 * OC members only (`grad: "oc_only"`).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { type PlaneChunk, planeChunks } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import { pointwise } from "../ops/pointwise.ts";
import {
  bytesOf,
  defineOpUnit,
  type OpUnit,
  shapeOptsCase,
  sizeOf,
  uniformValues,
} from "../ops/unit.ts";
import { Rng } from "../rng.ts";
import { cooccurrence } from "./cooccurrence.ts";

/** Which group members receive gradient. */
export type OcrGradMode = "both" | "oc_only";
/** What the sum over OC pixels is divided by. */
export type OcrNorm = "all" | "oc";

/** The knobs of the OCR loss (docs/ocr.md#knobs), all plain numbers and strings. */
export interface OcrOptions {
  /** Loss weight (≥ 0). */
  lambda: number;
  /** Activation threshold of OC pixels relative to the image's strongest candidate (≥ 0). */
  tauAct: number;
  /** Weight of the prior co-occurrence in the relevance, in [0, 1]. */
  alpha: number;
  /** Relevance threshold of the in-candidate (IC) group. */
  tauRel: number;
  /** Softmax temperature of the posterior (> 0). */
  temperature: number;
  /** Ranking margin m (≥ 0). */
  margin: number;
  /** `"both"`: gradient into IC and OC members; `"oc_only"`: OC members only. */
  grad: OcrGradMode;
  /** `"all"`: divide by B·H·W; `"oc"`: divide by the number of OC pixels (at least 1). */
  norm: OcrNorm;
  /** Warm-up: OCR is off for this fraction of the iterations, in [0, 1] (used by the trainer). */
  start: number;
}

/** The defaults (docs/ocr.md#knobs). */
export const OCR_DEFAULTS: Readonly<OcrOptions> = Object.freeze({
  // λ 0.1 switched on after 30% of the steps: measured on the built-in data (docs/ocr.md#knobs);
  // λ 0.3 from the start let the OCR term dominate while the CAMs were still forming.
  lambda: 0.1,
  tauAct: 0.3,
  alpha: 0.5,
  tauRel: 0.5,
  temperature: 1,
  margin: 0,
  grad: "both",
  norm: "all",
  start: 0.3,
});

function checkNumber(
  name: string,
  v: unknown,
  lo: number,
  hi: number,
  loOpen = false,
): number {
  const ok = typeof v === "number" && Number.isFinite(v) && (loOpen ? v > lo : v >= lo) &&
    v <= hi;
  if (!ok) {
    const range = hi === Infinity
      ? `${loOpen ? ">" : ">="} ${lo}`
      : `in ${loOpen ? "(" : "["}${lo}, ${hi}]`;
    throw new RangeError(`ocr.${name} must be a finite number ${range}, got ${String(v)}`);
  }
  return v as number;
}

/**
 * Fills in {@link OCR_DEFAULTS} for missing (or undefined) fields and validates every field;
 * a bad value throws a RangeError naming the field. Unknown keys are ignored.
 */
export function resolveOcrOptions(opts: Partial<OcrOptions> = {}): OcrOptions {
  const o = { ...OCR_DEFAULTS };
  for (const k of Object.keys(OCR_DEFAULTS) as (keyof OcrOptions)[]) {
    if (opts[k] !== undefined) (o as Record<string, unknown>)[k] = opts[k];
  }
  checkNumber("lambda", o.lambda, 0, Infinity);
  checkNumber("tauAct", o.tauAct, 0, Infinity);
  checkNumber("alpha", o.alpha, 0, 1);
  checkNumber("tauRel", o.tauRel, -Infinity, Infinity);
  checkNumber("temperature", o.temperature, 0, Infinity, true);
  checkNumber("margin", o.margin, 0, Infinity);
  checkNumber("start", o.start, 0, 1);
  if (o.grad !== "both" && o.grad !== "oc_only") {
    throw new RangeError(`ocr.grad must be "both" or "oc_only", got ${JSON.stringify(o.grad)}`);
  }
  if (o.norm !== "all" && o.norm !== "oc") {
    throw new RangeError(`ocr.norm must be "all" or "oc", got ${JSON.stringify(o.norm)}`);
  }
  return o;
}

/** Largest class count the WGSL kernels support (class bit masks of 4 words). */
export const OCR_MAX_CLASSES = 128;

/** Options of one {@link ocrLoss} call: the loss knobs plus output handling. */
export type OcrCallOptions = Partial<OcrOptions> & {
  /** Add the gradient to this [B,C,H,W] tensor instead of returning a new one. */
  gradInto?: Tensor;
  /** Return the `stats` tensor (otherwise it is released). */
  keepStats?: boolean;
};

/** What {@link ocrLoss} returns; all tensors are owned by the caller. */
export interface OcrLossResult {
  /** [1]: lambda * sum over OC pixels of l(p) / normaliser. */
  loss: Tensor;
  /** [B,C,H,W]: d loss / d z; the `gradInto` tensor itself (gradient added) when given. */
  grad: Tensor;
  /** [1]: number of OC pixels in the batch, as f32. */
  ocPixels: Tensor;
  /** [5]: loss, ocPixels, sum of l(p), normaliser, lambda / normaliser (with `keepStats`). */
  stats?: Tensor;
}

const FLAG_BOTH = 1;
const FLAG_ACCUM = 2;
const FLAG_WRITE_GRAD = 4;
const FLAG_NORM_OC = 8;
const PIXEL_WG = 64;

/** The uniform block of shaders/ocr.wgsl. */
const { OcrParams } = declareParams("ocr", {
  OcrParams: {
    /** Images in this dispatch's chunk. */
    nImg: "u32",
    C: "u32",
    HW: "u32",
    /** Global index of the chunk's first image. */
    b0: "u32",
    /** Element offset of image b0 inside the z and grad bindings. */
    off: "u32",
    flags: "u32",
    /** B*H*W (finish). */
    nPix: "u32",
    _pad0: "u32",
    tauAct: "f32",
    alpha: "f32",
    tauRel: "f32",
    /** 1 / temperature. */
    invT: "f32",
    margin: "f32",
    /** lambda / (B*H*W), used with norm "all". */
    scale: "f32",
    lambda: "f32",
    /** B*H*W as f32 (norm "all"). */
    normAll: "f32",
  },
});

function checkShapes(
  z: { shape: readonly number[]; size: number },
  tagsSize: number,
  priorSize: number,
): [number, number, number, number] {
  if (z.shape.length !== 4) {
    throw new RangeError(`ocrLoss: class maps must be [B,C,H,W], got [${z.shape}]`);
  }
  const [B, C, H, W] = z.shape;
  if (B * C * H * W === 0) throw new RangeError(`ocrLoss: empty class maps [${z.shape}]`);
  if (C > OCR_MAX_CLASSES) {
    throw new RangeError(`ocrLoss: ${C} classes; at most ${OCR_MAX_CLASSES} are supported`);
  }
  if (tagsSize !== B * C) {
    throw new RangeError(`ocrLoss: tags must hold B*C = ${B * C} values, got ${tagsSize}`);
  }
  if (priorSize !== C * C) {
    throw new RangeError(`ocrLoss: prior must be [C,C] = ${C * C} values, got ${priorSize}`);
  }
  return [B, C, H, W];
}

/**
 * Records the OCR loss and its gradient (docs/ocr.md) on the GPU, without readback: 3
 * dispatches for `norm: "all"`, 4 for `norm: "oc"` (more only when z exceeds the storage
 * binding limit and is split by images). Reductions are deterministic (fixed-order sums).
 *
 * @param z [B,C,H,W] class maps (pre-ReLU), C ≤ 128.
 * @param tags [B,C] image tags; a value > 0.5 marks a candidate.
 * @param prior [C,C] co-occurrence prior `A` (see `cooccurrence`).
 * @param opts loss options (defaults {@link OCR_DEFAULTS}), `gradInto`, `keepStats`.
 */
export function ocrLoss(
  gpu: GpuContext,
  z: Tensor,
  tags: Tensor,
  prior: Tensor,
  opts: OcrCallOptions = {},
): OcrLossResult {
  const o = resolveOcrOptions(opts);
  const [B, C, H, W] = checkShapes(z, tags.size, prior.size);
  const HW = H * W;
  const nPix = B * HW;
  const into = opts.gradInto;
  if (into) {
    if (into.size !== z.size) {
      throw new RangeError(`ocrLoss: gradInto [${into.shape}] does not match z [${z.shape}]`);
    }
    if (into.buffer === z.buffer) throw new RangeError("ocrLoss: gradInto must not alias z");
  }
  const maxEl = Math.floor(gpu.maxBindingBytes / 4);
  if (nPix > maxEl) {
    throw new RangeError(`ocrLoss: ${nPix} pixels exceed the storage binding limit`);
  }
  const grad = into ?? Tensor.empty(gpu, z.shape, "ocr.grad");
  // Runs of whole images, z and grad bound alike.
  let chunks: PlaneChunk[];
  try {
    chunks = planeChunks(gpu, "ocrLoss", B, [
      { tensor: z, planeSize: C * HW },
      { tensor: grad, planeSize: C * HW },
    ]);
  } catch (e) {
    if (!into) grad.dispose();
    throw e;
  }
  const imgMax = Tensor.empty(gpu, [B], "ocr.imgMax");
  const pix = Tensor.empty(gpu, [nPix], "ocr.pix");
  const stats = Tensor.empty(gpu, [5], "ocr.stats");
  const normOc = o.norm === "oc";
  const flags = (o.grad === "both" ? FLAG_BOTH : 0) | (into ? FLAG_ACCUM : 0) |
    (normOc ? FLAG_NORM_OC : FLAG_WRITE_GRAD);
  const params = (c: PlaneChunk) =>
    OcrParams.pack({
      nImg: c.count,
      C,
      HW,
      b0: c.first,
      off: c.offsets[0],
      flags,
      nPix,
      tauAct: o.tauAct,
      alpha: o.alpha,
      tauRel: o.tauRel,
      invT: 1 / o.temperature,
      margin: o.margin,
      scale: o.lambda / nPix,
      lambda: o.lambda,
      normAll: nPix,
    });
  const record = (entry: string, c: PlaneChunk, workgroups: [number, number?]) =>
    gpu.dispatch({
      name: `ocr.${entry}`,
      shader: "ocr",
      entry,
      constants: entry === "pixel" || entry === "gradient" ? { WG: PIXEL_WG } : undefined,
      inputs: [c.ranges[0], tags, prior],
      outputs: [imgMax, c.ranges[1], pix, stats],
      params: params(c),
      workgroups,
    });
  const tiles = Math.ceil(HW / PIXEL_WG);
  for (const c of chunks) record("imgmax", c, [c.count]);
  for (const c of chunks) record("pixel", c, [tiles, c.count]);
  record("finish", chunks[0], [1]);
  if (normOc) { for (const c of chunks) record("gradient", c, [tiles, c.count]); }

  const loss = Tensor.empty(gpu, [1], "ocr.loss");
  const ocPixels = Tensor.empty(gpu, [1], "ocr.ocPixels");
  const enc = gpu.encoder();
  enc.copyBufferToBuffer(stats.buffer, 0, loss.buffer, 0, 4);
  enc.copyBufferToBuffer(stats.buffer, 4, ocPixels.buffer, 0, 4);
  imgMax.dispose();
  pix.dispose();
  if (!opts.keepStats) {
    stats.dispose();
    return { loss, grad, ocPixels };
  }
  return { loss, grad, ocPixels, stats };
}

/** Result of {@link ocrLossReference}. */
export interface OcrReferenceResult {
  /** lambda * sum / normaliser. */
  loss: number;
  /** Sum of l(p) over OC pixels. */
  sum: number;
  /** Number of OC pixels. */
  ocPixels: number;
  /** B·H·W or max(1, ocPixels). */
  normaliser: number;
  /** d loss / d z (the `oc_only` mode zeroes the IC part), same layout as z. */
  grad: Float64Array;
  /** Per element of z: 1 = IC group, -1 = OC group, 0 = neither (or not an OC pixel). */
  role: Int8Array;
  /** Per pixel (B·H·W): 1 when OC. */
  oc: Uint8Array;
  /** Per pixel: l(p), 0 when not OC. */
  pixelLoss: Float64Array;
  /**
   * Smallest non-zero distance between a decision quantity and its threshold (argmax
   * runner-up, activation test, relevance vs tauRel, best vs second relevance, OC-group test);
   * Infinity when there is none. Perturbations smaller than this keep every group.
   */
  minGap: number;
}

/**
 * Plain f64 TypeScript reference of the OCR loss with the same definition as {@link ocrLoss},
 * written independently: the posterior is a full softmax, and l(p) is computed as
 * `log(1 + Σ_j Σ_i exp(z_j - z_i + m))` (stabilised) with its gradient from that double sum.
 */
export function ocrLossReference(
  z: ArrayLike<number>,
  shape: readonly number[],
  tags: ArrayLike<number>,
  prior: ArrayLike<number>,
  opts: Partial<OcrOptions> = {},
): OcrReferenceResult {
  const o = resolveOcrOptions(opts);
  const [B, C, H, W] = checkShapes({ shape, size: z.length }, tags.length, prior.length);
  if (z.length !== B * C * H * W) {
    throw new RangeError(`ocrLossReference: ${z.length} values for shape [${shape}]`);
  }
  const HW = H * W;
  const grad = new Float64Array(z.length);
  const role = new Int8Array(z.length);
  const oc = new Uint8Array(B * HW);
  const pixelLoss = new Float64Array(B * HW);
  let minGap = Infinity;
  const gap = (d: number) => {
    const a = Math.abs(d);
    if (a > 0 && a < minGap) minGap = a;
  };
  const zv = new Float64Array(C);
  const P = new Float64Array(C);
  for (let b = 0; b < B; b++) {
    const Y: number[] = [];
    for (let c = 0; c < C; c++) if (tags[b * C + c] > 0.5) Y.push(c);
    const isY = (c: number) => tags[b * C + c] > 0.5;
    if (Y.length === 0) continue;
    let M = 0;
    for (const k of Y) for (let q = 0; q < HW; q++) M = Math.max(M, z[(b * C + k) * HW + q]);
    for (let q = 0; q < HW; q++) {
      for (let c = 0; c < C; c++) zv[c] = z[(b * C + c) * HW + q];
      let o1 = 0;
      for (let c = 1; c < C; c++) if (zv[c] > zv[o1]) o1 = c;
      let second = -Infinity;
      for (let c = 0; c < C; c++) if (c !== o1) second = Math.max(second, zv[c]);
      if (C > 1) gap(zv[o1] - second);
      if (isY(o1)) continue;
      gap(Math.max(zv[o1], 0) - o.tauAct * M);
      if (!(Math.max(zv[o1], 0) >= o.tauAct * M)) continue;
      oc[b * HW + q] = 1;
      // Posterior: full softmax at temperature T over all C classes.
      let mx = -Infinity;
      for (let c = 0; c < C; c++) mx = Math.max(mx, zv[c] / o.temperature);
      let den = 0;
      for (let c = 0; c < C; c++) {
        P[c] = Math.exp(zv[c] / o.temperature - mx);
        den += P[c];
      }
      for (let c = 0; c < C; c++) P[c] /= den;
      let maxPY = 0;
      for (const k of Y) maxPY = Math.max(maxPY, P[k]);
      const r = Y.map((k) => o.alpha * prior[o1 * C + k] + (1 - o.alpha) * P[k] / maxPY);
      let best = 0;
      for (let i = 1; i < Y.length; i++) if (r[i] > r[best]) best = i;
      const sorted = [...r].sort((a, b) => b - a);
      if (sorted.length > 1) gap(sorted[0] - sorted[1]);
      const IC: number[] = [];
      Y.forEach((k, i) => {
        gap(r[i] - o.tauRel);
        if (r[i] >= o.tauRel || i === best) IC.push(k);
      });
      const minIn = Math.min(...IC.map((k) => zv[k]));
      const OUT: number[] = [];
      for (let c = 0; c < C; c++) {
        if (isY(c)) continue;
        if (c !== o1) gap(zv[c] - (minIn - o.margin));
        if (c === o1 || zv[c] > minIn - o.margin) OUT.push(c);
      }
      // l = log(1 + Σ_j Σ_i exp(t_ji)), t_ji = z_j - z_i + m, with the largest exponent
      // (including the 1 = exp(0)) factored out.
      let T = 0;
      for (const j of OUT) for (const i of IC) T = Math.max(T, zv[j] - zv[i] + o.margin);
      let D = Math.exp(-T);
      for (const j of OUT) for (const i of IC) D += Math.exp(zv[j] - zv[i] + o.margin - T);
      const l = T + Math.log(D);
      pixelLoss[b * HW + q] = l;
      for (const j of OUT) {
        let gj = 0;
        for (const i of IC) gj += Math.exp(zv[j] - zv[i] + o.margin - T);
        grad[(b * C + j) * HW + q] = gj / D;
        role[(b * C + j) * HW + q] = -1;
      }
      for (const i of IC) {
        let gi = 0;
        for (const j of OUT) gi += Math.exp(zv[j] - zv[i] + o.margin - T);
        grad[(b * C + i) * HW + q] = o.grad === "both" ? -gi / D : 0;
        role[(b * C + i) * HW + q] = 1;
      }
    }
  }
  let sum = 0;
  let ocPixels = 0;
  for (let i = 0; i < B * HW; i++) {
    sum += pixelLoss[i];
    ocPixels += oc[i];
  }
  const normaliser = o.norm === "all" ? B * HW : Math.max(1, ocPixels);
  const scale = o.lambda / normaliser;
  for (let i = 0; i < grad.length; i++) grad[i] *= scale;
  return { loss: sum * scale, sum, ocPixels, normaliser, grad, role, oc, pixelLoss, minGap };
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ../ops/unit.ts).

/** Parameters of an {@link ocrUnit} case: class maps [B, C, H, W] and loss options. */
export interface OcrCase {
  shape: readonly [number, number, number, number];
  opts: Partial<OcrOptions>;
}

const ocrCase = (
  shape: [number, number, number, number],
  opts: Partial<OcrOptions> = {},
  split = true,
) => shapeOptsCase(shape, opts, split);

/**
 * The OCR loss as an op unit (gradient mode "both": the exact gradient with the groups held
 * constant, which the finite differences check). Inputs: scores in [-3, 3), 1 to 3 random
 * candidate tags per image, the co-occurrence prior of 40 random tag lists; the test rejects
 * data within 1e-4 of a decision threshold or without OC pixels.
 */
export const ocrUnit: OpUnit<OcrCase> = defineOpUnit<OcrCase>({
  name: "ocr",
  description: "the OCR loss over class maps, with its gradient",
  bound: "memory",
  inputs: ["z", "tags", "prior"],
  outputs: ["loss", "ocPixels"],
  gradOutputs: ["loss"],
  differentiable: ["z"],
  cases: [
    ocrCase([3, 20, 5, 7], {}, false),
    ocrCase([3, 20, 5, 7], { norm: "oc" }, false),
    ocrCase([2, 9, 6, 5], { margin: 0.5, temperature: 2.5, alpha: 0.2, tauRel: 0.65, lambda: 1 }),
    ocrCase([2, 7, 3, 5], { tauRel: 0.15, alpha: 0.1 }),
    ocrCase([3, 5, 7, 9]),
    ocrCase([3, 5, 7, 9], { norm: "oc" }),
  ],
  benchShapes: [ocrCase([16, 20, 8, 8]), ocrCase([8, 80, 28, 28])],
  tolerance: {
    forward: { rtol: 2e-5, atol: 1e-9 },
    outputs: { ocPixels: {} },
    backward: { rtol: 1e-4, maxRel: 1e-6 },
  },
  inputShapes: (p) => ({
    z: [...p.shape],
    tags: [p.shape[0], p.shape[1]],
    prior: [p.shape[1], p.shape[1]],
  }),
  outputShapes: () => ({ loss: [1], ocPixels: [1] }),
  makeInputs: (p, seed) => {
    const [B, C] = p.shape;
    const rng = new Rng(seed);
    const z = uniformValues(sizeOf(p.shape), seed + 1, -3, 3);
    const tags = new Float32Array(B * C);
    for (let b = 0; b < B; b++) {
      const list = rng.shuffle([...Array(C).keys()]).slice(0, 1 + rng.int(3));
      for (const c of list) tags[b * C + c] = 1;
    }
    const lists = Array.from(
      { length: 40 },
      () => rng.shuffle([...Array(C).keys()]).slice(0, 1 + rng.int(4)),
    );
    return { z, tags, prior: cooccurrence(lists, C) };
  },
  validateInputs: (p, x) => {
    const ref = ocrLossReference(x.z, p.shape, x.tags, x.prior, p.opts);
    if (!(ref.minGap > 1e-4) || ref.ocPixels < 1) {
      throw new RangeError(
        `ocr: test data within ${ref.minGap} of a threshold or without OC pixels ` +
          `(${ref.ocPixels})`,
      );
    }
  },
  refForward: (p, x) => {
    const r = ocrLossReference(x.z, p.shape, x.tags, x.prior, p.opts);
    return { loss: Float64Array.of(r.loss), ocPixels: Float64Array.of(r.ocPixels) };
  },
  refBackward: (p, x, d) => ({
    z: ocrLossReference(x.z, p.shape, x.tags, x.prior, p.opts).grad.map((g) => g * d.loss[0]),
  }),
  cost: (p) => {
    const [B, C, H, W] = p.shape;
    return {
      forward: { flops: 20 * B * C * H * W, bytes: bytesOf(p.shape, p.shape) + 8 * C * (B + C) },
    };
  },
  gpu: {
    name: "three-pass kernel",
    forward: (gpu, p, { tensors: t }) => {
      const r = ocrLoss(gpu, t.z, t.tags, t.prior, p.opts);
      r.grad.dispose();
      return { loss: r.loss, ocPixels: r.ocPixels };
    },
    backward: (gpu, p, { tensors: t }, dy) => {
      const r = ocrLoss(gpu, t.z, t.tags, t.prior, p.opts);
      const z = pointwise(gpu, "scale", [r.grad], { alpha: dy.host.loss[0] });
      [r.loss, r.ocPixels, r.grad].forEach((v) => v.dispose());
      return { z };
    },
  },
});
