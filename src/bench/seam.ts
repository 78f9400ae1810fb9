/**
 * SEAM's training step on random inputs (no data loading): milliseconds of a full step (both
 * shared-weight branches, PCM, SEAM's losses, backward, SGD; one submit) beside the CAM
 * classifier's step on the same backbone, crop and batch, measured in the same run, and the
 * PCM's share: its forward and backward alone at the step's two map grids.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { OcrConfigSchema } from "../io/config.ts";
import { SGD } from "../optim/mod.ts";
import { Rng } from "../rng.ts";
import { pcmBackward, pcmForward } from "../ops/pcm.ts";
import { createSeamNet } from "../methods/seam/model.ts";
import { recordSeamStep } from "../methods/seam/train.ts";
import { type BenchRow, timeMedian } from "./table.ts";
import { timeTrainStep } from "./train.ts";

/** Median ms of one SEAM step, and the grid [h, w] of its first branch's maps. */
async function timeSeamStep(
  gpu: GpuContext,
  c: { size: number; batch: number },
  reps: number,
): Promise<{ ms: number; grid: readonly number[] }> {
  const C = 20;
  const rng = new Rng(5);
  const model = createSeamNet(gpu, { arch: "tiny", numClasses: C, seed: 1 });
  const params = model.params();
  const opt = new SGD(gpu, { momentum: 0.9, weightDecay: 5e-4 });
  const S = c.size;
  const x = Tensor.fromArray(gpu, rng.normals(c.batch * 3 * S * S), [c.batch, 3, S, S]);
  const t = new Float32Array(c.batch * C);
  for (let b = 0; b < c.batch; b++) t[b * C + rng.int(C)] = 1;
  const tags = Tensor.fromArray(gpu, t, [c.batch, C]);
  const ocr = OcrConfigSchema.parse({});
  let step = 0;
  let grid: readonly number[] = [];
  const ms = await timeMedian(
    async () => {
      const r = recordSeamStep(gpu, model, opt, params, {
        x,
        tags,
        prior: null,
        ocr,
        dropoutSeed: step++,
        scaleFactor: 0.3,
        ecrTopk: 0.2,
        lr: 1e-4,
      });
      grid = r.camShape.slice(2);
      const [v] = await r.losses.er.read();
      for (const l of Object.values(r.losses)) l?.dispose();
      if (!Number.isFinite(v)) throw new Error(`SEAM bench step gave ER loss ${v}`);
    },
    reps,
    1,
  );
  x.dispose();
  tags.dispose();
  opt.dispose();
  model.dispose();
  return { ms, grid };
}

/** Median ms of the PCM forward + backward on [N, C, h, w] maps with D feature channels. */
async function timePcm(
  gpu: GpuContext,
  N: number,
  C: number,
  D: number,
  h: number,
  w: number,
  reps: number,
): Promise<number> {
  const rng = new Rng(9);
  const feat = Tensor.fromArray(gpu, rng.normals(N * D * h * w), [N, D, h, w]);
  const cam = Tensor.fromArray(
    gpu,
    Float32Array.from({ length: N * C * h * w }, () => rng.next()),
    [
      N,
      C,
      h,
      w,
    ],
  );
  const dy = Tensor.fromArray(gpu, rng.normals(N * C * h * w), [N, C, h, w]);
  const ms = await timeMedian(
    async () => {
      const f = pcmForward(gpu, feat, cam);
      const df = pcmBackward(gpu, feat, cam, f.fn, f.s, dy);
      f.y.dispose();
      f.fn.dispose();
      f.s.dispose();
      await df.read();
      df.dispose();
    },
    reps,
    1,
  );
  [feat, cam, dy].forEach((t) => t.dispose());
  return ms;
}

/** `tiny` at 128 px, batch 8: a SEAM step beside the CAM classifier's, and the PCM's share. */
export async function benchSeam(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<BenchRow[]> {
  const base = { size: 128, batch: 8 };
  const reps = opts.quick ? 2 : 3;
  const cam = (await timeTrainStep(gpu, { arch: "tiny", ...base, ocr: false }, reps)).ms;
  const seam = await timeSeamStep(gpu, base, reps);
  const [h, w] = seam.grid;
  const S2 = Math.floor(base.size * 0.3);
  const [h2, w2] = [Math.ceil(S2 / 8), Math.ceil(S2 / 8)];
  // tiny's SEAM defaults: 48 PCM feature channels, C + 1 = 21 maps.
  const pcmMs = (await timePcm(gpu, base.batch, 21, 48, h, w, reps)) +
    (await timePcm(gpu, base.batch, 21, 48, h2, w2, reps));
  return [{
    section: "seam",
    name: `SEAM step, tiny 128px batch 8 (maps ${h}x${w} and ${h2}x${w2})`,
    value: seam.ms,
    unit: "ms",
    reference: cam,
    referenceName: "CAM classifier step (tiny OS16, same crop and batch)",
    note: `PCM forward + backward of both branches ${pcmMs.toFixed(0)} ms ` +
      `(${(100 * pcmMs / seam.ms).toFixed(0)}% of the step)`,
  }];
}
