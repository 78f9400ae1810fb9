/**
 * `deno task seam`: trains SEAM (src/methods/seam/train.ts; default `tiny` on the built-in
 * synthetic data). Flags override the config file's fields; the resolved config is saved in
 * the run folder, and `--resume` continues a run from its checkpoint bit for bit.
 */
import { ConfigError, deepMerge, readJsonFile } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { SYNTHETIC_FLAGS, syntheticFromFlags } from "../src/methods/cam/options.ts";
import { trainSeam } from "../src/methods/seam/train.ts";

const USAGE = `usage: deno task seam [--config cfg.json] [--data DIR] [--dataset voc|coco|synthetic]
  [--model tiny|resnet18|resnet34|resnet50|resnet101] [--weights FILE.safetensors] [--out runs/NAME]
  [--steps N] [--batch B] [--size PX] [--lr LR] [--seed S] [--optimizer sgd|adamw]
  [--output-stride 8|16] [--scale-factor 0.3] [--ecr-topk 0.2] [--dropout 0.5]
  [--ocr] [--ocr-lambda L] [--ocr-start F] [--tags mask|xml|xml-nondifficult] [--log-every N]
  [--resume] [--synthetic-size tiny|small|medium] [--synthetic-seed S] [--synthetic-variant v2|v1]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    config: { type: "string" },
    data: { type: "string" },
    dataset: { type: "string" },
    tags: { type: "string" },
    ...SYNTHETIC_FLAGS,
    model: { type: "string" },
    weights: { type: "string" },
    out: { type: "string" },
    steps: { type: "string" },
    batch: { type: "string" },
    size: { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    optimizer: { type: "string" },
    "output-stride": { type: "string" },
    "scale-factor": { type: "string" },
    "ecr-topk": { type: "string" },
    dropout: { type: "string" },
    ocr: { type: "boolean" },
    "ocr-lambda": { type: "string" },
    "ocr-start": { type: "string" },
    "log-every": { type: "string" },
    resume: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  if (f.resume && !f.out) {
    throw new ConfigError("--resume needs --out runs/NAME (the run to continue)");
  }
  const cfgPath = f.config ?? (f.resume ? `${f.out}/config.json` : undefined);
  const file = cfgPath ? await readJsonFile(cfgPath) : {};
  const overrides = {
    data: f.data,
    dataset: f.dataset,
    tags: f.tags,
    synthetic: syntheticFromFlags(f),
    model: f.model,
    weights: f.weights,
    out: f.out,
    steps: numFlag("steps", f.steps),
    batch: numFlag("batch", f.batch),
    size: numFlag("size", f.size),
    lr: numFlag("lr", f.lr),
    seed: numFlag("seed", f.seed),
    optimizer: f.optimizer,
    outputStride: numFlag("output-stride", f["output-stride"]),
    scaleFactor: numFlag("scale-factor", f["scale-factor"]),
    ecrTopk: numFlag("ecr-topk", f["ecr-topk"]),
    dropout: numFlag("dropout", f.dropout),
    logEvery: numFlag("log-every", f["log-every"]),
    ocr: f.ocr !== undefined || f["ocr-lambda"] !== undefined || f["ocr-start"] !== undefined
      ? {
        enabled: f.ocr ?? true,
        lambda: numFlag("ocr-lambda", f["ocr-lambda"]),
        start: numFlag("ocr-start", f["ocr-start"]),
      }
      : undefined,
  };
  // deno-lint-ignore no-explicit-any
  const input = deepMerge(file, overrides) as any;
  await trainSeam({ ...input, resume: f.resume ?? false });
});
