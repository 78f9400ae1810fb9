/**
 * `evaluate()` (`deno task eval`): scores a checkpoint's CAMs, or a folder of predicted masks,
 * on a dataset split and writes `metrics.json` + `report.html` (src/eval's writers).
 *
 * Checkpoint mode: per image the unrestricted multi-scale (+ flip) fused CAMs
 * ({@link recordSampleCams}) go straight from the GPU recording into the GPU
 * {@link CamEvaluator} (no readback per image): the tag-restricted pseudo masks' confusion
 * matrix at every background threshold, and the unrestricted-CAM OC-error rate (src/eval/cam.ts,
 * activation ratio tau). Image-level tags are the dataset's training tags. metrics.json holds
 * the scores at `bg` or, with a sweep, at the best threshold, plus the sweep curve. Default
 * output folder: the checkpoint's run folder.
 *
 * Mask mode (`masks`): {@link evaluateMaskFolder} on `<masks>/<id>.png`; default output folder:
 * the mask folder.
 * @module
 */
import { createGpu } from "../../io/gpu.ts";
import { ConfigError, validate } from "../../io/config.ts";
import { CamEvaluator, camHeatmap, pseudoMaskRef } from "../../eval/cam.ts";
import { camMetrics, type Metrics, parseSweep } from "../../eval/metrics.ts";
import { evaluateMaskFolder } from "./mask_folder.ts";
import { type ReportExample, writeEvalOutputs } from "./report.ts";
import type { Sample } from "../../data/dataset.ts";
import {
  type CamHooks,
  checkClasses,
  loadCamModel,
  openRunDataset,
  prefetchSamples,
  recordSampleCams,
} from "./extract.ts";
import { type EvaluateInput, EvaluateSchema } from "./options.ts";

/** The background thresholds of an evaluation: the sweep, else `bg` (default 0.15). */
export function evalThresholds(o: { bg?: number; sweep?: string | number[] }): number[] {
  if (o.sweep === undefined) return [o.bg ?? 0.15];
  if (typeof o.sweep !== "string") return [...new Set(o.sweep)].sort((a, b) => a - b);
  let ts: number[];
  try {
    ts = parseSweep(o.sweep);
  } catch (e) {
    throw new ConfigError(`--sweep: ${(e as Error).message}`);
  }
  const bad = ts.find((t) => !(t >= 0 && t <= 1));
  if (bad !== undefined) throw new ConfigError(`--sweep: threshold ${bad} is outside [0, 1]`);
  return ts;
}

/** Indices of `k` examples spread evenly over `n` images. */
function exampleIndices(n: number, k: number): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < Math.min(k, n); i++) out.add(Math.floor((i * n) / Math.min(k, n)));
  return out;
}

/**
 * Evaluates a checkpoint's CAMs (`ckpt`) or a mask folder (`masks`) on a split (default
 * "val"), writes `metrics.json` and `report.html` into `out`, and returns the metrics.
 * Options are validated ({@link EvaluateSchema}); errors name the field, file or image.
 */
export async function evaluate(input: EvaluateInput, hooks: CamHooks = {}): Promise<Metrics> {
  const o = validate(EvaluateSchema, input, "eval options");
  const log = hooks.log ?? ((l: string) => console.log(l));
  const thresholds = evalThresholds(o);
  const gpu = hooks.gpu ?? await createGpu();
  try {
    if (o.masks !== undefined) {
      const ds = await openRunDataset(o, null, log);
      const out = o.out ?? o.masks;
      log(`scoring masks ${o.masks} on ${ds.kind} '${ds.split}' (${ds.ids.length} images)`);
      const r = await evaluateMaskFolder({
        gpu,
        dataset: ds,
        masksDir: o.masks,
        split: o.split,
        limit: o.limit,
        examples: o.examples,
        onProgress: hooks.onProgress,
      });
      await finish(out, r.metrics, r.examples, `mask evaluation: ${o.masks} (${o.split})`, log);
      return r.metrics;
    }
    const m = await loadCamModel(gpu, o.ckpt!);
    const ds = await openRunDataset(o, m.config, log);
    checkClasses(m, ds);
    const out = o.out ?? m.runDir;
    const n = Math.min(ds.ids.length, o.limit ?? Infinity);
    const C = m.numClasses;
    const setting = `scales ${o.scales.join(",")}${o.flip ? " + flip" : ""}`;
    log(
      `evaluating CAMs of ${m.ckpt} (${m.config.model}, step ${m.step ?? "?"}) on ${ds.kind} ` +
        `'${ds.split}' (${n} images), ${setting}, ${thresholds.length} background threshold(s)`,
    );
    const ev = new CamEvaluator(gpu, C, { thresholds, tau: o.tau });
    const keep = exampleIndices(n, o.examples);
    const kept: { s: Sample; cam: Float32Array }[] = [];
    try {
      let i = 0;
      for await (const s of prefetchSamples(ds, n)) {
        const acc = recordSampleCams(gpu, m.model, s, o);
        try {
          if (keep.has(i)) kept.push({ s, cam: await acc.read() });
          await ev.add({
            id: s.id,
            cam: acc,
            width: s.width,
            height: s.height,
            tags: s.tags,
            gt: s.mask ? { width: s.width, height: s.height, data: s.mask } : null,
          });
        } finally {
          acc.dispose();
        }
        i++;
        if (i % 16 === 0) await gpu.sync(); // bound the work queued ahead of the GPU
        hooks.onProgress?.(i, n);
      }
      const counts = await ev.result();
      const metrics = camMetrics(counts, {
        classNames: ds.classNames,
        split: ds.split,
        source: `cam:${m.ckpt}`,
        bgThreshold: o.sweep === undefined ? thresholds[0] : undefined,
      });
      const t = metrics.bg_threshold!;
      const examples: ReportExample[] = kept.map(({ s, cam }) => ({
        id: s.id,
        width: s.width,
        height: s.height,
        rgb: s.rgb,
        gt: s.mask,
        cam: camHeatmap(cam, [C, s.height, s.width], s.width, s.height, s.tags),
        pred: pseudoMaskRef(cam, C, s.width * s.height, s.tags, t),
      }));
      await finish(
        out,
        metrics,
        examples,
        `CAM evaluation: ${m.ckpt} (${ds.split}; ${setting})`,
        log,
      );
      return metrics;
    } finally {
      ev.dispose();
    }
  } finally {
    if (!hooks.gpu) gpu.destroy();
  }
}

async function finish(
  out: string,
  m: Metrics,
  examples: ReportExample[],
  title: string,
  log: (l: string) => void,
): Promise<void> {
  const { metricsPath, reportPath } = await writeEvalOutputs(out, m, examples, {
    title: `ocr-wsss ${title}`,
  });
  const pct = (x: number | null) => (x === null ? "n/a" : `${(100 * x).toFixed(2)}%`);
  log(
    `mIoU ${pct(m.miou)}` +
      (m.bg_threshold !== null
        ? ` at bg ${m.bg_threshold}${m.sweep ? " (best of sweep)" : ""}`
        : "") +
      `, pixel acc ${pct(m.pixel_acc)}, OC-error rate ${pct(m.oc_rate)} ` +
      `(${m.oc_kind === "cam" ? "unrestricted CAM" : "masks"})`,
  );
  log(`wrote ${metricsPath} and ${reportPath}`);
}
