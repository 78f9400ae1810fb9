/**
 * Ops over the channel axis (dim 1) of NCHW tensors: softmax with temperature (forward and
 * backward) and argmax. Kernels: `shaders/channel.wgsl`; work past the binding limit is split
 * over whole samples (one sample's C·H·W values must fit one binding).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw } from "./planes.ts";

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
