/**
 * MCTformer-V2 (Xu et al., CVPR 2022, "Multi-class Token Transformer for Weakly Supervised
 * Semantic Segmentation") on the GPU: a DeiT/timm Vision Transformer whose single class token
 * is replaced by C class tokens, with a 3x3 convolution over the patch tokens as a second
 * classifier, and its class localisation maps. It computes exactly what the f64 reference
 * (./vit_reference.ts, itself held to a PyTorch fixture) computes, with the same parameter names
 * (timm's) and configuration ({@link VitRefConfig}), and writes only its forward, on the
 * gradient tape:
 *
 * - patch embedding: `patchify` + `linear` with the conv weight `patch_embed.proj.weight`
 *   [D, 3, p, p] viewed as [D, 3·p·p] (timm's stride-p conv); an image whose sides are not
 *   multiples of p loses the remainder, as the conv does;
 * - class tokens `cls_token` [1, C, D] over the batch, before the patch tokens; `pos_embed`
 *   [1, C + g², D] added, its patch rows bicubically resized to the input's patch grid when
 *   that differs (on the tape, so they learn through the resize too);
 * - pre-norm blocks (timm's `Block`: attention with a qkv linear, heads of D/H, scale
 *   (D/H)^-0.5; MLP with exact GELU); in training, optionally drop path (stochastic depth, timm's
 *   `drop_path_rate`: each sample's residual branch dropped with a rate rising linearly over the
 *   blocks, kept ones scaled by 1/keep), no dropout;
 * - no final norm by default (MCTformer-V2 does not apply it; `finalNorm` does);
 * - class logits: each class token's mean over D; patch class map: the `head` 3x3 pad-1 conv
 *   over the patch tokens as a map; patch logits: its spatial mean.
 *
 * A trainer runs {@link Mctformer.forward} on a tape (`train: true` and the step as `seed` when
 * drop path is on) and adds `multilabel(clsLogits) + multilabel(patchLogits)` (and OCR on
 * `patchMap`); inference asks for the attention
 * (`attn: true`) and reads the maps of {@link mctformerMaps}. DeiT weights load by name through
 * {@link mctformerStateFromDeit} (src/io/checkpoint.ts `loadDeitWeights` reads the file;
 * docs/mctformer.md converts them).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { type NamedTensor, Tensor } from "../gpu/tensor.ts";
import { Rng } from "../rng.ts";
import { disposeState, namedState, type Param } from "../autograd/param.ts";
import type { Tape } from "../autograd/tape.ts";
import * as F from "../autograd/functions.ts";
import { matmul } from "../ops/matmul.ts";
import { pointwise } from "../ops/pointwise.ts";
import { resizeBicubicRef, type ResizeOptions } from "../ops/resize.ts";
import { sliceTokens, stridedCopy } from "../ops/tokens.ts";
import { Conv2d, LayerNorm, Linear, type Module, param, truncNormals } from "./modules.ts";
import {
  type BranchScales,
  deitSmallConfig,
  MCT_LAYER_INDEX,
  type MctAttentionType,
  type VitRefConfig,
  type VitRefParam,
  vitRefParamShapes,
} from "./vit_reference.ts";

/** The model's configuration: the reference's ({@link VitRefConfig}). */
export type MctformerConfig = VitRefConfig;

/** Named configurations of {@link mctformerConfig}. */
export type VitArch = "deit-s" | "vit-tiny";

/** Every {@link VitArch}. */
export const VIT_ARCHS: readonly VitArch[] = ["deit-s", "vit-tiny"];

/**
 * A named configuration with C classes:
 * - `deit-s`: DeiT-S (width 384, 12 blocks, 6 heads, patch 16, MLP 4x), trained at 224 px
 *   (a 14x14 position grid) unless `imgSize` says otherwise: MCTformer's backbone, for
 *   converted ImageNet weights;
 * - `vit-tiny`: width 192, 4 blocks, 3 heads, patch 16, MLP 4x, trained at 128 px (an 8x8
 *   grid): DeiT-Ti's width and heads at a third of its depth, for the built-in synthetic data
 *   on a CPU adapter (docs/mctformer.md gives its measured step time).
 */
export function mctformerConfig(
  arch: VitArch,
  numClasses: number,
  imgSize?: number,
): MctformerConfig {
  if (arch === "deit-s") return deitSmallConfig(numClasses, imgSize ?? 224);
  if (arch === "vit-tiny") {
    return {
      embedDim: 192,
      depth: 4,
      numHeads: 3,
      mlpRatio: 4,
      patch: 16,
      numClasses,
      imgSize: imgSize ?? 128,
    };
  }
  throw new RangeError(`mctformerConfig: unknown arch "${arch}" (${VIT_ARCHS.join(", ")})`);
}

/** The configuration with its defaults filled in and checked. */
function resolve(cfg: MctformerConfig) {
  const patch = cfg.patch ?? 16;
  const D = cfg.embedDim;
  const positive = (v: number) => Number.isInteger(v) && v >= 1;
  for (const [k, v] of Object.entries({ embedDim: D, depth: cfg.depth, patch })) {
    if (!positive(v)) throw new RangeError(`mctformer: bad ${k} ${v}`);
  }
  if (!positive(cfg.numClasses)) {
    throw new RangeError(`mctformer: bad numClasses ${cfg.numClasses}`);
  }
  if (!positive(cfg.numHeads) || D % cfg.numHeads !== 0) {
    throw new RangeError(`mctformer: embedDim ${D} is not a multiple of numHeads ${cfg.numHeads}`);
  }
  const grid = cfg.imgSize / patch;
  if (!positive(grid)) {
    throw new RangeError(`mctformer: imgSize ${cfg.imgSize} is not a multiple of patch ${patch}`);
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

/** Uniform values in ±bound (PyTorch's default conv init: bound = 1/√fan_in). */
function uniform(rng: Rng, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform(-bound, bound);
  return out;
}

/** Disposes every tensor once (an array may hold one tensor twice). */
function disposeAll(ts: (Tensor | null | undefined)[]): void {
  for (const t of new Set(ts)) t?.dispose();
}

/**
 * x [B, ...] with sample b times f[b] (drop path's factors), on the tape: a batched product of
 * x as [B, n, 1] with the factors as [B, 1, 1]; x itself (one more reference) when every factor
 * is 1.
 */
function scaleSamples(tape: Tape | null, x: Tensor, f: ArrayLike<number>): Tensor {
  const B = x.shape[0];
  if (f.length !== B) throw new RangeError(`drop path: ${f.length} factors for a batch of ${B}`);
  if (Array.from(f).every((v) => v === 1)) return x.retain();
  const v = F.reshape(tape, x, [B, x.size / B, 1]);
  const s = Tensor.fromArray(x.gpu, Float32Array.from(f), [B, 1, 1]);
  const p = F.bmm(tape, v, s);
  const y = F.reshape(tape, p, x.shape);
  disposeAll([v, s, p]);
  return y;
}

/**
 * timm's multi-head self-attention over tokens [B, T, D]: `qkv` (linear to 3·D, split as
 * [3, heads, D/heads]), softmax(q·kᵀ·(D/heads)^-0.5) over keys, the heads' outputs
 * concatenated through `proj`. Names `<prefix>.qkv.*`, `<prefix>.proj.*`.
 */
export class Attention implements Module {
  /** `<prefix>.qkv`: D → 3·D. */
  readonly qkv: Linear;
  /** `<prefix>.proj`: D → D. */
  readonly proj: Linear;

  /** The attention of one block (weights from `rng`, timm's init). */
  constructor(
    readonly gpu: GpuContext,
    readonly prefix: string,
    readonly dim: number,
    readonly heads: number,
    qkvBias: boolean,
    rng: Rng,
  ) {
    if (dim % heads !== 0) throw new RangeError(`Attention ${prefix}: ${dim} % ${heads} heads`);
    this.qkv = new Linear(gpu, {
      name: `${prefix}.qkv`,
      inFeatures: dim,
      outFeatures: 3 * dim,
      bias: qkvBias,
    }, rng);
    this.proj = new Linear(gpu, { name: `${prefix}.proj`, inFeatures: dim, outFeatures: dim }, rng);
  }

  /** The attention output [B, T, D]. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    const { y, attn } = this.forwardAttn(x, tape, false);
    attn?.dispose();
    return y;
  }

  /**
   * The attention output [B, T, D] and, with `keepAttn`, its softmax averaged over heads
   * [B, T, T] (on the tape too: a product with a 1/heads vector).
   */
  forwardAttn(x: Tensor, tape: Tape | null, keepAttn: boolean): { y: Tensor; attn: Tensor | null } {
    const [B, T, D] = x.shape;
    const H = this.heads, Dh = D / H;
    const qkv = this.qkv.forward(x, tape);
    // [B, T, 3·H, Dh] → [B, 3·H, T, Dh] = [B, 3, H·T·Dh]: q, k, v are its three slices.
    const q4 = F.reshape(tape, qkv, [B, T, 3 * H, Dh]);
    const heads = F.permute0213(tape, q4);
    const h3 = F.reshape(tape, heads, [B, 3, H * T * Dh]);
    const part = (i: number) => {
      const s = F.sliceTokens(tape, h3, i, 1);
      const v = F.reshape(tape, s, [B, H, T, Dh]);
      s.dispose();
      return v;
    };
    const [q, k, v] = [part(0), part(1), part(2)];
    const scores = F.bmm(tape, q, k, { transB: true, alpha: Dh ** -0.5 });
    const a = F.softmaxRows(tape, scores);
    const o = F.bmm(tape, a, v);
    const merged = F.permute0213(tape, o);
    const m3 = F.reshape(tape, merged, [B, T, D]);
    const y = this.proj.forward(m3, tape);
    let attn: Tensor | null = null;
    if (keepAttn) {
      // Mean over heads: a [B, H, T·T] read transposed times a column of 1/H.
      const flat = F.reshape(tape, a, [B, H, T * T]);
      const w = Tensor.fromArray(this.gpu, new Float32Array(H).fill(1), [H, 1]);
      const mean = F.bmm(tape, flat, w, { transA: true, alpha: 1 / H });
      attn = F.reshape(tape, mean, [B, T, T]);
      disposeAll([flat, w, mean]);
    }
    disposeAll([qkv, q4, heads, h3, q, k, v, scores, a, o, merged, m3]);
    return { y, attn };
  }

  /** qkv, then proj. */
  params(): Param[] {
    return [...this.qkv.params(), ...this.proj.params()];
  }
}

/** timm's `Mlp`: fc1 (D → hidden), exact GELU, fc2 (hidden → D). */
export class Mlp implements Module {
  /** `<prefix>.fc1`. */
  readonly fc1: Linear;
  /** `<prefix>.fc2`. */
  readonly fc2: Linear;

  /** An MLP of `hidden` units (weights from `rng`, timm's init). */
  constructor(gpu: GpuContext, prefix: string, dim: number, hidden: number, rng: Rng) {
    this.fc1 = new Linear(
      gpu,
      { name: `${prefix}.fc1`, inFeatures: dim, outFeatures: hidden },
      rng,
    );
    this.fc2 = new Linear(
      gpu,
      { name: `${prefix}.fc2`, inFeatures: hidden, outFeatures: dim },
      rng,
    );
  }

  /** fc2(gelu(fc1(x))). */
  forward(x: Tensor, tape: Tape | null): Tensor {
    const h = this.fc1.forward(x, tape);
    const g = F.gelu(tape, h);
    h.dispose();
    const y = this.fc2.forward(g, tape);
    g.dispose();
    return y;
  }

  /** fc1, then fc2. */
  params(): Param[] {
    return [...this.fc1.params(), ...this.fc2.params()];
  }
}

/**
 * timm's pre-norm transformer `Block` (`blocks.{i}`): x + attn(norm1(x)), then
 * x + mlp(norm2(x)).
 */
export class Block implements Module {
  /** `<prefix>.norm1`. */
  readonly norm1: LayerNorm;
  /** `<prefix>.attn`. */
  readonly attn: Attention;
  /** `<prefix>.norm2`. */
  readonly norm2: LayerNorm;
  /** `<prefix>.mlp`. */
  readonly mlp: Mlp;

  /** Block `prefix` of a model with configuration `c` (weights from `rng`). */
  constructor(
    gpu: GpuContext,
    prefix: string,
    c: { D: number; heads: number; hidden: number; qkvBias: boolean; eps: number },
    rng: Rng,
  ) {
    this.norm1 = new LayerNorm(gpu, c.D, `${prefix}.norm1`, c.eps);
    this.attn = new Attention(gpu, `${prefix}.attn`, c.D, c.heads, c.qkvBias, rng);
    this.norm2 = new LayerNorm(gpu, c.D, `${prefix}.norm2`, c.eps);
    this.mlp = new Mlp(gpu, `${prefix}.mlp`, c.D, c.hidden, rng);
  }

  /** The block's output tokens. */
  forward(x: Tensor, tape: Tape | null): Tensor {
    const { y, attn } = this.forwardAttn(x, tape, false);
    attn?.dispose();
    return y;
  }

  /**
   * The output tokens and, with `keepAttn`, the head-averaged attention [B, T, T]; with
   * `scales`, each sample's branches times its factors (drop path).
   */
  forwardAttn(
    x: Tensor,
    tape: Tape | null,
    keepAttn: boolean,
    scales: BranchScales | null = null,
  ): { y: Tensor; attn: Tensor | null } {
    const n1 = this.norm1.forward(x, tape);
    const a = this.attn.forwardAttn(n1, tape, keepAttn);
    const ya = scales ? scaleSamples(tape, a.y, scales.attn) : a.y.retain();
    const x1 = F.add(tape, x, ya);
    const n2 = this.norm2.forward(x1, tape);
    const m = this.mlp.forward(n2, tape);
    const ym = scales ? scaleSamples(tape, m, scales.mlp) : m.retain();
    const y = F.add(tape, x1, ym);
    // ya and ym are references of their own (a retain of a.y or m when nothing is scaled):
    // each is released once, not merged with the tensor it may be.
    for (const t of [n1, a.y, ya, x1, n2, m, ym]) t.dispose();
    return { y, attn: a.attn };
  }

  /** norm1, attn, norm2, mlp (timm's state_dict order). */
  params(): Param[] {
    return [
      ...this.norm1.params(),
      ...this.attn.params(),
      ...this.norm2.params(),
      ...this.mlp.params(),
    ];
  }
}

/** Options of {@link Mctformer.forward}. */
export interface MctformerForwardOptions {
  /** The step's tape (training), or null (inference). */
  tape: Tape | null;
  /**
   * Also return every block's attention averaged over heads (default false: training does not
   * keep them). On a tape they are differentiable like the other outputs.
   */
  attn?: boolean;
  /**
   * Training mode: apply drop path when the model has a rate ({@link MctformerOptions.dropPath};
   * nothing else differs). Default false.
   */
  train?: boolean;
  /** Seed of the drop-path draws (the step, say); required when drop path applies. */
  seed?: number;
}

/** Outputs of {@link Mctformer.forward}, owned by the caller. */
export interface MctformerOutputs {
  /** Class-token logits [B, C]: each class token's mean over D. */
  clsLogits: Tensor;
  /** The head's patch class map [B, C, h, w] (before any ReLU): the CAMs that OCR acts on. */
  patchMap: Tensor;
  /** Patch logits [B, C]: the spatial mean of {@link patchMap}. */
  patchLogits: Tensor;
  /** With `attn`: each block's softmax attention averaged over heads, [B, T, T] (T = C + h·w). */
  attn?: Tensor[];
  /** The patch grid [h, w] of the input. */
  grid: [number, number];
}

/** Disposes every tensor of a forward's outputs. */
export function disposeMctformerOutputs(o: MctformerOutputs): void {
  disposeAll([o.clsLogits, o.patchMap, o.patchLogits, ...(o.attn ?? [])]);
}

/** The MCTformer-V2 network (see the module doc). Build it with {@link createMctformer}. */
export class Mctformer {
  /** The configuration (defaults filled in where the model needs them). */
  readonly config: MctformerConfig;
  /** `cls_token` [1, C, D]. */
  readonly clsToken: Param;
  /** `pos_embed` [1, C + g², D]. */
  readonly posEmbed: Param;
  /** `patch_embed.proj.weight` [D, 3, p, p]. */
  readonly patchWeight: Param;
  /** `patch_embed.proj.bias` [D]. */
  readonly patchBias: Param;
  /** `blocks.{i}`. */
  readonly blocks: Block[];
  /** `norm` (only with `finalNorm`). */
  readonly norm: LayerNorm | null;
  /** `head`: the 3x3 pad-1 conv D → C over the patch tokens (learning-rate group `head`). */
  readonly head: Conv2d;
  /** timm's `drop_path_rate`: the last block's drop-path rate in training (0: none). */
  readonly dropPath: number;
  readonly #c: ReturnType<typeof resolve>;

  /** Builds a model initialised as timm / MCTformer do (see {@link createMctformer}). */
  constructor(
    readonly gpu: GpuContext,
    cfg: MctformerConfig,
    opts: { seed?: number; dropPath?: number } = {},
  ) {
    const c = resolve(cfg);
    this.#c = c;
    this.config = { ...cfg };
    this.dropPath = opts.dropPath ?? 0;
    if (!(this.dropPath >= 0 && this.dropPath < 1)) {
      throw new RangeError(`mctformer: drop path rate ${this.dropPath} not in [0, 1)`);
    }
    const rng = new Rng(opts.seed ?? 0);
    const { D, C, patch: p, grid: g } = c;
    // MCTformerV2.__init__: trunc_normal_(std=.02) for the class tokens and the position
    // embeddings; the patch embedding and the head are Conv2d, which timm's _init_weights
    // leaves at PyTorch's default (kaiming_uniform, a = √5: U(±1/√fan_in), bias alike).
    const bb = "backbone";
    this.clsToken = param(gpu, "cls_token", truncNormals(rng, C * D, 0.02), [1, C, D], bb, false);
    const posShape = [1, C + g * g, D];
    this.posEmbed = param(
      gpu,
      "pos_embed",
      truncNormals(rng, posShape[1] * D, 0.02),
      posShape,
      bb,
      false,
    );
    const pb = 1 / Math.sqrt(3 * p * p);
    const pw = uniform(rng, D * 3 * p * p, pb);
    this.patchWeight = param(gpu, "patch_embed.proj.weight", pw, [D, 3, p, p], bb, true);
    this.patchBias = param(gpu, "patch_embed.proj.bias", uniform(rng, D, pb), [D], bb, false);
    this.blocks = Array.from(
      { length: cfg.depth },
      (_, i) => new Block(gpu, `blocks.${i}`, c, rng),
    );
    this.norm = c.finalNorm ? new LayerNorm(gpu, D, "norm", c.eps) : null;
    this.head = new Conv2d(gpu, {
      name: "head",
      inChannels: D,
      outChannels: C,
      kernel: 3,
      padding: 1,
      bias: true,
      group: "head",
    }, rng);
    const hb = 1 / Math.sqrt(D * 9);
    this.head.weight.value.write(uniform(rng, C * D * 9, hb));
  }

  /** Patch size p. */
  get patch(): number {
    return this.#c.patch;
  }

  /** Number of classes C (class tokens, head channels). */
  get numClasses(): number {
    return this.#c.C;
  }

  /**
   * The forward of images x [B, 3, H, W] (see the module doc); with a tape (training) it
   * records the backward there. The patch grid is ⌊H/p⌋ x ⌊W/p⌋.
   */
  forward(x: Tensor, opts: MctformerForwardOptions): MctformerOutputs {
    const { tape } = opts;
    const { patch: p, D, C } = this.#c;
    if (x.shape.length !== 4 || x.shape[1] !== 3) {
      throw new RangeError(`mctformer: input [${x.shape}], expected [B, 3, H, W]`);
    }
    const [B, , H, W] = x.shape;
    const h = Math.floor(H / p), w = Math.floor(W / p);
    if (h < 1 || w < 1) throw new RangeError(`mctformer: ${H}x${W} is smaller than a patch (${p})`);
    const P = h * w;
    const img = this.#crop(x, h * p, w * p, tape);
    const patches = F.patchify(tape, img, p);
    const wv = F.reshape(tape, this.patchWeight.value, [D, 3 * p * p]);
    const emb = F.linear(tape, patches, wv, this.patchBias.value);
    const cls = F.expandBatch(tape, this.clsToken.value, B);
    const seq = F.concatTokens(tape, cls, emb);
    const pos = this.#positions(tape, h, w, H === W);
    let t = F.addBroadcast(tape, seq, pos);
    disposeAll([img, patches, wv, emb, cls, seq, pos]);

    let scales: (BranchScales | null)[] = [];
    if (opts.train && this.dropPath > 0) {
      if (opts.seed === undefined) {
        throw new RangeError(`mctformer: drop path (rate ${this.dropPath}) needs a seed`);
      }
      scales = this.dropPathScales(opts.seed, B);
    }
    const attn: Tensor[] = [];
    for (const [i, b] of this.blocks.entries()) {
      const r = b.forwardAttn(t, tape, opts.attn ?? false, scales[i] ?? null);
      t.dispose();
      t = r.y;
      if (r.attn) attn.push(r.attn);
    }
    if (this.norm) {
      const n = this.norm.forward(t, tape);
      t.dispose();
      t = n;
    }

    // x_cls.mean(-1): the mean over D of each class token, as a pool over [B, C, D, 1].
    const xc = F.sliceTokens(tape, t, 0, C);
    const xc4 = F.reshape(tape, xc, [B, C, D, 1]);
    const clsLogits = F.globalAvgPool(tape, xc4);
    const xp = F.sliceTokens(tape, t, C, P);
    const map = F.tokensToMap(tape, xp, h, w);
    const patchMap = this.head.forward(map, tape);
    const patchLogits = F.globalAvgPool(tape, patchMap);
    disposeAll([t, xc, xc4, xp, map]);
    return {
      clsLogits,
      patchMap,
      patchLogits,
      ...(opts.attn ? { attn } : {}),
      grid: [h, w],
    };
  }

  /**
   * Drop path's factors for a batch of B in training with draws seeded by `seed`, per block
   * (null for a block whose rate is 0): as timm, block i's rate is dropPath·i/(depth - 1)
   * (`torch.linspace(0, drop_path_rate, depth)`), and each sample's attention and MLP branches
   * are kept with probability keep = 1 - rate, as 1/keep, else 0.
   */
  dropPathScales(seed: number, B: number): (BranchScales | null)[] {
    const rng = new Rng(seed);
    const depth = this.blocks.length;
    return this.blocks.map((_, i) => {
      const rate = depth > 1 ? (this.dropPath * i) / (depth - 1) : 0;
      if (rate === 0) return null;
      const keep = 1 - rate;
      const draw = () => Float32Array.from({ length: B }, () => (rng.next() < keep ? 1 / keep : 0));
      return { attn: draw(), mlp: draw() };
    });
  }

  /** x cropped to its top-left Hc x Wc (the pixels the stride-p conv reads), or x itself. */
  #crop(x: Tensor, Hc: number, Wc: number, tape: Tape | null): Tensor {
    const [B, Ch, H, W] = x.shape;
    if (Hc === H && Wc === W) return x.retain();
    if (tape?.needsGrad(x)) {
      throw new RangeError(
        `mctformer: ${H}x${W} is not a multiple of the patch size ${this.#c.patch}; cropping ` +
          `is not differentiable, crop the input first`,
      );
    }
    const y = Tensor.empty(this.gpu, [B, Ch, Hc, Wc]);
    stridedCopy(this.gpu, {
      name: "mctformer.crop",
      src: x,
      dst: y,
      shape: [B * Ch, Hc, Wc],
      srcStrides: [H * W, W, 1],
      dstStrides: [Hc * Wc, Wc, 1],
    });
    return y;
  }

  /**
   * The position embeddings [1, C + h·w, D] for an h x w patch grid: `pos_embed` itself on
   * the trained grid, else its class rows and its patch rows resized bicubically
   * ({@link VitRefConfig.posEmbedResize}: to the exact size, or the official scale factor).
   */
  #positions(tape: Tape | null, h: number, w: number, square: boolean): Tensor {
    const { C, grid: g, posEmbedResize } = this.#c;
    const pe = this.posEmbed.value;
    const same = posEmbedResize === "size" ? h === g && w === g : h * w === g * g && square;
    if (same) return pe.retain();
    const opts: ResizeOptions = posEmbedResize === "mctformer"
      ? { scaleFactor: [(h + 0.1) / g, (w + 0.1) / g] }
      : { size: [h, w] };
    const cls = F.sliceTokens(tape, pe, 0, C);
    const rows = F.sliceTokens(tape, pe, C, g * g);
    const grid = F.tokensToMap(tape, rows, g, g);
    const resized = F.resizeBicubic(tape, grid, opts);
    const tokens = F.mapToTokens(tape, resized);
    const pos = F.concatTokens(tape, cls, tokens);
    disposeAll([cls, rows, grid, resized, tokens]);
    return pos;
  }

  /** Trainable parameters, in timm's state_dict order (= {@link vitRefParamShapes}). */
  params(): Param[] {
    return [
      this.clsToken,
      this.posEmbed,
      this.patchWeight,
      this.patchBias,
      ...this.blocks.flatMap((b) => b.params()),
      ...(this.norm?.params() ?? []),
      ...this.head.params(),
    ];
  }

  /** Every tensor of the model's state by name (its parameters; it has no buffers). */
  stateTensors(): NamedTensor[] {
    return namedState(this.params(), []);
  }

  /** Frees every parameter and gradient. */
  dispose(): void {
    disposeState(this.params(), []);
  }
}

/** Options of {@link createMctformer}: a configuration, the initialisation seed, drop path. */
export interface MctformerOptions extends MctformerConfig {
  /** Seed of the initialisation (default 0). */
  seed?: number;
  /**
   * timm's `drop_path_rate` (stochastic depth in training, the last block's rate; default 0:
   * none). DeiT trains with 0.1.
   */
  dropPath?: number;
}

/** Builds an MCTformer-V2 with timm's initialisation (see {@link Mctformer}). */
export function createMctformer(gpu: GpuContext, cfg: MctformerOptions): Mctformer {
  const { seed, dropPath, ...config } = cfg;
  return new Mctformer(gpu, config, { seed, dropPath });
}

// ---------------------------------------------------------------------------------------------
// Localisation maps.

/** Options of {@link mctformerMaps}. */
export interface MctformerMapsOptions {
  /** Last blocks whose class-to-patch attention is summed (default {@link MCT_LAYER_INDEX}). */
  nLayers?: number;
  /** `fused` (default): mct · relu(patchMap); `patchcam`: relu(patchMap); `mct`: mct alone. */
  type?: MctAttentionType;
  /**
   * Refine the maps with the patch-to-patch attention summed over every block (MCTformer's
   * `--patch-attn-refine`; default true).
   */
  patchAttnRefine?: boolean;
}

/** The localisation maps of {@link mctformerMaps}; each tensor is [B, C, h, w] unless noted. */
export interface MctformerMaps {
  /** The maps: {@link refined} with `patchAttnRefine` (the default), else {@link cams}. */
  maps: Tensor;
  /** Class-to-patch attention, head-averaged, summed over the last nLayers blocks. */
  mct: Tensor;
  /** The maps of the chosen type, before refinement. */
  cams: Tensor;
  /** Patch-to-patch attention summed over every block [B, P, P] (with refinement). */
  patchAttn: Tensor | null;
  /** patchAttn · cams per class (with refinement). */
  refined: Tensor | null;
  /** Frees every tensor above (each once). */
  dispose(): void;
}

/**
 * MCTformer-V2's class localisation maps from a forward with `attn: true`, as
 * `mctformerMapsRef` computes them (engine.py's `generate_attention_maps_ms` for one scale):
 * the head-averaged attention rows of the class tokens over the patch columns, summed over the
 * last `nLayers` blocks (`mct`); fused with relu(patchMap) (or the other types); refined by the
 * patch-to-patch attention summed over all blocks. Inference only (nothing is recorded); the
 * caller owns the result. What engine.py does next (resize to the image, flips and scales,
 * normalisation) is the CAM pipeline's.
 */
export function mctformerMaps(
  gpu: GpuContext,
  out: MctformerOutputs,
  opts: MctformerMapsOptions = {},
): MctformerMaps {
  const op = "mctformerMaps";
  const attn = out.attn;
  if (!attn || attn.length === 0) throw new Error(`${op}: the forward was run without attn: true`);
  const depth = attn.length;
  const nLayers = opts.nLayers ?? MCT_LAYER_INDEX;
  if (!(Number.isInteger(nLayers) && nLayers >= 1 && nLayers <= depth)) {
    throw new RangeError(`${op}: nLayers ${nLayers} not in 1..${depth}`);
  }
  const [B, C, h, w] = out.patchMap.shape;
  const P = h * w, T = C + P;
  for (const a of attn) {
    if (a.shape.join() !== [B, T, T].join()) {
      throw new RangeError(`${op}: attention [${a.shape}] is not [${B}, ${T}, ${T}]`);
    }
  }
  // Σ of blocks [from, depth), first to last (the reference's order); a new tensor.
  const sum = (from: number) => {
    const acc = from + 1 < depth
      ? pointwise(gpu, "add", [attn[from], attn[from + 1]])
      : attn[from].retain();
    for (let l = from + 2; l < depth; l++) pointwise(gpu, "add", [acc, attn[l]], { out: acc });
    return acc;
  };
  // rows [r0, r0 + rows) x columns [C, T) of s [B, T, T] → [B, rows, P], as a new tensor
  // viewed `shape`: the rows are tokens of [B, T, T], the columns tokens of [B·rows, T, 1].
  const block = (s: Tensor, r0: number, rows: number, shape: number[]) => {
    const r = sliceTokens(gpu, s, r0, rows);
    const c = sliceTokens(gpu, r.reshape([B * rows, T, 1]), C, P);
    const v = c.view(shape);
    disposeAll([r, c]);
    return v;
  };
  const last = sum(depth - nLayers);
  const mct = block(last, 0, C, [B, C, h, w]);
  last.dispose();
  const type = opts.type ?? "fused";
  let cams: Tensor;
  if (type === "mct") cams = mct.view([B, C, h, w]);
  else {
    cams = pointwise(gpu, "relu", [out.patchMap]);
    if (type === "fused") pointwise(gpu, "mul", [cams, mct], { out: cams });
    else if (type !== "patchcam") {
      cams.dispose();
      mct.dispose();
      throw new RangeError(`${op}: unknown type "${type}" (fused, patchcam, mct)`);
    }
  }
  let patchAttn: Tensor | null = null;
  let refined: Tensor | null = null;
  if (opts.patchAttnRefine ?? true) {
    const all = sum(0);
    patchAttn = block(all, C, P, [B, P, P]);
    all.dispose();
    // refined[b, c, i] = Σ_j patchAttn[b, i, j]·cams[b, c, j]: cams [B, C, P] · patchAttnᵀ.
    const r = matmul(gpu, cams.reshape([B, C, P]), patchAttn, { transB: true });
    refined = r.view([B, C, h, w]);
    r.dispose();
  }
  const maps = refined ?? cams;
  return {
    maps,
    mct,
    cams,
    patchAttn,
    refined,
    dispose: () => disposeAll([mct, cams, patchAttn, refined]),
  };
}

// ---------------------------------------------------------------------------------------------
// DeiT weights.

/** Result of {@link mctformerStateFromDeit}. */
export interface DeitConversion {
  /** The model's tensors found in the file, converted to the model's shapes, by name. */
  state: Map<string, VitRefParam>;
  /** Model tensors the file lacks (the head may be absent: it is not listed). */
  missing: string[];
  /** `name: file [shape], model [shape]` for each tensor that does not fit. */
  misShaped: string[];
  /** File tensors the model has no use for (beyond DeiT's classifier and unused final norm). */
  unexpected: string[];
  /** What was converted, for a log line (class token replicated, grid resized, ...). */
  notes: string[];
}

/**
 * Maps a DeiT / timm ViT state (or an MCTformer-V2 checkpoint of the same shape) onto a model
 * with configuration `cfg`, as MCTformer's main.py does when fine-tuning from DeiT:
 * - `cls_token` [1, 1, D] is replicated C times (one per class token); [1, C, D] is taken as is;
 * - `pos_embed` [1, E + n², D] (E = the file's class tokens, 1 or C): the class row replicated
 *   C times likewise, the n x n patch grid resized bicubically to the model's g x g
 *   (align_corners false, in f64) when n differs;
 * - DeiT's classifier `head.*` (a Linear) is skipped (the conv head keeps its initialisation);
 *   a head of the model's shape loads; `norm.*` is skipped when the model has no final norm;
 * - every other tensor by name and shape.
 * Nothing is thrown: the caller reports `missing`, `misShaped` and `unexpected` together.
 */
export function mctformerStateFromDeit(
  cfg: MctformerConfig,
  tensors: ReadonlyMap<string, VitRefParam>,
): DeitConversion {
  const c = resolve(cfg);
  const { D, C, grid: g } = c;
  const want = new Map(vitRefParamShapes(cfg));
  const state = new Map<string, VitRefParam>();
  const missing: string[] = [];
  const misShaped: string[] = [];
  const notes: string[] = [];
  const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
  const bad = (name: string, got: readonly number[]) =>
    misShaped.push(`${name}: file ${fmt(got)}, model ${fmt(want.get(name)!)}`);
  const same = (a: readonly number[], b: readonly number[]) =>
    a.length === b.length && a.every((d, i) => d === b[i]);
  /** [1, E, D] rows → [1, C, D]: E = C as is, E = 1 replicated. */
  const classRows = (data: ArrayLike<number>, E: number): Float32Array | null => {
    if (E !== 1 && E !== C) return null;
    const out = new Float32Array(C * D);
    for (let k = 0; k < C; k++) {
      for (let d = 0; d < D; d++) out[k * D + d] = data[(E === 1 ? 0 : k) * D + d];
    }
    return out;
  };

  const cls = tensors.get("cls_token");
  let E = 0;
  if (!cls) missing.push("cls_token");
  else if (cls.shape.length !== 3 || cls.shape[0] !== 1 || cls.shape[2] !== D) {
    bad("cls_token", cls.shape);
  } else {
    E = cls.shape[1];
    const rows = classRows(cls.data, E);
    if (!rows) bad("cls_token", cls.shape);
    else {
      state.set("cls_token", { shape: [1, C, D], data: rows });
      if (E === 1 && C > 1) notes.push(`class token replicated ${C} times`);
    }
  }

  const pos = tensors.get("pos_embed");
  if (!pos) missing.push("pos_embed");
  else if (E > 0) {
    const n = Math.round(Math.sqrt(pos.shape[1] - E));
    const fits = pos.shape.length === 3 && pos.shape[0] === 1 && pos.shape[2] === D &&
      n >= 1 && n * n === pos.shape[1] - E;
    const rows = fits ? classRows(pos.data, E) : null;
    if (!rows) bad("pos_embed", pos.shape);
    else {
      // The n x n patch rows as a [1, D, n, n] image, resized to g x g, back to rows.
      const img = new Float64Array(D * n * n);
      for (let q = 0; q < n * n; q++) {
        for (let d = 0; d < D; d++) img[d * n * n + q] = pos.data[(E + q) * D + d];
      }
      const grid = n === g ? img : resizeBicubicRef(img, [1, D, n, n], { size: [g, g] });
      if (n !== g) notes.push(`position grid resized from ${n}x${n} to ${g}x${g}`);
      const out = new Float32Array((C + g * g) * D);
      out.set(rows);
      for (let q = 0; q < g * g; q++) {
        for (let d = 0; d < D; d++) out[(C + q) * D + d] = grid[d * g * g + q];
      }
      state.set("pos_embed", { shape: [1, C + g * g, D], data: out });
    }
  }

  for (const [name, shape] of want) {
    if (name === "cls_token" || name === "pos_embed") continue;
    const t = tensors.get(name);
    if (!t) {
      if (!name.startsWith("head.")) missing.push(name);
      continue;
    }
    if (same(t.shape, shape)) state.set(name, t);
    else if (name === "head.weight" && t.shape.length === 2) {
      notes.push(`DeiT's classifier head.* [${t.shape}] skipped`);
    } else if (name === "head.bias" && tensors.get("head.weight")?.shape.length === 2) {
      // DeiT's classifier bias: skipped with its weight.
    } else bad(name, t.shape);
  }
  const unexpected = [...tensors.keys()].filter((k) =>
    !want.has(k) && !(k === "norm.weight" || k === "norm.bias")
  );
  if (!c.finalNorm && tensors.has("norm.weight")) notes.push("final norm.* unused, skipped");
  return { state, missing, misShaped, unexpected, notes };
}
