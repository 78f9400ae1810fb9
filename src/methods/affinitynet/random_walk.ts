/**
 * psa's random walk (Ahn & Kwak, CVPR 2018) on the GPU: a dense transition matrix over the
 * h·w feature pixels from AffinityNet's pairwise affinities, raised to the power 2^logt by
 * repeated squaring (the matmul op), applied to CAMs with a background channel, then argmax.
 *
 * The matrix is psa's: `A = aff^beta` as a symmetric dense matrix (both directions of every
 * pair of {@link pairGrid}, self-affinity 1 on the diagonal, 0 elsewhere), `M = A · D⁻¹` with
 * `D = diag(Σ_i A[i, j])` (psa normalises over dim 0, so every column of M sums to 1; M is the
 * transpose of the row-normalised `T = D⁻¹ A`), `M ← M·M` logt times, and the walked CAMs are
 * `cam [K, n] · M^(2^logt)`, i.e. `Tᵗ` applied to each CAM as a column vector: every pixel
 * becomes an affinity-weighted average of its neighbourhood, t = 2^logt times over.
 * As in psa, pixels that no pair reaches (a few corners: row 0 left of the crop, the bottom
 * corners) have only their self-affinity and keep their own CAM values.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import { argmaxChannels } from "../../ops/channel.ts";
import { matmul } from "../../ops/matmul.ts";
import { checkShape, dispatchPlanes } from "../../ops/planes.ts";
import { AFFINITY_RADIUS, forEachPair, pairGrid, pairParams } from "../../ops/affinity.ts";

/** Options of {@link randomWalk}. */
export interface RandomWalkOptions {
  /** Affinity exponent (psa: 8). */
  beta?: number;
  /** log2 of the number of walk steps (psa: 8, i.e. 256 steps). */
  logt?: number;
  /** Pair radius the affinities were computed with (psa: 5). */
  radius?: number;
  /**
   * How `cam · M^(2^logt)` is formed: `"square"` (psa: logt squarings of the n x n matrix,
   * ~2·logt·n³ flops), `"iterate"` (2^logt products of the K x n CAMs with M,
   * ~2^(logt+1)·K·n² flops) or `"auto"` (default: the cheaper one, counting flops plus a
   * fixed cost per dispatch).
   */
  method?: "square" | "iterate" | "auto";
}

/**
 * Cost of `dispatches` matmuls of `flops` each, with a fixed per-dispatch cost in
 * flop-equivalents (about 40 µs at 25 GFLOP/s on llvmpipe), so that many tiny products lose to
 * a few large ones.
 */
function walkCost(dispatches: number, flops: number): number {
  return dispatches * (flops + 1e6);
}

/** Output of {@link randomWalk}. */
export interface RandomWalkResult {
  /** The walked CAMs [K, h, w]. */
  cams: Tensor;
  /** Argmax over the K channels [1, h, w] (f32 indices; first maximum on ties). */
  labels: Tensor;
}

function walkOptions(o: RandomWalkOptions): Required<Omit<RandomWalkOptions, "method">> {
  const beta = o.beta ?? 8;
  const logt = o.logt ?? 8;
  const radius = o.radius ?? AFFINITY_RADIUS;
  if (!(Number.isFinite(beta) && beta > 0)) throw new RangeError(`random walk: bad beta ${beta}`);
  if (!(Number.isInteger(logt) && logt >= 0 && logt <= 30)) {
    throw new RangeError(`random walk: logt must be an integer in [0, 30], got ${logt}`);
  }
  return { beta, logt, radius };
}

/**
 * Records psa's transition matrix `M = A^beta · D⁻¹` (see the module doc) of one image's
 * affinities `aff` [P, nFrom] (or [1, P, nFrom]) on an h x w grid: a dense [h·w, h·w] tensor
 * whose columns sum to 1. Rows are split over bindings when the matrix exceeds one.
 */
export function transitionMatrix(
  gpu: GpuContext,
  aff: Tensor,
  h: number,
  w: number,
  opts: RandomWalkOptions = {},
): Tensor {
  const op = "random_walk.transition";
  const { beta, radius } = walkOptions(opts);
  const g = pairGrid(h, w, radius);
  const P = g.offsets.length;
  checkShape(op, "aff", aff, aff.shape.length === 3 ? [1, P, g.nFrom] : [P, g.nFrom]);
  const n = h * w;
  const deg = Tensor.empty(gpu, [n]);
  gpu.dispatch1d(
    {
      name: `${op}.degree`,
      shader: "affinity",
      entry: "rw_degree",
      constants: { WG: 64 },
      inputs: [aff.binding()],
      outputs: [deg.binding()],
      params: pairParams(g, 1, [], beta),
    },
    n,
    64,
  );
  const m = Tensor.empty(gpu, [n, n]);
  dispatchPlanes(gpu, n, {
    name: `${op}.dense`,
    shader: "affinity",
    entry: "rw_dense",
    inputs: [],
    shared: [aff.binding(), deg.binding()],
    outputs: [{ tensor: m, planeSize: n }],
    itemsPerPlane: n,
    params: (ch) => pairParams(g, 1, [ch.first, ch.offsets[0]], beta),
  });
  deg.dispose();
  return m;
}

/**
 * Records psa's random walk of one image: CAMs `cams` [K, h, w] (background channel
 * included, e.g. channel 0) times `M^(2^logt)` built from `aff` ({@link transitionMatrix}),
 * then the argmax over K. Defaults: beta 8, logt 8, radius 5.
 */
export function randomWalk(
  gpu: GpuContext,
  aff: Tensor,
  cams: Tensor,
  opts: RandomWalkOptions = {},
): RandomWalkResult {
  const op = "random_walk";
  const o = walkOptions(opts);
  if (cams.shape.length !== 3) {
    throw new RangeError(`${op}: cams must be [K, h, w], got [${cams.shape}]`);
  }
  const [K, h, w] = cams.shape;
  const n = h * w;
  const method = opts.method ?? "auto";
  if (!["square", "iterate", "auto"].includes(method)) {
    throw new RangeError(`${op}: unknown method "${method}" (square, iterate, auto)`);
  }
  const iterate = method === "iterate" ||
    (method === "auto" && walkCost(2 ** o.logt, 2 * K * n * n) < walkCost(o.logt, 2 * n * n * n));
  const m = transitionMatrix(gpu, aff, h, w, o);
  const out = Tensor.empty(gpu, [K, h, w]);
  if (iterate) {
    // out = cam · M · M ⋯ (2^logt products), ping-ponging between two K x n buffers.
    const steps = 2 ** o.logt;
    const tmp = steps > 1 ? [Tensor.empty(gpu, [K, n]), Tensor.empty(gpu, [K, n])] : [];
    let src = cams.reshape([K, n]);
    for (let s = 0; s < steps; s++) {
      const dst = s === steps - 1 ? out : tmp[s % 2];
      matmul(gpu, src, m, { out: dst });
      src = dst;
    }
    tmp.forEach((t) => t.dispose());
  } else {
    let p = m.retain();
    for (let i = 0; i < o.logt; i++) {
      const next = matmul(gpu, p, p);
      p.dispose();
      p = next;
    }
    matmul(gpu, cams.reshape([K, n]), p, { out });
    p.dispose();
  }
  m.dispose();
  const labels = argmaxChannels(gpu, out.reshape([1, K, h, w]));
  return { cams: out, labels };
}

/**
 * CPU reference of {@link transitionMatrix} in f64 from a per-sample affinity array
 * [P, nFrom]: the dense column-normalised M (row-major, n x n).
 */
export function transitionMatrixRef(
  aff: ArrayLike<number>,
  h: number,
  w: number,
  opts: RandomWalkOptions = {},
): Float64Array {
  const { beta, radius } = walkOptions(opts);
  const g = pairGrid(h, w, radius);
  const n = h * w;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = 1;
  forEachPair(g, (j, p, q) => {
    const v = Math.max(0, aff[j]) ** beta;
    a[p * n + q] = v;
    a[q * n + p] = v;
  });
  for (let j = 0; j < n; j++) {
    let d = 0;
    for (let i = 0; i < n; i++) d += a[i * n + j];
    for (let i = 0; i < n; i++) a[i * n + j] /= d;
  }
  return a;
}

/**
 * CPU reference of {@link randomWalk} in f64: walked CAMs [K, n] (`cams · M^(2^logt)` by
 * repeated squaring) and their argmax per pixel (first maximum on ties).
 */
export function randomWalkRef(
  aff: ArrayLike<number>,
  cams: ArrayLike<number>,
  K: number,
  h: number,
  w: number,
  opts: RandomWalkOptions = {},
): { cams: Float64Array; labels: Int32Array } {
  const { logt } = walkOptions(opts);
  const n = h * w;
  if (cams.length !== K * n) {
    throw new RangeError(`random walk: ${cams.length} values for ${K}x${n}`);
  }
  let m = transitionMatrixRef(aff, h, w, opts);
  const mul = (x: ArrayLike<number>, rows: number, y: Float64Array) => {
    const z = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < n; k++) {
        const v = x[r * n + k];
        if (v === 0) continue;
        for (let c = 0; c < n; c++) z[r * n + c] += v * y[k * n + c];
      }
    }
    return z;
  };
  for (let i = 0; i < logt; i++) m = mul(m, n, m);
  const out = mul(cams, K, m);
  const labels = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    let best = 0;
    for (let k = 1; k < K; k++) if (out[k * n + p] > out[best * n + p]) best = k;
    labels[p] = best;
  }
  return { cams: out, labels };
}
