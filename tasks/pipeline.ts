/**
 * `deno task pipeline --method affinitynet [--ocr]`: a method's stage list (affinitynet: CAM
 * training → CAMs → AffinityNet → random walk → evaluation) on the built-in synthetic data, as a
 * resumable stage list (see src/workflows/pipeline.ts; the methods are in
 * src/workflows/registry.ts). `--compare --seeds 0,1,2` runs it with and without OCR per seed
 * and prints the comparison table.
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { ConfigError, deepMerge, readJsonFile, validate } from "../src/io/config.ts";
import type { Method } from "../src/methods/method.ts";
import { checkNestedOptions, methodTrainSchema } from "../src/workflows/preflight.ts";
import { presetOptions } from "../src/workflows/presets.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import {
  asUserError,
  parseScales,
  SYNTHETIC_FLAGS,
  syntheticFromFlags,
} from "../src/methods/cam/options.ts";
import { runComparison, runPipeline } from "../src/workflows/pipeline.ts";
import { getMethod, METHOD_NAMES, type MethodName, METHODS } from "../src/workflows/registry.ts";

const STAGES = METHOD_NAMES.map((m) =>
  `  ${m} stages: ${METHODS[m].stages.map((s) => s.name).join(", ")};`
).join("\n");

const USAGE = `usage: deno task pipeline [--method ${
  METHOD_NAMES.join("|")
}] [--ocr | --compare] [--seed S]
  [--seeds 0,1,2 (with --compare)] [--out DIR] [--ocr-lambda L] [--ocr-start F]
  [--cam-steps N] [--affinity-steps N] [--affinity-crf] [--seg-steps N]
  [--train-limit N] [--eval-limit N] [--cams-split SPLIT]
  [--sweep 0.05:0.6:0.05] [--alpha 1,2,4,8,16] [--scales 0.5,1,1.5,2]
  [--synthetic-size tiny|small|medium] [--synthetic-seed S] [--synthetic-variant v2|v1]
  [--preset synthetic|psa-voc|psa-coco] [--config FILE.json]
  [--dataset synthetic|voc|coco --data DIR] [--model tiny|resnet18|resnet34|resnet50|resnet101
  (mctformer: vit-tiny|deit-s)] [--weights FILE.safetensors]
  [--from STAGE]
${STAGES}
  --preset: a partial option set (README, "Presets"); --config FILE.json: the method's options
  (the fields of <out>/pipeline.json); flags override the file, the file the preset;
  --dataset/--data/--model/--weights go into the CAM classifier's train config (option
  \`train\`; mctformer: its training config), and the AffinityNet and the segmenter take the
  same model (mctformer: AffinityNet on \`affinity.model\`, default tiny, from scratch);
  --cams-split: the split whose CAMs AffinityNet and the segmenter learn from (default train;
  psa: trainaug), the train-split scores stay on train;
  --from STAGE redoes that stage and the later ones (once: rerun without it to resume);
  default --out: runs/pipeline/<method>[-ocr]-s<seed>, or runs/pipeline with --compare;
  rerunning the same command skips finished stages and resumes an interrupted one`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    method: { type: "string" },
    ocr: { type: "boolean" },
    compare: { type: "boolean" },
    seed: { type: "string" },
    seeds: { type: "string" },
    out: { type: "string" },
    "ocr-lambda": { type: "string" },
    "ocr-start": { type: "string" },
    "cam-steps": { type: "string" },
    "affinity-steps": { type: "string" },
    "affinity-crf": { type: "boolean" },
    "seg-steps": { type: "string" },
    "train-limit": { type: "string" },
    "eval-limit": { type: "string" },
    "cams-split": { type: "string" },
    sweep: { type: "string" },
    alpha: { type: "string" },
    scales: { type: "string" },
    ...SYNTHETIC_FLAGS,
    from: { type: "string" },
    preset: { type: "string" },
    config: { type: "string" },
    dataset: { type: "string" },
    data: { type: "string" },
    model: { type: "string" },
    weights: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  if (f.compare && (f.ocr || f.seed !== undefined)) {
    throw new ConfigError("--compare runs both settings for --seeds; drop --ocr and --seed");
  }
  if (!f.compare && f.seeds !== undefined) {
    throw new ConfigError("--seeds goes with --compare; a single run takes --seed S");
  }
  const method = getMethod(f.method ?? "affinitynet"); // an unknown one lists the known ones
  const flags = {
    method: f.method as MethodName | undefined,
    ocrLambda: numFlag("ocr-lambda", f["ocr-lambda"]),
    ocrStart: numFlag("ocr-start", f["ocr-start"]),
    camSteps: numFlag("cam-steps", f["cam-steps"]),
    affinitySteps: numFlag("affinity-steps", f["affinity-steps"]),
    affinityCrf: f["affinity-crf"],
    segSteps: numFlag("seg-steps", f["seg-steps"]),
    trainLimit: numFlag("train-limit", f["train-limit"]),
    evalLimit: numFlag("eval-limit", f["eval-limit"]),
    camsSplit: f["cams-split"],
    sweep: f.sweep,
    alpha: f.alpha === undefined ? undefined : parseScales(f.alpha, "--alpha"),
    scales: f.scales === undefined ? undefined : parseScales(f.scales),
    synthetic: syntheticFromFlags(f),
    from: f.from,
  };
  // Only the options given: a method's schema rejects options it does not have.
  for (const k of Object.keys(flags) as (keyof typeof flags)[]) {
    if (flags[k] === undefined) delete flags[k];
  }
  const train = Object.fromEntries(
    Object.entries({ dataset: f.dataset, data: f.data, model: f.model, weights: f.weights })
      .filter(([, v]) => v !== undefined),
  );
  const base = await resolveOptions(method, f.preset, f.config, {
    ...flags,
    ...(Object.keys(train).length ? { train } : {}),
  }) as typeof flags;
  try {
    if (f.compare) {
      const seeds = validate(
        z.array(z.number().int().min(0)).min(1),
        (f.seeds ?? "0,1,2").split(",").map(Number),
        "--seeds",
      );
      const root = f.out ?? join("runs", "pipeline");
      const { table } = await runComparison(root, seeds, base);
      console.log(`\n${base.method ?? "affinitynet"} with and without OCR (val split):\n${table}`);
      console.log(`wrote ${join(root, "comparison.md")} and comparison.json`);
    } else {
      const seed = numFlag("seed", f.seed);
      await runPipeline({
        ...base,
        ...(f.ocr !== undefined ? { ocr: f.ocr } : {}),
        ...(seed !== undefined ? { seed } : {}),
        ...(f.out !== undefined ? { out: f.out } : {}),
      });
    }
  } catch (e) {
    throw asUserError(e);
  }
});

/**
 * The method's options from the preset, the `--config` file and the flags (each over the one
 * before). The file is validated against the method's schema (every field optional), errors
 * naming the file and the field; the whole is validated by the runner.
 */
async function resolveOptions(
  method: Method,
  preset: string | undefined,
  configPath: string | undefined,
  flags: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const shape = (method.schema as unknown as { shape: Record<string, unknown> }).shape;
  // A preset sets only the options this method has (SEAM has no AffinityNet).
  const p = Object.fromEntries(
    Object.entries(presetOptions(preset ?? "synthetic")).filter(([k]) => k in shape),
  );
  let file: Record<string, unknown> = {};
  if (configPath) {
    const json = await readJsonFile(configPath);
    const partial = (method.schema as unknown as { partial(): z.ZodType }).partial();
    validate(partial, json, configPath);
    file = json as Record<string, unknown>; // as written: the defaults come last, in the runner
    checkNestedOptions(file, configPath, methodTrainSchema(method.schema));
  }
  const o = deepMerge(deepMerge(p, file), flags) as Record<string, unknown>;
  // The synthetic data choice goes with a train config that reads the synthetic data.
  const t = o.train as Record<string, unknown> | undefined;
  if (t && (t.dataset ?? "synthetic") === "synthetic" && o.synthetic && !t.synthetic) {
    o.train = { ...t, synthetic: o.synthetic };
  }
  return o;
}
