/**
 * Data movement of token tensors for Vision Transformers, all through one strided copy
 * ({@link stridedCopy}, `shaders/tokens.wgsl`): the head split / merge permute
 * ({@link permute0213}), tokens ↔ feature maps ({@link tokensToMap}, {@link mapToTokens}: the
 * same permute on a reshape), patchify and its inverse, concatenation and slicing along the
 * token axis, and broadcasting over the batch ({@link expandBatch}, whose backward, a sum over
 * the batch, is conv2d's fixed-order bias gradient on 1x1 planes). The copy is split past the
 * binding limit over its outermost dimensions (recursing inwards when one slice of a dimension
 * does not fit); every kernel is loop-free.
 *
 * Layouts: tokens are [B, T, D] row-major; images and maps NCHW.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { bindingWindow, spans, windowCapacity } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import { conv2dGradBias } from "./conv.ts";
import { asShape, defineOpUnit, type OpCase, type OpUnit, uniformValues } from "./unit.ts";

/** The uniform block of shaders/tokens.wgsl: iteration shape d, source strides s, dest t. */
const { CopyParams } = declareParams("tokens", {
  CopyParams: {
    n: "u32",
    sOff: "u32",
    dOff: "u32",
    d0: "u32",
    d1: "u32",
    d2: "u32",
    d3: "u32",
    d4: "u32",
    d5: "u32",
    s0: "u32",
    s1: "u32",
    s2: "u32",
    s3: "u32",
    s4: "u32",
    s5: "u32",
    t0: "u32",
    t1: "u32",
    t2: "u32",
    t3: "u32",
    t4: "u32",
    t5: "u32",
  },
});

/** One strided copy: `dst[dstOff + Σ c_k·dstStrides_k] = src[srcOff + Σ c_k·srcStrides_k]`. */
export interface StridedCopy {
  /** Op name for errors and dispatch labels. */
  name: string;
  src: Tensor;
  dst: Tensor;
  /** The iteration shape (at most 6 dimensions). */
  shape: readonly number[];
  /** Source strides per dimension in elements (0 broadcasts). */
  srcStrides: readonly number[];
  /** Destination strides per dimension in elements. */
  dstStrides: readonly number[];
  /** Source element offset (default 0). */
  srcOff?: number;
  /** Destination element offset (default 0). */
  dstOff?: number;
}

/**
 * Records a {@link StridedCopy}. Work past the binding limit is split along the outermost
 * dimension whose slices fit (each chunk bound through aligned windows), one dispatch per
 * chunk; the destination elements not addressed are left as they are.
 */
export function stridedCopy(gpu: GpuContext, c: StridedCopy): void {
  const nd = c.shape.length;
  if (nd > 6 || c.srcStrides.length !== nd || c.dstStrides.length !== nd) {
    throw new RangeError(`${c.name}: a copy of up to 6 dimensions with a stride per dimension`);
  }
  if (c.src.buffer === c.dst.buffer) {
    throw new RangeError(`${c.name}: the output must not share a buffer with the input`);
  }
  const pad = (a: readonly number[], v: number) => [...Array(6 - nd).fill(v), ...a];
  const dims = pad(c.shape, 1);
  if (dims.some((d) => d === 0)) return;
  const ss = pad(c.srcStrides, 0);
  const ts = pad(c.dstStrides, 0);
  const extent = (sh: number[], st: number[]) => 1 + sh.reduce((a, d, k) => a + (d - 1) * st[k], 0);
  const full = extent(dims, ss);
  const fullDst = extent(dims, ts);
  const s0 = c.srcOff ?? 0;
  const d0 = c.dstOff ?? 0;
  if (s0 + full > c.src.size || d0 + fullDst > c.dst.size) {
    throw new RangeError(`${c.name}: the copy reaches past its source or destination`);
  }
  const cap = windowCapacity(gpu);
  const emit = (sh: number[], so: number, dOff: number) => {
    const ws = bindingWindow(gpu, c.src.buffer, so, extent(sh, ss));
    const wd = bindingWindow(gpu, c.dst.buffer, dOff, extent(sh, ts));
    const n = sh.reduce((a, b) => a * b, 1);
    const [a0, a1, a2, a3, a4, a5] = sh;
    gpu.dispatch1d({
      name: c.name,
      shader: "tokens",
      entry: "copy6",
      inputs: [ws.range],
      outputs: [wd.range],
      params: CopyParams.pack({
        n,
        sOff: ws.shift,
        dOff: wd.shift,
        d0: a0,
        d1: a1,
        d2: a2,
        d3: a3,
        d4: a4,
        d5: a5,
        s0: ss[0],
        s1: ss[1],
        s2: ss[2],
        s3: ss[3],
        s4: ss[4],
        s5: ss[5],
        t0: ts[0],
        t1: ts[1],
        t2: ts[2],
        t3: ts[3],
        t4: ts[4],
        t5: ts[5],
      }),
    }, n);
  };
  // Copy dims[level..] at the given offsets (the dimensions before `level` fixed).
  const plan = (level: number, so: number, dOff: number) => {
    const sh = dims.map((d, k) => (k < level ? 1 : d));
    const tail = (st: number[]) => sh.reduce((a, d, k) => a + (k > level ? (d - 1) * st[k] : 0), 0);
    let count = dims[level];
    for (const st of [ss, ts]) {
      const room = cap - 1 - tail(st);
      if (room < 0) count = 0;
      else if (st[level] > 0) count = Math.min(count, Math.floor(room / st[level]) + 1);
    }
    if (count < 1) {
      if (level === 5) {
        throw new RangeError(
          `${c.name}: cannot split the copy to fit ${gpu.maxBindingBytes} bytes`,
        );
      }
      for (let j = 0; j < dims[level]; j++) {
        plan(level + 1, so + j * ss[level], dOff + j * ts[level]);
      }
      return;
    }
    for (const [j0, cnt] of spans(dims[level], count)) {
      sh[level] = cnt;
      emit([...sh], so + j0 * ss[level], dOff + j0 * ts[level]);
    }
  };
  plan(0, s0, d0);
}

/** Row-major strides of a shape. */
function contiguous(shape: readonly number[]): number[] {
  const st = new Array(shape.length).fill(1);
  for (let k = shape.length - 2; k >= 0; k--) st[k] = st[k + 1] * shape[k + 1];
  return st;
}

function dims(op: string, t: Tensor, rank: number, what = "x"): number[] {
  if (t.shape.length !== rank || t.shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new RangeError(`${op}: ${what} must be ${rank}-D with positive sizes, got [${t.shape}]`);
  }
  return [...t.shape];
}

/** Records x [A, B, C, D] → [A, C, B, D] (heads split / merged: [B, T, H, Dh] ↔ [B, H, T, Dh]). */
export function permute0213(gpu: GpuContext, x: Tensor): Tensor {
  const [A, B, C, D] = dims("permute0213", x, 4);
  return swap12(gpu, "permute0213", x, [A, B, C, D], [A, C, B, D]);
}

/** x seen as [A, B, C, D] → [A, C, B, D], returned with shape `outShape` (same size). */
function swap12(
  gpu: GpuContext,
  op: string,
  x: Tensor,
  [A, B, C, D]: number[],
  outShape: number[],
): Tensor {
  const y = Tensor.empty(gpu, outShape);
  stridedCopy(gpu, {
    name: op,
    src: x,
    dst: y,
    shape: [A, C, B, D],
    srcStrides: [B * C * D, D, C * D, 1],
    dstStrides: contiguous([A, C, B, D]),
  });
  return y;
}

/** Records patch tokens x [B, h·w, D] → a feature map [B, D, h, w] (the same permute). */
export function tokensToMap(gpu: GpuContext, x: Tensor, h: number, w: number): Tensor {
  const op = "tokensToMap";
  const [B, T, D] = dims(op, x, 3);
  if (!(Number.isInteger(h) && Number.isInteger(w) && h * w === T)) {
    throw new RangeError(`${op}: ${T} tokens are not a ${h}x${w} map`);
  }
  return swap12(gpu, op, x, [B, T, D, 1], [B, D, h, w]);
}

/** Records a feature map x [B, D, h, w] → tokens [B, h·w, D] (the same permute). */
export function mapToTokens(gpu: GpuContext, x: Tensor): Tensor {
  const [B, D, h, w] = dims("mapToTokens", x, 4);
  return swap12(gpu, "mapToTokens", x, [B, D, h * w, 1], [B, h * w, D]);
}

/** Records [B, Ta, D] ++ [B, Tb, D] → [B, Ta + Tb, D] along the tokens. */
export function concatTokens(gpu: GpuContext, a: Tensor, b: Tensor): Tensor {
  const op = "concatTokens";
  const [B, Ta, D] = dims(op, a, 3, "a");
  const [Bb, Tb, Db] = dims(op, b, 3, "b");
  if (B !== Bb || D !== Db) {
    throw new RangeError(`${op}: a [${a.shape}] and b [${b.shape}] differ in batch or channels`);
  }
  const T = Ta + Tb;
  const y = Tensor.empty(gpu, [B, T, D]);
  for (const [t, n, off] of [[a, Ta, 0], [b, Tb, Ta]] as const) {
    stridedCopy(gpu, {
      name: op,
      src: t,
      dst: y,
      shape: [B, n, D],
      srcStrides: [n * D, D, 1],
      dstStrides: [T * D, D, 1],
      dstOff: off * D,
    });
  }
  return y;
}

/** Records x[:, start:start+count] of x [B, T, D] → [B, count, D]. */
export function sliceTokens(gpu: GpuContext, x: Tensor, start: number, count: number): Tensor {
  const op = "sliceTokens";
  const [B, T, D] = dims(op, x, 3);
  if (
    !(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 1) ||
    start + count > T
  ) {
    throw new RangeError(`${op}: tokens [${start}, ${start + count}) are not within ${T}`);
  }
  const y = Tensor.empty(gpu, [B, count, D]);
  stridedCopy(gpu, {
    name: op,
    src: x,
    dst: y,
    shape: [B, count, D],
    srcStrides: [T * D, D, 1],
    dstStrides: [count * D, D, 1],
    srcOff: start * D,
  });
  return y;
}

/** Records the backward of {@link sliceTokens}: dy [B, count, D] placed into zeros [B, T, D]. */
export function sliceTokensBackward(gpu: GpuContext, dy: Tensor, T: number, start: number): Tensor {
  const op = "sliceTokensBackward";
  const [B, count, D] = dims(op, dy, 3, "dy");
  if (start + count > T) throw new RangeError(`${op}: tokens past ${T}`);
  const dx = Tensor.zeros(gpu, [B, T, D]);
  stridedCopy(gpu, {
    name: op,
    src: dy,
    dst: dx,
    shape: [B, count, D],
    srcStrides: [count * D, D, 1],
    dstStrides: [T * D, D, 1],
    dstOff: start * D,
  });
  return dx;
}

/** Records p [1, ...] → [B, ...] (class tokens, positional embeddings over the batch). */
export function expandBatch(gpu: GpuContext, p: Tensor, B: number): Tensor {
  const op = "expandBatch";
  if (p.shape.length < 2 || p.shape[0] !== 1 || !(Number.isInteger(B) && B >= 1)) {
    throw new RangeError(`${op}: expected p [1, ...] and a batch >= 1, got [${p.shape}], ${B}`);
  }
  const S = p.size;
  const y = Tensor.empty(gpu, [B, ...p.shape.slice(1)]);
  stridedCopy(gpu, {
    name: op,
    src: p,
    dst: y,
    shape: [B, S],
    srcStrides: [0, 1],
    dstStrides: [S, 1],
  });
  return y;
}

/** Records the backward of {@link expandBatch}: dy [B, ...] summed over B → [1, ...]. */
export function expandBatchBackward(
  gpu: GpuContext,
  dy: Tensor,
  opts: { out?: Tensor; accumulate?: boolean } = {},
): Tensor {
  const B = dy.shape[0];
  const S = dy.size / B;
  const out = opts.out ?? Tensor.empty(gpu, [1, ...dy.shape.slice(1)]);
  conv2dGradBias(gpu, dy.reshape([B, S, 1, 1]), {
    out: out.reshape([S]),
    accumulate: opts.accumulate,
  });
  return out;
}

/** Geometry of patchify: the copy of image x [B, C, H, W] to tokens [B, gh·gw, C·p·p]. */
function patchCopy(op: string, shape: readonly number[], p: number) {
  if (shape.length !== 4) throw new RangeError(`${op}: x must be [B, C, H, W], got [${shape}]`);
  const [B, C, H, W] = shape;
  if (!(Number.isInteger(p) && p >= 1) || H % p !== 0 || W % p !== 0) {
    throw new RangeError(`${op}: ${H}x${W} is not a multiple of the patch size ${p}`);
  }
  const gh = H / p;
  const gw = W / p;
  return {
    tokens: [B, gh * gw, C * p * p],
    // Iteration (b, gy, gx, c, ky, kx): the tokens' order; the image's strides.
    shape: [B, gh, gw, C, p, p],
    image: [C * H * W, p * W, p, H * W, W, 1],
    flat: contiguous([B, gh, gw, C, p, p]),
  };
}

/**
 * Records image x [B, C, H, W] → patch tokens [B, (H/p)·(W/p), C·p·p], each token's features
 * in PyTorch's Conv2d weight order (c, ky, kx): `linear(patchify(x), w.reshape(D, C·p·p), b)`
 * is timm's PatchEmbed (`Conv2d(C, D, p, stride=p)(x).flatten(2).transpose(1, 2)`).
 */
export function patchify(gpu: GpuContext, x: Tensor, patch: number): Tensor {
  const g = patchCopy("patchify", x.shape, patch);
  const y = Tensor.empty(gpu, g.tokens);
  stridedCopy(gpu, {
    name: "patchify",
    src: x,
    dst: y,
    shape: g.shape,
    srcStrides: g.image,
    dstStrides: g.flat,
  });
  return y;
}

/** Records the backward of {@link patchify}: tokens dy scattered back to the image `xShape`. */
export function unpatchify(
  gpu: GpuContext,
  dy: Tensor,
  xShape: readonly number[],
  patch: number,
): Tensor {
  const g = patchCopy("unpatchify", xShape, patch);
  if (dy.size !== g.tokens.reduce((a, b) => a * b, 1)) {
    throw new RangeError(`unpatchify: dy [${dy.shape}] does not hold [${g.tokens}]`);
  }
  const dx = Tensor.empty(gpu, xShape);
  stridedCopy(gpu, {
    name: "unpatchify",
    src: dy,
    dst: dx,
    shape: g.shape,
    srcStrides: g.flat,
    dstStrides: g.image,
  });
  return dx;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64). Every op here is a gather `y[i] = inputs[from[i]][index[i]]`: the
// reference forward gathers, the reference backward scatter-adds (a broadcast source sums).

/** The gather of one op: for output element i, which input (`from`) and which element. */
export interface GatherMap {
  from: Uint8Array;
  index: Int32Array;
}

/** Loops over a row-major shape, calling `f(flat, coords)`. */
function eachIndex(shape: readonly number[], f: (i: number, c: number[]) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const c = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    f(i, c);
    for (let k = shape.length - 1; k >= 0; k--) {
      if (++c[k] < shape[k]) break;
      c[k] = 0;
    }
  }
}

function gatherOf(shape: readonly number[], src: (c: number[]) => [number, number]): GatherMap {
  const n = shape.reduce((a, b) => a * b, 1);
  const from = new Uint8Array(n);
  const index = new Int32Array(n);
  eachIndex(shape, (i, c) => {
    [from[i], index[i]] = src(c);
  });
  return { from, index };
}

/** The gather of {@link permute0213} for x [A, B, C, D]. */
export function permute0213Map([A, B, C, D]: readonly number[]): GatherMap {
  return gatherOf([A, C, B, D], ([a, c, b, d]) => [0, ((a * B + b) * C + c) * D + d]);
}

/** The gather of {@link tokensToMap}: y[b, d, y, x] = tokens[b, y·w + x, d]. */
export function tokensToMapMap(B: number, h: number, w: number, D: number): GatherMap {
  return gatherOf([B, D, h, w], ([b, d, y, x]) => [0, (b * h * w + y * w + x) * D + d]);
}

/** The gather of {@link concatTokens} (input 0: a [B, Ta, D], input 1: b [B, Tb, D]). */
export function concatTokensMap(B: number, Ta: number, Tb: number, D: number): GatherMap {
  return gatherOf(
    [B, Ta + Tb, D],
    ([b, t, d]) => t < Ta ? [0, (b * Ta + t) * D + d] : [1, (b * Tb + t - Ta) * D + d],
  );
}

/** The gather of {@link sliceTokens} from x [B, T, D]. */
export function sliceTokensMap(
  B: number,
  T: number,
  D: number,
  start: number,
  count: number,
): GatherMap {
  return gatherOf([B, count, D], ([b, t, d]) => [0, (b * T + start + t) * D + d]);
}

/** The gather of {@link expandBatch} from p [1, S] to [B, S]. */
export function expandBatchMap(B: number, S: number): GatherMap {
  return gatherOf([B, S], ([, s]) => [0, s]);
}

/**
 * The gather of {@link patchify} from x [B, C, H, W]: token (b, gy·gw + gx), feature
 * (c·p + ky)·p + kx = x[b, c, gy·p + ky, gx·p + kx].
 */
export function patchifyMap([B, C, H, W]: readonly number[], p: number): GatherMap {
  const gh = H / p;
  const gw = W / p;
  return gatherOf(
    [B, gh, gw, C, p, p],
    ([b, gy, gx, c, ky, kx]) => [0, ((b * C + c) * H + gy * p + ky) * W + gx * p + kx],
  );
}

/** The reference forward of a gather. */
export function gatherRef(m: GatherMap, inputs: ArrayLike<number>[]): Float64Array {
  return Float64Array.from(m.index, (j, i) => inputs[m.from[i]][j]);
}

/** The reference backward of a gather: dy scatter-added to inputs of the given sizes. */
export function scatterRef(m: GatherMap, dy: ArrayLike<number>, sizes: number[]): Float64Array[] {
  const out = sizes.map((n) => new Float64Array(n));
  for (let i = 0; i < m.index.length; i++) out[m.from[i]][m.index[i]] += dy[i];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Op units (tests and benchmark: ./unit.ts).

interface GatherUnitSpec<P> {
  name: string;
  description: string;
  inputs: string[];
  cases: OpCase<P>[];
  benchShapes: OpCase<P>[];
  inputShapes(p: P): Record<string, number[]>;
  outShape(p: P): number[];
  map(p: P): GatherMap;
  forward(gpu: GpuContext, p: P, t: Record<string, Tensor>): Tensor;
  backward(gpu: GpuContext, p: P, t: Record<string, Tensor>, dy: Tensor): Record<string, Tensor>;
}

/** A unit of a gather op: exact forward and backward against {@link gatherRef} / scatter. */
function gatherUnit<P>(s: GatherUnitSpec<P>): OpUnit<P> {
  const sizes = (p: P) =>
    s.inputs.map((k) => s.inputShapes(p)[k].reduce((a: number, b: number) => a * b, 1));
  const outSize = (p: P) => s.outShape(p).reduce((a, b) => a * b, 1);
  return defineOpUnit<P>({
    name: s.name,
    description: s.description,
    bound: "memory",
    inputs: s.inputs,
    outputs: ["y"],
    differentiable: s.inputs,
    cases: s.cases,
    benchShapes: s.benchShapes,
    // A copy is exact; a batch sum is a fixed-order f32 sum.
    tolerance: { forward: {}, backward: { rtol: 1e-6, atol: 1e-7 } },
    inputShapes: (p) => s.inputShapes(p),
    outputShapes: (p) => ({ y: s.outShape(p) }),
    makeInputs: (p, seed) =>
      Object.fromEntries(s.inputs.map((k, i) => [k, uniformValues(sizes(p)[i], seed + i)])),
    refForward: (p, x) => ({ y: gatherRef(s.map(p), s.inputs.map((k) => x[k])) }),
    refBackward: (p, _x, d) => {
      const g = scatterRef(s.map(p), d.y, sizes(p));
      return Object.fromEntries(s.inputs.map((k, i) => [k, g[i]]));
    },
    cost: (p) => ({
      forward: { flops: 0, bytes: 8 * outSize(p) },
      backward: { flops: 0, bytes: 8 * outSize(p) },
    }),
    gpu: {
      name: "strided copy",
      forward: (gpu, p, { tensors: t }) => ({ y: s.forward(gpu, p, t) }),
      backward: (gpu, p, { tensors: t }, { tensors: d }) =>
        s.backward(gpu, p, t, asShape(d.y, s.outShape(p))),
    },
  });
}

const shapeName = (sh: readonly number[]) => sh.join("x");

/** Parameters of a {@link permute0213Unit} case: x [A, B, C, D]. */
export interface PermuteCase {
  shape: readonly number[];
}

/** permute0213 as an op unit (bench: DeiT-S heads, [8, 197, 6, 64]). */
export const permute0213Unit: OpUnit<PermuteCase> = gatherUnit<PermuteCase>({
  name: "permute0213",
  description: "[A, B, C, D] → [A, C, B, D] (attention heads split / merged)",
  inputs: ["x"],
  cases: [[2, 3, 5, 7], [1, 1, 1, 1], [2, 13, 6, 8], [3, 1, 4, 1]].map((shape) => ({
    name: shapeName(shape),
    params: { shape },
  })),
  benchShapes: [{ name: "8x197x6x64", params: { shape: [8, 197, 6, 64] } }],
  inputShapes: (p) => ({ x: [...p.shape] }),
  outShape: ({ shape: [A, B, C, D] }) => [A, C, B, D],
  map: (p) => permute0213Map(p.shape),
  forward: (gpu, _p, t) => permute0213(gpu, t.x),
  backward: (gpu, _p, _t, dy) => ({ x: permute0213(gpu, dy) }),
});

/** Parameters of a {@link tokensToMapUnit} case: tokens [B, h·w, D]. */
export interface TokensMapCase {
  B: number;
  h: number;
  w: number;
  D: number;
}

const tmCase = (B: number, h: number, w: number, D: number): OpCase<TokensMapCase> => ({
  name: `${B}x(${h}x${w})x${D}`,
  params: { B, h, w, D },
});

/** tokensToMap as an op unit (its backward is mapToTokens). */
export const tokensToMapUnit: OpUnit<TokensMapCase> = gatherUnit<TokensMapCase>({
  name: "tokens_to_map",
  description: "patch tokens [B, h·w, D] → feature map [B, D, h, w]",
  inputs: ["x"],
  cases: [tmCase(2, 3, 4, 5), tmCase(1, 1, 1, 1), tmCase(1, 7, 9, 11)],
  benchShapes: [tmCase(8, 14, 14, 384)],
  inputShapes: (p) => ({ x: [p.B, p.h * p.w, p.D] }),
  outShape: (p) => [p.B, p.D, p.h, p.w],
  map: (p) => tokensToMapMap(p.B, p.h, p.w, p.D),
  forward: (gpu, p, t) => tokensToMap(gpu, t.x, p.h, p.w),
  backward: (gpu, _p, _t, dy) => ({ x: mapToTokens(gpu, dy) }),
});

/** Parameters of a {@link concatTokensUnit} or {@link sliceTokensUnit} case. */
export interface TokenRangeCase {
  B: number;
  /** concat: tokens of a; slice: the first token. */
  a: number;
  /** concat: tokens of b; slice: the number of tokens. */
  b: number;
  /** slice: tokens of x (concat: unused). */
  T: number;
  D: number;
}

const trCase = (B: number, a: number, b: number, T: number, D: number) => ({
  name: `B${B} ${a}+${b}${T ? ` of ${T}` : ""} D${D}`,
  params: { B, a, b, T, D },
});

/** concatTokens as an op unit (bench: class tokens before DeiT-S's patch tokens). */
export const concatTokensUnit: OpUnit<TokenRangeCase> = gatherUnit<TokenRangeCase>({
  name: "concat_tokens",
  description: "[B, Ta, D] ++ [B, Tb, D] → [B, Ta + Tb, D]",
  inputs: ["a", "b"],
  cases: [trCase(2, 1, 5, 0, 7), trCase(1, 1, 1, 0, 1), trCase(3, 2, 17, 0, 12)],
  benchShapes: [trCase(8, 20, 196, 0, 384)],
  inputShapes: (p) => ({ a: [p.B, p.a, p.D], b: [p.B, p.b, p.D] }),
  outShape: (p) => [p.B, p.a + p.b, p.D],
  map: (p) => concatTokensMap(p.B, p.a, p.b, p.D),
  forward: (gpu, _p, t) => concatTokens(gpu, t.a, t.b),
  backward: (gpu, p, _t, dy) => ({
    a: sliceTokens(gpu, dy, 0, p.a),
    b: sliceTokens(gpu, dy, p.a, p.b),
  }),
});

/** sliceTokens as an op unit. */
export const sliceTokensUnit: OpUnit<TokenRangeCase> = gatherUnit<TokenRangeCase>({
  name: "slice_tokens",
  description: "x[:, start:start+count] of tokens [B, T, D]",
  inputs: ["x"],
  cases: [trCase(2, 1, 3, 6, 5), trCase(1, 0, 1, 1, 1), trCase(3, 3, 14, 20, 11)],
  benchShapes: [trCase(8, 20, 196, 216, 384)],
  inputShapes: (p) => ({ x: [p.B, p.T, p.D] }),
  outShape: (p) => [p.B, p.b, p.D],
  map: (p) => sliceTokensMap(p.B, p.T, p.D, p.a, p.b),
  forward: (gpu, p, t) => sliceTokens(gpu, t.x, p.a, p.b),
  backward: (gpu, p, _t, dy) => ({ x: sliceTokensBackward(gpu, dy, p.T, p.a) }),
});

/** Parameters of an {@link expandBatchUnit} case: p [1, T, D] expanded to B. */
export interface ExpandCase {
  B: number;
  T: number;
  D: number;
}

/** expandBatch as an op unit (backward: the sum over the batch). */
export const expandBatchUnit: OpUnit<ExpandCase> = gatherUnit<ExpandCase>({
  name: "expand_batch",
  description: "p [1, T, D] → [B, T, D] (backward sums over B)",
  inputs: ["p"],
  cases: [
    { name: "3x2x5", params: { B: 3, T: 2, D: 5 } },
    { name: "1x1x1", params: { B: 1, T: 1, D: 1 } },
    { name: "4x30x17", params: { B: 4, T: 30, D: 17 } },
  ],
  benchShapes: [{ name: "8x197x384", params: { B: 8, T: 197, D: 384 } }],
  inputShapes: (p) => ({ p: [1, p.T, p.D] }),
  outShape: (p) => [p.B, p.T, p.D],
  map: (p) => expandBatchMap(p.B, p.T * p.D),
  forward: (gpu, p, t) => expandBatch(gpu, t.p, p.B),
  backward: (gpu, _p, _t, dy) => ({ p: expandBatchBackward(gpu, dy) }),
});

/** Parameters of a {@link patchifyUnit} case: image [B, C, H, W], patch p. */
export interface PatchifyCase {
  shape: readonly number[];
  patch: number;
}

const pfCase = (shape: number[], patch: number): OpCase<PatchifyCase> => ({
  name: `${shapeName(shape)} p${patch}`,
  params: { shape, patch },
});

/** patchify as an op unit (bench: DeiT-S's 16x16 patches of 224x224 images). */
export const patchifyUnit: OpUnit<PatchifyCase> = gatherUnit<PatchifyCase>({
  name: "patchify",
  description: "image [B, C, H, W] → patch tokens [B, (H/p)(W/p), C·p·p] (Conv2d weight order)",
  inputs: ["x"],
  cases: [
    pfCase([2, 3, 4, 6], 2),
    pfCase([1, 1, 3, 3], 1),
    pfCase([1, 3, 5, 5], 5),
    pfCase([1, 2, 8, 12], 4),
    pfCase([2, 3, 12, 16], 4),
  ],
  benchShapes: [pfCase([8, 3, 224, 224], 16)],
  inputShapes: (p) => ({ x: [...p.shape] }),
  outShape: ({ shape: [B, C, H, W], patch: q }) => [B, (H / q) * (W / q), C * q * q],
  map: (p) => patchifyMap(p.shape, p.patch),
  forward: (gpu, p, t) => patchify(gpu, t.x, p.patch),
  backward: (gpu, p, _t, dy) => ({ x: unpatchify(gpu, dy, p.shape, p.patch) }),
});

/** Every unit of this file. */
export const tokenUnits = [
  permute0213Unit,
  tokensToMapUnit,
  concatTokensUnit,
  sliceTokensUnit,
  expandBatchUnit,
  patchifyUnit,
] as const;
