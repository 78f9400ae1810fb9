/**
 * ResNet backbones (torchvision parameter names, so converted ImageNet weights load by name)
 * (resnet18/34/50/101) and the `tiny` ResNet-style backbone for the built-in synthetic data. Output stride 16 or 8
 * by replacing the stride of the last stages with dilation (as DeepLab/psa do).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { Rng } from "../rng.ts";
import type { Buffer, Param } from "../autograd/param.ts";
import type { Tape } from "../autograd/tape.ts";
import { add } from "../autograd/functions.ts";
import { BatchNorm2d, Conv2d, MaxPool2d, type Module, Sequential } from "./modules.ts";

/** Shared construction context of a backbone. */
interface Builder {
  gpu: GpuContext;
  rng: Rng;
  frozenBn: boolean;
}

function conv(
  b: Builder,
  name: string,
  inC: number,
  outC: number,
  k: number,
  stride = 1,
  dilation = 1,
): Conv2d {
  return new Conv2d(b.gpu, {
    name,
    inChannels: inC,
    outChannels: outC,
    kernel: k,
    stride,
    padding: k === 1 ? 0 : dilation * ((k - 1) >> 1),
    dilation,
    bias: false,
    group: "backbone",
  }, b.rng);
}

/**
 * A batchnorm; `relu` fuses the in-place ReLU that follows it in torchvision's ResNet into its
 * kernels (no ReLU dispatch or gradient pass; the same parameter and checkpoint names).
 */
function bn(b: Builder, name: string, c: number, relu = false): BatchNorm2d {
  return new BatchNorm2d(b.gpu, c, name, { frozen: b.frozenBn, relu });
}

/** A residual block: main path, optional downsample path, add + ReLU. */
class Residual implements Module {
  constructor(readonly main: Sequential, readonly down: Sequential | null) {}

  forward(x: Tensor, tape: Tape | null): Tensor {
    const m = this.main.forward(x, tape);
    const s = this.down ? this.down.forward(x, tape) : x.retain();
    const y = add(tape, m, s, { relu: true });
    m.dispose();
    s.dispose();
    return y;
  }

  params(): Param[] {
    return [...this.main.params(), ...(this.down?.params() ?? [])];
  }

  buffers(): Buffer[] {
    return [...this.main.buffers(), ...(this.down?.buffers() ?? [])];
  }
}

/** torchvision's shortcut: 1x1 conv + batchnorm when the shape changes, else identity (null). */
function downsample(
  b: Builder,
  p: string,
  inC: number,
  outC: number,
  stride: number,
): Sequential | null {
  return stride !== 1 || inC !== outC
    ? new Sequential([
      conv(b, `${p}.downsample.0`, inC, outC, 1, stride),
      bn(b, `${p}.downsample.1`, outC),
    ])
    : null;
}

function basicBlock(
  b: Builder,
  p: string,
  inC: number,
  outC: number,
  stride: number,
  dilation: number,
): Residual {
  const main = new Sequential([
    conv(b, `${p}.conv1`, inC, outC, 3, stride, dilation),
    bn(b, `${p}.bn1`, outC, true),
    conv(b, `${p}.conv2`, outC, outC, 3, 1, dilation),
    bn(b, `${p}.bn2`, outC),
  ]);
  return new Residual(main, downsample(b, p, inC, outC, stride));
}

function bottleneck(
  b: Builder,
  p: string,
  inC: number,
  planes: number,
  stride: number,
  dilation: number,
): Residual {
  const outC = planes * 4;
  const main = new Sequential([
    conv(b, `${p}.conv1`, inC, planes, 1),
    bn(b, `${p}.bn1`, planes, true),
    conv(b, `${p}.conv2`, planes, planes, 3, stride, dilation),
    bn(b, `${p}.bn2`, planes, true),
    conv(b, `${p}.conv3`, planes, outC, 1),
    bn(b, `${p}.bn3`, outC),
  ]);
  return new Residual(main, downsample(b, p, inC, outC, stride));
}

/** Backbone architectures. */
export type Arch = "tiny" | "resnet18" | "resnet34" | "resnet50" | "resnet101";

/** A backbone: a layer from image to features, and its feature channel count. */
export interface Backbone {
  net: Sequential;
  channels: number;
  /** Total stride of the features. */
  stride: number;
  /**
   * The four residual stages (layer1..layer4): `end` is the index in `net.layers` one past
   * the stage's last block, with the stage's output channels and total stride.
   */
  stages: { end: number; channels: number; stride: number }[];
}

const DEPTHS: Record<Exclude<Arch, "tiny">, [number, number, number, number]> = {
  resnet18: [2, 2, 2, 2],
  resnet34: [3, 4, 6, 3],
  resnet50: [3, 4, 6, 3],
  resnet101: [3, 4, 23, 3],
};

/**
 * Builds a backbone. `outputStride` 16 dilates the last stage, 8 the last two (resnets);
 * `tiny` is a 4-stage ResNet-style net (16-32-64-128 channels) with output stride 16 or 8.
 * Dilated stages dilate every block (DeepLab/psa convention; torchvision's
 * `replace_stride_with_dilation` keeps the previous dilation in a stage's first block).
 */
export function buildBackbone(
  gpu: GpuContext,
  arch: Arch,
  opts: { outputStride: 8 | 16; rng: Rng; frozenBn?: boolean },
): Backbone {
  const b: Builder = { gpu, rng: opts.rng, frozenBn: opts.frozenBn ?? false };
  const os = opts.outputStride;
  if (arch === "tiny") {
    const widths = [16, 32, 64, 128];
    const layers: Module[] = [
      conv(b, "conv1", 3, widths[0], 3, 2),
      bn(b, "bn1", widths[0], true),
    ];
    // strides after the stem (s2): 2, 2 → 8; last stage stride 2 for OS 16, dilation for OS 8.
    const strides = [1, 2, 2, os === 16 ? 2 : 1];
    const dil = [1, 1, 1, os === 16 ? 1 : 2];
    let inC = widths[0];
    let stride = 2;
    const stages: Backbone["stages"] = [];
    widths.forEach((w, i) => {
      layers.push(basicBlock(b, `layer${i + 1}.0`, inC, w, strides[i], dil[i]));
      inC = w;
      stride *= strides[i];
      stages.push({ end: layers.length, channels: w, stride });
    });
    return { net: new Sequential(layers), channels: inC, stride: os, stages };
  }
  const depth = DEPTHS[arch];
  const isBottleneck = arch === "resnet50" || arch === "resnet101";
  const layers: Module[] = [
    conv(b, "conv1", 3, 64, 7, 2),
    bn(b, "bn1", 64, true),
    new MaxPool2d({ kernel: 3, stride: 2, padding: 1 }),
  ];
  const planes = [64, 128, 256, 512];
  const stageStride = [1, 2, os === 8 ? 1 : 2, 1];
  const stageDil = [1, 1, os === 8 ? 2 : 1, os === 8 ? 4 : 2];
  let inC = 64;
  let stride = 4;
  const stages: Backbone["stages"] = [];
  for (let s = 0; s < 4; s++) {
    for (let i = 0; i < depth[s]; i++) {
      const p = `layer${s + 1}.${i}`;
      const st = i === 0 ? stageStride[s] : 1;
      if (isBottleneck) {
        layers.push(bottleneck(b, p, inC, planes[s], st, stageDil[s]));
        inC = planes[s] * 4;
      } else {
        layers.push(basicBlock(b, p, inC, planes[s], st, stageDil[s]));
        inC = planes[s];
      }
    }
    stride *= stageStride[s];
    stages.push({ end: layers.length, channels: inC, stride });
  }
  return { net: new Sequential(layers), channels: inC, stride: os, stages };
}
