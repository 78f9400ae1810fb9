/**
 * Data-loading benchmarks (CPU only): images/s for decode + augment of the synthetic VOC set
 * (128 px) and of VOC-sized 500x375 JPEGs, each beside decode alone measured in the same run,
 * and whether prefetching keeps a training step fed (the wait per batch for a consumer that
 * spends a fixed time per step, with and without prefetch).
 * @module
 */
import type { Dataset } from "../data/base.ts";
import { openDataset } from "../data/dataset.ts";
import { encodeJpeg } from "../data/image.ts";
import { encodeLabelPng, VOC_PALETTE } from "../data/png.ts";
import { batches, type BatchOptions } from "../data/stream.ts";
import { ensureSynthetic, type SynthSize } from "../data/synthetic.ts";
import { Rng } from "../rng.ts";
import type { BenchRow } from "./table.ts";

/** Options of {@link benchData}. */
export interface DataBenchOptions {
  /** Synthetic set to use (default "small", from the cache; generated on first use). */
  size?: SynthSize;
  cacheDir?: string;
  /** Images per measurement (default 256 synthetic, 48 large). */
  images?: number;
  largeImages?: number;
  /** Consumer step time for the prefetch check, ms (default 100). */
  stepMs?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

async function decodeRate(ds: Dataset, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await ds.load(i % ds.ids.length);
  return n / ((performance.now() - t0) / 1000);
}

async function streamRate(
  ds: Dataset,
  n: number,
  opts: Omit<BatchOptions, "epochs">,
): Promise<number> {
  const t0 = performance.now();
  let seen = 0;
  for await (const b of batches(ds, { ...opts, epochs: Infinity })) {
    seen += b.size;
    if (seen >= n) break;
  }
  return seen / ((performance.now() - t0) / 1000);
}

/** Mean wait (ms) for the next batch when the consumer works `stepMs` per batch. */
async function stallMs(
  ds: Dataset,
  opts: Omit<BatchOptions, "epochs">,
  steps: number,
  stepMs: number,
) {
  const it = batches(ds, { ...opts, epochs: Infinity });
  await it.next(); // warm start: the first batch is always waited for
  let wait = 0;
  for (let s = 0; s < steps; s++) {
    // The consumer awaits (as it does for a GPU submit), so the producer may run meanwhile.
    await new Promise((r) => setTimeout(r, stepMs));
    const t0 = performance.now();
    await it.next();
    wait += performance.now() - t0;
  }
  await it.return(undefined);
  return wait / steps;
}

/** Writes `n` 500x375 JPEGs (smooth colour fields + texture + noise) as a VOC tree. */
async function largeTree(dir: string, n: number): Promise<string> {
  const voc = `${dir}/VOC2012`;
  for (const d of ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]) {
    await Deno.mkdir(`${voc}/${d}`, { recursive: true });
  }
  const W = 500, H = 375;
  const r = new Rng(17);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const rgb = new Uint8Array(W * H * 3);
    const mask = new Uint8Array(W * H);
    const [fx, fy, ph] = [r.uniform(0.01, 0.05), r.uniform(0.01, 0.05), r.uniform(0, 6)];
    const cx = r.uniform(100, 400), cy = r.uniform(80, 300), rad = r.uniform(40, 150);
    const cls = 1 + r.int(20);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const q = y * W + x;
        const inside = (x - cx) ** 2 + (y - cy) ** 2 < rad * rad;
        const t = Math.sin(x * fx + ph) * Math.cos(y * fy) * 60 + (inside ? 60 : 0);
        const noise = r.uniform(-12, 12);
        rgb[q * 3] = Math.max(0, Math.min(255, 120 + t + noise));
        rgb[q * 3 + 1] = Math.max(0, Math.min(255, 110 - t / 2 + noise));
        rgb[q * 3 + 2] = Math.max(0, Math.min(255, 100 + ((x ^ y) & 31) + noise));
        mask[q] = inside ? cls : 0;
      }
    }
    const id = `large_${i}`;
    await Deno.writeFile(`${voc}/JPEGImages/${id}.jpg`, await encodeJpeg(rgb, W, H, 90));
    await Deno.writeFile(
      `${voc}/SegmentationClass/${id}.png`,
      await encodeLabelPng(mask, W, H, VOC_PALETTE),
    );
    ids.push(id);
  }
  // Tags come from the masks (no Annotations/ folder).
  await Deno.writeTextFile(`${voc}/ImageSets/Segmentation/train.txt`, ids.join("\n") + "\n");
  return voc;
}

/**
 * Runs the data benchmarks and returns rows (section "data"). Figures are images/s of the
 * whole loader path on the CPU (file read, JPEG + PNG decode, augmentation, batch assembly).
 */
export async function benchData(opts: DataBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  const size = opts.size ?? "small";
  log(`data: synthetic set (${size})...`);
  const { vocRoot } = await ensureSynthetic({ size, cacheDir: opts.cacheDir });
  const syn = await openDataset({ kind: "voc", root: vocRoot, split: "train" });
  const n = Math.min(opts.images ?? 256, syn.ids.length);
  await decodeRate(syn, Math.min(16, n)); // warm-up (JIT, wasm)
  const synDecode = await decodeRate(syn, n);
  const synOpts = {
    batchSize: 16,
    cropSize: 128,
    seed: 1,
    augment: { scaleRange: [96, 160] as [number, number], flip: true, colorJitter: 0.3 },
    prefetch: 2,
  };
  const synStream = await streamRate(syn, n, synOpts);
  rows.push({
    section: "data",
    name: "synthetic VOC 128px: decode+augment, B16 S128",
    value: synStream,
    unit: "img/s",
    reference: synDecode,
    referenceName: "decode only",
  });

  const tmp = await Deno.makeTempDir({ prefix: "ocr-bench-data-" });
  try {
    const nl = opts.largeImages ?? 48;
    log(`data: writing ${nl} 500x375 JPEGs...`);
    const big = await openDataset({ kind: "voc", root: await largeTree(tmp, nl), split: "train" });
    await decodeRate(big, 4);
    const bigDecode = await decodeRate(big, nl);
    const bigStream = await streamRate(big, nl, {
      batchSize: 8,
      cropSize: 448,
      seed: 1,
      augment: { scaleRange: [448, 768], flip: true, colorJitter: 0.3 },
      prefetch: 2,
    });
    rows.push({
      section: "data",
      name: "500x375 JPEG: decode+augment (psa: long 448-768, crop 448), B8",
      value: bigStream,
      unit: "img/s",
      reference: bigDecode,
      referenceName: "decode only",
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }

  const stepMs = opts.stepMs ?? 100;
  log(`data: prefetch check (consumer step ${stepMs} ms)...`);
  const steps = 12;
  const fed = await stallMs(syn, synOpts, steps, stepMs);
  const unfed = await stallMs(syn, { ...synOpts, prefetch: 0 }, steps, stepMs);
  rows.push({
    section: "data",
    name: `wait per batch, consumer step ${stepMs} ms, B16 (prefetch 2)`,
    value: fed,
    unit: "ms",
    reference: unfed,
    referenceName: "prefetch 0",
    note: fed < 0.1 * stepMs ? "fed: decoding hides behind the step" : "step waits for data",
  });
  return rows;
}
