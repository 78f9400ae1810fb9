/**
 * 2-D convolution (groups = 1) as implicit GEMM: forward, input gradient, weight gradient and
 * bias gradient (the Conv2d module is in src/models/modules.ts). Layout NCHW, weights [O, I, KH, KW] (PyTorch).
 *
 * Kernels (shaders/conv2d.wgsl):
 * - forward: register blocks of RO output channels x PY rows x PX columns per invocation; the
 *   input window of a block is loaded once per input channel and reused by every tap that reads
 *   it, weights are permuted once per call so that four output channels are one vec4 load;
 * - input gradient: the same kernel over dY with flipped, transposed weights, once per stride
 *   phase (for stride s, input pixels with the same (y mod s, x mod s) see a fixed subset of
 *   taps, so no multiply-add is wasted on the zeros of a strided transpose);
 * - weight gradient: each invocation accumulates RO x RC channel pairs x all taps over a
 *   split of the output rows, then the splits are summed.
 * 1x1 stride-1 unpadded convolutions run as matmuls (see ./matmul.ts). The naive
 * one-output-per-invocation kernels are the benchmark references (`variant: "naive"`).
 *
 * Block sizes depend on the adapter: large blocks on CPU adapters (llvmpipe: loads are the
 * bottleneck, registers spill cheaply), small ones on GPUs (see {@link convStyle}).
 * Work that exceeds `gpu.maxBindingBytes` is split over images, output channels and input
 * channels (partial sums accumulated) inside each op.
 * @module
 */
import type { BufferRange, GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { bindingWindow, spans, windowCapacity, windowFits } from "../gpu/split.ts";
import { Tensor } from "../gpu/tensor.ts";
import { gemm, isCpuAdapter } from "./matmul.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  type RecordedOp,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** A number for both spatial dimensions, or [y, x]. */
export type Pair = number | readonly [number, number];

/** Geometry of a convolution (PyTorch's Conv2d arguments). */
export interface Conv2dOptions {
  /** Default 1. */
  stride?: Pair;
  /** Zero padding on each side, default 0. */
  padding?: Pair;
  /** Default 1. */
  dilation?: Pair;
  /** `rb` (register-blocked implicit GEMM, default) or `naive` (the reference kernels). */
  variant?: ConvVariant;
  /** Block sizes override (benchmarks / tests); default from {@link pickConvBlock}. */
  block?: Partial<ConvBlock>;
  /** Route 1x1 stride-1 unpadded convolutions through matmul (default true). */
  matmul1x1?: boolean;
}

/** Conv kernels: register-blocked implicit GEMM or the naive reference. */
export type ConvVariant = "rb" | "naive";

/** Register block of the forward / input-gradient kernel. */
export interface ConvBlock {
  /** Output channels per invocation (multiple of 4). */
  ro: number;
  /** Output rows per invocation. */
  py: number;
  /** Output columns per invocation. */
  px: number;
}

/** Register block of the weight-gradient kernel. */
export interface WgradBlock {
  /** Output channels per invocation. */
  ro: number;
  /** Input channels per invocation. */
  rc: number;
  /** Kernel rows per invocation (KH or 1). */
  kht: number;
  /** Output columns per inner step. */
  px: number;
}

interface Geom {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  kh: number;
  kw: number;
  sy: number;
  sx: number;
  py: number;
  px: number;
  dy: number;
  dx: number;
  oh: number;
  ow: number;
}

/** A kernel/stride/padding/dilation argument as [y, x], validated (padding may be 0). */
export const convPair = (v: Pair | undefined, dflt: number, what: string): [number, number] => {
  const p: [number, number] = v === undefined
    ? [dflt, dflt]
    : typeof v === "number"
    ? [v, v]
    : [v[0], v[1]];
  for (const x of p) {
    if (!Number.isInteger(x) || x < (what === "padding" ? 0 : 1)) {
      throw new RangeError(`conv2d: bad ${what} ${JSON.stringify(v)}`);
    }
  }
  return p;
};

/** Output size of a convolution along one dimension (PyTorch's formula). */
export function convOutSize(
  size: number,
  k: number,
  stride: number,
  pad: number,
  dil: number,
): number {
  return Math.floor((size + 2 * pad - dil * (k - 1) - 1) / stride) + 1;
}

function geometry(
  op: string,
  xShape: readonly number[],
  wShape: readonly number[],
  o: Conv2dOptions,
): Geom {
  if (xShape.length !== 4) throw new RangeError(`${op}: input must be NCHW, got [${xShape}]`);
  if (wShape.length !== 4) {
    throw new RangeError(`${op}: weight must be [O, I, KH, KW], got [${wShape}]`);
  }
  const [n, c, h, w] = xShape;
  const [oc, ic, kh, kw] = wShape;
  if (ic !== c) {
    throw new RangeError(
      `${op}: input has ${c} channels but the weight expects ${ic} ([${wShape}])`,
    );
  }
  const [sy, sx] = convPair(o.stride, 1, "stride");
  const [py, px] = convPair(o.padding, 0, "padding");
  const [dy, dx] = convPair(o.dilation, 1, "dilation");
  const oh = convOutSize(h, kh, sy, py, dy);
  const ow = convOutSize(w, kw, sx, px, dx);
  if (oh < 1 || ow < 1 || kh < 1 || kw < 1) {
    throw new RangeError(
      `${op}: kernel ${kh}x${kw} (dilation ${dy}x${dx}) does not fit input ${h}x${w} with ` +
        `padding ${py}x${px}`,
    );
  }
  return { n, c, h, w, o: oc, kh, kw, sy, sx, py, px, dy, dx, oh, ow };
}

// ---------------------------------------------------------------------------------------------
// Adapter style and block choice.

/** `cpu`: large register blocks (llvmpipe & co.); `gpu`: small blocks (real GPUs). */
export type ConvStyle = "cpu" | "gpu";

const styleOverride = new WeakMap<GpuContext, ConvStyle>();

/**
 * The block style for this adapter: `cpu` on CPU adapters (see `isCpuAdapter`), `gpu`
 * otherwise, unless set with {@link setConvStyle}.
 */
export function convStyle(gpu: GpuContext): ConvStyle {
  return styleOverride.get(gpu) ?? (isCpuAdapter(gpu) ? "cpu" : "gpu");
}

/** Forces the block style for this context (`null`: follow the adapter). */
export function setConvStyle(gpu: GpuContext, style: ConvStyle | null): void {
  if (style === null) styleOverride.delete(gpu);
  else styleOverride.set(gpu, style);
}

/** Columns per block: the size in [lo, hi] with the least padding waste (larger on ties). */
function pickWidth(ow: number, lo: number, hi: number): number {
  if (ow <= hi) return Math.max(1, ow);
  let best = hi;
  let bestWaste = Infinity;
  for (let px = hi; px >= lo; px--) {
    const waste = Math.ceil(ow / px) * px - ow;
    if (waste < bestWaste) {
      best = px;
      bestWaste = waste;
    }
  }
  return best;
}

/** The forward / input-gradient block for an output of r channels and oh x ow pixels. */
export function pickConvBlock(
  style: ConvStyle,
  r: number,
  oh: number,
  ow: number,
  n = 1,
): ConvBlock {
  if (style === "gpu") return { ro: 4, py: 1, px: pickWidth(ow, 2, 4) };
  // Measured on llvmpipe (ResNet-50 shapes): 8 channels x 2 rows x 8-16 columns.
  const ro = r <= 4 ? 4 : 8;
  const px = pickWidth(ow, 8, 16);
  let py = oh > 1 ? 2 : 1;
  const blocks = (p: number) => Math.ceil(oh / p) * Math.ceil(ow / px) * Math.ceil(r / ro) * n;
  if (py > 1 && blocks(py) < 32) py = 1;
  return { ro, py, px };
}

/** The weight-gradient block. */
export function pickWgradBlock(
  style: ConvStyle,
  o: number,
  c: number,
  kh: number,
  kw: number,
): WgradBlock {
  const small = kh * kw <= 9;
  const kht = small ? kh : 1;
  if (style === "gpu") return { ro: 2, rc: 2, kht, px: 4 };
  // Measured on llvmpipe (ResNet-50 shapes): 16 x 4 channel pairs x 3x3 taps with 2 columns
  // per step; for 7x7 one kernel row per invocation, 8 output channels, 8 columns.
  const ro = o <= 4 ? 4 : o <= 8 || !small ? 8 : 16;
  let rc = Math.min(c, 4);
  while (rc > 1 && ro * rc * kht * kw > 576) rc--;
  return { ro, rc, kht, px: small ? 2 : 8 };
}

// ---------------------------------------------------------------------------------------------
// Code generation.

const XYZW = ["x", "y", "z", "w"];
const WG_FWD: Record<ConvStyle, [number, number]> = { cpu: [8, 1], gpu: [16, 4] };
const WG_WGRAD: Record<ConvStyle, number> = { cpu: 8, gpu: 64 };

interface KernelGeom {
  kh: number;
  kw: number;
  sy: number;
  sx: number;
  dy: number;
  dx: number;
}

const uniq = (xs: number[]) => [...new Set(xs)].sort((a, b) => a - b);
const ind = (lines: string[], n: number) => lines.map((l) => " ".repeat(n) + l).join("\n");

function baseDefines(wVec: boolean): Record<string, string | number> {
  return {
    W_T: wVec ? "vec4f" : "f32",
    W_LOAD1: wVec ? "return Wt[i >> 2u][i & 3u];" : "return Wt[i];",
  };
}

/** Placeholder values for kernels other than the one being generated. */
const EMPTY_FWD = { RO: 4, PY: 1, PX: 1, TAPS: 1, SETUP: "", BODY: "", STORE: "" };
const EMPTY_WGRAD = { RC: 1, KHT: 1, WSETUP: "", WROWS: "", WBODY: "", WSTORE: "" };

/** The `{{...}}` values of the forward kernel for a block and (sub-)kernel geometry. */
export function fwdDefines(
  b: ConvBlock,
  g: KernelGeom,
  wg: [number, number],
): Record<string, string | number> {
  if (b.ro % 4 !== 0) throw new RangeError(`conv block ro ${b.ro} is not a multiple of 4`);
  const setup: string[] = [];
  const body: string[] = [];
  const store: string[] = [];
  const cols = uniq(
    Array.from({ length: b.px * g.kw }, (_, i) => (i % b.px) * g.sx + Math.floor(i / b.px) * g.dx),
  );
  const taps = g.kh * g.kw;
  // All weights of an input channel stay in registers when they are few; otherwise loop ky.
  const rowsMode = taps * b.ro <= 160;
  setup.push(`let rp4 = p.Rp >> 2u;`);
  setup.push(`let ixb = i32(ox0 * ${g.sx}u) + p.offX;`);
  for (const l of cols) {
    setup.push(
      `let vx${l} = ixb + ${l} >= 0 && ixb + ${l} < i32(p.W); ` +
        `let ux${l} = u32(clamp(ixb + ${l}, 0, i32(p.W) - 1));`,
    );
  }
  setup.push(`let iyb = i32(oy0 * ${g.sy}u) + p.offY;`);
  const rows = uniq(
    Array.from({ length: b.py * g.kh }, (_, i) => (i % b.py) * g.sy + Math.floor(i / b.py) * g.dy),
  );
  if (rowsMode) {
    for (const r of rows) {
      setup.push(
        `let vy${r} = iyb + ${r} >= 0 && iyb + ${r} < i32(p.H); ` +
          `let uy${r} = u32(clamp(iyb + ${r}, 0, i32(p.H) - 1)) * p.W;`,
      );
    }
  }
  for (let o = 0; o < b.ro; o++) {
    for (let y = 0; y < b.py; y++) {
      setup.push(Array.from({ length: b.px }, (_, x) => `var a${o}_${y}_${x} = 0.0;`).join(" "));
    }
  }
  const fmas = (y: number, wName: (kx: number, g4: number) => string) => {
    for (let kx = 0; kx < g.kw; kx++) {
      for (let x = 0; x < b.px; x++) {
        const l = x * g.sx + kx * g.dx;
        const line: string[] = [];
        for (let o = 0; o < b.ro; o++) {
          line.push(
            `a${o}_${y}_${x} = fma(${wName(kx, o >> 2)}.${XYZW[o & 3]}, x${l}, a${o}_${y}_${x});`,
          );
        }
        body.push("  " + line.join(" "));
      }
    }
  };
  if (taps > 0 && rowsMode) {
    for (let ky = 0; ky < g.kh; ky++) {
      for (let kx = 0; kx < g.kw; kx++) {
        body.push(
          Array.from(
            { length: b.ro / 4 },
            (_, q) => `let w${ky}_${kx}_${q} = Wt[wq + ${ky * g.kw + kx}u * rp4 + ${q}u];`,
          ).join(" "),
        );
      }
    }
    for (const r of rows) {
      body.push(`{`);
      for (const l of cols) {
        body.push(`  let x${l} = select(0.0, X[xq + uy${r} + ux${l}], vy${r} && vx${l});`);
      }
      for (let y = 0; y < b.py; y++) {
        for (let ky = 0; ky < g.kh; ky++) {
          if (y * g.sy + ky * g.dy === r) fmas(y, (kx, q) => `w${ky}_${kx}_${q}`);
        }
      }
      body.push(`}`);
    }
  } else if (taps > 0) {
    body.push(`for (var ky = 0u; ky < ${g.kh}u; ky++) {`);
    for (let kx = 0; kx < g.kw; kx++) {
      body.push(
        "  " + Array.from(
          { length: b.ro / 4 },
          (_, q) => `let w${kx}_${q} = Wt[wq + (ky * ${g.kw}u + ${kx}u) * rp4 + ${q}u];`,
        ).join(" "),
      );
    }
    for (let y = 0; y < b.py; y++) {
      body.push(`  {`);
      body.push(`    let iy = iyb + ${y * g.sy} + i32(ky * ${g.dy}u);`);
      body.push(`    let vy = iy >= 0 && iy < i32(p.H);`);
      body.push(`    let uy = u32(clamp(iy, 0, i32(p.H) - 1)) * p.W;`);
      for (const l of cols) {
        body.push(`    let x${l} = select(0.0, X[xq + uy + ux${l}], vy && vx${l});`);
      }
      const at = body.length;
      fmas(y, (kx, q) => `w${kx}_${q}`);
      for (let i = at; i < body.length; i++) body[i] = "  " + body[i];
      body.push(`  }`);
    }
    body.push(`}`);
  }
  for (let o = 0; o < b.ro; o++) {
    store.push(`if (r0 + ${o}u < p.R) {`);
    store.push(`  let bo = biasOf(r0 + ${o}u);`);
    store.push(`  let yo = yB + (r0 + ${o}u) * p.ysC;`);
    for (let y = 0; y < b.py; y++) {
      store.push(`  if (oy0 + ${y}u < p.OH) {`);
      store.push(`    let yr = yo + (oy0 + ${y}u) * p.ysY;`);
      for (let x = 0; x < b.px; x++) {
        store.push(
          `    if (ox0 + ${x}u < p.OW) { put(yr + (ox0 + ${x}u) * p.ysX, a${o}_${y}_${x} + bo); }`,
        );
      }
      store.push(`  }`);
    }
    store.push(`}`);
  }
  return {
    ...baseDefines(true),
    ...EMPTY_WGRAD,
    WG_X: wg[0],
    WG_Y: wg[1],
    RO: b.ro,
    PY: b.py,
    PX: b.px,
    TAPS: taps,
    SETUP: ind(setup, 2),
    BODY: ind(body, 4),
    STORE: ind(store, 2),
  };
}

/** The `{{...}}` values of the weight-gradient kernel. */
export function wgradDefines(
  b: WgradBlock,
  g: KernelGeom,
  wgx: number,
): Record<string, string | number> {
  const setup: string[] = [];
  const rowsCode: string[] = [];
  const body: string[] = [];
  const store: string[] = [];
  const cols = uniq(
    Array.from({ length: b.px * g.kw }, (_, i) => (i % b.px) * g.sx + Math.floor(i / b.px) * g.dx),
  );
  for (let o = 0; o < b.ro; o++) setup.push(`let oc${o} = min(o0 + ${o}u, p.R - 1u);`);
  for (let c = 0; c < b.rc; c++) setup.push(`let cc${c} = min(c0 + ${c}u, p.C - 1u);`);
  for (let o = 0; o < b.ro; o++) {
    for (let c = 0; c < b.rc; c++) {
      for (let ky = 0; ky < b.kht; ky++) {
        setup.push(
          Array.from({ length: g.kw }, (_, kx) => `var g${o}_${c}_${ky}_${kx} = 0.0;`).join(" "),
        );
      }
    }
  }
  for (let ky = 0; ky < b.kht; ky++) {
    rowsCode.push(`let iy${ky} = i32(oy * ${g.sy}u + (ky0 + ${ky}u) * ${g.dy}u) + p.offY;`);
    rowsCode.push(`let vy${ky} = iy${ky} >= 0 && iy${ky} < i32(p.H);`);
    rowsCode.push(`let uy${ky} = u32(clamp(iy${ky}, 0, i32(p.H) - 1)) * p.W;`);
  }
  for (let o = 0; o < b.ro; o++) rowsCode.push(`let d${o} = dB + oc${o} * p.asC;`);
  for (let c = 0; c < b.rc; c++) rowsCode.push(`let xc${c} = xB + cc${c} * plane;`);
  body.push(`let ixb = i32(ox0 * ${g.sx}u) + p.offX;`);
  for (const l of cols) {
    body.push(
      `let vx${l} = ixb + ${l} >= 0 && ixb + ${l} < i32(p.W); ` +
        `let ux${l} = u32(clamp(ixb + ${l}, 0, i32(p.W) - 1));`,
    );
  }
  for (let x = 0; x < b.px; x++) {
    body.push(`let vp${x} = ox0 + ${x}u < p.OW; let up${x} = min(ox0 + ${x}u, p.OW - 1u);`);
  }
  for (let o = 0; o < b.ro; o++) {
    body.push(
      Array.from(
        { length: b.px },
        (_, x) => `let e${o}_${x} = select(0.0, Aux[d${o} + up${x}], vp${x});`,
      ).join(" "),
    );
  }
  for (let c = 0; c < b.rc; c++) {
    for (let ky = 0; ky < b.kht; ky++) {
      body.push(`{`);
      for (const l of cols) {
        body.push(`  let x${l} = select(0.0, X[xc${c} + uy${ky} + ux${l}], vy${ky} && vx${l});`);
      }
      // Consecutive statements update different accumulators (no dependency chains).
      for (let x = 0; x < b.px; x++) {
        for (let kx = 0; kx < g.kw; kx++) {
          const xv = `x${x * g.sx + kx * g.dx}`;
          body.push(
            "  " + Array.from(
              { length: b.ro },
              (_, o) => `g${o}_${c}_${ky}_${kx} = fma(e${o}_${x}, ${xv}, g${o}_${c}_${ky}_${kx});`,
            ).join(" "),
          );
        }
      }
      body.push(`}`);
    }
  }
  store.push(`let sB = p.yOff + split * p.R * p.C * p.KH * p.KW;`);
  for (let o = 0; o < b.ro; o++) {
    for (let c = 0; c < b.rc; c++) {
      store.push(`if (o0 + ${o}u < p.R && c0 + ${c}u < p.C) {`);
      store.push(`  let t = ((o0 + ${o}u) * p.C + c0 + ${c}u) * p.KH + ky0;`);
      for (let ky = 0; ky < b.kht; ky++) {
        store.push(
          "  " + Array.from(
            { length: g.kw },
            (_, kx) => `Y[sB + (t + ${ky}u) * p.KW + ${kx}u] = g${o}_${c}_${ky}_${kx};`,
          ).join(" "),
        );
      }
      store.push(`}`);
    }
  }
  return {
    ...baseDefines(false),
    ...EMPTY_FWD,
    WG_X: wgx,
    WG_Y: 1,
    RO: b.ro,
    RC: b.rc,
    KHT: b.kht,
    PX: b.px,
    WSETUP: ind(setup, 2),
    WROWS: ind(rowsCode, 4),
    WBODY: ind(body, 6),
    WSTORE: ind(store, 2),
  };
}

const defineCache = new Map<string, Record<string, string | number>>();
function cached(key: string, make: () => Record<string, string | number>) {
  let d = defineCache.get(key);
  if (!d) {
    d = make();
    defineCache.set(key, d);
  }
  return d;
}

/** Defines for the plain kernels (permute, reduce, bias, naive). */
function plainDefines(): Record<string, string | number> {
  return cached("plain", () => ({
    ...baseDefines(false),
    ...EMPTY_FWD,
    ...EMPTY_WGRAD,
    WG_X: 8,
    WG_Y: 1,
  }));
}

// ---------------------------------------------------------------------------------------------
// Parameter block of shaders/conv2d.wgsl, shared by all its kernels (each reads a subset and
// packs with `packPartial`: the fields it does not read are 0).

const { ConvParams } = declareParams("conv2d", {
  ConvParams: {
    // Input of the kernel: batch, channels, rows, columns; planes are contiguous (H·W).
    N: "u32",
    C: "u32",
    H: "u32",
    W: "u32",
    // Output channels, output grid rows / columns, weight row length (padded channel count).
    R: "u32",
    OH: "u32",
    OW: "u32",
    Rp: "u32",
    // Input position of output (y, x) and tap (ky, kx): (y·S + offY + ky·D, x·S + offX + kx·D).
    offY: "i32",
    offX: "i32",
    // Column blocks per row (fwd) / output-channel blocks (wgrad); row blocks (fwd) / channel
    // blocks (wgrad).
    nbx: "u32",
    nby: "u32",
    // Element offsets inside the bindings and strides.
    xOff: "u32",
    xsN: "u32",
    wOff: "u32",
    aOff: "u32",
    yOff: "u32",
    ysN: "u32",
    ysC: "u32",
    ysY: "u32",
    ysX: "u32",
    // bit 0: accumulate into the output; bit 1: add bias (fwd).
    flags: "u32",
    // wgrad: output rows (n, y) per split; naive kernels: kernel height / width, stride,
    // dilation.
    rowsPerSplit: "u32",
    splits: "u32",
    KH: "u32",
    KW: "u32",
    S: "u32",
    D: "u32",
    // Second input (dY of wgrad / naive_wgrad / naive_dgrad): batch and channel strides.
    asN: "u32",
    asC: "u32",
    // permute: tap index map ky = kyA + t·kyB (and x alike), whether o is the row index.
    kyA: "i32",
    kyB: "i32",
    kxA: "i32",
    kxB: "i32",
    oMajor: "u32",
    count: "u32",
  },
});

const FLAG_ACC = 1;
const FLAG_BIAS = 2;

// ---------------------------------------------------------------------------------------------
// Split plans: each op below halves images / channels until every binding window fits
// (windows and spans from the shared splitter, src/gpu/split.ts).

// ---------------------------------------------------------------------------------------------
// The generic blocked pass (forward and input-gradient phases).

interface BlockedPass {
  name: string;
  style: ConvStyle;
  block: ConvBlock;
  kg: KernelGeom;
  /** Input of the kernel: [N, Q, H, W] at buffer offset 0. */
  x: Tensor;
  q: number;
  h: number;
  w: number;
  n: number;
  /** Permuted weights [Q, taps, Rp]. */
  wt: Tensor;
  rp: number;
  r: number;
  oh: number;
  ow: number;
  offY: number;
  offX: number;
  /** Output addressing (elements): base + n·ysN + r·ysC + y·ysY + x·ysX. */
  out: Tensor;
  yBase: number;
  ysN: number;
  ysC: number;
  ysY: number;
  ysX: number;
  bias: Tensor | null;
  accumulate: boolean;
}

function runBlocked(gpu: GpuContext, s: BlockedPass): void {
  const taps = s.kg.kh * s.kg.kw;
  const plane = s.h * s.w;
  const lastPix = (s.oh - 1) * s.ysY + (s.ow - 1) * s.ysX + 1;
  // Chunk sizes: images, output channels (multiples of the block), input channels.
  let cn = s.n;
  let cr = Math.ceil(s.r / s.block.ro) * s.block.ro;
  let cq = s.q;
  const ext = () => ({
    x: (cn - 1) * s.q * plane + cq * plane,
    w: cq * taps * s.rp,
    y: (cn - 1) * s.ysN + (Math.min(cr, s.r) - 1) * s.ysC + lastPix,
  });
  for (let i = 0; i < 200; i++) {
    const e = ext();
    if (windowFits(gpu, e.x) && windowFits(gpu, e.w) && windowFits(gpu, e.y)) break;
    if (cn > 1) cn = Math.ceil(cn / 2);
    else if (!windowFits(gpu, e.y) && cr > 4) {
      // Down to 4 channels (vec4 weight alignment), below the block size if need be.
      cr = cr > s.block.ro ? Math.ceil(cr / 2 / s.block.ro) * s.block.ro : Math.max(4, cr >> 1);
    } else if ((!windowFits(gpu, e.x) || !windowFits(gpu, e.w)) && cq > 1) cq = Math.ceil(cq / 2);
    else {
      throw new RangeError(
        `${s.name}: one image plane block does not fit maxBindingBytes ${gpu.maxBindingBytes}`,
      );
    }
  }
  const zmax = gpu.limits.maxComputeWorkgroupsPerDimension;
  cn = Math.min(cn, zmax);
  const wg = WG_FWD[s.style];
  const defines = cached(
    `fwd/${s.style}/${JSON.stringify(s.block)}/${JSON.stringify(s.kg)}`,
    () => fwdDefines(s.block, s.kg, wg),
  );
  const nbx = Math.ceil(s.ow / s.block.px);
  const nby = Math.ceil(s.oh / s.block.py);
  if (Math.ceil((nbx * nby) / wg[0]) > zmax) {
    throw new RangeError(`${s.name}: output of ${s.oh}x${s.ow} has too many blocks`);
  }
  for (const [n0, nn] of spans(s.n, cn)) {
    for (const [r0, nr] of spans(s.r, cr)) {
      for (const [q0, nq] of spans(s.q, cq)) {
        const first = q0 === 0;
        const wx = bindingWindow(
          gpu,
          s.x.buffer,
          n0 * s.q * plane + q0 * plane,
          (nn - 1) * s.q * plane + nq * plane,
        );
        const ww = bindingWindow(gpu, s.wt.buffer, q0 * taps * s.rp, nq * taps * s.rp);
        const wy = bindingWindow(
          gpu,
          s.out.buffer,
          s.yBase + n0 * s.ysN + r0 * s.ysC,
          (nn - 1) * s.ysN + (nr - 1) * s.ysC + lastPix,
        );
        const bias = s.bias && first ? s.bias.binding() : gpu.dummy;
        gpu.dispatch({
          name: s.name,
          shader: "conv2d",
          entry: "fwd",
          defines,
          inputs: [wx.range, ww.range, bias],
          outputs: [wy.range],
          params: ConvParams.packPartial({
            N: nn,
            C: nq,
            H: s.h,
            W: s.w,
            R: nr,
            OH: s.oh,
            OW: s.ow,
            Rp: s.rp,
            offY: s.offY,
            offX: s.offX,
            nbx,
            nby,
            xOff: wx.shift,
            xsN: s.q * plane,
            wOff: ww.shift + r0,
            aOff: r0,
            yOff: wy.shift,
            ysN: s.ysN,
            ysC: s.ysC,
            ysY: s.ysY,
            ysX: s.ysX,
            flags: (s.accumulate || !first ? FLAG_ACC : 0) | (s.bias && first ? FLAG_BIAS : 0),
          }),
          workgroups: [Math.ceil((nbx * nby) / wg[0]), Math.ceil(nr / s.block.ro / wg[1]), nn],
        });
      }
    }
  }
}

/**
 * Records a weight permutation into `dst` ([Q, NTy, NTx, Rp], zero past R):
 * `dst[q, ty, tx, r] = w[o, c, kyA + ty·kyB, kxA + tx·kxB]` with (o, c) = (r, q) or (q, r).
 * Chunked over q and r when the tensors exceed the binding limit.
 */
function permuteWeights(
  gpu: GpuContext,
  w: Tensor,
  dst: Tensor,
  p: {
    q: number;
    r: number;
    rp: number;
    nty: number;
    ntx: number;
    kyA: number;
    kyB: number;
    kxA: number;
    kxB: number;
    oMajor: boolean;
  },
): void {
  const [, ci, kh, kw] = w.shape;
  const taps = p.nty * p.ntx;
  const wTaps = kh * kw;
  // Source element range of a chunk (indices grow with o and c).
  const srcRange = (q0: number, nq: number, r0: number, nr: number) => {
    const rEnd = Math.min(r0 + nr, p.r);
    if (rEnd <= r0) return null;
    const oc = (q: number, r: number) => (p.oMajor ? [q, r] : [r, q]);
    const [oLo, cLo] = oc(q0, r0);
    const [oHi, cHi] = oc(q0 + nq - 1, rEnd - 1);
    return { lo: (oLo * ci + cLo) * wTaps, hi: (oHi * ci + cHi) * wTaps + wTaps };
  };
  let nq = p.q;
  let nr = p.rp;
  for (let i = 0; i < 200; i++) {
    const src = srcRange(0, nq, 0, nr);
    const dstExt = ((nq - 1) * taps + taps - 1) * p.rp + nr;
    if (windowFits(gpu, dstExt) && (!src || windowFits(gpu, src.hi - src.lo))) break;
    if (nq > 1) nq = Math.ceil(nq / 2);
    else if (nr > 1) nr = Math.ceil(nr / 2);
    else throw new RangeError(`conv2d: weights of [${w.shape}] cannot be split to fit`);
  }
  for (const [q0, cq] of spans(p.q, nq)) {
    for (const [r0, cr] of spans(p.rp, nr)) {
      const src = srcRange(q0, cq, r0, cr);
      const dLo = q0 * taps * p.rp + r0;
      const wd = bindingWindow(gpu, dst.buffer, dLo, ((cq - 1) * taps + taps - 1) * p.rp + cr);
      const ws = src ? bindingWindow(gpu, w.buffer, src.lo, src.hi - src.lo) : null;
      const count = cq * taps * cr;
      gpu.dispatch1d({
        name: "conv2d.permute",
        shader: "conv2d",
        entry: "permute",
        defines: plainDefines(),
        inputs: [ws ? ws.range : gpu.dummy, gpu.dummy, gpu.dummy],
        outputs: [wd.range],
        params: ConvParams.packPartial({
          C: ci,
          R: p.r,
          Rp: p.rp,
          N: cr,
          nbx: q0,
          nby: r0,
          OH: p.nty,
          OW: p.ntx,
          KH: kh,
          KW: kw,
          kyA: p.kyA,
          kyB: p.kyB,
          kxA: p.kxA,
          kxB: p.kxB,
          oMajor: p.oMajor ? 1 : 0,
          // Wrapping u32 offsets: global index + offset = index inside the window.
          xOff: ws ? ws.shift - src!.lo : 0,
          yOff: wd.shift - dLo,
          count,
        }),
      }, count);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Public ops.

function isPointwise(g: Geom): boolean {
  return g.kh === 1 && g.kw === 1 && g.sy === 1 && g.sx === 1 && g.py === 0 && g.px === 0;
}

function checkTensor(op: string, what: string, t: Tensor, shape: readonly number[]) {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(`${op}: ${what} must be [${shape}], got [${t.shape}]`);
  }
}

/** Output options shared by the ops. */
export interface ConvOutOptions {
  /** Write into this tensor. */
  out?: Tensor;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * Forward convolution: x [N, I, H, W], w [O, I, KH, KW], bias [O] or null → [N, O, OH, OW].
 */
export function conv2d(
  gpu: GpuContext,
  x: Tensor,
  w: Tensor,
  bias: Tensor | null,
  opts: Conv2dOptions & ConvOutOptions = {},
): Tensor {
  const g = geometry("conv2d", x.shape, w.shape, opts);
  if (bias) checkTensor("conv2d", "bias", bias, [g.o]);
  const outShape = [g.n, g.o, g.oh, g.ow];
  const out = opts.out ?? Tensor.empty(gpu, outShape);
  checkTensor("conv2d", "out", out, outShape);
  if (out.buffer === x.buffer || out.buffer === w.buffer) {
    throw new RangeError("conv2d: out must not alias the input or the weight");
  }
  const acc = opts.accumulate ?? false;
  const variant = opts.variant ?? "rb";
  if (variant === "naive") {
    naive(gpu, "naive_fwd", g, {
      x,
      w,
      aux: bias,
      out,
      count: g.n * g.o * g.oh * g.ow,
      flags: (acc ? FLAG_ACC : 0) | (bias ? FLAG_BIAS : 0),
    });
    return out;
  }
  if (isPointwise(g) && (opts.matmul1x1 ?? true) && !opts.block) {
    const hw = g.h * g.w;
    gemm(gpu, {
      name: "conv2d.1x1",
      M: g.o,
      N: hw,
      K: g.c,
      batch: g.n,
      a: { buffer: w.buffer, off: 0, sB: 0, sM: g.c, sK: 1 },
      b: { buffer: x.buffer, off: 0, sB: g.c * hw, sK: hw, sN: 1 },
      c: { buffer: out.buffer, off: 0, sB: g.o * hw, sM: hw },
      accumulate: acc,
    });
    if (bias) biasAdd(gpu, out, bias);
    return out;
  }
  const style = convStyle(gpu);
  const block = {
    ...pickConvBlock(style, g.o, g.oh, g.ow, g.n),
    ...opts.block,
  };
  const rp = Math.ceil(g.o / block.ro) * block.ro;
  const wt = Tensor.empty(gpu, [g.c * g.kh * g.kw * rp]);
  permuteWeights(gpu, w, wt, {
    q: g.c,
    r: g.o,
    rp,
    nty: g.kh,
    ntx: g.kw,
    kyA: 0,
    kyB: 1,
    kxA: 0,
    kxB: 1,
    oMajor: false,
  });
  runBlocked(gpu, {
    name: "conv2d.fwd",
    style,
    block,
    kg: { kh: g.kh, kw: g.kw, sy: g.sy, sx: g.sx, dy: g.dy, dx: g.dx },
    x,
    q: g.c,
    h: g.h,
    w: g.w,
    n: g.n,
    wt,
    rp,
    r: g.o,
    oh: g.oh,
    ow: g.ow,
    offY: -g.py,
    offX: -g.px,
    out,
    yBase: 0,
    ysN: g.o * g.oh * g.ow,
    ysC: g.oh * g.ow,
    ysY: g.ow,
    ysX: 1,
    bias,
    accumulate: acc,
  });
  wt.dispose();
  return out;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

interface PhaseTaps {
  /** Number of taps. */
  nt: number;
  /** Step between taps in dY rows. */
  dt: number;
  /** dY row of output row 0, tap 0. */
  off: number;
  /** Kernel row of tap t: kA + t·kB. */
  kA: number;
  kB: number;
}

/** Taps of one stride phase along a dimension (see the module comment). */
function phaseTaps(r: number, k: number, s: number, pad: number, d: number): PhaseTaps | null {
  const valid: number[] = [];
  for (let t = 0; t < k; t++) if ((((r + pad - t * d) % s) + s) % s === 0) valid.push(t);
  if (valid.length === 0) return null;
  const step = s / gcd(s, d);
  const nt = valid.length;
  const k0 = valid[0];
  const dt = (step * d) / s;
  const e0 = (r + pad - k0 * d) / s;
  // Flipped tap t' = nt-1-t reads row y + off + t'·dt and uses kernel row kA + t'·kB.
  return { nt, dt, off: e0 - (nt - 1) * dt, kA: k0 + (nt - 1) * step, kB: -step };
}

/**
 * Input gradient: dy [N, O, OH, OW], w [O, I, KH, KW] → dx of `inputShape` [N, I, H, W].
 */
export function conv2dGradInput(
  gpu: GpuContext,
  dy: Tensor,
  w: Tensor,
  inputShape: readonly number[],
  opts: Conv2dOptions & ConvOutOptions = {},
): Tensor {
  const op = "conv2dGradInput";
  const g = geometry(op, inputShape, w.shape, opts);
  checkTensor(op, "dy", dy, [g.n, g.o, g.oh, g.ow]);
  const out = opts.out ?? Tensor.empty(gpu, inputShape);
  checkTensor(op, "out", out, inputShape);
  if (out.buffer === dy.buffer || out.buffer === w.buffer) {
    throw new RangeError(`${op}: out must not alias dy or the weight`);
  }
  const acc = opts.accumulate ?? false;
  const variant = opts.variant ?? "rb";
  if (variant === "naive") {
    naive(gpu, "naive_dgrad", g, {
      x: gpu.dummy,
      w,
      aux: dy,
      out,
      count: g.n * g.c * g.h * g.w,
      flags: acc ? FLAG_ACC : 0,
    });
    return out;
  }
  if (isPointwise(g) && (opts.matmul1x1 ?? true) && !opts.block) {
    const hw = g.h * g.w;
    gemm(gpu, {
      name: `${op}.1x1`,
      M: g.c,
      N: hw,
      K: g.o,
      batch: g.n,
      a: { buffer: w.buffer, off: 0, sB: 0, sM: 1, sK: g.c },
      b: { buffer: dy.buffer, off: 0, sB: g.o * hw, sK: hw, sN: 1 },
      c: { buffer: out.buffer, off: 0, sB: g.c * hw, sM: hw },
      accumulate: acc,
    });
    return out;
  }
  const style = convStyle(gpu);
  const phases: { ry: number; rx: number; ty: PhaseTaps; tx: PhaseTaps }[] = [];
  let empty = false;
  for (let ry = 0; ry < Math.min(g.sy, g.h); ry++) {
    for (let rx = 0; rx < Math.min(g.sx, g.w); rx++) {
      const ty = phaseTaps(ry, g.kh, g.sy, g.py, g.dy);
      const tx = phaseTaps(rx, g.kw, g.sx, g.px, g.dx);
      if (ty && tx) phases.push({ ry, rx, ty, tx });
      else empty = true;
    }
  }
  // Pixels that no tap reaches (e.g. odd pixels of a 1x1 stride-2 convolution) get zeros.
  if (empty && !acc) gpu.clear(out.buffer, 0, Math.ceil(out.bytes / 4) * 4);
  for (const ph of phases) {
    const oh = Math.ceil((g.h - ph.ry) / g.sy);
    const ow = Math.ceil((g.w - ph.rx) / g.sx);
    const block = {
      ...pickConvBlock(style, g.c, oh, ow, g.n),
      ...opts.block,
    };
    const rp = Math.ceil(g.c / block.ro) * block.ro;
    const wt = Tensor.empty(gpu, [g.o * ph.ty.nt * ph.tx.nt * rp]);
    permuteWeights(gpu, w, wt, {
      q: g.o,
      r: g.c,
      rp,
      nty: ph.ty.nt,
      ntx: ph.tx.nt,
      kyA: ph.ty.kA,
      kyB: ph.ty.kB,
      kxA: ph.tx.kA,
      kxB: ph.tx.kB,
      oMajor: true,
    });
    runBlocked(gpu, {
      name: `${op}.phase`,
      style,
      block,
      kg: { kh: ph.ty.nt, kw: ph.tx.nt, sy: 1, sx: 1, dy: ph.ty.dt, dx: ph.tx.dt },
      x: dy,
      q: g.o,
      h: g.oh,
      w: g.ow,
      n: g.n,
      wt,
      rp,
      r: g.c,
      oh,
      ow,
      offY: ph.ty.off,
      offX: ph.tx.off,
      out,
      yBase: ph.ry * g.w + ph.rx,
      ysN: g.c * g.h * g.w,
      ysC: g.h * g.w,
      ysY: g.sy * g.w,
      ysX: g.sx,
      bias: null,
      accumulate: acc,
    });
    wt.dispose();
  }
  return out;
}

/** Options of {@link conv2dGradWeight}. */
export interface GradWeightOptions extends Conv2dOptions, ConvOutOptions {
  /** Weight-gradient block override (benchmarks / tests). */
  wgradBlock?: Partial<WgradBlock>;
}

/**
 * Weight gradient: x [N, I, H, W], dy [N, O, OH, OW] → dW of `weightShape` [O, I, KH, KW].
 */
export function conv2dGradWeight(
  gpu: GpuContext,
  x: Tensor,
  dy: Tensor,
  weightShape: readonly number[],
  opts: GradWeightOptions = {},
): Tensor {
  const op = "conv2dGradWeight";
  const g = geometry(op, x.shape, weightShape, opts);
  checkTensor(op, "dy", dy, [g.n, g.o, g.oh, g.ow]);
  const out = opts.out ?? Tensor.empty(gpu, weightShape);
  checkTensor(op, "out", out, weightShape);
  if (out.buffer === x.buffer || out.buffer === dy.buffer) {
    throw new RangeError(`${op}: out must not alias x or dy`);
  }
  const acc = opts.accumulate ?? false;
  if ((opts.variant ?? "rb") === "naive") {
    naive(gpu, "naive_wgrad", g, {
      x,
      w: gpu.dummy,
      aux: dy,
      out,
      count: out.size,
      flags: acc ? FLAG_ACC : 0,
    });
    return out;
  }
  const style = convStyle(gpu);
  if (isPointwise(g) && (opts.matmul1x1 ?? true) && !opts.wgradBlock && style === "cpu") {
    // dW (O x C) = sum_n dY[n] (O x HW) · X[n]ᵀ (HW x C): each image's product summed over its
    // pixels, then added into dW image after image (a fixed order): gemm's `sum`, which adds
    // small images' products in one dispatch and gives larger ones a dispatch each (the same
    // bits either way), X[n]ᵀ read in place (on GPUs the split wgrad kernel exposes more
    // parallelism than these small GEMMs).
    const hw = g.h * g.w;
    gemm(gpu, {
      name: `${op}.1x1`,
      M: g.o,
      N: g.c,
      K: hw,
      batch: 1,
      a: { buffer: dy.buffer, off: 0, sB: 0, sM: hw, sK: 1 },
      b: { buffer: x.buffer, off: 0, sB: 0, sK: 1, sN: hw },
      c: { buffer: out.buffer, off: 0, sB: 0, sM: g.c },
      sum: { count: g.n, a: g.o * hw, b: g.c * hw },
      accumulate: acc,
    });
    return out;
  }
  const b: WgradBlock = {
    ...pickWgradBlock(style, g.o, g.c, g.kh, g.kw),
    ...opts.wgradBlock,
  };
  if (g.kh % b.kht !== 0) throw new RangeError(`${op}: kht ${b.kht} does not divide ${g.kh}`);
  const taps = g.kh * g.kw;
  const xPlane = g.h * g.w;
  const dPlane = g.oh * g.ow;
  const xImg = g.c * xPlane;
  const dImg = g.o * dPlane;
  // Chunks: images (partial sums accumulated), output and input channels (dW sub-blocks).
  let cn = g.n;
  let co = g.o;
  let cc = g.c;
  for (let i = 0;; i++) {
    const xs = (cn - 1) * xImg + cc * xPlane;
    const ds = (cn - 1) * dImg + co * dPlane;
    const ws = (co - 1) * g.c * taps + cc * taps;
    if (
      windowFits(gpu, xs) && windowFits(gpu, ds) && windowFits(gpu, ws) &&
      windowFits(gpu, co * cc * taps)
    ) break;
    if (i > 200) throw new RangeError(`${op}: cannot split to fit maxBindingBytes`);
    if (cn > 1 && (!windowFits(gpu, xs) || !windowFits(gpu, ds))) cn = Math.ceil(cn / 2);
    else if (co > 1 && (!windowFits(gpu, ds) || !windowFits(gpu, ws) || cc === 1)) {
      co = Math.ceil(co / 2);
    } else if (cc > 1) cc = Math.ceil(cc / 2);
    else {throw new RangeError(
        `${op}: one image plane exceeds maxBindingBytes ${gpu.maxBindingBytes}`,
      );}
  }
  const wgx = WG_WGRAD[style];
  const kg = { kh: g.kh, kw: g.kw, sy: g.sy, sx: g.sx, dy: g.dy, dx: g.dx };
  const defines = cached(
    `wgrad/${style}/${JSON.stringify(b)}/${JSON.stringify(kg)}`,
    () => wgradDefines(b, kg, wgx),
  );
  const tapBlocks = g.kh / b.kht;
  for (const [o0, no] of spans(g.o, co)) {
    for (const [c0, nc] of spans(g.c, cc)) {
      const count = no * nc * taps;
      const nob = Math.ceil(no / b.ro);
      const ncb = Math.ceil(nc / b.rc);
      const perSplit = nob * ncb * tapBlocks;
      const maxSplits = Math.max(1, Math.floor(windowCapacity(gpu) / count));
      const want = Math.ceil((style === "cpu" ? 256 : 4096) / perSplit);
      const splits = Math.max(1, Math.min(want, maxSplits, cn * g.oh));
      const part = Tensor.empty(gpu, [splits * count]);
      const wdw = bindingWindow(
        gpu,
        out.buffer,
        (o0 * g.c + c0) * taps,
        (no - 1) * g.c * taps + nc * taps,
      );
      for (const [n0, nn] of spans(g.n, cn)) {
        const rows = nn * g.oh;
        const rowsPerSplit = Math.ceil(rows / Math.min(splits, rows));
        const used = Math.ceil(rows / rowsPerSplit);
        const wx = bindingWindow(
          gpu,
          x.buffer,
          n0 * xImg + c0 * xPlane,
          (nn - 1) * xImg + nc * xPlane,
        );
        const wd = bindingWindow(
          gpu,
          dy.buffer,
          n0 * dImg + o0 * dPlane,
          (nn - 1) * dImg + no * dPlane,
        );
        gpu.dispatch({
          name: `${op}.partial`,
          shader: "conv2d",
          entry: "wgrad",
          defines,
          inputs: [wx.range, gpu.dummy, wd.range],
          outputs: [part.slice(0, used * count)],
          params: ConvParams.packPartial({
            N: nn,
            C: nc,
            H: g.h,
            W: g.w,
            R: no,
            OH: g.oh,
            OW: g.ow,
            offY: -g.py,
            offX: -g.px,
            nbx: nob,
            nby: ncb,
            xOff: wx.shift,
            xsN: xImg,
            aOff: wd.shift,
            asN: dImg,
            asC: dPlane,
            yOff: 0,
            rowsPerSplit,
            splits: used,
            KH: g.kh,
            KW: g.kw,
          }),
          workgroups: [Math.ceil(perSplit / tapBlocks / wgx), used, tapBlocks],
        });
        gpu.dispatch1d({
          name: `${op}.reduce`,
          shader: "conv2d",
          entry: "reduce",
          defines: plainDefines(),
          inputs: [part.slice(0, used * count), gpu.dummy, gpu.dummy],
          outputs: [wdw.range],
          params: ConvParams.packPartial({
            splits: used,
            count,
            W: nc * taps,
            xsN: g.c * taps,
            yOff: wdw.shift,
            flags: acc || n0 > 0 ? FLAG_ACC : 0,
          }),
        }, count);
      }
      part.dispose();
    }
  }
  return out;
}

/** Image and channel chunks of an [n, o, plane] tensor whose bindings must fit the limit. */
function channelChunks(gpu: GpuContext, op: string, n: number, o: number, plane: number) {
  let cn = n;
  let co = o;
  while (!windowFits(gpu, (cn - 1) * o * plane + co * plane)) {
    if (cn > 1) cn = Math.ceil(cn / 2);
    else if (co > 1) co = Math.ceil(co / 2);
    else throw new RangeError(`${op}: one plane exceeds maxBindingBytes ${gpu.maxBindingBytes}`);
  }
  return { cn, co };
}

/** Loop iterations one bias-gradient invocation may run (under llvmpipe's 65,535). */
const BIAS_GRAD_LOOP_BUDGET = 60000;

/** Bias gradient: dy [N, O, OH, OW] → [O] (sum over images and pixels). */
export function conv2dGradBias(gpu: GpuContext, dy: Tensor, opts: ConvOutOptions = {}): Tensor {
  const op = "conv2dGradBias";
  if (dy.shape.length !== 4) throw new RangeError(`${op}: dy must be NCHW, got [${dy.shape}]`);
  const [n, o, h, w] = dy.shape;
  const out = opts.out ?? Tensor.empty(gpu, [o]);
  checkTensor(op, "out", out, [o]);
  const plane = h * w;
  const chunks = channelChunks(gpu, op, n, o, plane);
  const co = chunks.co;
  // Each invocation loops over cn·(plane + 1) iterations: keep that under llvmpipe's loop
  // budget (docs/architecture.md), images chunked and accumulated in a fixed order (linear's
  // bias gradient runs here with thousands of rows of 1x1 planes).
  const cn = Math.min(chunks.cn, Math.max(1, Math.floor(BIAS_GRAD_LOOP_BUDGET / (plane + 1))));
  for (const [o0, no] of spans(o, co)) {
    for (const [n0, nn] of spans(n, cn)) {
      const wx = bindingWindow(gpu, dy.buffer, (n0 * o + o0) * plane, ((nn - 1) * o + no) * plane);
      const wo = bindingWindow(gpu, out.buffer, o0, no);
      gpu.dispatch({
        name: op,
        shader: "conv2d",
        entry: "bias_grad",
        defines: plainDefines(),
        inputs: [wx.range, gpu.dummy, gpu.dummy],
        outputs: [wo.range],
        params: ConvParams.packPartial({
          N: nn,
          R: no,
          H: h,
          W: w,
          xOff: wx.shift,
          xsN: o * plane,
          yOff: wo.shift,
          flags: (opts.accumulate ?? false) || n0 > 0 ? FLAG_ACC : 0,
        }),
        workgroups: [Math.ceil(no / 64)],
      });
    }
  }
  return out;
}

/**
 * Records y[n, o, pixel] += bias[o] in place for y [N, O, H, W] and bias [O] (conv2d's bias;
 * also linear's, with rows as N and 1x1 planes).
 */
export function biasAdd(gpu: GpuContext, y: Tensor, bias: Tensor): void {
  const [n, o, h, w] = y.shape;
  const plane = h * w;
  const { cn, co } = channelChunks(gpu, "conv2d.bias", n, o, plane);
  for (const [o0, no] of spans(o, co)) {
    for (const [n0, nn] of spans(n, cn)) {
      const wy = bindingWindow(gpu, y.buffer, (n0 * o + o0) * plane, ((nn - 1) * o + no) * plane);
      const wb = bindingWindow(gpu, bias.buffer, o0, no);
      gpu.dispatch1d({
        name: "conv2d.bias",
        shader: "conv2d",
        entry: "bias_add",
        defines: plainDefines(),
        inputs: [gpu.dummy, gpu.dummy, wb.range],
        outputs: [wy.range],
        params: ConvParams.packPartial({
          R: no,
          H: h,
          W: w,
          aOff: wb.shift,
          yOff: wy.shift,
          ysN: o * plane,
          count: nn * no * plane,
        }),
      }, nn * no * plane);
    }
  }
}

/** Dispatches a naive reference kernel (no splitting: it is for benchmarks and tests). */
function naive(
  gpu: GpuContext,
  entry: "naive_fwd" | "naive_dgrad" | "naive_wgrad",
  g: Geom,
  t: {
    x: Tensor | BufferRange;
    w: Tensor | BufferRange;
    aux: Tensor | null;
    out: Tensor;
    count: number;
    flags: number;
  },
): void {
  if (g.sy !== g.sx || g.dy !== g.dx || g.py !== g.px) {
    throw new RangeError(`conv2d ${entry}: the naive kernels take square geometry only`);
  }
  const bind = (v: Tensor | BufferRange | null) =>
    v === null ? gpu.dummy : v instanceof Tensor ? v.binding() : v;
  for (const v of [t.x, t.w, t.aux, t.out]) {
    if (v instanceof Tensor && !windowFits(gpu, v.size)) {
      throw new RangeError(`conv2d ${entry}: tensor exceeds maxBindingBytes (no splitting)`);
    }
  }
  gpu.dispatch1d({
    name: `conv2d.${entry}`,
    shader: "conv2d",
    entry,
    defines: plainDefines(),
    inputs: [bind(t.x), bind(t.w), bind(t.aux)],
    outputs: [t.out.binding()],
    params: ConvParams.packPartial({
      N: g.n,
      C: g.c,
      H: g.h,
      W: g.w,
      R: g.o,
      OH: g.oh,
      OW: g.ow,
      offY: -g.py,
      offX: -g.px,
      xsN: g.c * g.h * g.w,
      asN: g.o * g.oh * g.ow,
      asC: g.oh * g.ow,
      KH: g.kh,
      KW: g.kw,
      S: g.sy,
      D: g.dy,
      flags: t.flags,
      count: t.count,
    }),
  }, t.count);
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/**
 * Calls `f(yi, xi, wi)` for every (output element, input element, weight element) triple of
 * a convolution that contributes a product (zero padding skipped): flat NCHW / OIHW indices.
 */
function forEachProduct(g: Geom, f: (yi: number, xi: number, wi: number) => void): void {
  for (let n = 0; n < g.n; n++) {
    for (let o = 0; o < g.o; o++) {
      for (let oy = 0; oy < g.oh; oy++) {
        for (let ox = 0; ox < g.ow; ox++) {
          const yi = ((n * g.o + o) * g.oh + oy) * g.ow + ox;
          for (let c = 0; c < g.c; c++) {
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * g.sy - g.py + ky * g.dy;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * g.sx - g.px + kx * g.dx;
                if (ix < 0 || ix >= g.w) continue;
                f(
                  yi,
                  ((n * g.c + c) * g.h + iy) * g.w + ix,
                  ((o * g.c + c) * g.kh + ky) * g.kw + kx,
                );
              }
            }
          }
        }
      }
    }
  }
}

/** CPU reference of {@link conv2d} (f64). */
export function conv2dRef(
  x: ArrayLike<number>,
  xShape: readonly number[],
  w: ArrayLike<number>,
  wShape: readonly number[],
  bias: ArrayLike<number> | null,
  opts: Conv2dOptions = {},
): Float64Array {
  const g = geometry("conv2dRef", xShape, wShape, opts);
  const y = new Float64Array(g.n * g.o * g.oh * g.ow);
  if (bias) y.forEach((_, i) => y[i] = bias[Math.floor(i / (g.oh * g.ow)) % g.o]);
  forEachProduct(g, (yi, xi, wi) => y[yi] += w[wi] * x[xi]);
  return y;
}

/** CPU reference of {@link conv2dGradInput} (the transpose of {@link conv2dRef}; f64). */
export function conv2dGradInputRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  xShape: readonly number[],
  wShape: readonly number[],
  opts: Conv2dOptions = {},
): Float64Array {
  const g = geometry("conv2dGradInputRef", xShape, wShape, opts);
  const dx = new Float64Array(g.n * g.c * g.h * g.w);
  forEachProduct(g, (yi, xi, wi) => dx[xi] += dy[yi] * w[wi]);
  return dx;
}

/** CPU reference of {@link conv2dGradWeight} (f64). */
export function conv2dGradWeightRef(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  xShape: readonly number[],
  wShape: readonly number[],
  opts: Conv2dOptions = {},
): Float64Array {
  const g = geometry("conv2dGradWeightRef", xShape, wShape, opts);
  const dw = new Float64Array(g.o * g.c * g.kh * g.kw);
  forEachProduct(g, (yi, xi, wi) => dw[wi] += dy[yi] * x[xi]);
  return dw;
}

/** CPU reference of {@link conv2dGradBias}: sums of dy [N, O, H, W] per channel. */
export function conv2dGradBiasRef(dy: ArrayLike<number>, shape: readonly number[]): Float64Array {
  const [n, o, h, w] = shape;
  const db = new Float64Array(o);
  for (let i = 0; i < n * o * h * w; i++) db[Math.floor(i / (h * w)) % o] += dy[i];
  return db;
}

// ---------------------------------------------------------------------------------------------
// Op unit (tests and benchmark: ./unit.ts).

/** Parameters of a {@link conv2dUnit} case. */
export interface Conv2dCase {
  /** Input shape [N, I, H, W]. */
  x: readonly number[];
  /** Weight shape [O, I, KH, KW]. */
  w: readonly number[];
  /** Whether the case has a bias. */
  bias: boolean;
  /** Geometry. */
  o: Conv2dOptions;
}

function convCaseOutShape(p: Conv2dCase): number[] {
  const g = geometry("conv2dUnit", p.x, p.w, p.o);
  return [g.n, g.o, g.oh, g.ow];
}

function convUnitOp(variant: ConvVariant, name: string): RecordedOp<Conv2dCase> {
  return {
    name,
    forward: (gpu, p, { tensors: t }) => ({
      y: conv2d(gpu, t.x, t.w, t.bias ?? null, { ...p.o, variant }),
    }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const dy = asShape(d.y, convCaseOutShape(p));
      const o = { ...p.o, variant };
      const grads: Record<string, Tensor> = {
        x: conv2dGradInput(gpu, dy, t.w, p.x, o),
        w: conv2dGradWeight(gpu, t.x, dy, p.w, o),
      };
      if (t.bias) grads.bias = conv2dGradBias(gpu, dy);
      return grads;
    },
  };
}

const convCase = (
  x: number[],
  w: number[],
  o: Conv2dOptions,
  bias = false,
  split = true,
): OpCase<Conv2dCase> => ({
  name: `x${x.join("x")} w${w.join("x")}${bias ? " bias" : ""} ${JSON.stringify(o)}`,
  params: { x, w, bias, o },
  split,
});

/**
 * conv2d as an op unit: forward, input / weight / bias gradients and their f64 references.
 * Cases: odd sizes, stride 2 and 3, dilation, padding, a 7x7 stride-2 stem, 1x1 (stride 1
 * goes through matmul, stride 2 leaves pixels no tap reaches) and asymmetric geometry. The
 * benchmark's reference is the naive one-output-per-invocation kernel.
 */
export const conv2dUnit: OpUnit<Conv2dCase> = defineOpUnit<Conv2dCase>({
  name: "conv2d",
  description: "2-D convolution (groups 1) as implicit GEMM, NCHW x OIHW",
  bound: "compute",
  inputs: ["x", "w", "bias"],
  outputs: ["y"],
  differentiable: ["x", "w", "bias"],
  cases: [
    convCase([2, 3, 7, 7], [5, 3, 3, 3], { padding: 1 }, true),
    convCase([3, 5, 13, 17], [6, 5, 3, 3], { stride: 2, padding: 1 }, false, false),
    convCase([2, 4, 13, 17], [7, 4, 3, 3], { dilation: 2, padding: 2 }, true, false),
    convCase([1, 3, 20, 22], [9, 3, 7, 7], { stride: 2, padding: 3 }, false, false),
    convCase([2, 6, 9, 11], [5, 6, 1, 1], { stride: 2 }),
    convCase([3, 6, 7, 9], [10, 6, 1, 1], {}, true),
    convCase([2, 5, 10, 9], [4, 5, 3, 2], { stride: [2, 1], padding: [1, 0], dilation: [1, 2] }),
    convCase([1, 3, 12, 12], [17, 3, 3, 3], { stride: 3, padding: 2, dilation: 2 }),
    // Split over images, output and input channels on the generic test's small-binding context.
    convCase([3, 6, 7, 9], [10, 6, 3, 3], { padding: 1 }, true),
    convCase([2, 5, 9, 8], [7, 5, 3, 3], { stride: 2, padding: 1 }),
  ],
  benchShapes: [
    convCase([8, 64, 56, 56], [64, 64, 3, 3], { padding: 1 }),
    convCase([8, 256, 14, 14], [256, 256, 3, 3], { padding: 1 }),
    convCase([8, 1024, 14, 14], [256, 1024, 1, 1], {}),
  ],
  // f32 sums of up to a few hundred products of values in [-1, 1]: relative error (to the
  // largest magnitude) below 2e-6 in practice.
  tolerance: { forward: { maxRel: 1e-5 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ x: [...p.x], w: [...p.w], ...(p.bias ? { bias: [p.w[0]] } : {}) }),
  outputShapes: (p) => ({ y: convCaseOutShape(p) }),
  makeInputs: (p, seed) => ({
    x: uniformValues(sizeOf(p.x), seed),
    w: uniformValues(sizeOf(p.w), seed + 1),
    ...(p.bias ? { bias: uniformValues(p.w[0], seed + 2) } : {}),
  }),
  refForward: (p, x) => ({ y: conv2dRef(x.x, p.x, x.w, p.w, x.bias ?? null, p.o) }),
  refBackward: (p, x, d) => ({
    x: conv2dGradInputRef(d.y, x.w, p.x, p.w, p.o),
    w: conv2dGradWeightRef(x.x, d.y, p.x, p.w, p.o),
    ...(p.bias ? { bias: conv2dGradBiasRef(d.y, convCaseOutShape(p)) } : {}),
  }),
  cost: (p) => {
    const ys = convCaseOutShape(p);
    const macs = sizeOf(ys) * p.w[1] * p.w[2] * p.w[3];
    return {
      forward: { flops: 2 * macs, bytes: bytesOf(p.x, p.w, ys) },
      backward: { flops: 4 * macs, bytes: bytesOf(p.x, p.w, ys, ys, p.x, p.w) },
    };
  },
  gpu: convUnitOp("rb", "register-blocked"),
  naive: convUnitOp("naive", "naive kernel"),
});

// ---------------------------------------------------------------------------------------------
// Layer.
