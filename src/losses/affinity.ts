/**
 * psa's affinity loss over pair codes (background-positive, foreground-positive, negative),
 * WGSL forward/backward and its f64 reference.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, elementChunks } from "../ops/planes.ts";
import { AffinityLossParams, type PairGrid } from "../ops/affinity.ts";
import { pointwise } from "../ops/pointwise.ts";
import { defineOpUnit, type OpCase, type OpUnit, uniformValues } from "../ops/unit.ts";
import { Rng } from "../rng.ts";

/** Pair labels of one image, in the pair layout `[P, nFrom]`. */
export interface PairLabels {
  /** The pair layout. */
  grid: PairGrid;
  /**
   * Per pair: 0 ignored (an end labelled 255), 1 background-positive (both ends 0),
   * 2 foreground-positive (same class, not 0), 3 negative (different labels).
   */
  codes: Uint8Array;
  /** Number of background-positive pairs. */
  bg: number;
  /** Number of foreground-positive pairs. */
  fg: number;
  /** Number of negative pairs. */
  neg: number;
}

/** Pair code of {@link PairLabels}. */
export const PAIR_IGNORE = 0;
/** Pair code: both ends background. */
export const PAIR_BG = 1;
/** Pair code: both ends the same foreground class. */
export const PAIR_FG = 2;
/** Pair code: ends with different labels. */
export const PAIR_NEG = 3;

/** Pair counts of a batch (the denominators of psa's loss, before its +1e-5). */
export interface PairCounts {
  /** Background-positive pairs. */
  bg: number;
  /** Foreground-positive pairs. */
  fg: number;
  /** Negative pairs. */
  neg: number;
}

/** Uploads the pair codes of a batch's images as an f32 tensor [N, P, nFrom]. */
export function uploadPairCodes(gpu: GpuContext, labels: readonly PairLabels[]): Tensor {
  if (labels.length === 0) throw new RangeError("affinity loss: no images");
  const n = labels[0].codes.length;
  const { h, w, radius } = labels[0].grid;
  for (const l of labels) {
    if (l.grid.h !== h || l.grid.w !== w || l.grid.radius !== radius) {
      throw new RangeError(
        `affinity loss: pair grids differ (${l.grid.h}x${l.grid.w} r${l.grid.radius} vs ` +
          `${h}x${w} r${radius})`,
      );
    }
  }
  const data = new Float32Array(labels.length * n);
  labels.forEach((l, b) => data.set(l.codes, b * n));
  return Tensor.fromArray(gpu, data, [
    labels.length,
    labels[0].grid.offsets.length,
    labels[0].grid.nFrom,
  ]);
}

/** Sums the pair counts of a batch. */
export function pairCounts(labels: readonly PairLabels[]): PairCounts {
  return labels.reduce((a, l) => ({ bg: a.bg + l.bg, fg: a.fg + l.fg, neg: a.neg + l.neg }), {
    bg: 0,
    fg: 0,
    neg: 0,
  });
}

/** Output of {@link affinityLoss}. */
export interface AffinityLossResult {
  /** [8]: total, bg term, fg term, neg term, then the raw sums of the three terms and 0. */
  loss: Tensor;
  /** d total / d aff, shape of `aff`. */
  grad: Tensor;
}

/**
 * Records psa's affinity loss over a batch of affinities `aff` [N, P, nFrom] with pair
 * `codes` (same shape, {@link uploadPairCodes}) and the batch's pair `counts`:
 * `bg = Σ_bg -log(aff + 1e-5) / (n_bg + 1e-5)`, `fg` likewise over fg-positive pairs,
 * `neg = Σ_neg -log(1 + 1e-5 - aff) / (n_neg + 1e-5)`, `total = bg/4 + fg/4 + neg/2`; and its
 * gradient into `aff`. Deterministic (fixed-order reductions).
 */
export function affinityLoss(
  gpu: GpuContext,
  aff: Tensor,
  codes: Tensor,
  counts: PairCounts,
): AffinityLossResult {
  const op = "affinity.loss";
  checkShape(op, "codes", codes, aff.shape);
  for (const [k, v] of Object.entries(counts)) {
    if (!(Number.isInteger(v) && v >= 0)) throw new RangeError(`${op}: bad ${k} count ${v}`);
  }
  const cnt = { cnt_bg: counts.bg + 1e-5, cnt_fg: counts.fg + 1e-5, cnt_neg: counts.neg + 1e-5 };
  const loss = Tensor.empty(gpu, [8]);
  const grad = Tensor.empty(gpu, aff.shape);
  const chunks = elementChunks(gpu, aff.size);
  chunks.forEach((c, idx) => {
    const params = AffinityLossParams.pack({ n: c.count, accumulate: idx > 0 ? 1 : 0, ...cnt });
    const inputs = [aff.slice(c.start, c.count), codes.slice(c.start, c.count)];
    gpu.dispatch1d(
      {
        name: `${op}.grad`,
        shader: "affinity",
        entry: "loss_grad",
        inputs,
        outputs: [grad.slice(c.start, c.count)],
        params,
      },
      c.count,
      256,
    );
    gpu.dispatch({
      name: `${op}.forward`,
      shader: "affinity",
      entry: "loss_fwd",
      inputs,
      outputs: [loss.binding()],
      params,
      workgroups: [1],
    });
  });
  return { loss, grad };
}

/** CPU reference of {@link affinityLoss} in f64: `[total, bg, fg, neg]` and the gradient. */
export function affinityLossRef(
  aff: ArrayLike<number>,
  codes: ArrayLike<number>,
  counts: PairCounts,
): { loss: [number, number, number, number]; grad: Float64Array } {
  const eps = 1e-5;
  const nb = counts.bg + eps, nf = counts.fg + eps, nn = counts.neg + eps;
  let sb = 0, sf = 0, sn = 0;
  const grad = new Float64Array(aff.length);
  for (let i = 0; i < aff.length; i++) {
    const a = aff[i];
    if (codes[i] === PAIR_BG) {
      sb -= Math.log(a + eps);
      grad[i] = -0.25 / (nb * (a + eps));
    } else if (codes[i] === PAIR_FG) {
      sf -= Math.log(a + eps);
      grad[i] = -0.25 / (nf * (a + eps));
    } else if (codes[i] === PAIR_NEG) {
      sn -= Math.log(1 + eps - a);
      grad[i] = 0.5 / (nn * (1 + eps - a));
    }
  }
  const bg = sb / nb, fg = sf / nf, neg = sn / nn;
  return { loss: [bg / 4 + fg / 4 + neg / 2, bg, fg, neg], grad };
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ../ops/unit.ts).

/** Parameters of an {@link affinityLossUnit} case: affinities [N, P, nFrom]. */
export interface AffinityLossCase {
  shape: readonly [number, number, number];
}

/** The pair counts of a batch's codes (the loss's denominators). */
function countCodes(codes: ArrayLike<number>): PairCounts {
  const c = { bg: 0, fg: 0, neg: 0 };
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] === PAIR_BG) c.bg++;
    else if (codes[i] === PAIR_FG) c.fg++;
    else if (codes[i] === PAIR_NEG) c.neg++;
  }
  return c;
}

const alCase = (shape: [number, number, number]): OpCase<AffinityLossCase> => ({
  name: shape.join("x"),
  params: { shape },
});

/**
 * psa's affinity loss as an op unit: outputs the total and the three terms (bg, fg, neg);
 * the gradient flows from the total. Affinities in [0.02, 0.98), random pair codes 0-3; the
 * counts are those of the codes.
 */
export const affinityLossUnit: OpUnit<AffinityLossCase> = defineOpUnit<AffinityLossCase>({
  name: "affinity_loss",
  description: "psa's affinity loss bg/4 + fg/4 + neg/2 over pair codes",
  bound: "memory",
  inputs: ["aff", "codes"],
  outputs: ["total", "terms"],
  gradOutputs: ["total"],
  differentiable: ["aff"],
  cases: [alCase([2, 34, 37]), alCase([7, 34, 12]), alCase([1, 4, 1])],
  benchShapes: [alCase([8, 34, 1024])],
  tolerance: { forward: { rtol: 1e-5 }, backward: { rtol: 1e-5, atol: 1e-9 } },
  inputShapes: (p) => ({ aff: [...p.shape], codes: [...p.shape] }),
  outputShapes: () => ({ total: [1], terms: [3] }),
  makeInputs: (p, seed) => {
    const n = p.shape[0] * p.shape[1] * p.shape[2];
    const r = new Rng(seed);
    return {
      aff: uniformValues(n, seed + 1, 0.02, 0.98),
      codes: Float32Array.from({ length: n }, () => r.int(4)),
    };
  },
  refForward: (_p, x) => {
    const { loss } = affinityLossRef(x.aff, x.codes, countCodes(x.codes));
    return { total: Float64Array.of(loss[0]), terms: Float64Array.from(loss.slice(1)) };
  },
  refBackward: (_p, x, d) => ({
    aff: affinityLossRef(x.aff, x.codes, countCodes(x.codes)).grad.map((g) => g * d.total[0]),
  }),
  cost: (p) => {
    const n = p.shape[0] * p.shape[1] * p.shape[2];
    return { forward: { flops: 4 * n, bytes: 12 * n } };
  },
  gpu: {
    name: "reduction kernel",
    forward: (gpu, _p, x) => {
      const { loss, grad } = affinityLoss(
        gpu,
        x.tensors.aff,
        x.tensors.codes,
        countCodes(x.host.codes),
      );
      grad.dispose();
      const total = Tensor.empty(gpu, [1]);
      const terms = Tensor.empty(gpu, [3]);
      const enc = gpu.encoder();
      enc.copyBufferToBuffer(loss.buffer, 0, total.buffer, 0, 4);
      enc.copyBufferToBuffer(loss.buffer, 4, terms.buffer, 0, 12);
      loss.dispose();
      return { total, terms };
    },
    backward: (gpu, _p, x, dy) => {
      const { loss, grad } = affinityLoss(
        gpu,
        x.tensors.aff,
        x.tensors.codes,
        countCodes(x.host.codes),
      );
      const aff = pointwise(gpu, "scale", [grad], { alpha: dy.host.total[0] });
      loss.dispose();
      grad.dispose();
      return { aff };
    },
  },
});
