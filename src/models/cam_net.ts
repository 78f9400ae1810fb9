/**
 * The CAM classifier (DESIGN §3): backbone → 1x1 conv classifier without bias (C class maps)
 * → global average pool → image logits. The class maps are the CAMs (pre-ReLU).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import type { NamedTensor, Tensor } from "../gpu/tensor.ts";
import { Rng } from "../rng.ts";
import { Conv2d } from "../ops/conv.ts";
import { type Buffer, Ctx, type Param } from "./layer.ts";
import { globalAvgPool, globalAvgPoolBackward } from "../ops/pool.ts";
import { type Arch, buildBackbone, type Sequential } from "./resnet.ts";

/** Options of {@link createModel}. */
export interface ModelOptions {
  arch: Arch;
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
  readonly backbone: Sequential;
  readonly classifier: Conv2d;
  readonly featureChannels: number;
  readonly stride: number;

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

  /** Forward pass; with a ctx (training) it saves what backward needs. */
  forward(x: Tensor, ctx: Ctx | null): CamOutputs {
    const cb = ctx ? new Ctx() : null;
    const cc = ctx ? new Ctx() : null;
    const feats = this.backbone.forward(x, cb);
    const cam = this.classifier.forward(feats, cc);
    feats.dispose();
    const logits = globalAvgPool(this.gpu, cam);
    if (ctx) Object.assign(ctx.meta, { cb, cc, camShape: cam.shape });
    return { cam, logits };
  }

  /**
   * Backward from the gradient of the class maps (`dCam`, [B,C,h,w]: the GAP backward of the
   * logit gradient plus any loss on the maps such as OCR). Writes parameter gradients.
   */
  backward(ctx: Ctx, dCam: Tensor): void {
    const { cb, cc } = ctx.meta as { cb: Ctx; cc: Ctx };
    const dFeat = this.classifier.backward(cc, dCam);
    const dx = this.backbone.backward(cb, dFeat);
    dFeat.dispose();
    dx.dispose();
    ctx.release();
  }

  /** dCam of a logit gradient (the GAP backward), a new tensor. */
  logitGradToCam(dLogits: Tensor, camShape: readonly number[]): Tensor {
    return globalAvgPoolBackward(this.gpu, dLogits, camShape);
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
    return [
      ...this.params().map((p) => ({ name: p.name, value: p.value })),
      ...this.buffers().map((b) => ({ name: b.name, value: b.value })),
    ];
  }

  /** Frees every parameter, gradient and buffer. */
  dispose(): void {
    for (const p of this.params()) {
      p.value.dispose();
      p.grad.dispose();
    }
    for (const b of this.buffers()) b.value.dispose();
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
