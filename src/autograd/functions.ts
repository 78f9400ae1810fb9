/**
 * The differentiable ops: each runs its op family's forward kernel (src/ops) and, when a tape
 * is given and an input needs a gradient, records its backward rule there. All derivative
 * rules live in this file (in the spirit of tinygrad's gradient.py); the kernels they call,
 * with their f64 references and tests, live in the op family's file.
 *
 * Conventions: `tape` null means inference (nothing is recorded, batchnorm uses its running
 * statistics); a result is a new tensor owned by the caller, except for in-place variants,
 * which return their input with one more reference (dispose both as usual). Rules give
 * gradients to the inputs that need them, in the order the hand-written layers used to
 * compute them, and write parameter gradients in place through the tape's sinks.
 * @module
 */
import { numel, Tensor } from "../gpu/tensor.ts";
import {
  batchNormBackward,
  batchNormForward,
  type BatchNormForwardOptions,
  type BatchNormTensors,
} from "../ops/batchnorm.ts";
import {
  conv2d as conv2dKernel,
  conv2dGradBias,
  conv2dGradInput,
  conv2dGradWeight,
  type Conv2dOptions,
} from "../ops/conv.ts";
import { pointwise } from "../ops/pointwise.ts";
import {
  linear as linearKernel,
  linearGradBias,
  linearGradInput,
  linearGradWeight,
} from "../ops/linear.ts";
import { matmul } from "../ops/matmul.ts";
import { softmaxRows as softmaxRowsKernel, softmaxRowsBackward } from "../ops/rows.ts";
import * as tok from "../ops/tokens.ts";
import { layerNormForward, layerNormGradInput, layerNormGradParams } from "../ops/layernorm.ts";
import {
  globalAvgPool as gapKernel,
  globalAvgPoolBackward,
  maxPool2d as maxPoolKernel,
  maxPool2dBackward,
  type MaxPoolOptions,
} from "../ops/pool.ts";
import {
  resizeBicubic as bicubicKernel,
  resizeBicubicBackward,
  resizeBilinear as resizeKernel,
  resizeBilinearBackward,
  type ResizeOptions,
} from "../ops/resize.ts";
import {
  AFFINITY_RADIUS,
  pairwiseAffinity as affinityKernel,
  pairwiseAffinityBackward,
} from "../ops/affinity.ts";
import { dropout as dropoutKernel } from "../ops/dropout.ts";
import { pcmBackward, pcmForward } from "../ops/pcm.ts";
import * as seam from "../losses/seam.ts";
import { softmaxCrossEntropyBackward, softmaxCrossEntropyLoss } from "../losses/segmentation.ts";
import type { Tape } from "./tape.ts";

/**
 * Convolution y = conv(x, w) + b (PyTorch's conv2d, groups 1). Saves x. The input gradient
 * is written through a sink: where x already has a gradient (a block input that also feeds
 * the shortcut), the kernel adds into it instead of the tape summing a separate result.
 */
export function conv2d(
  tape: Tape | null,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  geom: Conv2dOptions,
): Tensor {
  const gpu = x.gpu;
  const y = conv2dKernel(gpu, x, w, b, geom);
  tape?.record("conv2d", [x, w, b], [y], (g) => {
    const dy = g.dy()!;
    if (g.needs(1)) {
      const s = g.sink(1);
      conv2dGradWeight(gpu, x, dy, w.shape, { ...geom, out: s.out, accumulate: s.accumulate });
    }
    if (b && g.needs(2)) {
      const s = g.sink(2);
      conv2dGradBias(gpu, dy, { out: s.out, accumulate: s.accumulate });
    }
    if (g.needs(0)) {
      // The kernels' accumulate adds the finished sum once (out + v), the bits the tape's add
      // of a separate result would give, without its dispatch, pass and temporary.
      const s = g.sink(0);
      conv2dGradInput(gpu, dy, w, x.shape, { ...geom, out: s.out, accumulate: s.accumulate });
    }
  }, [x]);
  return y;
}

/**
 * 2-D batch normalisation of x [N, C, H, W]. With `opts.training`, batch statistics (and a
 * running-statistics update); else the running statistics, as constants. With `opts.relu`,
 * relu(batchnorm(x)) in the batchnorm's own passes: the forward kernel clamps, and the rule
 * masks dy with the saved output (relu_bwd's [y > 0]) inside the batchnorm backward kernels,
 * so the pair records no ReLU dispatch and no ReLU gradient temporary. Gradients flow to x
 * and to weight/bias when the tape has them as parameters. Saves x and the statistics (and
 * the output with `relu`: an op that overwrites it in place would spoil the mask, as with
 * the ReLU's own rule).
 */
export function batchNorm2d(
  tape: Tape | null,
  x: Tensor,
  p: BatchNormTensors,
  opts: BatchNormForwardOptions,
): Tensor {
  const gpu = x.gpu;
  const eps = opts.eps ?? 1e-5;
  const { y, stats } = batchNormForward(gpu, x, p, opts);
  const relu = opts.relu ?? false;
  tape?.record(relu ? "batchnorm_relu" : "batchnorm", [x, p.weight, p.bias], [y], (g) => {
    const affine = g.needs(1) || g.needs(2);
    if (affine && !(g.needs(1) && g.needs(2))) {
      throw new Error("batchnorm: weight and bias must both be trainable or both frozen");
    }
    const sw = affine ? g.sink(1) : null;
    const sb = affine ? g.sink(2) : null;
    if (sw && sb && sw.accumulate !== sb.accumulate) {
      throw new Error("batchnorm: weight and bias gradients are in different states");
    }
    const dx = batchNormBackward(gpu, x, g.dy()!, p, stats, {
      eps,
      grads: sw && sb ? { weight: sw.out, bias: sb.out } : undefined,
      accumulate: sw?.accumulate ?? false,
      reluOutput: relu ? y : undefined,
    });
    if (g.needs(0)) g.give(0, dx);
    else dx.dispose();
  }, relu ? [x, stats.mean, stats.stat, y] : [x, stats.mean, stats.stat]);
  stats.mean.dispose();
  stats.stat.dispose();
  return y;
}

/** The pointwise activations whose derivative is a function of their output. */
export type ActivationName = "relu" | "elu";

/**
 * y = relu(x) or elu(x) (alpha 1), written over x when `inplace` (only safe when no recorded
 * op saved x itself). Backward from the saved output: relu' = [y > 0], elu' = y + 1 where
 * y <= 0, so an in-place forward loses nothing the rule needs.
 */
export function activation(
  tape: Tape | null,
  name: ActivationName,
  x: Tensor,
  inplace = false,
): Tensor {
  const gpu = x.gpu;
  const y = inplace ? pointwise(gpu, name, [x], { out: x }).retain() : pointwise(gpu, name, [x]);
  tape?.record(name, [x], [y], (g) => {
    g.give(0, pointwise(gpu, name === "relu" ? "relu_bwd" : "elu_bwd", [y, g.dy()!]));
  }, [y]);
  return y;
}

/**
 * y = a + b, or relu(a + b) with `relu` (a ResNet block's residual add), written over `a`
 * when `inplace`. Both inputs receive the same gradient.
 */
export function add(
  tape: Tape | null,
  a: Tensor,
  b: Tensor,
  opts: { relu?: boolean; inplace?: boolean } = {},
): Tensor {
  const gpu = a.gpu;
  const op = opts.relu ? "add_relu" : "add";
  const y = opts.inplace
    ? pointwise(gpu, op, [a, b], { out: a }).retain()
    : pointwise(gpu, op, [a, b]);
  tape?.record(op, [a, b], [y], (g) => {
    const dy = g.dy()!;
    const d = opts.relu ? pointwise(gpu, "relu_bwd", [y, dy]) : dy.retain();
    if (g.needs(1)) g.give(1, d.retain());
    if (g.needs(0)) g.give(0, d);
    else d.dispose();
  }, opts.relu ? [y] : []);
  return y;
}

/** Max pooling (PyTorch's MaxPool2d); saves the argmax indices. */
export function maxPool2d(tape: Tape | null, x: Tensor, opts: MaxPoolOptions = {}): Tensor {
  const gpu = x.gpu;
  const { y, indices } = maxPoolKernel(gpu, x, opts);
  const shape = x.shape;
  tape?.record("maxpool", [x], [y], (g) => {
    g.give(0, maxPool2dBackward(gpu, g.dy()!, indices, shape, opts));
  }, [indices]);
  indices.dispose();
  return y;
}

/** Global average pooling [N, C, H, W] → [N, C]; the rule adds into x's gradient in place. */
export function globalAvgPool(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const y = gapKernel(gpu, x);
  const shape = x.shape;
  tape?.record("gap", [x], [y], (g) => {
    const s = g.sink(0);
    globalAvgPoolBackward(gpu, g.dy()!, shape, s);
  });
  return y;
}

/** Bilinear resize (PyTorch's interpolate, bilinear); the rule gathers dy back. */
export function resizeBilinear(tape: Tape | null, x: Tensor, opts: ResizeOptions): Tensor {
  const gpu = x.gpu;
  const y = resizeKernel(gpu, x, opts);
  const shape = x.shape;
  tape?.record("resize", [x], [y], (g) => {
    g.give(0, resizeBilinearBackward(gpu, g.dy()!, shape, opts));
  });
  return y;
}

/**
 * Bicubic resize (PyTorch's interpolate, bicubic, A = -0.75; the ViT position-embedding
 * resize); the rule gathers dy back separably. Saves nothing.
 */
export function resizeBicubic(tape: Tape | null, x: Tensor, opts: ResizeOptions): Tensor {
  const gpu = x.gpu;
  const y = bicubicKernel(gpu, x, opts);
  const shape = x.shape;
  tape?.record("resize_bicubic", [x], [y], (g) => {
    g.give(0, resizeBicubicBackward(gpu, g.dy()!.reshape(y.shape), shape, opts));
  });
  return y;
}

/** psa's pairwise affinities of features (see src/ops/affinity.ts); saves feat and the result. */
export function pairwiseAffinity(
  tape: Tape | null,
  feat: Tensor,
  radius = AFFINITY_RADIUS,
): Tensor {
  const gpu = feat.gpu;
  const aff = affinityKernel(gpu, feat, radius);
  tape?.record("affinity", [feat], [aff], (g) => {
    g.give(0, pairwiseAffinityBackward(gpu, feat, aff, g.dy()!, radius));
  }, [feat, aff]);
  return aff;
}

/**
 * Pixel-wise softmax cross-entropy of `logits` [B, K, H, W] against `labels` [B, H, W] or
 * [B, 1, H, W] (f32 class indices, 255 ignored): PyTorch's `F.cross_entropy(...,
 * ignore_index=255)`, the mean over valid pixels, 0 with a zero gradient when none is valid
 * (src/losses/segmentation.ts). Returns the 1-element loss; saves the logits, labels and the
 * reduction's statistics.
 */
export function softmaxCrossEntropy(tape: Tape | null, logits: Tensor, labels: Tensor): Tensor {
  const gpu = logits.gpu;
  const { loss, stats } = softmaxCrossEntropyLoss(gpu, logits, labels);
  tape?.record("softmax_cross_entropy", [logits], [loss], (g) => {
    g.give(0, softmaxCrossEntropyBackward(gpu, logits, labels, stats, g.dy()!));
  }, [logits, labels, stats]);
  stats.dispose();
  return loss;
}

/** Options of {@link dropout}. */
export interface DropoutFnOptions {
  /** Drop probability in [0, 1). */
  p: number;
  /** Seed of the mask (u32). */
  seed: number;
  /** Apply the mask (default true); false: identity (inference). */
  training?: boolean;
}

/**
 * Dropout y = x·m/(1-p) with a hash mask of (seed, index) (src/ops/dropout.ts); the rule
 * recomputes the mask on dy, so nothing is saved. Not training, or p = 0: x itself with one
 * more reference.
 */
export function dropout(tape: Tape | null, x: Tensor, opts: DropoutFnOptions): Tensor {
  if (opts.training === false || opts.p === 0) return x.retain();
  const gpu = x.gpu;
  const o = { p: opts.p, seed: opts.seed };
  const y = dropoutKernel(gpu, x, o);
  tape?.record("dropout", [x], [y], (g) => {
    g.give(0, dropoutKernel(gpu, g.dy()!, o));
  });
  return y;
}

/**
 * SEAM's pixel correlation module (src/ops/pcm.ts): the CAM `cam` [N, C, h, w] refined by the
 * column-normalised relu affinities of the normalised features `feat` [N, D, h, w]. `cam` is a
 * constant (SEAM's no-grad `cam_d_norm`): the rule gives a gradient to `feat` only. Saves
 * feat, cam, the normalised features and the column sums.
 */
export function pcm(tape: Tape | null, feat: Tensor, cam: Tensor): Tensor {
  const gpu = feat.gpu;
  const { y, fn, s } = pcmForward(gpu, feat, cam);
  tape?.record("pcm", [feat], [y], (g) => {
    g.give(0, pcmBackward(gpu, feat, cam, fn, s, g.dy()!));
  }, [feat, cam, fn, s]);
  fn.dispose();
  s.dispose();
  return y;
}

/** SEAM's `max_norm` per (n, c) plane (src/losses/seam.ts); saves x and the plane statistics. */
export function maxNorm(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const { y, stats } = seam.maxNorm(gpu, x);
  tape?.record("max_norm", [x], [y], (g) => {
    g.give(0, seam.maxNormBackward(gpu, x, stats, g.dy()!));
  }, [x, stats]);
  stats.dispose();
  return y;
}

/**
 * scale · Σ_rows of the sum of the k largest (or smallest; optionally relu'd) values of each
 * row of x (leading dimension = rows), selected exactly (src/losses/seam.ts). Returns the
 * 1-element loss; saves x and the selection.
 */
export function topkSum(tape: Tape | null, x: Tensor, opts: seam.TopkOptions): Tensor {
  const gpu = x.gpu;
  const { loss, stats } = seam.topkSum(gpu, x, opts);
  tape?.record("topk_sum", [x], [loss], (g) => {
    g.give(0, seam.topkSumBackward(gpu, x, stats, g.dy()!, opts));
  }, [x, stats]);
  stats.dispose();
  return loss;
}

/** SEAM's per-pixel max over tagged foreground channels [N, h, w]; saves x and tags. */
export function fgMax(tape: Tape | null, x: Tensor, tags: Tensor): Tensor {
  const gpu = x.gpu;
  const m = seam.fgMax(gpu, x, tags);
  tape?.record("fg_max", [x], [m], (g) => {
    g.give(0, seam.fgMaxBackward(gpu, x, tags, g.dy()!));
  }, [x, tags]);
  return m;
}

/** |tag_c (a_c - b_c)| over foreground channels (SEAM's ER elements); saves a, b, tags. */
export function erElems(tape: Tape | null, a: Tensor, b: Tensor, tags: Tensor): Tensor {
  const gpu = a.gpu;
  const v = seam.erElems(gpu, a, b, tags);
  tape?.record("seam_er", [a, b], [v], (g) => {
    const { da, db } = seam.erElemsBackward(gpu, a, b, tags, g.dy()!);
    if (g.needs(0)) g.give(0, da);
    else da.dispose();
    if (g.needs(1)) g.give(1, db);
    else db.dispose();
  }, [a, b, tags]);
  return v;
}

/**
 * |max_onehot(tag ⊙ target) - lab ⊙ y| (SEAM's ECR elements); the target is a constant (SEAM
 * detaches it). Saves target, y, tags.
 */
export function ecrElems(tape: Tape | null, target: Tensor, y: Tensor, tags: Tensor): Tensor {
  const gpu = y.gpu;
  const v = seam.ecrElems(gpu, target, y, tags);
  tape?.record("seam_ecr", [y], [v], (g) => {
    g.give(0, seam.ecrElemsBackward(gpu, target, y, tags, g.dy()!));
  }, [target, y, tags]);
  return v;
}

/** The foreground channels x[:, 1:] of maps [N, C1, ...] (src/losses/seam.ts). */
export function dropBackground(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const y = seam.dropBackground(gpu, x);
  const shape = x.shape;
  tape?.record("drop_bg", [x], [y], (g) => {
    g.give(0, seam.dropBackgroundBackward(gpu, g.dy()!, shape));
  });
  return y;
}

/**
 * The fully connected layer y [..., N] = x [..., K] · wᵀ + b (PyTorch's `nn.Linear`: w [N, K],
 * b [N] or null; src/ops/linear.ts). The weight and bias gradients are written through their
 * sinks (accumulated into existing gradients). Saves x and w.
 */
export function linear(tape: Tape | null, x: Tensor, w: Tensor, b: Tensor | null): Tensor {
  const gpu = x.gpu;
  const y = linearKernel(gpu, x, w, b);
  tape?.record("linear", [x, w, b], [y], (g) => {
    const dy = g.dy()!;
    if (g.needs(1)) linearGradWeight(gpu, x, dy, g.sink(1));
    if (b && g.needs(2)) linearGradBias(gpu, dy, g.sink(2));
    if (g.needs(0)) g.give(0, linearGradInput(gpu, dy, w, x.shape));
  }, [x, w]);
  return y;
}

/** Options of {@link bmm}. */
export interface BmmOptions {
  /** `a` holds [Bt, K, M] (use its transpose). */
  transA?: boolean;
  /** `b` holds [Bt, N, K] (use its transpose). */
  transB?: boolean;
  /** Scale of the product (default 1; attention's 1/√d). */
  alpha?: number;
}

/**
 * Batched matrix product y [..., M, N] = alpha · op(a) · op(b) for a [..., M, K] (or
 * [..., K, M] with `transA`) and b [..., K, N] (or [..., N, K] with `transB`), the leading
 * dimensions equal (flattened to one batch; attention's [B, H, T, Dh] works as is) or, for 2-D
 * operands, as in src/ops/matmul.ts. Backward: products of the same kind with the transposes
 * swapped (dA = alpha·G·op(B)ᵀ, dB = alpha·op(A)ᵀ·G, each transposed again when stored so).
 * Saves a and b.
 */
export function bmm(tape: Tape | null, a: Tensor, b: Tensor, opts: BmmOptions = {}): Tensor {
  const gpu = a.gpu;
  const ta = opts.transA ?? false;
  const tb = opts.transB ?? false;
  const alpha = opts.alpha ?? 1;
  const lead = a.shape.slice(0, -2);
  if (a.shape.length > 3 || b.shape.length > 3) {
    if (a.shape.length !== b.shape.length || lead.some((d, i) => d !== b.shape[i])) {
      throw new RangeError(`bmm: leading dimensions differ: [${a.shape}] vs [${b.shape}]`);
    }
  }
  // Operands as [batch, rows, cols] views (matmul's batched form).
  const as3 = (t: Tensor) =>
    t.shape.length > 3
      ? t.reshape([t.size / (t.shape.at(-2)! * t.shape.at(-1)!), ...t.shape.slice(-2)])
      : t;
  const [M, N] = [ta ? a.shape.at(-1)! : a.shape.at(-2)!, tb ? b.shape.at(-2)! : b.shape.at(-1)!];
  const y = a.shape.length > 3
    ? matmul(gpu, as3(a), as3(b), {
      transA: ta,
      transB: tb,
      alpha,
      out: Tensor.empty(gpu, [...lead, M, N]),
    })
    : matmul(gpu, a, b, { transA: ta, transB: tb, alpha });
  tape?.record("bmm", [a, b], [y], (g) => {
    const gy = as3(g.dy()!.reshape(y.shape));
    const [a3, b3] = [as3(a), as3(b)];
    // dA = G·op(B)ᵀ, stored as A is: (G·op(B)ᵀ)ᵀ = op(B)·Gᵀ when A is transposed.
    if (g.needs(0)) {
      const out = Tensor.empty(gpu, a.shape);
      if (ta) matmul(gpu, b3, gy, { transA: tb, transB: true, alpha, out });
      else matmul(gpu, gy, b3, { transA: false, transB: !tb, alpha, out });
      g.give(0, out);
    }
    // dB = op(A)ᵀ·G, or its transpose Gᵀ·op(A) when B is transposed.
    if (g.needs(1)) {
      const out = Tensor.empty(gpu, b.shape);
      if (tb) matmul(gpu, gy, a3, { transA: true, transB: ta, alpha, out });
      else matmul(gpu, a3, gy, { transA: !ta, transB: false, alpha, out });
      g.give(1, out);
    }
  }, [a, b]);
  return y;
}

/**
 * x with another shape of the same size (a head merge [B, T, H, Dh] → [B, T, H·Dh], ...), with
 * no copy: an owning {@link Tensor.view} of x, a tensor of its own that the tape and the caller
 * own like any op's result (a `Tensor.reshape` view would be an object unknown to the tape,
 * owning nothing). The rule gives x the gradient viewed back to x's shape.
 */
export function reshape(tape: Tape | null, x: Tensor, shape: readonly number[]): Tensor {
  if (numel(shape) !== x.size) {
    throw new RangeError(`reshape: [${x.shape}] → [${shape}]: sizes differ`);
  }
  const y = x.view(shape);
  tape?.record("reshape", [x], [y], (g) => g.give(0, g.dy()!.view(x.shape)));
  return y;
}

/**
 * Layer normalisation over the last dim D of x [..., D] (PyTorch's `nn.LayerNorm(D, eps)`:
 * biased variance, affine; src/ops/layernorm.ts). The weight and bias gradients are written
 * through their sinks (a frozen one is computed into a scratch tensor and dropped). Saves x,
 * weight and the row statistics.
 */
export function layerNorm(
  tape: Tape | null,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  eps = 1e-6,
): Tensor {
  const gpu = x.gpu;
  const { y, stats } = layerNormForward(gpu, x, weight, bias, eps);
  tape?.record("layernorm", [x, weight, bias], [y], (g) => {
    const dy = g.dy()!;
    if (g.needs(1) || g.needs(2)) {
      const scratch: Tensor[] = [];
      const sink = (j: number) => {
        if (g.needs(j)) return g.sink(j);
        const out = Tensor.empty(gpu, weight.shape);
        scratch.push(out);
        return { out, accumulate: false };
      };
      layerNormGradParams(gpu, x, dy, stats, { weight: sink(1), bias: sink(2) });
      for (const t of scratch) t.dispose();
    }
    if (g.needs(0)) g.give(0, layerNormGradInput(gpu, x, dy, weight, stats));
  }, [x, weight, stats]);
  stats.dispose();
  return y;
}

/**
 * The exact (erf) GELU y = x·Φ(x) (PyTorch's `nn.GELU()` default; the pointwise table's
 * `gelu`). Its derivative Φ(x) + x·φ(x) needs the input, so x is saved (unlike
 * {@link activation}, whose rules work from the output).
 */
export function gelu(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const y = pointwise(gpu, "gelu", [x]);
  tape?.record("gelu", [x], [y], (g) => {
    g.give(0, pointwise(gpu, "gelu_bwd", [x, g.dy()!]));
  }, [x]);
  return y;
}

/**
 * Softmax over the last dim of scale·x for x [..., L] (attention rows; src/ops/rows.ts).
 * Backward from the output: dx = scale·y·(dy - Σ dy·y). Saves y.
 */
export function softmaxRows(tape: Tape | null, x: Tensor, scale = 1): Tensor {
  const gpu = x.gpu;
  const y = softmaxRowsKernel(gpu, x, scale);
  tape?.record("softmax_rows", [x], [y], (g) => {
    const dy = g.dy()!;
    g.give(0, softmaxRowsBackward(gpu, y, dy.reshape(y.shape), scale));
  }, [y]);
  return y;
}

/** x [A, B, C, D] → [A, C, B, D] (attention heads split / merged); the rule is the same permute. */
export function permute0213(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const y = tok.permute0213(gpu, x);
  tape?.record("permute0213", [x], [y], (g) => {
    g.give(0, tok.permute0213(gpu, g.dy()!.reshape(y.shape)));
  });
  return y;
}

/** Patch tokens x [B, h·w, D] → a feature map [B, D, h, w]; the rule maps back to tokens. */
export function tokensToMap(tape: Tape | null, x: Tensor, h: number, w: number): Tensor {
  const gpu = x.gpu;
  const y = tok.tokensToMap(gpu, x, h, w);
  tape?.record("tokens_to_map", [x], [y], (g) => {
    g.give(0, tok.mapToTokens(gpu, g.dy()!.reshape(y.shape)));
  });
  return y;
}

/** A feature map x [B, D, h, w] → tokens [B, h·w, D]; the rule maps back. */
export function mapToTokens(tape: Tape | null, x: Tensor): Tensor {
  const gpu = x.gpu;
  const [, , h, w] = x.shape;
  const y = tok.mapToTokens(gpu, x);
  tape?.record("map_to_tokens", [x], [y], (g) => {
    g.give(0, tok.tokensToMap(gpu, g.dy()!.reshape(y.shape), h, w));
  });
  return y;
}

/** [B, Ta, D] ++ [B, Tb, D] → [B, Ta + Tb, D]; the rule splits the gradient. */
export function concatTokens(tape: Tape | null, a: Tensor, b: Tensor): Tensor {
  const gpu = a.gpu;
  const y = tok.concatTokens(gpu, a, b);
  const ta = a.shape[1];
  const tb = b.shape[1];
  tape?.record("concat_tokens", [a, b], [y], (g) => {
    const dy = g.dy()!.reshape(y.shape);
    if (g.needs(0)) g.give(0, tok.sliceTokens(gpu, dy, 0, ta));
    if (g.needs(1)) g.give(1, tok.sliceTokens(gpu, dy, ta, tb));
  });
  return y;
}

/** x[:, start:start+count] of tokens [B, T, D]; the rule writes zeros elsewhere. */
export function sliceTokens(tape: Tape | null, x: Tensor, start: number, count: number): Tensor {
  const gpu = x.gpu;
  const y = tok.sliceTokens(gpu, x, start, count);
  const T = x.shape[1];
  tape?.record("slice_tokens", [x], [y], (g) => {
    g.give(0, tok.sliceTokensBackward(gpu, g.dy()!.reshape(y.shape), T, start));
  });
  return y;
}

/**
 * p [1, ...] → [B, ...] (class tokens or positional embeddings over the batch); the rule sums
 * the gradient over the batch in a fixed order, through p's sink.
 */
export function expandBatch(tape: Tape | null, p: Tensor, B: number): Tensor {
  const gpu = p.gpu;
  const y = tok.expandBatch(gpu, p, B);
  tape?.record("expand_batch", [p], [y], (g) => {
    const s = g.sink(0);
    tok.expandBatchBackward(gpu, g.dy()!.reshape(y.shape), s);
  });
  return y;
}

/**
 * x [B, T, D] + p [1, T, D] broadcast over the batch (positional embeddings): expandBatch
 * then add on the tape, so p's gradient is the batch sum of dy.
 */
export function addBroadcast(tape: Tape | null, x: Tensor, p: Tensor): Tensor {
  if (
    p.shape.length !== x.shape.length || p.shape[0] !== 1 ||
    p.shape.some((d, i) => i > 0 && d !== x.shape[i])
  ) {
    throw new RangeError(`addBroadcast: p [${p.shape}] does not broadcast to x [${x.shape}]`);
  }
  const e = expandBatch(tape, p, x.shape[0]);
  const y = add(tape, x, e);
  e.dispose();
  return y;
}

/**
 * Image x [B, C, H, W] → patch tokens [B, (H/p)·(W/p), C·p·p] in Conv2d weight order (timm's
 * PatchEmbed is `linear(patchify(x, p), w.reshape([D, C·p·p]), b)`); the rule scatters back.
 */
export function patchify(tape: Tape | null, x: Tensor, patch: number): Tensor {
  const gpu = x.gpu;
  const y = tok.patchify(gpu, x, patch);
  const shape = x.shape;
  tape?.record("patchify", [x], [y], (g) => {
    g.give(0, tok.unpatchify(gpu, g.dy()!.reshape(y.shape), shape, patch));
  });
  return y;
}
