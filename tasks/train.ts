/**
 * `deno task train`: trains a CAM classifier (default: `tiny` on the built-in synthetic
 * data). Flags override the config file's fields; the resolved config is saved in the run.
 */
import { ConfigError, resolveTrainConfig } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { SYNTHETIC_FLAGS, syntheticFromFlags } from "../src/methods/cam/options.ts";
import { train } from "../src/train/train.ts";

const USAGE =
  `usage: deno task train [--config cfg.json] [--data DIR] [--dataset voc|coco|synthetic]
  [--model tiny|resnet18|resnet34|resnet50|resnet101] [--weights FILE.safetensors] [--out runs/NAME]
  [--steps N] [--batch B] [--size PX] [--lr LR] [--seed S] [--ocr] [--ocr-lambda L] [--ocr-start F]
  [--tags mask|xml|xml-nondifficult (VOC image tags; default mask)] [--resume]
  [--synthetic-size tiny|small|medium] [--synthetic-seed S] [--synthetic-variant v2|v1]`;

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
    ocr: { type: "boolean" },
    "ocr-lambda": { type: "string" },
    "ocr-start": { type: "string" },
    "log-every": { type: "string" },
    resume: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) {
    console.log(USAGE);
    return;
  }
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
    logEvery: numFlag("log-every", f["log-every"]),
    ocr: f.ocr !== undefined || f["ocr-lambda"] !== undefined || f["ocr-start"] !== undefined
      ? {
        enabled: f.ocr ?? true,
        lambda: numFlag("ocr-lambda", f["ocr-lambda"]),
        start: numFlag("ocr-start", f["ocr-start"]),
      }
      : undefined,
  };
  let cfgPath = f.config;
  if (f.resume && !f.out) {
    throw new ConfigError("--resume needs --out runs/NAME (the run to continue)");
  }
  if (f.resume && !cfgPath && f.out) {
    // Resume with the run's own saved config unless another is given.
    cfgPath = `${f.out}/config.json`;
  }
  const cfg = await resolveTrainConfig(cfgPath, overrides);
  await train({ ...cfg, resume: f.resume ?? false });
});
