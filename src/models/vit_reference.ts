/**
 * A plain f64 CPU reference of the MCTformer-V2 forward (Xu et al., CVPR 2022, "Multi-class
 * Token Transformer for Weakly Supervised Semantic Segmentation"; `MCTformerV2` in the official
 * repository xulianuwa/MCTformer, models.py of commit 355a4aa, with its `vision_transformer.py`
 * blocks and the map generation of engine.py's `generate_attention_maps_ms`), and of the
 * localisation maps it computes for inference. It is what the GPU model is checked against, so
 * it is written for clarity, uses nothing of the GPU code but two ops' f64 references
 * (`conv2dRef`, `resizeBicubicRef` of src/ops, both checked against PyTorch), and is a pure
 * function of the parameters and the input (finite differences can perturb either and call it
 * again). tests/mctformer_ref_test.ts holds it to a float64 PyTorch forward.
 *
 * The model: a DeiT/timm ViT whose single class token is replaced by C class tokens, and whose
 * classifier is a 3x3 conv over the patch tokens:
 * - patch embedding: conv p x p, stride p (`patch_embed.proj`); an image whose sides are not
 *   multiples of p loses the remainder, as the conv does;
 * - position embeddings `pos_embed` [1, C + g², D] (g = imgSize / p): the first C rows are the
 *   class tokens', the rest a g x g grid of the patches', resized bicubically to the input's
 *   patch grid h0 x w0 when that differs (see {@link VitRefConfig.posEmbedResize});
 * - tokens [C class tokens (`cls_token` + their position rows), h0·w0 patch tokens row-major];
 * - `depth` pre-norm blocks: x += proj(attn(norm1(x))); x += fc2(gelu(fc1(norm2(x)))), timm's
 *   Attention (qkv linear with bias, scale head_dim^-0.5, softmax over keys) and Mlp (exact erf
 *   GELU); no dropout or drop-path (eval);
 * - no final norm: `MCTformerV2.forward_features` returns the last block's tokens without
 *   applying the inherited `self.norm` (its parameters exist but are unused);
 *   {@link VitRefConfig.finalNorm} adds it for a timm-style variant;
 * - class logits: the mean over D of each class token (`x_cls.mean(-1)`); patch class map: the
 *   3x3 pad-1 conv `head` [C, D, 3, 3] over the patch tokens as [B, D, h0, w0]; patch logits:
 *   its spatial mean (`AdaptiveAvgPool2d(1)`). MCTformer+ (the newer models.py) ranks the patch
 *   scores with a decay instead; that is not this model.
 *
 * Where it differs from the official code: the position-embedding resize goes to the exact
 * patch grid by default ({@link VitRefConfig.posEmbedResize}; "mctformer" reproduces the
 * official `scale_factor` call), and everything is f64 where engine.py runs the map generation
 * under `torch.cuda.amp.autocast` (float16 matmuls). The final norm is off as in the official
 * code ({@link VitRefConfig.finalNorm} turns it on).
 * @module
 */
import { conv2dRef } from "../ops/conv.ts";
import { resizeBicubicRef } from "../ops/resize.ts";
import type { RefTensor } from "./reference.ts";

/** Shape and configuration of the MCTformer-V2 reference. */
export interface VitRefConfig {
  /** Token width D (DeiT-S: 384). */
  embedDim: number;
  /** Number of transformer blocks (DeiT-S: 12). */
  depth: number;
  /** Attention heads; must divide {@link embedDim} (DeiT-S: 6). */
  numHeads: number;
  /** MLP hidden width over D, default 4. */
  mlpRatio?: number;
  /** Patch size p, default 16. */
  patch?: number;
  /** Number of classes C: class tokens, head channels and logits. */
  numClasses: number;
  /**
   * Training image side in pixels (timm's `img_size`): the position embeddings are a square grid
   * of g = imgSize / patch patches (DeiT-S: 224, g = 14).
   */
  imgSize: number;
  /** Whether the qkv linear has a bias, default true (`blocks.{i}.attn.qkv.bias`). */
  qkvBias?: boolean;
  /** LayerNorm epsilon, default 1e-6 (DeiT's `partial(nn.LayerNorm, eps=1e-6)`). */
  lnEps?: number;
  /**
   * Apply the final LayerNorm (`norm.weight`/`norm.bias`) to the tokens before the logits and
   * the head, as a plain timm ViT would. Default false: MCTformer-V2 does not apply it.
   */
  finalNorm?: boolean;
  /**
   * How the patch position embeddings are resized to another patch grid h0 x w0 (both bicubic,
   * A = -0.75, align_corners false, border taps clamped):
   * - `"size"` (default): to the exact size h0 x w0, source coordinate (i + 0.5)·g/h0 - 0.5;
   *   a grid of the trained size is left as it is;
   * - `"mctformer"`: as the official `interpolate_pos_encoding` does it, with
   *   `scale_factor=((h0 + 0.1)/g, (w0 + 0.1)/g)`: PyTorch then samples at
   *   (i + 0.5)·g/(h0 + 0.1) - 0.5, slightly off the exact grid, and it resizes whenever the
   *   image is not square even if h0 = w0 = g.
   */
  posEmbedResize?: "size" | "mctformer";
}

/** DeiT-S's shape (embedDim 384, depth 12, 6 heads, patch 16, mlpRatio 4, 224 px). */
export function deitSmallConfig(numClasses: number, imgSize = 224): VitRefConfig {
  return { embedDim: 384, depth: 12, numHeads: 6, mlpRatio: 4, patch: 16, numClasses, imgSize };
}

/** One parameter: dimensions and row-major values (f32 or f64 arrays both serve). */
export interface VitRefParam {
  /** Dimensions, outermost first. */
  shape: readonly number[];
  /** Row-major values. */
  data: ArrayLike<number>;
}

/** Parameters by timm/DeiT name (see {@link vitRefParamShapes}). */
export type VitRefParams = Map<string, VitRefParam> | Record<string, VitRefParam>;

/** The input image [B, 3, H, W]. */
export interface VitRefImage {
  /** [B, 3, H, W]. */
  shape: readonly number[];
  /** Row-major values. */
  data: ArrayLike<number>;
}

/** Options of {@link mctformerForwardRef}. */
export interface VitRefForwardOptions {
  /** Return every block's attention softmax (default false). */
  attn?: boolean;
  /**
   * Per-sample factors of the residual branches (drop path in training: 0 or 1/keep), by
   * block; absent (or a block absent): 1 (eval).
   */
  branchScales?: readonly (BranchScales | null)[];
}

/** The per-sample factors [B] of a block's attention and MLP branches (see drop path). */
export interface BranchScales {
  /** Factor of sample b's attention branch. */
  attn: ArrayLike<number>;
  /** Factor of sample b's MLP branch. */
  mlp: ArrayLike<number>;
}

/** Result of {@link mctformerForwardRef}. */
export interface VitRefForward {
  /** Class-token logits [B, C]: each class token's mean over D (`x_cls.mean(-1)`). */
  clsLogits: RefTensor;
  /** The head's patch class map [B, C, h0, w0] (before any ReLU). */
  patchMap: RefTensor;
  /** Patch logits [B, C]: spatial means of {@link patchMap}. */
  patchLogits: RefTensor;
  /** The last block's output tokens [B, T, D] (after the final norm when configured). */
  tokens: RefTensor;
  /** Each block's attention softmax [B, heads, T, T] (T = C + h0·w0), when asked. */
  attn?: RefTensor[];
  /** The patch grid [h0, w0]. */
  grid: [number, number];
}

/** Which class maps {@link mctformerMapsRef} returns (MCTformer's `--attention-type`). */
export type MctAttentionType = "fused" | "patchcam" | "mct";

/** Options of {@link mctformerMapsRef}. */
export interface MctMapsOptions {
  /**
   * Number of last blocks whose class-to-patch attention is summed (MCTformer's
   * `--layer-index`). Default {@link MCT_LAYER_INDEX} (3).
   */
  nLayers?: number;
  /** `fused` (default): class-to-patch attention · relu(patch map); `patchcam`: relu(patch
   * map); `mct`: the class-to-patch attention alone. */
  type?: MctAttentionType;
}

/** Result of {@link mctformerMapsRef}. */
export interface MctMaps {
  /** Class-to-patch attention [B, C, h0, w0], head-averaged, summed over the last nLayers. */
  mct: RefTensor;
  /** The maps of the chosen type [B, C, h0, w0]. */
  cams: RefTensor;
  /** Patch-to-patch attention [B, P, P] (P = h0·w0), head-averaged, summed over all blocks. */
  patchAttn: RefTensor;
  /** `patchAttn · cams` per class [B, C, h0, w0] (`--patch-attn-refine`). */
  refined: RefTensor;
}

/**
 * The number of last blocks MCTformer sums for its localisation maps: `--layer-index 3`, as
 * its map-generation scripts (run.sh, run_coco.sh) pass it. main.py's argparse default is 12
 * (every block); that default only matters for training, where the attention is not used.
 */
export const MCT_LAYER_INDEX = 3;

function cfgDefaults(cfg: VitRefConfig) {
  const patch = cfg.patch ?? 16;
  const D = cfg.embedDim;
  if (D % cfg.numHeads !== 0) {
    throw new Error(`vit reference: embedDim ${D} is not a multiple of numHeads ${cfg.numHeads}`);
  }
  const grid = cfg.imgSize / patch;
  if (!Number.isInteger(grid) || grid < 1) {
    throw new Error(`vit reference: imgSize ${cfg.imgSize} is not a multiple of patch ${patch}`);
  }
  return {
    patch,
    D,
    C: cfg.numClasses,
    heads: cfg.numHeads,
    hidden: Math.round(D * (cfg.mlpRatio ?? 4)),
    grid,
    qkvBias: cfg.qkvBias ?? true,
    eps: cfg.lnEps ?? 1e-6,
    finalNorm: cfg.finalNorm ?? false,
    posEmbedResize: cfg.posEmbedResize ?? "size",
  };
}

/**
 * Every parameter's timm/DeiT name and shape, in the order timm's `state_dict` lists them
 * (`norm.*` only with {@link VitRefConfig.finalNorm}; MCTformer's checkpoints hold it anyway).
 */
export function vitRefParamShapes(cfg: VitRefConfig): [string, number[]][] {
  const { patch, D, C, hidden, grid, qkvBias, finalNorm } = cfgDefaults(cfg);
  const out: [string, number[]][] = [
    ["cls_token", [1, C, D]],
    ["pos_embed", [1, C + grid * grid, D]],
    ["patch_embed.proj.weight", [D, 3, patch, patch]],
    ["patch_embed.proj.bias", [D]],
  ];
  for (let i = 0; i < cfg.depth; i++) {
    const b = `blocks.${i}.`;
    out.push(
      [`${b}norm1.weight`, [D]],
      [`${b}norm1.bias`, [D]],
      [`${b}attn.qkv.weight`, [3 * D, D]],
      ...(qkvBias ? [[`${b}attn.qkv.bias`, [3 * D]] as [string, number[]]] : []),
      [`${b}attn.proj.weight`, [D, D]],
      [`${b}attn.proj.bias`, [D]],
      [`${b}norm2.weight`, [D]],
      [`${b}norm2.bias`, [D]],
      [`${b}mlp.fc1.weight`, [hidden, D]],
      [`${b}mlp.fc1.bias`, [hidden]],
      [`${b}mlp.fc2.weight`, [D, hidden]],
      [`${b}mlp.fc2.bias`, [D]],
    );
  }
  if (finalNorm) out.push(["norm.weight", [D]], ["norm.bias", [D]]);
  out.push(["head.weight", [C, D, 3, 3]], ["head.bias", [C]]);
  return out;
}

function param(params: VitRefParams, name: string, shape: readonly number[]): ArrayLike<number> {
  const p = params instanceof Map ? params.get(name) : params[name];
  if (!p) throw new Error(`vit reference: no parameter "${name}"`);
  if (p.shape.length !== shape.length || p.shape.some((d, i) => d !== shape[i])) {
    throw new Error(
      `vit reference: "${name}" has shape [${p.shape}], expected [${shape}]`,
    );
  }
  const n = shape.reduce((a, d) => a * d, 1);
  if (p.data.length !== n) {
    throw new Error(`vit reference: "${name}" has ${p.data.length} values, expected ${n}`);
  }
  return p.data;
}

/**
 * erf(x) in f64: (2/√π)·e^(-x²)·Σ_n x·(2x²)^n / (1·3·…·(2n+1)), a series of positive terms
 * (no cancellation; relative error a few ulp), and ±1 beyond |x| = 6 (erfc(6) < 3e-17).
 */
export function erfRef(x: number): number {
  const a = Math.abs(x);
  if (a >= 6) return Math.sign(x);
  if (a === 0) return x;
  const x2 = a * a;
  let term = a;
  let sum = a;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
}

/** Exact GELU: x·Φ(x) = x/2·(1 + erf(x/√2)) (PyTorch's `F.gelu`, approximate "none"). */
export function geluRef(x: number): number {
  return 0.5 * x * (1 + erfRef(x / Math.SQRT2));
}

/** LayerNorm over the last dim of [rows, dim] (biased variance), affine. */
export function layerNormRef(
  x: ArrayLike<number>,
  rows: number,
  dim: number,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  eps: number,
): Float64Array {
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let mean = 0;
    for (let d = 0; d < dim; d++) mean += x[o + d];
    mean /= dim;
    let v = 0;
    for (let d = 0; d < dim; d++) v += (x[o + d] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / dim + eps);
    for (let d = 0; d < dim; d++) y[o + d] = (x[o + d] - mean) * inv * weight[d] + bias[d];
  }
  return y;
}

/** y = x·Wᵀ + b for x [rows, inF], W [outF, inF] (PyTorch's `F.linear`). */
export function linearRef(
  x: ArrayLike<number>,
  rows: number,
  inF: number,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  outF: number,
): Float64Array {
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      const xo = r * inF, wo = o * inF;
      for (let i = 0; i < inF; i++) s += x[xo + i] * w[wo + i];
      y[r * outF + o] = s;
    }
  }
  return y;
}

/**
 * The patch position embeddings for a patch grid h0 x w0: `pos_embed[0, C:]` [g², D] as a
 * [1, D, g, g] image, resized bicubically (see {@link VitRefConfig.posEmbedResize}), back as
 * [h0·w0, D] row-major. `imageSquare` only matters for the "mctformer" rule.
 */
export function patchPosEmbedRef(
  cfg: VitRefConfig,
  posEmbed: ArrayLike<number>,
  h0: number,
  w0: number,
  imageSquare = h0 === w0,
): Float64Array {
  const { D, C, grid: g, posEmbedResize } = cfgDefaults(cfg);
  const P = g * g;
  const patchRows = Float64Array.from({ length: P * D }, (_, i) => posEmbed[C * D + i]);
  const same = posEmbedResize === "size" ? h0 === g && w0 === g : h0 * w0 === P && imageSquare;
  if (same) return patchRows;
  const img = new Float64Array(D * P);
  for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) img[d * P + p] = patchRows[p * D + d];
  // The official call's scale_factor gives the output size floor(g·(h0 + 0.1)/g) = h0 and the
  // source step 1/factor, slightly off g/h0.
  const r = resizeBicubicRef(
    img,
    [1, D, g, g],
    posEmbedResize === "mctformer"
      ? { scaleFactor: [(h0 + 0.1) / g, (w0 + 0.1) / g] }
      : { size: [h0, w0] },
  );
  if (r.length !== h0 * w0 * D) {
    throw new Error(
      `vit reference: position grid resized to ${r.length / D} cells, not ${h0}x${w0}`,
    );
  }
  const out = new Float64Array(h0 * w0 * D);
  for (let p = 0; p < h0 * w0; p++) for (let d = 0; d < D; d++) out[p * D + d] = r[d * h0 * w0 + p];
  return out;
}

/**
 * timm's multi-head self-attention of x [B, T, D] (already normalised): qkv = x·Wqkvᵀ + b as
 * [B, T, 3, heads, D/heads]; attn = softmax(q·kᵀ · (D/heads)^-0.5) over keys; out =
 * proj((attn·v) heads concatenated). Returns the output [B, T, D] and attn [B, heads, T, T].
 */
export function attentionRef(
  x: ArrayLike<number>,
  B: number,
  T: number,
  D: number,
  heads: number,
  qkvW: ArrayLike<number>,
  qkvB: ArrayLike<number> | null,
  projW: ArrayLike<number>,
  projB: ArrayLike<number>,
): { out: Float64Array; attn: Float64Array } {
  const hd = D / heads;
  const scale = hd ** -0.5;
  const qkv = linearRef(x, B * T, D, qkvW, qkvB, 3 * D);
  const attn = new Float64Array(B * heads * T * T);
  const o = new Float64Array(B * T * D);
  const at = (b: number, t: number, which: number, h: number, d: number) =>
    qkv[(b * T + t) * 3 * D + which * D + h * hd + d];
  const row = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          let s = 0;
          for (let d = 0; d < hd; d++) s += at(b, i, 0, h, d) * at(b, j, 1, h, d);
          row[j] = s * scale;
          max = Math.max(max, row[j]);
        }
        let z = 0;
        for (let j = 0; j < T; j++) z += row[j] = Math.exp(row[j] - max);
        const a0 = ((b * heads + h) * T + i) * T;
        for (let j = 0; j < T; j++) attn[a0 + j] = row[j] / z;
        for (let d = 0; d < hd; d++) {
          let s = 0;
          for (let j = 0; j < T; j++) s += attn[a0 + j] * at(b, j, 2, h, d);
          o[(b * T + i) * D + h * hd + d] = s;
        }
      }
    }
  }
  return { out: linearRef(o, B * T, D, projW, projB, D), attn };
}

/**
 * Block `i` of the model (timm's pre-norm `Block`, parameters `blocks.{i}.*`) on tokens x
 * [B, T, D]: x + attn(norm1(x)), then + mlp(norm2(·)) with exact GELU, each branch of sample b
 * times `scales` (drop path; default 1). Returns the output tokens and the attention softmax
 * [B, heads, T, T]. A pure function of its arguments.
 */
export function vitBlockRef(
  cfg: VitRefConfig,
  params: VitRefParams,
  i: number,
  x: ArrayLike<number>,
  B: number,
  T: number,
  scales: BranchScales | null = null,
): { y: Float64Array; attn: Float64Array } {
  const { D, hidden, eps, heads, qkvBias } = cfgDefaults(cfg);
  const p = (name: string, shape: readonly number[]) => param(params, name, shape);
  const n = `blocks.${i}.`;
  const y = layerNormRef(x, B * T, D, p(`${n}norm1.weight`, [D]), p(`${n}norm1.bias`, [D]), eps);
  const a = attentionRef(
    y,
    B,
    T,
    D,
    heads,
    p(`${n}attn.qkv.weight`, [3 * D, D]),
    qkvBias ? p(`${n}attn.qkv.bias`, [3 * D]) : null,
    p(`${n}attn.proj.weight`, [D, D]),
    p(`${n}attn.proj.bias`, [D]),
  );
  // Sample b's branch factor: element j of [B, T, D] is in sample ⌊j / (T·D)⌋.
  const f = (which: "attn" | "mlp", j: number) =>
    scales ? scales[which][Math.floor(j / (T * D))] : 1;
  const x1 = Float64Array.from(x, (v, j) => v + f("attn", j) * a.out[j]);
  const z = layerNormRef(x1, B * T, D, p(`${n}norm2.weight`, [D]), p(`${n}norm2.bias`, [D]), eps);
  const hdn = linearRef(
    z,
    B * T,
    D,
    p(`${n}mlp.fc1.weight`, [hidden, D]),
    p(`${n}mlp.fc1.bias`, [hidden]),
    hidden,
  ).map(geluRef);
  const m = linearRef(
    hdn,
    B * T,
    hidden,
    p(`${n}mlp.fc2.weight`, [D, hidden]),
    p(`${n}mlp.fc2.bias`, [D]),
    D,
  );
  return { y: x1.map((v, j) => v + f("mlp", j) * m[j]), attn: a.attn };
}

/**
 * The MCTformer-V2 forward (eval mode) of `image` [B, 3, H, W] with `params` (timm/DeiT names,
 * {@link vitRefParamShapes}): class logits, the head's patch map and its logits, the last
 * tokens and, with `opts.attn`, every block's attention. A pure function of its arguments.
 */
export function mctformerForwardRef(
  cfg: VitRefConfig,
  params: VitRefParams,
  image: VitRefImage,
  opts: VitRefForwardOptions = {},
): VitRefForward {
  const k = cfgDefaults(cfg);
  const { patch, D, C, grid, eps } = k;
  if (image.shape.length !== 4 || image.shape[1] !== 3) {
    throw new Error(`vit reference: image shape [${image.shape}], expected [B, 3, H, W]`);
  }
  const [B, , H, W] = image.shape;
  const h0 = Math.floor(H / patch), w0 = Math.floor(W / patch);
  if (h0 < 1 || w0 < 1) throw new Error(`vit reference: image ${H}x${W} smaller than a patch`);
  const P = h0 * w0, T = C + P;
  const p = (name: string, shape: readonly number[]) => param(params, name, shape);

  // Patch embedding [B, D, h0, w0] (the conv drops a remainder of the image, as PyTorch's).
  const emb = conv2dRef(
    image.data,
    image.shape,
    p("patch_embed.proj.weight", [D, 3, patch, patch]),
    [D, 3, patch, patch],
    p("patch_embed.proj.bias", [D]),
    { stride: [patch, patch] },
  );
  const cls = p("cls_token", [1, C, D]);
  const pos = p("pos_embed", [1, C + grid * grid, D]);
  const posPatch = patchPosEmbedRef(cfg, pos, h0, w0, H === W);
  let x: Float64Array = new Float64Array(B * T * D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let d = 0; d < D; d++) x[(b * T + c) * D + d] = cls[c * D + d] + pos[c * D + d];
    }
    for (let q = 0; q < P; q++) {
      for (let d = 0; d < D; d++) {
        x[(b * T + C + q) * D + d] = emb[(b * D + d) * P + q] + posPatch[q * D + d];
      }
    }
  }

  const attns: RefTensor[] = [];
  for (let i = 0; i < cfg.depth; i++) {
    const blk = vitBlockRef(cfg, params, i, x, B, T, opts.branchScales?.[i] ?? null);
    if (opts.attn) attns.push({ shape: [B, k.heads, T, T], data: blk.attn });
    x = blk.y;
  }
  if (k.finalNorm) x = layerNormRef(x, B * T, D, p("norm.weight", [D]), p("norm.bias", [D]), eps);

  const clsLogits = new Float64Array(B * C);
  const feat = new Float64Array(B * D * P);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += x[(b * T + c) * D + d];
      clsLogits[b * C + c] = s / D;
    }
    for (let q = 0; q < P; q++) {
      for (let d = 0; d < D; d++) feat[(b * D + d) * P + q] = x[(b * T + C + q) * D + d];
    }
  }
  const map = conv2dRef(
    feat,
    [B, D, h0, w0],
    p("head.weight", [C, D, 3, 3]),
    [C, D, 3, 3],
    p("head.bias", [C]),
    { padding: [1, 1] },
  );
  const patchLogits = new Float64Array(B * C);
  for (let i = 0; i < B * C; i++) {
    let s = 0;
    for (let q = 0; q < P; q++) s += map[i * P + q];
    patchLogits[i] = s / P;
  }
  return {
    clsLogits: { shape: [B, C], data: clsLogits },
    patchMap: { shape: [B, C, h0, w0], data: map },
    patchLogits: { shape: [B, C], data: patchLogits },
    tokens: { shape: [B, T, D], data: x },
    ...(opts.attn ? { attn: attns } : {}),
    grid: [h0, w0],
  };
}

/** The mean over heads of one block's attention [B, heads, T, T] → [B, T, T]. */
export function headMeanRef(attn: RefTensor): RefTensor {
  const [B, heads, T] = attn.shape;
  const out = new Float64Array(B * T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      const o = (b * heads + h) * T * T;
      for (let i = 0; i < T * T; i++) out[b * T * T + i] += attn.data[o + i];
    }
  }
  for (let i = 0; i < out.length; i++) out[i] /= heads;
  return { shape: [B, T, T], data: out };
}

/**
 * MCTformer-V2's class localisation maps from a forward with `attn` (models.py `forward(...,
 * return_att=True)` and engine.py's `generate_attention_maps_ms` for one scale):
 * - attention averaged over heads per block (`torch.mean(attn_weights, dim=2)`);
 * - `mct`: class-to-patch attention `attn[l][:, 0:C, C:]` summed (not averaged) over the last
 *   `nLayers` blocks, as [B, C, h0, w0];
 * - `cams`: `fused` = mct · relu(patchMap), `patchcam` = relu(patchMap), `mct` = mct;
 * - `patchAttn`: patch-to-patch attention `attn[l][:, C:, C:]` summed over every block (engine.py
 *   sums all of them, whatever `nLayers` is);
 * - `refined`: refined[b, c, i] = Σ_j patchAttn[b, i, j] · cams[b, c, j]
 *   (`--patch-attn-refine`: `torch.matmul(patch_attn.unsqueeze(1), cams.view(B, C, -1, 1))`).
 *
 * What engine.py does next is not here: bilinear resize to the image size, the flip and scale
 * sum, zeroing absent classes, per-class min-max normalisation.
 */
export function mctformerMapsRef(fwd: VitRefForward, opts: MctMapsOptions = {}): MctMaps {
  if (!fwd.attn) throw new Error("mctformerMapsRef: the forward was run without { attn: true }");
  const nLayers = opts.nLayers ?? MCT_LAYER_INDEX;
  const depth = fwd.attn.length;
  if (!(nLayers >= 1 && nLayers <= depth)) {
    throw new Error(`mctformerMapsRef: nLayers ${nLayers} not in 1..${depth}`);
  }
  const [B, C, h0, w0] = fwd.patchMap.shape;
  const P = h0 * w0, T = C + P;
  const mct = new Float64Array(B * C * P);
  const patchAttn = new Float64Array(B * P * P);
  for (let l = 0; l < depth; l++) {
    const a = headMeanRef(fwd.attn[l]).data;
    for (let b = 0; b < B; b++) {
      if (l >= depth - nLayers) {
        for (let c = 0; c < C; c++) {
          for (let q = 0; q < P; q++) mct[(b * C + c) * P + q] += a[(b * T + c) * T + C + q];
        }
      }
      for (let i = 0; i < P; i++) {
        for (let j = 0; j < P; j++) {
          patchAttn[(b * P + i) * P + j] += a[(b * T + C + i) * T + C + j];
        }
      }
    }
  }
  const type = opts.type ?? "fused";
  const relu = (v: number) => Math.max(v, 0);
  const cams = type === "mct"
    ? mct.slice()
    : type === "patchcam"
    ? fwd.patchMap.data.map(relu)
    : mct.map((v, i) => v * relu(fwd.patchMap.data[i]));
  const refined = new Float64Array(B * C * P);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < P; i++) {
        let s = 0;
        for (let j = 0; j < P; j++) s += patchAttn[(b * P + i) * P + j] * cams[(b * C + c) * P + j];
        refined[(b * C + c) * P + i] = s;
      }
    }
  }
  const shape = [B, C, h0, w0];
  return {
    mct: { shape, data: mct },
    cams: { shape: [...shape], data: cams },
    patchAttn: { shape: [B, P, P], data: patchAttn },
    refined: { shape: [...shape], data: refined },
  };
}
