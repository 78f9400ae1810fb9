/**
 * AffinityNet (psa, Ahn & Kwak, CVPR 2018): a backbone at output stride 8 whose last three
 * stages each feed a 1x1 conv + ELU branch (psa's f8_3, f8_4, f8_5), concatenated and fused by
 * a 1x1 conv + ELU (psa's f9) into the affinity features. Pairwise affinities of these
 * features ({@link pairwiseAffinity}) are trained with psa's affinity loss.
 *
 * Differences from psa, all small: the backbone is one of ours (`tiny` by default, whose
 * second-last-but-one stage is at stride 4 and is bilinearly resized to the stride-8 grid);
 * the fuse conv over the concatenation is stored as one weight block per branch
 * (`f9.K.weight`, [D, C_K, 1, 1]), which is the same linear map without a concat op. Branch
 * and fuse layers are the `head` learning-rate group (psa: 10x). f9 is Xavier-uniform
 * initialised with gain 4, as in psa.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import { loadTensors, type NamedTensor } from "../../io/checkpoint.ts";
import { Rng } from "../../rng.ts";
import { type Buffer, disposeState, namedState, type Param } from "../../autograd/param.ts";
import type { Tape } from "../../autograd/tape.ts";
import { add, resizeBilinear } from "../../autograd/functions.ts";
import { Conv2d, ELU, Sequential } from "../../models/modules.ts";
import { type Arch, buildBackbone } from "../../models/resnet.ts";

/** Options of {@link createAffinityNet}. */
export interface AffinityNetOptions {
  /** Backbone architecture (torchvision names for the resnets). */
  arch: Arch;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
  /** psa-style frozen batchnorm. Default false. */
  frozenBn?: boolean;
  /** Branch widths for the last three stages (default: psa's 64/128/256, or 32/64/128 for tiny). */
  branchWidths?: [number, number, number];
}

/** One branch: a backbone segment, its 1x1 conv + ELU, and its block of the fuse conv. */
export interface AffinityBranch {
  /** The backbone blocks of this stage. */
  segment: Sequential;
  /** psa's f8_K: 1x1 conv from the stage's channels to the branch width. */
  conv: Conv2d;
  /** Its ELU. */
  elu: ELU;
  /** This branch's block of psa's f9 (1x1 conv to the D feature channels). */
  fuse: Conv2d;
}

/** psa's AffinityNet: features for pairwise affinities (see the module doc). */
export class AffinityNet {
  /** The three stage branches, in stage order. */
  readonly branches: AffinityBranch[];
  /** Everything of the backbone before the first branch's stage. */
  readonly stem: Sequential;
  /** The ELU after the fuse conv. */
  readonly fuseElu: ELU;
  /** Feature channels D. */
  readonly featureChannels: number;
  /** Output stride of the features (8). */
  readonly stride = 8;

  /** Builds and initialises the network (use {@link createAffinityNet} for defaults). */
  constructor(readonly gpu: GpuContext, readonly options: Required<AffinityNetOptions>) {
    const rng = new Rng(options.seed);
    const bb = buildBackbone(gpu, options.arch, {
      outputStride: 8,
      rng,
      frozenBn: options.frozenBn,
    });
    const stages = bb.stages.slice(1); // layer2, layer3, layer4
    const layers = bb.net.layers;
    this.stem = new Sequential(layers.slice(0, bb.stages[0].end));
    const widths = options.branchWidths;
    const D = widths.reduce((a, b) => a + b, 0);
    this.featureChannels = D;
    const head = (name: string, inC: number, outC: number) =>
      new Conv2d(gpu, {
        name,
        inChannels: inC,
        outChannels: outC,
        kernel: 1,
        bias: false,
        group: "head",
      }, rng);
    let start = bb.stages[0].end;
    this.branches = stages.map((st, k): AffinityBranch => {
      const segment = new Sequential(layers.slice(start, st.end));
      start = st.end;
      return {
        segment,
        conv: head(`f8.${k}`, st.channels, widths[k]),
        elu: new ELU(),
        fuse: head(`f9.${k}`, widths[k], D),
      };
    });
    // psa: xavier_uniform_(f9.weight, gain=4) over the whole [D, D] weight.
    const bound = 4 * Math.sqrt(6 / (D + D));
    for (const b of this.branches) {
      const w = b.fuse.weight.value;
      const data = new Float32Array(w.size);
      for (let i = 0; i < data.length; i++) data[i] = rng.uniform(-bound, bound);
      w.write(data);
    }
    this.fuseElu = new ELU();
  }

  /**
   * Affinity features [B, D, ceil(H/8), ceil(W/8)] of images `x` [B, 3, H, W]; with a tape
   * (training) records the backward there.
   */
  forward(x: Tensor, tape: Tape | null): Tensor {
    let h = this.stem.forward(x, tape);
    const outs: Tensor[] = [];
    for (const b of this.branches) {
      const next = b.segment.forward(h, tape);
      h.dispose();
      h = next;
      outs.push(h.retain());
    }
    h.dispose();
    const [, , fh, fw] = outs[outs.length - 1].shape;
    let sum: Tensor | null = null;
    this.branches.forEach((b, k) => {
      let s = outs[k];
      if (s.shape[2] !== fh || s.shape[3] !== fw) {
        const r = resizeBilinear(tape, s, { size: [fh, fw] });
        s.dispose();
        s = r;
      }
      const f = b.conv.forward(s, tape);
      s.dispose();
      const e = b.elu.forward(f, tape);
      f.dispose();
      const z = b.fuse.forward(e, tape);
      e.dispose();
      if (sum) {
        const t: Tensor = add(tape, sum, z, { inplace: true });
        sum.dispose();
        z.dispose();
        sum = t;
      } else sum = z;
    });
    const feat = this.fuseElu.forward(sum!, tape);
    sum!.dispose();
    return feat;
  }

  /** Trainable parameters: backbone (stem, stages) then branch and fuse convs. */
  params(): Param[] {
    return [
      ...this.stem.params(),
      ...this.branches.flatMap((b) => b.segment.params()),
      ...this.branches.flatMap((b) => [...b.conv.params(), ...b.fuse.params()]),
    ];
  }

  /** Batchnorm running statistics. */
  buffers(): Buffer[] {
    return [...this.stem.buffers(), ...this.branches.flatMap((b) => b.segment.buffers())];
  }

  /** Every tensor of the model's state by name (params then buffers). */
  stateTensors(): NamedTensor[] {
    return namedState(this.params(), this.buffers());
  }

  /**
   * Loads the backbone (torchvision names) from a CAM classifier or SEAM checkpoint or converted
   * ImageNet weights; the classifier (SEAM's fc8 and PCM convs), optimizer state and
   * torchvision's `fc.*` are ignored,
   * the branch and fuse convs keep their initialisation.
   */
  async loadBackbone(path: string): Promise<void> {
    await loadTensors(path, this.stateTensors(), {
      allowMissing: (n) => n.startsWith("f8.") || n.startsWith("f9."),
      ignoreUnexpected: (n) =>
        n.startsWith("classifier.") || n.startsWith("optim.") || n.startsWith("fc.") ||
        n.endsWith(".num_batches_tracked") ||
        // SEAM's heads (fc8, its PCM's f8_3, f8_4 and f9 blocks): a SEAM checkpoint's backbone.
        n.startsWith("fc8.") || n.startsWith("f8_") || n.startsWith("f9."),
    });
  }

  /** Frees every parameter, gradient and buffer. */
  dispose(): void {
    disposeState(this.params(), this.buffers());
  }
}

/** Builds an AffinityNet (see the module doc). */
export function createAffinityNet(gpu: GpuContext, opts: AffinityNetOptions): AffinityNet {
  return new AffinityNet(gpu, {
    arch: opts.arch,
    seed: opts.seed ?? 0,
    frozenBn: opts.frozenBn ?? false,
    branchWidths: opts.branchWidths ?? (opts.arch === "tiny" ? [32, 64, 128] : [64, 128, 256]),
  });
}
