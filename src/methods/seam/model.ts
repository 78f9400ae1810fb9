/**
 * SEAM's network (Wang et al., CVPR 2020; the official network/resnet38_SEAM.py `Net`) on this
 * project's backbones: a backbone, `fc8` (1x1 conv, no bias) to C+1 class maps (channel 0 the
 * background) after dropout, and the pixel correlation module (PCM) that refines the maps.
 *
 * PCM inputs, as in the official code: two intermediate stages' features, detached (no
 * gradient reaches the backbone through the PCM), each through a 1x1 conv (no bias) + ReLU
 * (`f8_3`, `f8_4`), and the input image bilinearly resized (align_corners) to the map grid;
 * concatenated, a 1x1 conv without bias (`f9`, Xavier-uniform with gain 4) gives the
 * features whose normalised relu correlations refine the no-grad `cam_d_norm` of the class
 * maps (src/ops/pcm.ts). The concatenation is not materialised: `f9` is stored as one weight
 * block per input (`f9.img`, `f9.f8_3`, `f9.f8_4`; the same linear map), as AffinityNet does.
 *
 * Stage mapping. ResNet-38's conv4 / conv5 / conv6 (the official PCM taps and the features)
 * become the backbone's layer2 / layer3 / layer4. At output stride 8 (SEAM's, the default)
 * the ResNets' three stages are all at stride 8; `tiny`'s layer2 is at stride 4 and is
 * resized (bilinear, align_corners) to the map grid, as is any tap whose grid differs (output
 * stride 16). Widths: SEAM's 64 / 128 and 192 PCM features for the ResNets; 16 / 32 and 48 for
 * `tiny`.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import type { NamedTensor } from "../../io/checkpoint.ts";
import { Rng } from "../../rng.ts";
import { type Buffer, disposeState, namedState, type Param } from "../../autograd/param.ts";
import type { Tape } from "../../autograd/tape.ts";
import {
  activation,
  add,
  dropBackground,
  dropout,
  globalAvgPool,
  pcm,
  resizeBilinear,
} from "../../autograd/functions.ts";
import type { CamModel } from "../../cam/image.ts";
import { camDNorm } from "../../ops/pcm.ts";
import { resizeBilinear as resizeKernel } from "../../ops/resize.ts";
import { Conv2d, Sequential } from "../../models/modules.ts";
import { type Arch, buildBackbone } from "../../models/resnet.ts";

/** Options of {@link createSeamNet}. */
export interface SeamNetOptions {
  /** Backbone architecture. */
  arch: Arch;
  /** Foreground classes C (the net predicts C + 1 maps). */
  numClasses: number;
  /** Output stride of the maps (default 8, SEAM's). */
  outputStride?: 8 | 16;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
  /** psa-style frozen batchnorm. Default false. */
  frozenBn?: boolean;
  /** Widths of f8_3 and f8_4 (default 64/128, tiny 16/32). */
  pcmWidths?: [number, number];
  /** Channels of f9, the PCM features (default 192, tiny 48). */
  pcmChannels?: number;
  /** Dropout before fc8 (default 0.5; elementwise, where SEAM drops whole channels). */
  dropout?: number;
}

/** Maps of a forward pass ([B, C+1, h, w] at the map grid, or the input size). */
export interface SeamOutputs {
  /** The class maps (fc8's output), channel 0 the background. */
  cam: Tensor;
  /** The PCM-refined maps (non-negative). */
  camRv: Tensor;
}

/** Per-call options of {@link SeamNet.forward}. */
export interface SeamForwardOptions {
  /** Seed of the dropout mask (training only, i.e. with a tape). */
  dropoutSeed?: number;
}

function copyOf(t: Tensor): Tensor {
  const c = Tensor.empty(t.gpu, t.shape);
  t.gpu.encoder().copyBufferToBuffer(t.buffer, 0, c.buffer, 0, Math.max(4, t.bytes));
  return c;
}

/** SEAM's network (see the module doc). */
export class SeamNet {
  /** Backbone up to the end of layer1. */
  readonly stem: Sequential;
  /** layer2, layer3, layer4. */
  readonly segments: Sequential[];
  /** The classifier: features to C + 1 maps. */
  readonly fc8: Conv2d;
  /** PCM projections of layer2 and layer3 (SEAM's f8_3, f8_4). */
  readonly f8: [Conv2d, Conv2d];
  /** f9's blocks over the image, f8_3 and f8_4. */
  readonly f9: [Conv2d, Conv2d, Conv2d];
  /** Output stride of the maps. */
  readonly stride: number;

  /** Builds and initialises the network ({@link createSeamNet} fills the defaults). */
  constructor(readonly gpu: GpuContext, readonly options: Required<SeamNetOptions>) {
    const rng = new Rng(options.seed);
    const bb = buildBackbone(gpu, options.arch, {
      outputStride: options.outputStride,
      rng,
      frozenBn: options.frozenBn,
    });
    this.stride = bb.stride;
    const layers = bb.net.layers;
    this.stem = new Sequential(layers.slice(0, bb.stages[0].end));
    this.segments = [1, 2, 3].map((s) =>
      new Sequential(layers.slice(bb.stages[s - 1].end, bb.stages[s].end))
    );
    const head = (name: string, inC: number, outC: number) =>
      new Conv2d(gpu, {
        name,
        inChannels: inC,
        outChannels: outC,
        kernel: 1,
        bias: false,
        group: "head",
      }, rng);
    const C1 = options.numClasses + 1;
    const [w3, w4] = options.pcmWidths;
    const D = options.pcmChannels;
    this.fc8 = head("fc8", bb.channels, C1);
    this.f8 = [
      head("f8_3", bb.stages[1].channels, w3),
      head("f8_4", bb.stages[2].channels, w4),
    ];
    this.f9 = [head("f9.img", 3, D), head("f9.f8_3", w3, D), head("f9.f8_4", w4, D)];
    // SEAM's init: fc8 Xavier-uniform, f8_* Kaiming-normal (fan_in), f9 Xavier-uniform gain 4
    // over the whole [D, 3 + w3 + w4] weight.
    const fill = (c: Conv2d, f: () => number) =>
      c.weight.value.write(Float32Array.from({ length: c.weight.value.size }, f));
    const xb = Math.sqrt(6 / (bb.channels + C1));
    fill(this.fc8, () => rng.uniform(-xb, xb));
    this.f8.forEach((c) => {
      const std = Math.sqrt(2 / c.options.inChannels);
      c.weight.value.write(rng.normals(c.weight.value.size, std));
    });
    const b9 = 4 * Math.sqrt(6 / (3 + w3 + w4 + D));
    for (const c of this.f9) fill(c, () => rng.uniform(-b9, b9));
  }

  /**
   * The maps at the map grid of images `x` [B, 3, H, W]; with a tape (training) records the
   * backward there (dropout is active only then).
   */
  forwardMaps(x: Tensor, tape: Tape | null, opts: SeamForwardOptions = {}): SeamOutputs {
    const gpu = this.gpu;
    let h = this.stem.forward(x, tape);
    const taps: Tensor[] = [];
    for (const [k, seg] of this.segments.entries()) {
      const next = seg.forward(h, tape);
      h.dispose();
      h = next;
      if (k < 2) taps.push(copyOf(h)); // detached: SEAM's conv4.detach(), conv5.detach()
    }
    const drop = dropout(tape, h, {
      p: this.options.dropout,
      seed: opts.dropoutSeed ?? 0,
      training: tape !== null,
    });
    h.dispose();
    const cam = this.fc8.forward(drop, tape);
    drop.dispose();
    const [, , mh, mw] = cam.shape;
    const camD = camDNorm(gpu, cam);
    const toGrid = (t: Tensor) => {
      if (t.shape[2] === mh && t.shape[3] === mw) return t.retain();
      return resizeKernel(gpu, t, { size: [mh, mw], alignCorners: true });
    };
    const xs = toGrid(x);
    let f = this.f9[0].forward(xs, tape);
    xs.dispose();
    taps.forEach((t, k) => {
      const g = toGrid(t);
      t.dispose();
      const p = this.f8[k].forward(g, tape);
      g.dispose();
      const r = activation(tape, "relu", p, true);
      p.dispose();
      const z = this.f9[k + 1].forward(r, tape);
      r.dispose();
      const s = add(tape, f, z, { inplace: true });
      f.dispose();
      z.dispose();
      f = s;
    });
    const camRv = pcm(tape, f, camD);
    f.dispose();
    camD.dispose();
    return { cam, camRv };
  }

  /**
   * SEAM's `forward`: the maps bilinearly upsampled (align_corners) to the input size, as the
   * official training step uses them.
   */
  forward(x: Tensor, tape: Tape | null, opts: SeamForwardOptions = {}): SeamOutputs {
    const m = this.forwardMaps(x, tape, opts);
    const size = [x.shape[2], x.shape[3]] as const;
    const up = (t: Tensor) => {
      const r = resizeBilinear(tape, t, { size, alignCorners: true });
      t.dispose();
      return r;
    };
    return { cam: up(m.cam), camRv: up(m.camRv) };
  }

  /**
   * The network as a CAM model for inference (src/cam: multi-scale + flip CAMs, validation
   * mAP): the foreground channels of the PCM-refined maps (`which` "rv", SEAM's inference
   * CAM) or of the class maps ("cam"), at the map grid; logits = GAP of the class maps'
   * foreground channels (SEAM's `label`). Its `dispose` frees this network.
   */
  camView(which: "rv" | "cam" = "rv"): CamModel {
    return {
      options: { numClasses: this.options.numClasses },
      forward: (x: Tensor) => {
        const m = this.forwardMaps(x, null);
        const fg = dropBackground(null, which === "rv" ? m.camRv : m.cam);
        const gap = globalAvgPool(null, m.cam);
        const logits = dropBackground(null, gap);
        for (const t of [m.cam, m.camRv, gap]) t.dispose();
        return { cam: fg, logits };
      },
      dispose: () => this.dispose(),
    };
  }

  /** Trainable parameters: backbone, then fc8, f8_3, f8_4, f9. */
  params(): Param[] {
    return [
      ...this.stem.params(),
      ...this.segments.flatMap((s) => s.params()),
      ...this.fc8.params(),
      ...this.f8.flatMap((c) => c.params()),
      ...this.f9.flatMap((c) => c.params()),
    ];
  }

  /** Batchnorm running statistics. */
  buffers(): Buffer[] {
    return [...this.stem.buffers(), ...this.segments.flatMap((s) => s.buffers())];
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

/** Builds a SEAM network (see the module doc for the defaults). */
export function createSeamNet(gpu: GpuContext, opts: SeamNetOptions): SeamNet {
  const tiny = opts.arch === "tiny";
  return new SeamNet(gpu, {
    arch: opts.arch,
    numClasses: opts.numClasses,
    outputStride: opts.outputStride ?? 8,
    seed: opts.seed ?? 0,
    frozenBn: opts.frozenBn ?? false,
    pcmWidths: opts.pcmWidths ?? (tiny ? [16, 32] : [64, 128]),
    pcmChannels: opts.pcmChannels ?? (tiny ? 48 : 192),
    dropout: opts.dropout ?? 0.5,
  });
}
