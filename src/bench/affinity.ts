/**
 * AffinityNet benchmarks on random inputs: images/s of an AffinityNet training step beside the
 * CAM classifier's step at the same size and batch, and the random walk per image on the GPU
 * beside its f64 CPU reference (same input), plus the whole per-image random-walk inference
 * (AffinityNet forward, affinities, walk, upsampling, argmax, one readback).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { argmaxChannels } from "../ops/channel.ts";
import { resizeBilinear } from "../ops/resize.ts";
import { createAffinityNet } from "../methods/affinitynet/model.ts";
import { AdamW } from "../optim/mod.ts";
import { Rng } from "../rng.ts";
import { pairwiseAffinity } from "../ops/affinity.ts";
import { randomWalk, randomWalkRef } from "../methods/affinitynet/random_walk.ts";
import { recordAffinityStep } from "../methods/affinitynet/train.ts";
import { timeTrainStep } from "./train.ts";
import { type BenchRow, timeMedian } from "./table.ts";

/** Median ms of an AffinityNet training step (tiny, random images and two-region labels). */
async function timeAffinityStep(gpu: GpuContext, size: number, batch: number): Promise<number> {
  const rng = new Rng(3);
  const model = createAffinityNet(gpu, { arch: "tiny", seed: 1 });
  const params = model.params();
  const opt = new AdamW(gpu, { weightDecay: 1e-4 });
  const x = Tensor.fromArray(gpu, rng.normals(batch * 3 * size * size), [batch, 3, size, size]);
  const masks = new Uint8Array(batch * size * size);
  for (let i = 0; i < masks.length; i++) {
    const col = i % size;
    masks[i] = col < size / 3 ? 0 : col < size / 2 ? 255 : 1 + (i % 7);
  }
  const step = async () => {
    const { loss } = recordAffinityStep(gpu, model, opt, params, {
      x,
      masks,
      lr: 1e-4,
      radius: 5,
    });
    const l = await loss.read();
    loss.dispose();
    if (!Number.isFinite(l[0])) throw new Error(`bench affinity step gave loss ${l[0]}`);
  };
  const ms = await timeMedian(step, 3, 1);
  x.dispose();
  opt.dispose();
  model.dispose();
  return ms;
}

/** AffinityNet step and random-walk figures (see the module doc). */
export async function benchAffinity(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const size = 128, batch = 8;
  const aff = await timeAffinityStep(gpu, size, batch);
  const cam = (await timeTrainStep(gpu, { arch: "tiny", size, batch, ocr: false }, 3)).ms;
  rows.push({
    section: "affinity",
    name: `AffinityNet tiny ${size}px batch ${batch} step`,
    value: (batch * 1000) / aff,
    unit: "img/s",
    reference: (batch * 1000) / cam,
    referenceName: "CAM classifier step, same size/batch",
    note: `${aff.toFixed(0)} ms/step`,
  });

  // The walk alone on a 16x16 grid (a 128 px image): 3 channels (bg + 2 classes), logt 8.
  const rng = new Rng(9);
  const [h, w, K] = [16, 16, 3];
  const feat = Tensor.fromArray(gpu, rng.normals(32 * h * w, 0.3), [1, 32, h, w]);
  const affT = pairwiseAffinity(gpu, feat);
  const affHost = await affT.read();
  const camHost = Float32Array.from({ length: K * h * w }, () => rng.uniform());
  const camT = Tensor.fromArray(gpu, camHost, [K, h, w]);
  const walk = async () => {
    const r = randomWalk(gpu, affT, camT);
    r.cams.dispose();
    await r.labels.read();
    r.labels.dispose();
  };
  const gpuMs = await timeMedian(walk, opts.quick ? 2 : 5, 1);
  const t0 = performance.now();
  randomWalkRef(affHost, camHost, K, h, w);
  const cpuMs = performance.now() - t0;
  rows.push({
    section: "affinity",
    name: `random walk ${h}x${w} grid, ${K} channels, logt 8`,
    value: gpuMs,
    unit: "ms",
    reference: cpuMs,
    referenceName: "f64 CPU reference (repeated squaring)",
    note: "per image, one readback",
  });

  // The whole per-image inference at 128 px, beside the walk alone.
  const model = createAffinityNet(gpu, { arch: "tiny", seed: 1 });
  const x = Tensor.fromArray(gpu, rng.normals(3 * size * size), [1, 3, size, size]);
  const infer = async () => {
    const f = model.forward(x, null);
    const a = pairwiseAffinity(gpu, f);
    f.dispose();
    const r = randomWalk(gpu, a, camT);
    a.dispose();
    r.labels.dispose();
    const up = resizeBilinear(gpu, r.cams.reshape([1, K, h, w]), { size: [size, size] });
    r.cams.dispose();
    const arg = argmaxChannels(gpu, up);
    up.dispose();
    await arg.read();
    arg.dispose();
  };
  const inferMs = await timeMedian(infer, opts.quick ? 2 : 5, 1);
  rows.push({
    section: "affinity",
    name: `random-walk inference ${size}px image (AffinityNet forward + walk + argmax)`,
    value: inferMs,
    unit: "ms",
    reference: gpuMs,
    referenceName: "walk alone",
    note: `${(1000 / inferMs).toFixed(1)} img/s`,
  });
  for (const t of [feat, affT, camT, x]) t.dispose();
  model.dispose();
  return rows;
}
