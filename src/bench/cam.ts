/**
 * CAM extraction benchmark: images/s of `deno task cam`'s per-image GPU work with 4 scales
 * (0.5, 1, 1.5, 2) + flip, beside single-scale no-flip extraction measured in the same run.
 * Per image: upload, the fused CAMs ({@link recordImageCams}), the tagged classes' normalised
 * maps and their readback (one submit and one await per image). Randomly initialised models
 * (speed does not depend on the weights); fixed-size random images, so that shader
 * compilation happens in the warm-up run.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { createModel } from "../models/cam_net.ts";
import type { Arch } from "../models/resnet.ts";
import { Rng } from "../rng.ts";
import { recordImageCams } from "../cam/image.ts";
import { normalizeTagged } from "../cam/fuse.ts";
import { DEFAULT_SCALES } from "../cam/image.ts";
import { type BenchRow, timeMedian } from "./table.ts";

/** Options of {@link benchCam}. */
export interface CamBenchOptions {
  /** Models and image sizes (default tiny at 128 px, resnet50 at 96 px). */
  cases?: { arch: Arch; size: number; images: number }[];
  /** Timed repetitions (median reported; default 3). */
  reps?: number;
}

/** Runs the CAM extraction benchmark. */
export async function benchCam(gpu: GpuContext, opts: CamBenchOptions = {}): Promise<BenchRow[]> {
  const cases = opts.cases ?? [
    { arch: "tiny", size: 128, images: 8 },
    { arch: "resnet50", size: 96, images: 2 },
  ];
  const reps = opts.reps ?? 3;
  const rows: BenchRow[] = [];
  const rng = new Rng(7);
  const C = 20;
  for (const c of cases) {
    const model = createModel(gpu, { arch: c.arch, numClasses: C, outputStride: 16, seed: 1 });
    const S = c.size;
    const images = [...Array(c.images)].map(() =>
      Float32Array.from({ length: 3 * S * S }, () => rng.uniform(-2, 2))
    );
    const run = (scales: readonly number[], flip: boolean) => async () => {
      for (const img of images) {
        const x = Tensor.fromArray(gpu, img, [1, 3, S, S]);
        const acc = recordImageCams(gpu, model, x, { scales, flip });
        x.dispose();
        const norm = normalizeTagged(gpu, acc, [3, 11]);
        acc.dispose();
        await norm.read();
        norm.dispose();
      }
    };
    const fused = await timeMedian(run(DEFAULT_SCALES, true), reps);
    const single = await timeMedian(run([1], false), reps);
    rows.push({
      section: "cam",
      name: `${c.arch} ${S}x${S} scales ${DEFAULT_SCALES.join(",")} + flip`,
      value: c.images / (fused / 1000),
      unit: "img/s",
      reference: c.images / (single / 1000),
      referenceName: "scale 1, no flip",
      note: `${(fused / c.images).toFixed(0)} ms/img; 15x the pixels of the reference`,
    });
    for (const p of model.params()) {
      p.value.dispose();
      p.grad.dispose();
    }
    for (const b of model.buffers()) b.value.dispose();
  }
  return rows;
}
