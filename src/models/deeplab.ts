/**
 * The segmenter of the final stage (docs/architecture.md#the-segmenter): a backbone (the CAM
 * classifier's, same torchvision names, so ImageNet weights load into it) and a DeepLab head
 * giving per-pixel class logits at the output stride.
 *
 * - `aspp`, DeepLab-v2's ASPP in the form of kazuto1011/deeplab-pytorch's `_ASPP`: parallel 3x3
 *   convolutions with bias from the features to K classes, dilation = padding = each rate,
 *   outputs summed; weights N(0, 0.01), bias 0. Parameters `head.aspp.c<i>.weight/bias`
 *   (deeplab-pytorch's `aspp.c<i>` under `head.`).
 * - `largefov`, DeepLab-v1's LargeFOV: `fc6` 3x3 dilation `rates[0]` to `width` channels, ReLU,
 *   dropout; `fc7` 1x1 `width`→`width`, ReLU, dropout; `fc8` 1x1 to K. Parameters
 *   `head.fc6/fc7/fc8.weight/bias` (the Caffe layer names); fc6/fc7 Kaiming-normal, fc8
 *   N(0, 0.01), biases 0.
 *
 * Defaults: rates 6/12/18/24 (ASPP) and 12 (LargeFOV) for the ResNets; `tiny`, whose features
 * are 16x16 at 128 px (DeepLab's ResNets see 41x41 at 321 px), gets the rates scaled by about
 * that ratio: 2/4/6/8 and 4, and LargeFOV width 128 instead of 1024.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { NamedTensor, Tensor } from "../gpu/tensor.ts";
import { Rng } from "../rng.ts";
import { type Buffer, disposeState, namedState, type Param } from "../autograd/param.ts";
import type { Tape } from "../autograd/tape.ts";
import * as F from "../autograd/functions.ts";
import { dropoutRef, dropoutSeed } from "../ops/dropout.ts";
import {
  conv2dGradBiasRef,
  conv2dGradInputRef,
  conv2dGradWeightRef,
  conv2dRef,
  convOutSize,
} from "../ops/conv.ts";
import { pointwiseRef } from "../ops/pointwise.ts";
import { Conv2d, type Sequential } from "./modules.ts";
import type { RefState, RefTensor } from "./reference.ts";
import { type Arch, buildBackbone } from "./resnet.ts";

/** The DeepLab head of a {@link SegNet}. */
export type SegHead = "aspp" | "largefov";

/** Options of {@link createSegModel}. */
export interface SegModelOptions {
  /** Backbone architecture. */
  arch: Arch;
  /** Classes K, background included (the logits' channels). */
  numClasses: number;
  /** Default "aspp". */
  head?: SegHead;
  /** Default 8 (DeepLab's); 16 dilates only the last stage. */
  outputStride?: 8 | 16;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
  /** psa-style frozen batchnorm (running statistics in training). Default false. */
  frozenBn?: boolean;
  /**
   * Dilation rates: one per ASPP branch (default 6/12/18/24, `tiny` 2/4/6/8), or LargeFOV's
   * fc6 dilation as a one-element list (default 12, `tiny` 4).
   */
  rates?: readonly number[];
  /** LargeFOV's fc6/fc7 channels (default 1024, `tiny` 128; ignored by ASPP). */
  width?: number;
  /** LargeFOV's dropout probability after fc6 and fc7 (default 0.5; ignored by ASPP). */
  dropout?: number;
}

/** Options of {@link SegNet.forward}. */
export interface SegForwardOptions {
  /** Dropout active (default: whether a tape is given). */
  training?: boolean;
  /** Seed of this step's dropout masks (default 0; use a new one per step). */
  dropoutSeed?: number;
}

/** The filled-in options of a {@link SegNet}. */
export type SegNetOptions = Required<SegModelOptions>;

/** Fills the defaults of {@link SegModelOptions} (see the module doc) and checks them. */
export function segModelDefaults(opts: SegModelOptions): SegNetOptions {
  const tiny = opts.arch === "tiny";
  const head = opts.head ?? "aspp";
  const o: SegNetOptions = {
    arch: opts.arch,
    numClasses: opts.numClasses,
    head,
    outputStride: opts.outputStride ?? 8,
    seed: opts.seed ?? 0,
    frozenBn: opts.frozenBn ?? false,
    rates: [
      ...(opts.rates ??
        (head === "aspp" ? (tiny ? [2, 4, 6, 8] : [6, 12, 18, 24]) : (tiny ? [4] : [12]))),
    ],
    width: opts.width ?? (tiny ? 128 : 1024),
    dropout: opts.dropout ?? 0.5,
  };
  const op = "createSegModel";
  if (head !== "aspp" && head !== "largefov") throw new RangeError(`${op}: unknown head ${head}`);
  if (!(Number.isInteger(o.numClasses) && o.numClasses >= 1)) {
    throw new RangeError(`${op}: bad class count ${o.numClasses}`);
  }
  if (o.outputStride !== 8 && o.outputStride !== 16) {
    throw new RangeError(`${op}: output stride must be 8 or 16, got ${o.outputStride}`);
  }
  if (o.rates.length === 0 || !o.rates.every((r) => Number.isInteger(r) && r >= 1)) {
    throw new RangeError(`${op}: rates must be positive integers, got [${o.rates}]`);
  }
  if (head === "largefov" && o.rates.length !== 1) {
    throw new RangeError(`${op}: largefov takes one rate (fc6's dilation), got [${o.rates}]`);
  }
  if (!(Number.isInteger(o.width) && o.width >= 1)) {
    throw new RangeError(`${op}: bad width ${o.width}`);
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    throw new RangeError(`${op}: dropout must be in [0, 1), got ${o.dropout}`);
  }
  return o;
}

/** A head conv with bias 0 and, when `std` is given, N(0, std²) weights. */
function headConv(
  gpu: GpuContext,
  rng: Rng,
  name: string,
  inC: number,
  outC: number,
  k: number,
  dilation: number,
  std: number | null,
): Conv2d {
  const c = new Conv2d(gpu, {
    name,
    inChannels: inC,
    outChannels: outC,
    kernel: k,
    padding: k === 1 ? 0 : dilation,
    dilation,
    bias: true,
    group: "head",
  }, rng);
  if (std !== null) c.weight.value.write(rng.normals(c.weight.value.size, std));
  c.bias!.value.write(new Float32Array(outC));
  return c;
}

/** A DeepLab segmentation network: backbone + ASPP or LargeFOV head (see the module doc). */
export class SegNet {
  /** The feature extractor (torchvision names, learning-rate group "backbone"). */
  readonly backbone: Sequential;
  /** Output stride: input side / logit side. */
  readonly stride: number;
  /** Channels of the backbone's features. */
  readonly featureChannels: number;
  /** The head's convolutions in order (ASPP branches, or fc6, fc7, fc8). */
  readonly head: readonly Conv2d[];

  /** Builds a randomly initialised model; {@link createSegModel} fills the defaults. */
  constructor(readonly gpu: GpuContext, readonly options: SegNetOptions) {
    const rng = new Rng(options.seed);
    const bb = buildBackbone(gpu, options.arch, {
      outputStride: options.outputStride,
      rng,
      frozenBn: options.frozenBn,
    });
    this.backbone = bb.net;
    this.stride = bb.stride;
    this.featureChannels = bb.channels;
    const K = options.numClasses;
    const C = bb.channels;
    if (options.head === "aspp") {
      this.head = options.rates.map((r, i) =>
        headConv(gpu, rng, `head.aspp.c${i}`, C, K, 3, r, 0.01)
      );
    } else {
      const w = options.width;
      this.head = [
        headConv(gpu, rng, "head.fc6", C, w, 3, options.rates[0], null),
        headConv(gpu, rng, "head.fc7", w, w, 1, 1, null),
        headConv(gpu, rng, "head.fc8", w, K, 1, 1, 0.01),
      ];
    }
  }

  /**
   * Logits [B, K, h, w] at the output stride of images x [B, 3, H, W]. With a tape
   * (training) the backward is recorded there; dropout (LargeFOV) is active when
   * `opts.training` (default: a tape is given), with masks from `opts.dropoutSeed`.
   */
  forward(x: Tensor, tape: Tape | null, opts: SegForwardOptions = {}): Tensor {
    const feats = this.backbone.forward(x, tape);
    const y = this.forwardHead(feats, tape, opts);
    feats.dispose();
    return y;
  }

  /** The head alone on backbone features [B, C, h, w] (see {@link forward}). */
  forwardHead(feats: Tensor, tape: Tape | null, opts: SegForwardOptions = {}): Tensor {
    if (this.options.head === "aspp") {
      let sum: Tensor | null = null;
      for (const c of this.head) {
        const o = c.forward(feats, tape);
        if (sum === null) sum = o;
        else {
          const s: Tensor = F.add(tape, sum, o);
          sum.dispose();
          o.dispose();
          sum = s;
        }
      }
      return sum!;
    }
    const training = opts.training ?? tape !== null;
    const seed = opts.dropoutSeed ?? 0;
    const p = this.options.dropout;
    let h = feats.retain();
    for (let i = 0; i < 2; i++) {
      const c = this.head[i].forward(h, tape);
      h.dispose();
      const r = F.activation(tape, "relu", c, true);
      c.dispose();
      h = F.dropout(tape, r, { p, seed: dropoutSeed(seed, i), training });
      r.dispose();
    }
    const y = this.head[2].forward(h, tape);
    h.dispose();
    return y;
  }

  /** Trainable parameters: the backbone's (group "backbone"), then the head's ("head"). */
  params(): Param[] {
    return [...this.backbone.params(), ...this.head.flatMap((c) => c.params())];
  }

  /** Non-trainable state (batchnorm running statistics). */
  buffers(): Buffer[] {
    return this.backbone.buffers();
  }

  /** Every tensor of the model's state by name (params then buffers). */
  stateTensors(): NamedTensor[] {
    return namedState(this.params(), this.buffers());
  }

  /** Frees every parameter, gradient and buffer. */
  dispose(): void {
    disposeState(this.params(), this.buffers());
  }
}

/** Builds a DeepLab segmenter (defaults: see {@link SegModelOptions} and the module doc). */
export function createSegModel(gpu: GpuContext, opts: SegModelOptions): SegNet {
  return new SegNet(gpu, segModelDefaults(opts));
}

// ---------------------------------------------------------------------------------------------
// f64 reference of the head.

/** Result of {@link segHeadRef}. */
export interface SegHeadRefResult {
  /** Logits [B, K, h, w]. */
  logits: RefTensor;
  /**
   * Backward from the logits' gradient: the gradient of every head parameter by name and of
   * the features.
   */
  backward(dLogits: Float64Array): { grads: Map<string, Float64Array>; dFeat: Float64Array };
}

/**
 * f64 reference of {@link SegNet.forwardHead}, composed of the op references (`conv2dRef` and
 * its gradients, the pointwise table's relu and add, `dropoutRef` with the same per-layer
 * seeds), with the weights by name from `state` (e.g. the GPU model's, read back).
 */
export function segHeadRef(
  options: SegNetOptions,
  state: RefState,
  feats: RefTensor,
  opts: SegForwardOptions = {},
): SegHeadRefResult {
  const get = (name: string) => {
    const t = state.get(name);
    if (!t) throw new Error(`segHeadRef: no tensor "${name}" in the state`);
    return t;
  };
  type Step = (dy: Float64Array, grads: Map<string, Float64Array>) => Float64Array;
  const conv = (name: string, x: RefTensor, k: number, dil: number, steps: Step[]) => {
    const w = get(`${name}.weight`);
    const b = get(`${name}.bias`);
    const pad = k === 1 ? 0 : dil;
    const o = { stride: 1, padding: pad, dilation: dil };
    const [N, , H, W] = x.shape;
    const shape = [N, w.shape[0], convOutSize(H, k, 1, pad, dil), convOutSize(W, k, 1, pad, dil)];
    const y = conv2dRef(x.data, x.shape, w.data, w.shape, b.data, o);
    steps.push((dy, grads) => {
      grads.set(`${name}.weight`, conv2dGradWeightRef(x.data, dy, x.shape, w.shape, o));
      grads.set(`${name}.bias`, conv2dGradBiasRef(dy, shape));
      return conv2dGradInputRef(dy, w.data, x.shape, w.shape, o);
    });
    return { shape, data: y };
  };
  const steps: Step[] = [];
  let logits: RefTensor;
  let backward: (dy: Float64Array, grads: Map<string, Float64Array>) => Float64Array;
  if (options.head === "aspp") {
    const branches = options.rates.map((r, i) => {
      const s: Step[] = [];
      return { out: conv(`head.aspp.c${i}`, feats, 3, r, s), step: s[0] };
    });
    let sum = branches[0].out.data;
    for (const b of branches.slice(1)) sum = pointwiseRef("add", [sum, b.out.data]);
    logits = { shape: branches[0].out.shape, data: sum };
    backward = (dy, grads) => {
      const dFeat = new Float64Array(feats.data.length);
      for (const b of branches) {
        const g = b.step(dy, grads);
        for (let i = 0; i < g.length; i++) dFeat[i] += g[i];
      }
      return dFeat;
    };
  } else {
    const training = opts.training ?? false;
    const seed = opts.dropoutSeed ?? 0;
    let h = feats;
    const layers: [string, number, number][] = [
      ["head.fc6", 3, options.rates[0]],
      ["head.fc7", 1, 1],
    ];
    layers.forEach(([name, k, dil], i) => {
      const c = conv(name, h, k, dil, steps);
      const r = pointwiseRef("relu", [c.data]);
      steps.push((dy) => pointwiseRef("relu_bwd", [r, dy]));
      if (training && options.dropout > 0) {
        const d = { p: options.dropout, seed: dropoutSeed(seed, i) };
        h = { shape: c.shape, data: dropoutRef(r, d) };
        steps.push((dy) => dropoutRef(dy, d));
      } else h = { shape: c.shape, data: r };
    });
    logits = conv("head.fc8", h, 1, 1, steps);
    backward = (dy, grads) => {
      let g = dy;
      for (let i = steps.length - 1; i >= 0; i--) g = steps[i](g, grads);
      return g;
    };
  }
  return {
    logits,
    backward: (dLogits) => {
      const grads = new Map<string, Float64Array>();
      const dFeat = backward(dLogits, grads);
      return { grads, dFeat };
    },
  };
}
