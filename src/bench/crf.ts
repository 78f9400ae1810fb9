/**
 * `deno task bench --only crf`: the dense CRF (src/ops/crf.ts, docs/crf.md) on a synthetic
 * structured image (coloured discs and bars on a gradient, ±12 noise) with noisy 21-label
 * probabilities, psa's parameters (Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat
 * 10, 10 iterations):
 *
 * - the lattice path at 320x320: lattice build (image only) and 10 iterations, in ms;
 * - the same at the sizes the project runs: 128x128 with 4 labels, 2 runs per build (psa's
 *   affinity labels), and 500x375 with 21 labels (segmenter inference; not with `quick`),
 *   best of 3;
 * - the exact GPU path on a small image beside the f64 reference's time on the same input,
 *   and the lattice path's |ΔQ| and argmax agreement against that exact result;
 * - the lattice's kernel approximation at 320x320: at sampled pixels, the kernel-weighted
 *   average of Q, Σ_q k(p,q)·Q_q / Σ_q k(p,q), through the lattice vs the exact O(N) sum in
 *   f64 (the symmetric message's per-pixel normalisers need every pixel's O(N) sum, too
 *   costly at this size; this average is what the lattice approximates for each message).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { crfFeatures, DenseCrf, type DenseCrfOptions, denseCrfRef } from "../ops/crf.ts";
import { Rng } from "../rng.ts";
import type { BenchRow } from "./table.ts";

/** A structured h x w test image [3, H, W] and noisy probabilities [L, H, W] (f32). */
export function crfBenchInput(h: number, w: number, labels: number, seed = 1) {
  const r = new Rng(seed);
  const n = h * w;
  const img = new Float32Array(3 * n);
  const region = new Uint8Array(n);
  const discs = Array.from({ length: 5 }, (_, i) => ({
    x: r.uniform(0, w),
    y: r.uniform(0, h),
    rad: r.uniform(0.1, 0.3) * Math.min(h, w),
    label: 1 + (i % (labels - 1 || 1)),
    rgb: [r.uniform(0, 255), r.uniform(0, 255), r.uniform(0, 255)],
  }));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      let rgb = [60 + 80 * x / w, 90, 60 + 80 * y / h];
      let lab = 0;
      for (const d of discs) {
        if ((x - d.x) ** 2 + (y - d.y) ** 2 < d.rad ** 2) [rgb, lab] = [d.rgb, d.label];
      }
      if (labels > 1 && Math.abs(x - 0.7 * w) < 0.04 * w) [rgb, lab] = [[250, 250, 250], 1];
      region[p] = lab;
      for (let c = 0; c < 3; c++) {
        img[c * n + p] = Math.round(Math.min(255, Math.max(0, rgb[c] + r.uniform(-12, 12))));
      }
    }
  }
  const probs = new Float32Array(labels * n);
  for (let p = 0; p < n; p++) {
    for (let l = 0; l < labels; l++) {
      probs[l * n + p] = r.uniform(0, 1) ** 2 * 0.5 + (l === region[p] ? 0.3 : 0);
    }
  }
  return { img, probs, region };
}

async function timed(gpu: GpuContext, fn: () => void): Promise<number> {
  await gpu.sync();
  const t0 = performance.now();
  fn();
  await gpu.sync();
  return performance.now() - t0;
}

function argmaxAt(q: ArrayLike<number>, labels: number, n: number, p: number): number {
  let best = 0;
  for (let l = 1; l < labels; l++) if (q[l * n + p] > q[best * n + p]) best = l;
  return best;
}

/** The section's rows (see the module doc); `quick`: 160x160 and a 32x32 exact case. */
export async function benchCrf(
  gpu: GpuContext,
  opts: { quick?: boolean; log?: (l: string) => void } = {},
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const labels = 21;
  const size = opts.quick ? 160 : 320;
  const small = opts.quick ? 32 : 64;
  const samples = opts.quick ? 100 : 300;
  const psa: DenseCrfOptions = {};
  const section = "crf";

  // Exact GPU path vs the f64 reference on a small image; the lattice path's error there.
  {
    const h = small;
    const w = small;
    const n = h * w;
    const { img, probs } = crfBenchInput(h, w, labels, 2);
    const it = Tensor.fromArray(gpu, img, [3, h, w]);
    const pt = Tensor.fromArray(gpu, probs, [labels, h, w]);
    const exact = new DenseCrf(gpu, it, { ...psa, method: "exact" });
    const lattice = new DenseCrf(gpu, it, { ...psa, method: "lattice" });
    // Warm-up (pipeline compilation).
    exact.run(pt, 1).dispose();
    lattice.run(pt, 1).dispose();
    await gpu.sync();
    let qe: Tensor | null = null;
    const msExact = await timed(gpu, () => (qe = exact.run(pt)));
    const ql = lattice.run(pt);
    const [ge, gl] = [await qe!.read(), await ql.read()];
    opts.log?.(`crf: f64 reference on ${h}x${w}x${labels}...`);
    const t0 = performance.now();
    const ref = denseCrfRef(img, probs, h, w, labels, psa);
    const msRef = performance.now() - t0;
    let maxE = 0;
    let maxL = 0;
    let meanL = 0;
    let agree = 0;
    for (let i = 0; i < ref.length; i++) {
      maxE = Math.max(maxE, Math.abs(ge[i] - ref[i]));
      const d = Math.abs(gl[i] - ref[i]);
      maxL = Math.max(maxL, d);
      meanL += d / ref.length;
    }
    for (let p = 0; p < n; p++) {
      if (argmaxAt(gl, labels, n, p) === argmaxAt(ref, labels, n, p)) agree++;
    }
    rows.push({
      section,
      name: `exact GPU path ${h}x${w}, ${labels} labels, 10 iterations`,
      value: msExact,
      unit: "ms",
      reference: msRef,
      referenceName: "f64 CPU reference",
      note: `max |ΔQ| vs f64 ${maxE.toExponential(2)}`,
    });
    rows.push({
      section,
      name: `lattice path vs exact ${h}x${w}: max |ΔQ|`,
      value: maxL,
      unit: "",
      note: `mean |ΔQ| ${meanL.toExponential(2)}; argmax agreement ${
        (100 * agree / n).toFixed(2)
      }%`,
    });
    for (const t of [it, pt, qe!, ql]) t.dispose();
    exact.dispose();
    lattice.dispose();
  }

  // The sizes the project runs: psa's affinity labels (128x128, 4 labels, 2 runs per build)
  // and VOC-sized segmenter inference (500x375, 21 labels, 1 run); 10 iterations.
  for (
    const [h, w, l, runs, what] of [
      [128, 128, 4, 2, "psa affinity labels"],
      ...(opts.quick ? [] : [[375, 500, 21, 1, "segmenter inference"]]),
    ] as [number, number, number, number, string][]
  ) {
    const { img, probs } = crfBenchInput(h, w, l, 4);
    const it = Tensor.fromArray(gpu, img, [3, h, w]);
    const pt = Tensor.fromArray(gpu, probs, [l, h, w]);
    const warm = new DenseCrf(gpu, it, { ...psa, method: "lattice" });
    warm.run(pt, 1).dispose();
    warm.dispose();
    await gpu.sync();
    // Best of 3 (a shared CPU adapter is noisy).
    let msBuild = Infinity;
    let msRun = Infinity;
    for (let r = 0; r < 3; r++) {
      let crf: DenseCrf | null = null;
      msBuild = Math.min(
        msBuild,
        await timed(gpu, () => (crf = new DenseCrf(gpu, it, { ...psa, method: "lattice" }))),
      );
      const ms = await timed(gpu, () => {
        for (let k = 0; k < runs; k++) crf!.run(pt).dispose();
      });
      msRun = Math.min(msRun, ms / runs);
      crf!.dispose();
    }
    rows.push({
      section,
      name: `lattice build ${h}x${w} (${what})`,
      value: msBuild,
      unit: "ms",
      note: `best of 3`,
    });
    rows.push({
      section,
      name: `lattice path ${h}x${w}, ${l} labels, 10 iterations (${what})`,
      value: msRun,
      unit: "ms",
      note: `best of 3; per run of ${runs} on one build; build not included`,
    });
    it.dispose();
    pt.dispose();
  }

  // Lattice path at full size: build and iterations.
  {
    const h = size;
    const w = size;
    const n = h * w;
    const { img, probs } = crfBenchInput(h, w, labels, 3);
    const it = Tensor.fromArray(gpu, img, [3, h, w]);
    const pt = Tensor.fromArray(gpu, probs, [labels, h, w]);
    // Warm-up build and iteration (compiles the pipelines).
    const warm = new DenseCrf(gpu, it, { ...psa, method: "lattice" });
    warm.run(pt, 1).dispose();
    warm.dispose();
    await gpu.sync();
    let crf: DenseCrf | null = null;
    const msBuild = await timed(
      gpu,
      () => (crf = new DenseCrf(gpu, it, { ...psa, method: "lattice" })),
    );
    let q: Tensor | null = null;
    const msRun = await timed(gpu, () => (q = crf!.run(pt)));
    const vertices = await crf!.lattice!.vertexCount();
    rows.push({
      section,
      name: `lattice build ${h}x${w} (image only)`,
      value: msBuild,
      unit: "ms",
      note: `${vertices} lattice vertices for ${6 * n} simplex corners`,
    });
    rows.push({
      section,
      name: `lattice path ${h}x${w}, ${labels} labels, 10 iterations`,
      value: msRun,
      unit: "ms",
      note: `${(msRun / 10).toFixed(0)} ms per iteration; build not included`,
    });

    // The kernel approximation at sampled pixels: lattice vs exact kernel-weighted averages.
    const ones = Tensor.fromArray(gpu, new Float32Array(n).fill(1), [n]);
    const lat = crf!.lattice!;
    const num = lat.filter(q!, labels, ones);
    const den = lat.filter(ones.reshape([1, n]), 1, ones);
    const [qv, nv, dv] = [await q!.read(), await num.read(), await den.read()];
    for (const t of [ones, num, den, q!, it, pt]) t.dispose();
    crf!.dispose();
    opts.log?.(`crf: exact kernel sums at ${samples} sampled pixels of ${h}x${w}...`);
    const { f, d } = crfFeatures(img, h, w, 80, 13);
    const r = new Rng(7);
    let maxM = 0;
    let meanM = 0;
    let agree = 0;
    const acc = new Float64Array(labels);
    for (let s = 0; s < samples; s++) {
      const p = Math.min(n - 1, Math.floor(r.uniform(0, n)));
      acc.fill(0);
      let z = 0;
      for (let qq = 0; qq < n; qq++) {
        let dist = 0;
        for (let i = 0; i < d; i++) dist += (f[p * d + i] - f[qq * d + i]) ** 2;
        const k = Math.exp(-0.5 * dist);
        z += k;
        for (let l = 0; l < labels; l++) acc[l] += k * qv[l * n + qq];
      }
      let bestE = 0;
      let bestL = 0;
      for (let l = 0; l < labels; l++) {
        const e = acc[l] / z;
        const a = nv[l * n + p] / dv[p];
        maxM = Math.max(maxM, Math.abs(a - e));
        meanM += Math.abs(a - e) / (samples * labels);
        if (e > acc[bestE] / z) bestE = l;
        if (a > nv[bestL * n + p] / dv[p]) bestL = l;
      }
      if (bestE === bestL) agree++;
    }
    rows.push({
      section,
      name: `lattice kernel average vs exact ${h}x${w}, ${samples} pixels: max |Δ|`,
      value: maxM,
      unit: "",
      note: `mean |Δ| ${meanM.toExponential(2)}; argmax agreement ${
        (100 * agree / samples).toFixed(1)
      }%`,
    });
  }
  return rows;
}
