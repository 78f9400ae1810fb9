/**
 * The segmenter's training step on random inputs (no data loading): images/s of a full step
 * (DeepLab forward at output stride 8, logits upsampled to the crop, cross-entropy with ignored
 * pixels, backward, SGD; one submit), beside the CAM classifier's step on the same backbone,
 * crop and batch, measured in the same run.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { createSegModel, type SegHead } from "../models/deeplab.ts";
import type { Arch } from "../models/resnet.ts";
import { SGD } from "../optim/mod.ts";
import { Rng } from "../rng.ts";
import { recordSegStep } from "../methods/seg/train.ts";
import { type BenchRow, timeMedian } from "./table.ts";
import { timeTrainStep } from "./train.ts";

/** Median ms of one segmenter training step (after a warm-up step). */
export async function timeSegStep(
  gpu: GpuContext,
  c: { arch: Arch; head: SegHead; size: number; batch: number },
  reps = 3,
): Promise<number> {
  const K = 21;
  const rng = new Rng(3);
  const model = createSegModel(gpu, { arch: c.arch, numClasses: K, head: c.head, seed: 1 });
  const params = model.params();
  const opt = new SGD(gpu, { momentum: 0.9, weightDecay: 5e-4, lrMult: { head: 10 } });
  const S = c.size;
  const x = Tensor.fromArray(gpu, rng.normals(c.batch * 3 * S * S), [c.batch, 3, S, S]);
  // Labels: classes in blocks, a tenth of the pixels ignored (as crops padded with 255).
  const lab = new Float32Array(c.batch * S * S).map((_, i) =>
    rng.next() < 0.1 ? 255 : (Math.floor(i / (S * 8)) % K)
  );
  const labels = Tensor.fromArray(gpu, lab, [c.batch, S, S]);
  let step = 0;
  const ms = await timeMedian(
    async () => {
      const loss = recordSegStep(gpu, model, opt, params, {
        x,
        labels,
        lr: 1e-4,
        dropoutSeed: step++,
      });
      const [v] = await loss.read();
      loss.dispose();
      if (!Number.isFinite(v)) throw new Error(`seg bench step gave loss ${v}`);
    },
    reps,
    1,
  );
  x.dispose();
  labels.dispose();
  opt.dispose();
  model.dispose();
  return ms;
}

/** `tiny` ASPP and LargeFOV at 128 px, batch 8, beside the CAM classifier's step. */
export async function benchSeg(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<BenchRow[]> {
  const base = { arch: "tiny" as const, size: 128, batch: 8 };
  const cam = (await timeTrainStep(gpu, { ...base, ocr: false }, opts.quick ? 2 : 3)).ms;
  const heads: SegHead[] = opts.quick ? ["aspp"] : ["aspp", "largefov"];
  const rows: BenchRow[] = [];
  for (const head of heads) {
    const ms = await timeSegStep(gpu, { ...base, head }, opts.quick ? 2 : 3);
    rows.push({
      section: "seg",
      name: `segmenter step, tiny ${head} OS8 128px batch 8`,
      value: (base.batch * 1000) / ms,
      unit: "img/s",
      reference: (base.batch * 1000) / cam,
      referenceName: "CAM classifier step (tiny OS16, same crop and batch)",
      note: `${ms.toFixed(0)} ms/step vs ${cam.toFixed(0)} ms`,
    });
  }
  return rows;
}
