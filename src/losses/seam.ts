/**
 * The pieces of SEAM's training loss (Wang et al., CVPR 2020; the official train_SEAM.py and
 * tool/visualization.py): WGSL kernels (shaders/seam.wgsl), f64 references and op units.
 * src/methods/seam/loss.ts assembles them into the full loss on the gradient tape.
 *
 * Maps are [N, C1, h, w] with channel 0 the background; `tags` [N, C1 - 1] are the image's
 * foreground labels (1/0); the background counts as always tagged (SEAM's `label` with a
 * leading 1).
 * - {@link maxNorm}: `max_norm`: r = relu(x), per (n, c) plane y = relu(r - min - e) /
 *   (max - min + e), e = 1e-5; the gradient also flows through the plane's min and max (to
 *   their first index, where torch routes it to one of them).
 * - {@link topkSum}: per row of [R, L] the sum of f(v) over the k largest or smallest values
 *   (f = identity or relu), the rows' sum times `scale`: torch.topk's values summed, selected
 *   exactly by a radix select of the k-th value (no sort); tied k-th values share the
 *   gradient of the picks left to them evenly (each tie a valid subgradient choice; torch
 *   picks some of them).
 * - {@link fgMax}: m = max over foreground channels of tag_c·x_c (adaptive min-pooling's map).
 * - {@link erElems}: |tag_c (a_c - b_c)| for the foreground channels (the equivariant
 *   regularisation's elements).
 * - {@link ecrElems}: |T - lab ⊙ y| over all channels, T = `max_onehot` of the tagged target
 *   with T_0 = 1 - max fg (the equivariant cross regularisation's elements); no gradient into
 *   the target (SEAM detaches it).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw, type PlaneChunk, planeChunks } from "../ops/planes.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  sizeOf,
  uniformValues,
} from "../ops/unit.ts";
import { Rng } from "../rng.ts";

const E = 1e-5;

/** The uniform block of shaders/seam.wgsl (field meanings there). */
export const { SeamParams } = declareParams("seam", {
  SeamParams: {
    C1: "u32",
    HW: "u32",
    L: "u32",
    k: "u32",
    flags: "u32",
    R: "u32",
    scale: "f32",
    o0: "u32",
    o1: "u32",
    o2: "u32",
    o3: "u32",
    o4: "u32",
    o5: "u32",
  },
});

interface Words {
  C1?: number;
  HW?: number;
  L?: number;
  k?: number;
  flags?: number;
  R?: number;
  scale?: number;
}

function pack(w: Words, ch?: PlaneChunk): Uint32Array {
  const o = ch?.offsets ?? [];
  return SeamParams.pack({
    C1: w.C1 ?? 0,
    HW: w.HW ?? 0,
    L: w.L ?? 0,
    k: w.k ?? 0,
    flags: w.flags ?? 0,
    R: w.R ?? 0,
    scale: w.scale ?? 0,
    o0: o[0] ?? 0,
    o1: o[1] ?? 0,
    o2: o[2] ?? 0,
    o3: o[3] ?? 0,
    o4: o[4] ?? 0,
    o5: o[5] ?? 0,
  });
}

/** One 256-wide workgroup per plane (reduction kernels), split past the binding limit. */
function perPlaneWorkgroups(
  gpu: GpuContext,
  name: string,
  entry: string,
  planes: number,
  inputs: { tensor: Tensor; planeSize: number }[],
  outputs: { tensor: Tensor; planeSize: number }[],
  words: Words,
): void {
  const lim = gpu.limits.maxComputeWorkgroupsPerDimension;
  const k = inputs.length;
  for (const ch of planeChunks(gpu, name, planes, [...inputs, ...outputs], lim)) {
    gpu.dispatch({
      name,
      shader: "seam",
      entry,
      inputs: ch.ranges.slice(0, k),
      outputs: ch.ranges.slice(k),
      params: pack(words, ch),
      workgroups: [1, ch.count],
    });
  }
}

function checkTags(op: string, x: Tensor, tags: Tensor): [number, number, number] {
  const [N, C1, h, w] = nchw(op, x);
  if (C1 < 2) throw new RangeError(`${op}: need a background and >= 1 class, got ${C1} maps`);
  checkShape(op, "tags", tags, [N, C1 - 1]);
  return [N, C1, h * w];
}

// ---- max_norm ------------------------------------------------------------------------------

/** What {@link maxNorm} returns. */
export interface MaxNormResult {
  /** The normalised maps (x's shape). */
  y: Tensor;
  /** Per plane [max, min, argmax, argmin] of relu(x) ([planes, 4]; the backward's input). */
  stats: Tensor;
}

/** Records SEAM's `max_norm` of `x` [N, C, h, w] (module doc). */
export function maxNorm(gpu: GpuContext, x: Tensor): MaxNormResult {
  const op = "seam.max_norm";
  const [N, C, h, w] = nchw(op, x);
  const HW = h * w;
  const P = N * C;
  const stats = Tensor.empty(gpu, [P, 4]);
  perPlaneWorkgroups(gpu, `${op}.stats`, "mn_stats", P, [{ tensor: x, planeSize: HW }], [{
    tensor: stats,
    planeSize: 4,
  }], { HW });
  const y = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, P, {
    name: op,
    shader: "seam",
    entry: "mn_apply",
    inputs: [{ tensor: x, planeSize: HW }, { tensor: stats, planeSize: 4 }],
    outputs: [{ tensor: y, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ HW }, ch),
  });
  return { y, stats };
}

/** Records the gradient of {@link maxNorm} into x given its `stats` and the upstream `dy`. */
export function maxNormBackward(gpu: GpuContext, x: Tensor, stats: Tensor, dy: Tensor): Tensor {
  const op = "seam.max_norm.backward";
  const [N, C, h, w] = nchw(op, x);
  const HW = h * w;
  const P = N * C;
  checkShape(op, "stats", stats, [P, 4]);
  if (dy.size !== x.size) throw new RangeError(`${op}: dy [${dy.shape}] vs x [${x.shape}]`);
  const g = Tensor.empty(gpu, [P, 2]);
  perPlaneWorkgroups(
    gpu,
    `${op}.stats`,
    "mn_bstats",
    P,
    [
      { tensor: x, planeSize: HW },
      { tensor: stats, planeSize: 4 },
      { tensor: dy, planeSize: HW },
    ],
    [{ tensor: g, planeSize: 2 }],
    { HW },
  );
  const dx = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, P, {
    name: op,
    shader: "seam",
    entry: "mn_bwd",
    inputs: [
      { tensor: x, planeSize: HW },
      { tensor: stats, planeSize: 4 },
      { tensor: g, planeSize: 2 },
      { tensor: dy, planeSize: HW },
    ],
    outputs: [{ tensor: dx, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ HW }, ch),
  });
  g.dispose();
  return dx;
}

function planeStats(x: ArrayLike<number>, b: number, HW: number) {
  let mx = -1, mn = Infinity, imx = 0, imn = 0;
  for (let i = 0; i < HW; i++) {
    const r = Math.max(x[b + i], 0);
    if (r > mx) [mx, imx] = [r, i];
    if (r < mn) [mn, imn] = [r, i];
  }
  return { mx, mn, imx, imn, D: mx - mn + E };
}

/** f64 reference of {@link maxNorm} (x flat, `planes` planes of `HW`). */
export function maxNormRef(x: ArrayLike<number>, planes: number, HW: number): Float64Array {
  const y = new Float64Array(planes * HW);
  for (let q = 0; q < planes; q++) {
    const s = planeStats(x, q * HW, HW);
    for (let i = 0; i < HW; i++) {
      y[q * HW + i] = Math.max(Math.max(x[q * HW + i], 0) - s.mn - E, 0) / s.D;
    }
  }
  return y;
}

/** f64 reference of {@link maxNormBackward} (chain rule through relu, min and max). */
export function maxNormBackwardRef(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  planes: number,
  HW: number,
): Float64Array {
  const dx = new Float64Array(planes * HW);
  for (let q = 0; q < planes; q++) {
    const b = q * HW;
    const s = planeStats(x, b, HW);
    let gmn = 0, gmx = 0;
    const dr = new Float64Array(HW);
    for (let i = 0; i < HW; i++) {
      const u = Math.max(x[b + i], 0) - s.mn - E;
      if (u > 0) {
        dr[i] = dy[b + i] / s.D;
        gmn += dy[b + i] * (u / (s.D * s.D) - 1 / s.D);
        gmx -= dy[b + i] * u / (s.D * s.D);
      }
    }
    dr[s.imn] += gmn;
    dr[s.imx] += gmx;
    for (let i = 0; i < HW; i++) dx[b + i] = x[b + i] > 0 ? dr[i] : 0;
  }
  return dx;
}

// ---- top-k sums ----------------------------------------------------------------------------

/** Options of {@link topkSum}. */
export interface TopkOptions {
  /** Picks per row (1..L). */
  k: number;
  /** The k smallest instead of the k largest. */
  smallest?: boolean;
  /** Sum relu(v) of the picked values (adaptive min-pooling). */
  relu?: boolean;
  /** The loss is scale · Σ_rows (default 1). */
  scale?: number;
}

function topkRows(op: string, x: Tensor, o: TopkOptions): [number, number, number] {
  if (x.shape.length < 1) throw new RangeError(`${op}: x must have a row dimension`);
  const R = x.shape[0];
  const L = x.size / R;
  if (!Number.isInteger(o.k) || o.k < 1 || o.k > L) {
    throw new RangeError(`${op}: k must be an integer in [1, ${L}], got ${o.k}`);
  }
  const scale = o.scale ?? 1;
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: bad scale ${scale}`);
  const flags = (o.smallest ? 1 : 0) | (o.relu ? 2 : 0);
  return [R, L, flags];
}

/** What {@link topkSum} returns. */
export interface TopkResult {
  /** The 1-element loss. */
  loss: Tensor;
  /** Per row [sum, k-th value, tied picks, values equal to the k-th] ([R, 4]). */
  stats: Tensor;
}

/** Records the top-k sum of the rows of `x` (leading dimension = rows; module doc). */
export function topkSum(gpu: GpuContext, x: Tensor, o: TopkOptions): TopkResult {
  const op = "seam.topk";
  const [R, L, flags] = topkRows(op, x, o);
  const stats = Tensor.empty(gpu, [R, 4]);
  perPlaneWorkgroups(gpu, `${op}.select`, "tk_select", R, [{ tensor: x, planeSize: L }], [{
    tensor: stats,
    planeSize: 4,
  }], { L, k: o.k, flags });
  const loss = Tensor.empty(gpu, [1]);
  gpu.dispatch({
    name: `${op}.finish`,
    shader: "seam",
    entry: "tk_finish",
    inputs: [stats],
    outputs: [loss],
    params: pack({ R, scale: o.scale ?? 1 }),
    workgroups: [1],
  });
  return { loss, stats };
}

/** Records the gradient of {@link topkSum} into x for the loss gradient `dLoss` (1 element). */
export function topkSumBackward(
  gpu: GpuContext,
  x: Tensor,
  stats: Tensor,
  dLoss: Tensor,
  o: TopkOptions,
): Tensor {
  const op = "seam.topk.backward";
  const [R, L, flags] = topkRows(op, x, o);
  checkShape(op, "stats", stats, [R, 4]);
  if (dLoss.size !== 1) throw new RangeError(`${op}: dLoss must have 1 element`);
  const dx = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, R, {
    name: op,
    shader: "seam",
    entry: "tk_bwd",
    inputs: [{ tensor: x, planeSize: L }, { tensor: stats, planeSize: 4 }],
    shared: [dLoss],
    outputs: [{ tensor: dx, planeSize: L }],
    itemsPerPlane: L,
    params: (ch) => pack({ L, flags, scale: o.scale ?? 1 }, ch),
  });
  return dx;
}

function topkPick(row: Float64Array, k: number, smallest: boolean) {
  const s = Float64Array.from(row).sort();
  if (!smallest) s.reverse();
  const thr = s[k - 1];
  const better = (v: number) => (smallest ? v < thr : v > thr);
  let nb = 0, neq = 0;
  for (const v of row) {
    if (better(v)) nb++;
    else if (v === thr) neq++;
  }
  return { thr, better, take: k - nb, neq };
}

/** f64 reference of {@link topkSum} (x flat [R, L]). */
export function topkSumRef(x: ArrayLike<number>, R: number, o: TopkOptions): number {
  const L = x.length / R;
  const f = (v: number) => (o.relu ? Math.max(v, 0) : v);
  let total = 0;
  for (let r = 0; r < R; r++) {
    const row = Float64Array.from({ length: L }, (_, i) => x[r * L + i]);
    const s = Float64Array.from(row).sort();
    if (!o.smallest) s.reverse();
    for (let i = 0; i < o.k; i++) total += f(s[i]);
  }
  return total * (o.scale ?? 1);
}

/** f64 reference of {@link topkSumBackward} for the loss gradient `dLoss`. */
export function topkSumBackwardRef(
  x: ArrayLike<number>,
  R: number,
  o: TopkOptions,
  dLoss: number,
): Float64Array {
  const L = x.length / R;
  const dx = new Float64Array(R * L);
  const g = dLoss * (o.scale ?? 1);
  for (let r = 0; r < R; r++) {
    const row = Float64Array.from({ length: L }, (_, i) => x[r * L + i]);
    const p = topkPick(row, o.k, o.smallest ?? false);
    for (let i = 0; i < L; i++) {
      const v = row[i];
      let w = p.better(v) ? 1 : v === p.thr ? p.take / p.neq : 0;
      if (o.relu && !(v > 0)) w = 0;
      dx[r * L + i] = w * g;
    }
  }
  return dx;
}

// ---- drop the background channel -----------------------------------------------------------

function dropShape(op: string, x: Tensor): [number, number, number] {
  if (x.shape.length < 2 || x.shape[1] < 2) {
    throw new RangeError(`${op}: need [N, C1 >= 2, ...], got [${x.shape}]`);
  }
  const [N, C1] = x.shape;
  return [N, C1, x.size / (N * C1)];
}

/** Records y = x[:, 1:] of x [N, C1, ...] (the foreground channels). */
export function dropBackground(gpu: GpuContext, x: Tensor): Tensor {
  const op = "seam.drop_bg";
  const [N, C1, S] = dropShape(op, x);
  const y = Tensor.empty(gpu, [N, C1 - 1, ...x.shape.slice(2)]);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "drop_fwd",
    inputs: [{ tensor: x, planeSize: C1 * S }],
    outputs: [{ tensor: y, planeSize: (C1 - 1) * S }],
    itemsPerPlane: (C1 - 1) * S,
    params: (ch) => pack({ C1, HW: S }, ch),
  });
  return y;
}

/** Records the gradient of {@link dropBackground}: dy padded with a zero channel 0. */
export function dropBackgroundBackward(
  gpu: GpuContext,
  dy: Tensor,
  xShape: readonly number[],
): Tensor {
  const op = "seam.drop_bg.backward";
  const dx = Tensor.empty(gpu, xShape);
  const [N, C1, S] = dropShape(op, dx);
  if (dy.size !== N * (C1 - 1) * S) throw new RangeError(`${op}: dy has ${dy.size} values`);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "drop_bwd",
    inputs: [{ tensor: dy, planeSize: (C1 - 1) * S }],
    outputs: [{ tensor: dx, planeSize: C1 * S }],
    itemsPerPlane: C1 * S,
    params: (ch) => pack({ C1, HW: S }, ch),
  });
  return dx;
}

// ---- per-pixel element maps ----------------------------------------------------------------

/** Records m [N, h, w] = max over foreground channels c of tag_c·x_c (x [N, C1, h, w]). */
export function fgMax(gpu: GpuContext, x: Tensor, tags: Tensor): Tensor {
  const op = "seam.fg_max";
  const [N, C1, HW] = checkTags(op, x, tags);
  const m = Tensor.empty(gpu, [N, x.shape[2], x.shape[3]]);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "fgmax_fwd",
    inputs: [{ tensor: x, planeSize: C1 * HW }, { tensor: tags, planeSize: C1 - 1 }],
    outputs: [{ tensor: m, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return m;
}

/** Records the gradient of {@link fgMax} into x (to each pixel's first maximal channel). */
export function fgMaxBackward(gpu: GpuContext, x: Tensor, tags: Tensor, dm: Tensor): Tensor {
  const op = "seam.fg_max.backward";
  const [N, C1, HW] = checkTags(op, x, tags);
  if (dm.size !== N * HW) throw new RangeError(`${op}: dm [${dm.shape}] vs x [${x.shape}]`);
  const dx = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "fgmax_bwd",
    inputs: [
      { tensor: x, planeSize: C1 * HW },
      { tensor: tags, planeSize: C1 - 1 },
      { tensor: dm, planeSize: HW },
    ],
    outputs: [{ tensor: dx, planeSize: C1 * HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return dx;
}

/** Records v [N, C1 - 1, h, w] = |tag_c (a_c - b_c)| over the foreground channels. */
export function erElems(gpu: GpuContext, a: Tensor, b: Tensor, tags: Tensor): Tensor {
  const op = "seam.er";
  const [N, C1, HW] = checkTags(op, a, tags);
  checkShape(op, "b", b, a.shape);
  const v = Tensor.empty(gpu, [N, C1 - 1, a.shape[2], a.shape[3]]);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "er_fwd",
    inputs: [
      { tensor: a, planeSize: C1 * HW },
      { tensor: b, planeSize: C1 * HW },
      { tensor: tags, planeSize: C1 - 1 },
    ],
    outputs: [{ tensor: v, planeSize: (C1 - 1) * HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return v;
}

/** Records the gradients of {@link erElems} into a and b (background channels 0). */
export function erElemsBackward(
  gpu: GpuContext,
  a: Tensor,
  b: Tensor,
  tags: Tensor,
  dv: Tensor,
): { da: Tensor; db: Tensor } {
  const op = "seam.er.backward";
  const [N, C1, HW] = checkTags(op, a, tags);
  checkShape(op, "b", b, a.shape);
  if (dv.size !== N * (C1 - 1) * HW) throw new RangeError(`${op}: dv has ${dv.size} values`);
  const da = Tensor.empty(gpu, a.shape);
  const db = Tensor.empty(gpu, a.shape);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "er_bwd",
    inputs: [
      { tensor: a, planeSize: C1 * HW },
      { tensor: b, planeSize: C1 * HW },
      { tensor: tags, planeSize: C1 - 1 },
      { tensor: dv, planeSize: (C1 - 1) * HW },
    ],
    outputs: [{ tensor: da, planeSize: C1 * HW }, { tensor: db, planeSize: C1 * HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return { da, db };
}

/** Records v [N, C1, h, w] = |T - lab ⊙ y|, T the max_onehot target of `target` (module doc). */
export function ecrElems(gpu: GpuContext, target: Tensor, y: Tensor, tags: Tensor): Tensor {
  const op = "seam.ecr";
  const [N, C1, HW] = checkTags(op, y, tags);
  checkShape(op, "target", target, y.shape);
  const v = Tensor.empty(gpu, y.shape);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "ecr_fwd",
    inputs: [
      { tensor: target, planeSize: C1 * HW },
      { tensor: y, planeSize: C1 * HW },
      { tensor: tags, planeSize: C1 - 1 },
    ],
    outputs: [{ tensor: v, planeSize: C1 * HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return v;
}

/** Records the gradient of {@link ecrElems} into y (none into the target). */
export function ecrElemsBackward(
  gpu: GpuContext,
  target: Tensor,
  y: Tensor,
  tags: Tensor,
  dv: Tensor,
): Tensor {
  const op = "seam.ecr.backward";
  const [N, C1, HW] = checkTags(op, y, tags);
  checkShape(op, "target", target, y.shape);
  if (dv.size !== y.size) throw new RangeError(`${op}: dv has ${dv.size} values`);
  const dy = Tensor.empty(gpu, y.shape);
  dispatchPlanes(gpu, N, {
    name: op,
    shader: "seam",
    entry: "ecr_bwd",
    inputs: [
      { tensor: target, planeSize: C1 * HW },
      { tensor: y, planeSize: C1 * HW },
      { tensor: tags, planeSize: C1 - 1 },
      { tensor: dv, planeSize: C1 * HW },
    ],
    outputs: [{ tensor: dy, planeSize: C1 * HW }],
    itemsPerPlane: HW,
    params: (ch) => pack({ C1, HW }, ch),
  });
  return dy;
}

/** f64 reference of {@link fgMax}: the map and each pixel's (first) maximal channel. */
export function fgMaxRef(
  x: ArrayLike<number>,
  tags: ArrayLike<number>,
  N: number,
  C1: number,
  HW: number,
): { m: Float64Array; arg: Int32Array } {
  const m = new Float64Array(N * HW);
  const arg = new Int32Array(N * HW);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < HW; i++) {
      let best = 1, bv = tags[n * (C1 - 1)] * x[(n * C1 + 1) * HW + i];
      for (let c = 2; c < C1; c++) {
        const v = tags[n * (C1 - 1) + c - 1] * x[(n * C1 + c) * HW + i];
        if (v > bv) [bv, best] = [v, c];
      }
      m[n * HW + i] = bv;
      arg[n * HW + i] = best;
    }
  }
  return { m, arg };
}

/** f64 reference of {@link ecrElems}'s max_onehot target T [N, C1, HW]. */
export function ecrTargetRef(
  t: ArrayLike<number>,
  tags: ArrayLike<number>,
  N: number,
  C1: number,
  HW: number,
): Float64Array {
  const T = new Float64Array(N * C1 * HW);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < HW; i++) {
      let m = -Infinity;
      for (let c = 1; c < C1; c++) {
        m = Math.max(m, tags[n * (C1 - 1) + c - 1] * t[(n * C1 + c) * HW + i]);
      }
      T[n * C1 * HW + i] = 1 - m;
      for (let c = 1; c < C1; c++) {
        const v = tags[n * (C1 - 1) + c - 1] * t[(n * C1 + c) * HW + i];
        T[(n * C1 + c) * HW + i] = v === m ? v : 0;
      }
    }
  }
  return T;
}

// ---------------------------------------------------------------------------------------------
// Op units.

/** Parameters of the per-pixel units' cases: maps [N, C1, h, w], tags [N, C1 - 1]. */
export interface SeamMapCase {
  N: number;
  C1: number;
  h: number;
  w: number;
}

const mapCase = (N: number, C1: number, h: number, w: number, split = true) =>
  ({
    name: `${N}x${C1}x${h}x${w}`,
    params: { N, C1, h, w },
    split,
  }) as OpCase<SeamMapCase>;

const MAP_CASES = [
  mapCase(2, 4, 3, 5),
  mapCase(3, 6, 4, 4),
  mapCase(9, 3, 5, 5),
  mapCase(1, 2, 2, 3),
];

function makeTags(N: number, C: number, seed: number): Float32Array {
  const r = new Rng(seed + 17);
  const t = Float32Array.from({ length: N * C }, () => (r.next() < 0.6 ? 1 : 0));
  for (let n = 0; n < N; n++) t[n * C] = 1; // at least one tagged class per image
  return t;
}

const mapShape = (p: SeamMapCase) => [p.N, p.C1, p.h, p.w];
const tagShape = (p: SeamMapCase) => [p.N, p.C1 - 1];

/** Throws when two values of `xs` that both matter are within `gap` (kinks, ties). */
function assertSeparated(what: string, xs: number[], gap: number): void {
  const s = xs.slice().sort((a, b) => a - b);
  for (let i = 1; i < s.length; i++) {
    if (s[i] - s[i - 1] < gap) throw new Error(`${what}: values within ${gap}`);
  }
}

/**
 * Distinct values spread evenly over [lo, hi) (no two within (hi - lo)/n, none within 1e-4 of
 * 0), in a seeded random order: no ties or kinks within the finite differences' reach.
 */
function gridPermutation(n: number, seed: number, lo: number, hi: number): Float32Array {
  const r = new Rng(seed + 3);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r.next() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const step = (hi - lo) / n;
  return Float32Array.from(idx, (v) => {
    const x = lo + v * step;
    return Math.abs(x) < 1e-4 ? x + step / 2 : x;
  });
}

/** SEAM's max_norm as an op unit (values in [-0.5, 1.5]: some planes have a zero min). */
export const maxNormUnit: OpUnit<SeamMapCase> = defineOpUnit<SeamMapCase>({
  name: "seam_max_norm",
  description: "SEAM's max_norm: relu(relu(x) - min - e) / (max - min + e) per plane",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: MAP_CASES,
  benchShapes: [mapCase(8, 21, 112, 112)],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-4, atol: 1e-6 } },
  inputShapes: (p) => ({ x: mapShape(p) }),
  outputShapes: (p) => ({ y: mapShape(p) }),
  makeInputs: (p, seed) => ({ x: gridPermutation(sizeOf(mapShape(p)), seed, -0.5, 1.5) }),
  refForward: (p, x) => ({ y: maxNormRef(x.x, p.N * p.C1, p.h * p.w) }),
  refBackward: (p, x, d) => ({ x: maxNormBackwardRef(x.x, d.y, p.N * p.C1, p.h * p.w) }),
  cost: (p) => {
    const s = mapShape(p);
    return {
      forward: { flops: 6 * sizeOf(s), bytes: bytesOf(s, s, s) },
      backward: { flops: 10 * sizeOf(s), bytes: bytesOf(s, s, s, s) },
    };
  },
  gpu: {
    name: "per-plane reductions",
    forward: (gpu, _p, { tensors: t }) => {
      const r = maxNorm(gpu, t.x);
      r.stats.dispose();
      return { y: r.y };
    },
    backward: (gpu, _p, { tensors: t }, { tensors: d }) => {
      const r = maxNorm(gpu, t.x);
      const x = maxNormBackward(gpu, t.x, r.stats, asShape(d.y, t.x.shape));
      r.y.dispose();
      r.stats.dispose();
      return { x };
    },
  },
});

/** Parameters of a {@link topkUnit} case: rows [R, L] and the options. */
export interface TopkCase {
  R: number;
  L: number;
  opts: TopkOptions;
}

const tkCase = (R: number, L: number, opts: TopkOptions): OpCase<TopkCase> => ({
  name: `${R}x${L} k${opts.k}${opts.smallest ? " smallest" : ""}${opts.relu ? " relu" : ""}`,
  params: { R, L, opts },
});

/**
 * The top-k sum as an op unit: distinct values on a 1e-3 grid (no ties within finite
 * differences' reach; tests/seam_loss_test.ts covers ties).
 */
export const topkUnit: OpUnit<TopkCase> = defineOpUnit<TopkCase>({
  name: "seam_topk",
  description: "Σ_rows Σ f(top-k values) by an exact radix select (SEAM's ECR and min-pooling)",
  bound: "memory",
  inputs: ["x"],
  outputs: ["loss"],
  differentiable: ["x"],
  cases: [
    tkCase(3, 50, { k: 10, scale: 1 / 30 }),
    tkCase(2, 300, { k: 75, smallest: true, relu: true, scale: 1 / 150 }),
    tkCase(4, 37, { k: 37, scale: 0.5 }),
    tkCase(5, 200, { k: 1 }),
    tkCase(6, 100, { k: 20, smallest: true }),
  ],
  benchShapes: [tkCase(8, 21 * 134 * 134, { k: Math.floor(21 * 134 * 134 * 0.2) })],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { rtol: 1e-6, atol: 1e-9 } },
  inputShapes: (p) => ({ x: [p.R, p.L] }),
  outputShapes: () => ({ loss: [1] }),
  makeInputs: (p, seed) => ({ x: gridPermutation(p.R * p.L, seed, -0.3, 0.7) }),
  refForward: (p, x) => ({ loss: Float64Array.of(topkSumRef(x.x, p.R, p.opts)) }),
  refBackward: (p, x, d) => ({ x: topkSumBackwardRef(x.x, p.R, p.opts, d.loss[0]) }),
  cost: (p) => ({
    forward: { flops: 10 * p.R * p.L, bytes: 20 * p.R * p.L },
    backward: { flops: 4 * p.R * p.L, bytes: 8 * p.R * p.L },
  }),
  gpu: {
    name: "radix select",
    forward: (gpu, p, { tensors: t }) => {
      const r = topkSum(gpu, t.x, p.opts);
      r.stats.dispose();
      return { loss: r.loss };
    },
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const r = topkSum(gpu, t.x, p.opts);
      const x = topkSumBackward(gpu, t.x, r.stats, d.loss, p.opts);
      r.loss.dispose();
      r.stats.dispose();
      return { x };
    },
  },
});

/** fgMax as an op unit (maps in [-1, 1]; no two tagged channels within 1e-4 at a pixel). */
export const fgMaxUnit: OpUnit<SeamMapCase> = defineOpUnit<SeamMapCase>({
  name: "seam_fg_max",
  description: "max over foreground channels of tag_c · x_c (SEAM's adaptive min-pooling map)",
  bound: "memory",
  inputs: ["x", "tags"],
  outputs: ["m"],
  differentiable: ["x"],
  cases: MAP_CASES,
  benchShapes: [mapCase(8, 21, 448, 448)],
  tolerance: { forward: { rtol: 1e-6, atol: 1e-7 }, backward: { rtol: 1e-6, atol: 1e-7 } },
  inputShapes: (p) => ({ x: mapShape(p), tags: tagShape(p) }),
  outputShapes: (p) => ({ m: [p.N, p.h, p.w] }),
  makeInputs: (p, seed) => ({
    x: uniformValues(sizeOf(mapShape(p)), seed),
    tags: makeTags(p.N, p.C1 - 1, seed),
  }),
  validateInputs: (p, x) => {
    const HW = p.h * p.w;
    for (let n = 0; n < p.N; n++) {
      for (let i = 0; i < HW; i++) {
        const vs = [];
        for (let c = 1; c < p.C1; c++) {
          vs.push(x.tags[n * (p.C1 - 1) + c - 1] * x.x[(n * p.C1 + c) * HW + i]);
        }
        assertSeparated("fg_max", vs.filter((v) => v !== 0).concat([0]), 1e-4);
      }
    }
  },
  refForward: (p, x) => ({ m: fgMaxRef(x.x, x.tags, p.N, p.C1, p.h * p.w).m }),
  refBackward: (p, x, d) => {
    const HW = p.h * p.w;
    const { arg } = fgMaxRef(x.x, x.tags, p.N, p.C1, HW);
    const dx = new Float64Array(p.N * p.C1 * HW);
    for (let n = 0; n < p.N; n++) {
      for (let i = 0; i < HW; i++) {
        const c = arg[n * HW + i];
        dx[(n * p.C1 + c) * HW + i] = d.m[n * HW + i] * x.tags[n * (p.C1 - 1) + c - 1];
      }
    }
    return { x: dx };
  },
  cost: (p) => {
    const s = mapShape(p);
    return {
      forward: { flops: 2 * sizeOf(s), bytes: bytesOf(s) + 4 * p.N * p.h * p.w },
      backward: { flops: 2 * sizeOf(s), bytes: bytesOf(s, s) + 4 * p.N * p.h * p.w },
    };
  },
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, _p, { tensors: t }) => ({ m: fgMax(gpu, t.x, t.tags) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => ({
      x: fgMaxBackward(gpu, t.x, t.tags, asShape(d.m, [p.N, p.h, p.w])),
    }),
  },
});

/** dropBackground as an op unit. */
export const dropBackgroundUnit: OpUnit<SeamMapCase> = defineOpUnit<SeamMapCase>({
  name: "seam_drop_bg",
  description: "x[:, 1:]: the foreground channels of [N, C1, ...] maps",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: MAP_CASES,
  benchShapes: [mapCase(8, 21, 448, 448)],
  tolerance: { forward: {}, backward: {} },
  inputShapes: (p) => ({ x: mapShape(p) }),
  outputShapes: (p) => ({ y: [p.N, p.C1 - 1, p.h, p.w] }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(mapShape(p)), seed) }),
  refForward: (p, x) => {
    const S = p.h * p.w;
    return {
      y: Float64Array.from(
        { length: p.N * (p.C1 - 1) * S },
        (_, i) => x.x[Math.floor(i / ((p.C1 - 1) * S)) * p.C1 * S + S + (i % ((p.C1 - 1) * S))],
      ),
    };
  },
  refBackward: (p, _x, d) => {
    const S = p.h * p.w;
    return {
      x: Float64Array.from({ length: p.N * p.C1 * S }, (_, i) => {
        const j = i % (p.C1 * S);
        return j < S ? 0 : d.y[Math.floor(i / (p.C1 * S)) * (p.C1 - 1) * S + j - S];
      }),
    };
  },
  cost: (p) => {
    const s = mapShape(p);
    return {
      forward: { flops: 0, bytes: 2 * bytesOf(s) },
      backward: { flops: 0, bytes: 2 * bytesOf(s) },
    };
  },
  gpu: {
    name: "copy kernel",
    forward: (gpu, _p, { tensors: t }) => ({ y: dropBackground(gpu, t.x) }),
    backward: (gpu, _p, { tensors: t }, { tensors: d }) => ({
      x: dropBackgroundBackward(gpu, d.y, t.x.shape),
    }),
  },
});

/** erElems as an op unit (a, b in [0, 1]; tagged differences at least 1e-4 from 0). */
export const erUnit: OpUnit<SeamMapCase> = defineOpUnit<SeamMapCase>({
  name: "seam_er",
  description: "|tag_c (a_c - b_c)| over foreground channels (SEAM's equivariant regulariser)",
  bound: "memory",
  inputs: ["a", "b", "tags"],
  outputs: ["v"],
  differentiable: ["a", "b"],
  cases: MAP_CASES,
  benchShapes: [mapCase(8, 21, 134, 134)],
  tolerance: { forward: { rtol: 1e-6, atol: 1e-7 }, backward: { rtol: 1e-6, atol: 1e-7 } },
  inputShapes: (p) => ({ a: mapShape(p), b: mapShape(p), tags: tagShape(p) }),
  outputShapes: (p) => ({ v: [p.N, p.C1 - 1, p.h, p.w] }),
  makeInputs: (p, seed) => ({
    a: uniformValues(sizeOf(mapShape(p)), seed, 0, 1),
    b: uniformValues(sizeOf(mapShape(p)), seed + 1, 0, 1),
    tags: makeTags(p.N, p.C1 - 1, seed),
  }),
  validateInputs: (_p, x) => {
    if (x.a.some((v, i) => Math.abs(v - x.b[i]) < 1e-4)) throw new Error("er: a ≈ b");
  },
  refForward: (p, x) => {
    const HW = p.h * p.w;
    const v = new Float64Array(p.N * (p.C1 - 1) * HW);
    for (let n = 0; n < p.N; n++) {
      for (let c = 1; c < p.C1; c++) {
        const tg = x.tags[n * (p.C1 - 1) + c - 1];
        for (let i = 0; i < HW; i++) {
          const e = (n * p.C1 + c) * HW + i;
          v[(n * (p.C1 - 1) + c - 1) * HW + i] = Math.abs(tg * (x.a[e] - x.b[e]));
        }
      }
    }
    return { v };
  },
  refBackward: (p, x, d) => {
    const HW = p.h * p.w;
    const da = new Float64Array(p.N * p.C1 * HW);
    const db = new Float64Array(p.N * p.C1 * HW);
    for (let n = 0; n < p.N; n++) {
      for (let c = 1; c < p.C1; c++) {
        const tg = x.tags[n * (p.C1 - 1) + c - 1];
        for (let i = 0; i < HW; i++) {
          const e = (n * p.C1 + c) * HW + i;
          const g = d.v[(n * (p.C1 - 1) + c - 1) * HW + i] * Math.sign(tg * (x.a[e] - x.b[e])) *
            tg;
          da[e] = g;
          db[e] = -g;
        }
      }
    }
    return { a: da, b: db };
  },
  cost: (p) => {
    const s = mapShape(p);
    return {
      forward: { flops: 3 * sizeOf(s), bytes: bytesOf(s, s, s) },
      backward: { flops: 4 * sizeOf(s), bytes: bytesOf(s, s, s, s, s) },
    };
  },
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, _p, { tensors: t }) => ({ v: erElems(gpu, t.a, t.b, t.tags) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const dv = asShape(d.v, [p.N, p.C1 - 1, p.h, p.w]);
      const { da, db } = erElemsBackward(gpu, t.a, t.b, t.tags, dv);
      return { a: da, b: db };
    },
  },
});

/** ecrElems as an op unit (target, y in [0, 1]; no |T - y| or fg tie within 1e-4). */
export const ecrUnit: OpUnit<SeamMapCase> = defineOpUnit<SeamMapCase>({
  name: "seam_ecr",
  description: "|max_onehot(tag ⊙ target) - lab ⊙ y| (SEAM's equivariant cross regulariser)",
  bound: "memory",
  inputs: ["target", "y", "tags"],
  outputs: ["v"],
  differentiable: ["y"],
  cases: MAP_CASES,
  benchShapes: [mapCase(8, 21, 134, 134)],
  tolerance: { forward: { rtol: 1e-6, atol: 1e-7 }, backward: { rtol: 1e-6, atol: 1e-7 } },
  inputShapes: (p) => ({ target: mapShape(p), y: mapShape(p), tags: tagShape(p) }),
  outputShapes: (p) => ({ v: mapShape(p) }),
  makeInputs: (p, seed) => ({
    target: uniformValues(sizeOf(mapShape(p)), seed, 0, 1),
    y: uniformValues(sizeOf(mapShape(p)), seed + 1, 0, 1),
    tags: makeTags(p.N, p.C1 - 1, seed),
  }),
  validateInputs: (p, x) => {
    const T = ecrTargetRef(x.target, x.tags, p.N, p.C1, p.h * p.w);
    if (T.some((t, i) => Math.abs(t - x.y[i]) < 1e-4)) throw new Error("ecr: y ≈ target");
  },
  refForward: (p, x) => {
    const HW = p.h * p.w;
    const T = ecrTargetRef(x.target, x.tags, p.N, p.C1, HW);
    const lab = (e: number) => {
      const c = Math.floor(e / HW) % p.C1;
      return c === 0 ? 1 : x.tags[Math.floor(e / (HW * p.C1)) * (p.C1 - 1) + c - 1];
    };
    return { v: T.map((t, e) => Math.abs(t - lab(e) * x.y[e])) };
  },
  refBackward: (p, x, d) => {
    const HW = p.h * p.w;
    const T = ecrTargetRef(x.target, x.tags, p.N, p.C1, HW);
    const lab = (e: number) => {
      const c = Math.floor(e / HW) % p.C1;
      return c === 0 ? 1 : x.tags[Math.floor(e / (HW * p.C1)) * (p.C1 - 1) + c - 1];
    };
    return { y: T.map((t, e) => d.v[e] * Math.sign(lab(e) * x.y[e] - t) * lab(e)) };
  },
  cost: (p) => {
    const s = mapShape(p);
    return {
      forward: { flops: 4 * sizeOf(s), bytes: bytesOf(s, s, s) },
      backward: { flops: 5 * sizeOf(s), bytes: bytesOf(s, s, s, s) },
    };
  },
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, _p, { tensors: t }) => ({ v: ecrElems(gpu, t.target, t.y, t.tags) }),
    backward: (gpu, _p, { tensors: t }, { tensors: d }) => ({
      y: ecrElemsBackward(gpu, t.target, t.y, t.tags, asShape(d.v, t.y.shape)),
    }),
  },
});
