/**
 * Ops over the channel axis (dim 1) of NCHW tensors: softmax with temperature (forward and
 * backward) and argmax. Kernels: `shaders/channel.wgsl`; work past the binding limit is split
 * over whole samples (one sample's C·H·W values must fit one binding).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw, shape4 } from "./planes.ts";
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpCase,
  type OpUnit,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/**
 * The uniform block of shaders/channel.wgsl: ioff / ioff2 / ooff are the element offsets of the
 * chunk's first sample in the input, second input and output bindings; `items` (pixels of the
 * chunk) is not read by the kernels.
 */
const { ChannelParams } = declareParams("channel", {
  ChannelParams: {
    C: "u32",
    HW: "u32",
    items: "u32",
    ioff: "u32",
    ioff2: "u32",
    ooff: "u32",
    inv_t: "f32",
  },
});

function checkTemperature(op: string, t: number): number {
  if (!(Number.isFinite(t) && t > 0)) throw new RangeError(`${op}: bad temperature ${t}`);
  return t;
}

/** Records y = softmax over channels of x / temperature, for x [N, C, H, W]. */
export function softmaxChannels(gpu: GpuContext, x: Tensor, temperature = 1): Tensor {
  const op = "softmax.forward";
  const [n, C, H, W] = nchw(op, x);
  const invT = 1 / checkTemperature(op, temperature);
  const HW = H * W;
  const y = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, n, {
    name: op,
    shader: "channel",
    entry: "softmax_fwd",
    inputs: [{ tensor: x, planeSize: C * HW }],
    outputs: [{ tensor: y, planeSize: C * HW }],
    itemsPerPlane: HW,
    params: (ch, items) =>
      ChannelParams.pack({
        C,
        HW,
        items,
        ioff: ch.offsets[0],
        ioff2: 0,
        ooff: ch.offsets[1],
        inv_t: invT,
      }),
  });
  return y;
}

/**
 * Records the backward of {@link softmaxChannels} from its output y:
 * dx = y·(dy - Σ_c y·dy) / temperature.
 */
export function softmaxChannelsBackward(
  gpu: GpuContext,
  y: Tensor,
  dy: Tensor,
  temperature = 1,
): Tensor {
  const op = "softmax.backward";
  const [n, C, H, W] = nchw(op, y);
  checkShape(op, "dy", dy, y.shape);
  const invT = 1 / checkTemperature(op, temperature);
  const HW = H * W;
  const dx = Tensor.empty(gpu, y.shape);
  const plane = C * HW;
  dispatchPlanes(gpu, n, {
    name: op,
    shader: "channel",
    entry: "softmax_bwd",
    inputs: [{ tensor: y, planeSize: plane }, { tensor: dy, planeSize: plane }],
    outputs: [{ tensor: dx, planeSize: plane }],
    itemsPerPlane: HW,
    params: (ch, items) =>
      ChannelParams.pack({
        C,
        HW,
        items,
        ioff: ch.offsets[0],
        ioff2: ch.offsets[1],
        ooff: ch.offsets[2],
        inv_t: invT,
      }),
  });
  return dx;
}

/**
 * Records the argmax over channels of x [N, C, H, W]: an **f32** tensor [N, H, W] of channel
 * indices (exact integers; the first maximum wins on ties, NaN counts as the maximum).
 */
export function argmaxChannels(gpu: GpuContext, x: Tensor): Tensor {
  const op = "argmax";
  const [n, C, H, W] = nchw(op, x);
  const HW = H * W;
  const out = Tensor.empty(gpu, [n, H, W]);
  dispatchPlanes(gpu, n, {
    name: op,
    shader: "channel",
    entry: "argmax",
    inputs: [{ tensor: x, planeSize: C * HW }],
    outputs: [{ tensor: out, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch, items) =>
      ChannelParams.pack({
        C,
        HW,
        items,
        ioff: ch.offsets[0],
        ioff2: 0,
        ooff: ch.offsets[1],
        inv_t: 0,
      }),
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** CPU reference of {@link softmaxChannels} (f64): softmax over dim 1 of x / temperature. */
export function softmaxChannelsRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  temperature = 1,
): Float64Array {
  const [n, c, h, w] = shape4("softmaxChannelsRef", shape);
  const T = temperature;
  const hw = h * w;
  const y = new Float64Array(n * c * hw);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      const at = (k: number) => (b * c + k) * hw + i;
      let m = -Infinity;
      for (let k = 0; k < c; k++) m = Math.max(m, x[at(k)] / T);
      let z = 0;
      for (let k = 0; k < c; k++) z += Math.exp(x[at(k)] / T - m);
      for (let k = 0; k < c; k++) y[at(k)] = Math.exp(x[at(k)] / T - m) / z;
    }
  }
  return y;
}

/**
 * CPU reference of {@link softmaxChannelsBackward} (f64) from the output y:
 * dx = y·(dy - Σ_c y·dy) / temperature.
 */
export function softmaxChannelsBackwardRef(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  shape: readonly number[],
  temperature = 1,
): Float64Array {
  const [n, c, h, w] = shape4("softmaxChannelsBackwardRef", shape);
  const hw = h * w;
  const dx = new Float64Array(y.length);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      const at = (k: number) => (b * c + k) * hw + i;
      let dot = 0;
      for (let k = 0; k < c; k++) dot += y[at(k)] * dy[at(k)];
      for (let k = 0; k < c; k++) dx[at(k)] = y[at(k)] * (dy[at(k)] - dot) / temperature;
    }
  }
  return dx;
}

/** CPU reference of {@link argmaxChannels}: first maximum over dim 1, NaN wins (PyTorch). */
export function argmaxChannelsRef(x: ArrayLike<number>, shape: readonly number[]): Float64Array {
  const [n, c, h, w] = shape4("argmaxChannelsRef", shape);
  const hw = h * w;
  const out = new Float64Array(n * hw);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      let best = x[b * c * hw + i];
      let bi = 0;
      for (let k = 1; k < c && !Number.isNaN(best); k++) {
        const v = x[(b * c + k) * hw + i];
        if (v > best || Number.isNaN(v)) {
          best = v;
          bi = k;
        }
      }
      out[b * hw + i] = bi;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Op units (tests and benchmark: ./unit.ts).

/** Parameters of a {@link softmaxUnit} or {@link argmaxUnit} case. */
export interface ChannelCase {
  shape: readonly [number, number, number, number];
  /** Softmax temperature (argmax ignores it). */
  temperature: number;
  /** Argmax: put a NaN into channel 0 of one pixel and channel 2 of another. */
  nan?: boolean;
}

type Shape4 = [number, number, number, number];
/**
 * Shapes of the test cases; the last has planes over 4096 pixels (the wide-workgroup path).
 * One sample of [2, 3, 13, 17] or the last exceeds the generic test's small binding cap.
 */
const SOFTMAX_SHAPES: Shape4[] = [
  [3, 5, 7, 7],
  [2, 3, 13, 17],
  [1, 21, 4, 6],
  [2, 1, 3, 3],
  [1, 2, 65, 66],
];
const fitsSmall = (s: Shape4) => s[1] * s[2] * s[3] * 4 <= 1792;
const chCase = (
  shape: Shape4,
  temperature = 1,
  split = true,
  nan = false,
): OpCase<ChannelCase> => ({
  name: `${shape.join("x")} T=${temperature}${nan ? " NaN" : ""}`,
  params: { shape, temperature, nan },
  split,
});

/** Softmax over channels with temperature as an op unit. */
export const softmaxUnit: OpUnit<ChannelCase> = defineOpUnit<ChannelCase>({
  name: "softmax_channels",
  description: "softmax over dim 1 of x / temperature, backward from the output",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: ["x"],
  cases: [
    ...SOFTMAX_SHAPES.flatMap((s) => [1, 0.5, 3].map((T) => chCase(s, T, fitsSmall(s)))),
    chCase([5, 3, 7, 9]),
  ],
  benchShapes: [chCase([8, 21, 128, 128])],
  tolerance: { forward: { rtol: 1e-5, atol: 1e-6 }, backward: { maxRel: 1e-5 } },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => ({ y: [...p.shape] }),
  makeInputs: (p, seed) => ({ x: uniformValues(sizeOf(p.shape), seed, -4, 4) }),
  refForward: (p, x) => ({ y: softmaxChannelsRef(x.x, p.shape, p.temperature) }),
  refBackward: (p, x, d) => ({
    x: softmaxChannelsBackwardRef(
      softmaxChannelsRef(x.x, p.shape, p.temperature),
      d.y,
      p.shape,
      p.temperature,
    ),
  }),
  cost: (p) => ({
    forward: { flops: 5 * sizeOf(p.shape), bytes: bytesOf(p.shape, p.shape) },
    backward: { flops: 4 * sizeOf(p.shape), bytes: bytesOf(p.shape, p.shape, p.shape) },
  }),
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, p, { tensors: t }) => ({ y: softmaxChannels(gpu, t.x, p.temperature) }),
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const y = softmaxChannels(gpu, t.x, p.temperature);
      const dx = softmaxChannelsBackward(gpu, y, asShape(d.y, p.shape), p.temperature);
      y.dispose();
      return { x: dx };
    },
  },
});

/**
 * Argmax over channels as a (forward-only) op unit; values on a coarse grid so that ties
 * occur, and a NaN in the first case.
 */
export const argmaxUnit: OpUnit<ChannelCase> = defineOpUnit<ChannelCase>({
  name: "argmax_channels",
  description: "argmax over dim 1 (first maximum, NaN wins) as f32 indices",
  bound: "memory",
  inputs: ["x"],
  outputs: ["y"],
  differentiable: [],
  cases: [
    chCase(SOFTMAX_SHAPES[0], 1, true, true),
    ...SOFTMAX_SHAPES.map((s) => chCase(s, 1, fitsSmall(s))),
    chCase([5, 3, 7, 9]),
  ],
  benchShapes: [chCase([8, 21, 128, 128])],
  tolerance: { forward: {}, backward: {} },
  inputShapes: (p) => ({ x: [...p.shape] }),
  outputShapes: (p) => ({ y: [p.shape[0], p.shape[2], p.shape[3]] }),
  makeInputs: (p, seed) => {
    const x = uniformValues(sizeOf(p.shape), seed, 0, 4).map(Math.floor);
    if (p.nan) {
      x[7] = NaN; // channel 0 of a pixel: stays the argmax
      x[2 * p.shape[2] * p.shape[3] + 3] = NaN; // channel 2 of another: wins over any number
    }
    return { x };
  },
  refForward: (p, x) => ({ y: argmaxChannelsRef(x.x, p.shape) }),
  cost: (p) => ({
    forward: {
      flops: sizeOf(p.shape),
      bytes: bytesOf(p.shape, [p.shape[0], p.shape[2], p.shape[3]]),
    },
  }),
  gpu: {
    name: "per-pixel kernel",
    forward: (gpu, _p, { tensors: t }) => ({ y: argmaxChannels(gpu, t.x) }),
  },
});
