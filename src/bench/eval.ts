/**
 * Evaluation benchmarks: images/s of the GPU confusion matrix (VOC-sized masks, K = 21) and of
 * the GPU CAM evaluation (OC rate + a 12-threshold sweep), each beside the TypeScript
 * reference measured in the same run. Times include validation, uploads and the final
 * readback (one per run of all images).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Rng } from "../rng.ts";
import {
  accumulateMaskCounts,
  emptyMaskCounts,
  type LabelMap,
  MaskEvaluator,
  type MaskSample,
} from "../eval/confusion.ts";
import { accumulateCamCounts, CamEvaluator, type CamSample, emptyCamCounts } from "../eval/cam.ts";
import { type BenchRow, timeMedian } from "./table.ts";

/** Piecewise-constant random labels (masks are blobby; runs matter for the kernel). */
function blobMap(rng: Rng, w: number, h: number, C: number, ignore: boolean): LabelMap {
  const data = new Uint8Array(w * h);
  const blocks = 8;
  const lab = Array.from({ length: blocks * blocks }, () => rng.int(C + 1));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const b = Math.floor(y * blocks / h) * blocks + Math.floor(x * blocks / w);
      data[y * w + x] = ignore && (x + y) % 97 === 0 ? 255 : lab[b];
    }
  }
  return { width: w, height: h, data };
}

/** Options of {@link benchEval}. */
export interface EvalBenchOptions {
  /** Images per measured run (default 32 masks, 8 CAM images). */
  images?: number;
  camImages?: number;
  /** Timed repetitions (median reported; default 3). */
  reps?: number;
}

/** Runs the evaluation benchmarks. */
export async function benchEval(gpu: GpuContext, opts: EvalBenchOptions = {}): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const reps = opts.reps ?? 3;
  const rng = new Rng(1);
  const C = 20;

  // Confusion matrix + mask OC counts, 500x375 (a typical VOC image).
  const N = opts.images ?? 32;
  const W = 500, H = 375;
  const masks: MaskSample[] = [...Array(N)].map((_, i) => ({
    id: `m${i}`,
    gt: blobMap(rng, W, H, C, true),
    pred: blobMap(rng, W, H, C, false),
    tags: [rng.int(C), rng.int(C)],
  }));
  const gpuMs = await timeMedian(async () => {
    const ev = new MaskEvaluator(gpu, C);
    for (const s of masks) await ev.add(s);
    await ev.result();
    ev.dispose();
  }, reps);
  const refMs = await timeMedian(() => {
    const c = emptyMaskCounts(C);
    for (const s of masks) accumulateMaskCounts(c, s);
  }, reps);
  rows.push({
    section: "eval",
    name: `confusion+OC ${W}x${H} K=${C + 1} (${N} img)`,
    value: N / (gpuMs / 1000),
    unit: "img/s",
    reference: N / (refMs / 1000),
    referenceName: "TS reference",
  });

  // CAM evaluation: CAMs [20, 40, 30] upsampled to 320x240, OC rate + 12-threshold sweep.
  const NC = opts.camImages ?? 8;
  const CW = 320, CH = 240, cw = 40, ch = 30;
  const thresholds = [...Array(12)].map((_, i) => 0.05 * (i + 1));
  const cams: CamSample[] = [...Array(NC)].map((_, i) => ({
    id: `c${i}`,
    cam: Float32Array.from({ length: C * ch * cw }, () => rng.uniform(-1, 3)),
    camShape: [C, ch, cw] as const,
    width: CW,
    height: CH,
    tags: [rng.int(C), rng.int(C)],
    gt: blobMap(rng, CW, CH, C, true),
  }));
  const camGpuMs = await timeMedian(async () => {
    const ev = new CamEvaluator(gpu, C, { thresholds });
    for (const s of cams) await ev.add(s);
    await ev.result();
    ev.dispose();
  }, reps);
  const camRefMs = await timeMedian(
    async () => {
      const c = emptyCamCounts(C, thresholds);
      for (const s of cams) await accumulateCamCounts(c, s);
    },
    Math.min(reps, 2),
    0,
  );
  rows.push({
    section: "eval",
    name: `CAM OC+sweep(12) [${C},${ch},${cw}]->${CW}x${CH} (${NC} img)`,
    value: NC / (camGpuMs / 1000),
    unit: "img/s",
    reference: NC / (camRefMs / 1000),
    referenceName: "TS reference",
  });
  return rows;
}
