/**
 * Training-step benchmarks on random inputs (no data loading): images/s of a full step
 * (forward + backward + optimizer, one submit) per model and size, and the OCR overhead as the
 * step time with OCR over the same step without it, measured in the same run.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { OcrConfigSchema } from "../io/config.ts";
import { cooccurrence } from "../losses/cooccurrence.ts";
import type { Arch } from "../models/resnet.ts";
import { createModel } from "../models/cam_net.ts";
import { SGD } from "../optim/mod.ts";
import { Rng } from "../rng.ts";
import { recordTrainStep } from "../train/train.ts";
import { type BenchRow, timeMedian } from "./table.ts";
import { torchLabel, torchReference } from "./torch.ts";

/** One training-step configuration. */
export interface StepCase {
  arch: Arch;
  size: number;
  batch: number;
  ocr: boolean;
}

/**
 * Median milliseconds of one training step (after `warmup` steps), with the last step's
 * dispatch count and the median CPU time to record a step (`encodeMs`, no GPU work waited on).
 */
export async function timeTrainStep(
  gpu: GpuContext,
  c: StepCase,
  reps = 3,
  warmup = 1,
): Promise<{ ms: number; ocPixels: number; dispatches: number; encodeMs: number }> {
  const C = 20;
  const rng = new Rng(7);
  const model = createModel(gpu, { arch: c.arch, numClasses: C, seed: 1 });
  const params = model.params();
  const opt = new SGD(gpu, { momentum: 0.9, weightDecay: 1e-4 });
  const x = Tensor.fromArray(gpu, rng.normals(c.batch * 3 * c.size * c.size), [
    c.batch,
    3,
    c.size,
    c.size,
  ]);
  const tagLists = Array.from({ length: c.batch }, () => [rng.int(C), rng.int(C)]);
  const tagArr = new Float32Array(c.batch * C);
  tagLists.forEach((t, i) => t.forEach((k) => tagArr[i * C + k] = 1));
  const tags = Tensor.fromArray(gpu, tagArr, [c.batch, C]);
  const prior = c.ocr ? Tensor.fromArray(gpu, cooccurrence(tagLists, C), [C, C]) : null;
  const ocr = OcrConfigSchema.parse({ enabled: c.ocr });
  let last: ReturnType<typeof recordTrainStep> | null = null;
  let dispatches = 0;
  const encodeTimes: number[] = [];
  const step = async () => {
    if (last) {
      last.lossCls.dispose();
      last.lossOcr?.dispose();
      last.ocPixels?.dispose();
    }
    // One readback per step, as in training with logEvery 1 (the OC count is read at the end).
    const d0 = gpu.dispatchCount;
    const t0 = performance.now();
    last = recordTrainStep(gpu, model, opt, params, { x, tags, lr: 1e-4, prior, ocr });
    // CPU time to record the step (no GPU work waited on) and its dispatch count.
    encodeTimes.push(performance.now() - t0);
    dispatches = gpu.dispatchCount - d0;
    const l = await last.lossCls.read();
    if (!Number.isFinite(l[0])) throw new Error(`bench step gave loss ${l[0]}`);
  };
  const ms = await timeMedian(step, reps, warmup);
  // The median over the timed steps (the warm-up steps create pipelines and bind groups).
  const timed = encodeTimes.slice(warmup).sort((a, b) => a - b);
  const encodeMs = timed[Math.floor(timed.length / 2)];
  const r = last as ReturnType<typeof recordTrainStep> | null;
  const ocPixels = r?.ocPixels ? (await r.ocPixels.read())[0] : 0;
  r?.lossCls.dispose();
  r?.lossOcr?.dispose();
  r?.ocPixels?.dispose();
  [x, tags].forEach((t) => t.dispose());
  prior?.dispose();
  opt.dispose();
  model.dispose();
  return { ms, ocPixels, dispatches, encodeMs };
}

/**
 * Training images/s for `tiny` at 128/224/320 px (batch 16) and `resnet50` at 224 px (batch 8).
 * `quick` keeps only the small case. Each row's reference is PyTorch's CPU step on the same
 * shapes, measured in the same run (./torch.ts), unless `noTorch`.
 */
export async function benchTrain(
  gpu: GpuContext,
  opts: { quick?: boolean; noTorch?: boolean } = {},
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const cases: StepCase[] = opts.quick ? [{ arch: "tiny", size: 128, batch: 16, ocr: false }] : [
    { arch: "tiny", size: 128, batch: 16, ocr: false },
    { arch: "tiny", size: 224, batch: 16, ocr: false },
    { arch: "tiny", size: 320, batch: 16, ocr: false },
    { arch: "resnet50", size: 224, batch: 8, ocr: false },
  ];
  const reps = (c: StepCase) => c.arch === "resnet50" ? 2 : 3;
  const torch = opts.noTorch
    ? { error: "PyTorch not measured (--no-torch)" }
    : await torchReference({
      train: cases.map((c) => ({ arch: c.arch, size: c.size, batch: c.batch, reps: reps(c) })),
    });
  if ("error" in torch) {
    rows.push({
      section: "train",
      name: "PyTorch reference",
      value: NaN,
      unit: "img/s",
      note: torch.error,
    });
  }
  for (const [i, c] of cases.entries()) {
    const { ms, dispatches, encodeMs } = await timeTrainStep(gpu, c, reps(c));
    const ref = "result" in torch ? torch.result.train[i] : undefined;
    rows.push({
      section: "train",
      name: `${c.arch} ${c.size}px batch ${c.batch}`,
      value: (c.batch * 1000) / ms,
      unit: "img/s",
      reference: ref?.img_s,
      referenceName: "result" in torch ? torchLabel(torch.result) : undefined,
      note: `${ms.toFixed(0)} ms/step, ${dispatches} dispatches, ${encodeMs.toFixed(1)} ms to ` +
        `record`,
    });
  }
  return rows;
}

/**
 * OCR overhead: a `tiny` 128 px batch-16 step with and without OCR, interleaved rounds so both
 * share the machine's noise; the median of each.
 */
export async function benchOcr(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const base: StepCase = { arch: "tiny", size: 128, batch: 16, ocr: false };
  const without: number[] = [];
  const withOcr: number[] = [];
  let oc = 0;
  for (let i = 0; i < (opts.quick ? 1 : 3); i++) {
    without.push((await timeTrainStep(gpu, base, 3)).ms);
    const r = await timeTrainStep(gpu, { ...base, ocr: true }, 3);
    withOcr.push(r.ms);
    oc = r.ocPixels;
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const w = med(withOcr);
  const wo = med(without);
  rows.push({
    section: "ocr",
    name: "tiny 128px batch 16 step with OCR",
    value: w,
    unit: "ms",
    reference: wo,
    referenceName: "same step without OCR",
    note: `overhead ${((w / wo - 1) * 100).toFixed(1)}% (goal < 5%), ${oc} OC pixels`,
  });
  return rows;
}
