/**
 * The CAM classifier (docs/architecture.md#the-cam-classifier): backbone → 1x1 conv classifier without bias (C class maps)
 * → global average pool → image logits. The class maps are the CAMs (pre-ReLU).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { NamedTensor, Tensor } from "../gpu/tensor.ts";
import { Rng } from "../rng.ts";
import { type Buffer, disposeState, namedState, type Param } from "../autograd/param.ts";
import type { Tape } from "../autograd/tape.ts";
import { globalAvgPool } from "../autograd/functions.ts";
import { Conv2d, type Sequential } from "./modules.ts";
import { type Arch, buildBackbone } from "./resnet.ts";

/** Options of {@link createModel}. */
export interface ModelOptions {
  /** Backbone architecture. */
  arch: Arch;
  /** Foreground classes C (the classifier's output channels). */
  numClasses: number;
  /** Default 16 (the dilated last stage); 8 dilates the last two stages. */
  outputStride?: 8 | 16;
  /** Seed of the Kaiming initialisation. Default 0. */
  seed?: number;
  /** psa-style frozen batchnorm (running statistics in training). Default false. */
  frozenBn?: boolean;
}

/** Outputs of a forward pass. */
export interface CamOutputs {
  /** Class maps [B, C, h, w] (pre-ReLU). */
  cam: Tensor;
  /** Image logits [B, C] = spatial mean of the class maps. */
  logits: Tensor;
}

/** A CAM classifier. */
export class CamNet {
  /** The feature extractor. */
  readonly backbone: Sequential;
  /** 1x1 convolution, no bias: backbone features to C class maps. */
  readonly classifier: Conv2d;
  /** Channels of the backbone's output features. */
  readonly featureChannels: number;
  /** Output stride: input side / class-map side. */
  readonly stride: number;

  /** Builds a randomly initialised model; {@link createModel} fills the default options. */
  constructor(readonly gpu: GpuContext, readonly options: Required<ModelOptions>) {
    const rng = new Rng(options.seed);
    const bb = buildBackbone(gpu, options.arch, {
      outputStride: options.outputStride,
      rng,
      frozenBn: options.frozenBn,
    });
    this.backbone = bb.net;
    this.featureChannels = bb.channels;
    this.stride = bb.stride;
    this.classifier = new Conv2d(gpu, {
      name: "classifier",
      inChannels: bb.channels,
      outChannels: options.numClasses,
      kernel: 1,
      stride: 1,
      padding: 0,
      dilation: 1,
      bias: false,
      group: "head",
    }, rng);
  }

  /** Forward pass; with a tape (training) it records the backward there. */
  forward(x: Tensor, tape: Tape | null): CamOutputs {
    const feats = this.backbone.forward(x, tape);
    const cam = this.classifier.forward(feats, tape);
    feats.dispose();
    const logits = globalAvgPool(tape, cam);
    return { cam, logits };
  }

  /** Trainable parameters (backbone then classifier). */
  params(): Param[] {
    return [...this.backbone.params(), ...this.classifier.params()];
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

/** Builds a CAM classifier with Kaiming-initialised weights. */
export function createModel(gpu: GpuContext, opts: ModelOptions): CamNet {
  return new CamNet(gpu, {
    arch: opts.arch,
    numClasses: opts.numClasses,
    outputStride: opts.outputStride ?? 16,
    seed: opts.seed ?? 0,
    frozenBn: opts.frozenBn ?? false,
  });
}
