/**
 * `deno task mctformer`: trains MCTformer-V2 (src/methods/mctformer/train.ts; default
 * `vit-tiny` at 128 px on the built-in synthetic data; `--model deit-s --weights DEIT.safetensors`
 * fine-tunes DeiT-S as MCTformer does). Flags override the config file's fields; the resolved
 * config is saved in the run folder, and `--resume` continues a run from its checkpoint bit
 * for bit. `deno task cam` / `eval --ckpt` read its runs.
 */
import { ConfigError, deepMerge, readJsonFile } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { SYNTHETIC_FLAGS, syntheticFromFlags } from "../src/methods/cam/options.ts";
import { trainMctformer } from "../src/methods/mctformer/train.ts";

const USAGE =
  `usage: deno task mctformer [--config cfg.json] [--data DIR] [--dataset voc|coco|synthetic]
  [--model vit-tiny|deit-s] [--weights DEIT.safetensors] [--out runs/NAME]
  [--steps N] [--batch B] [--size PX (multiple of 16)] [--lr LR] [--seed S] [--optimizer adamw|sgd]
  [--weight-decay 0.05] [--schedule cosine|poly] [--warmup FRACTION] [--drop-path 0.1]
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
    "weight-decay": { type: "string" },
    schedule: { type: "string" },
    warmup: { type: "string" },
    "drop-path": { type: "string" },
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
    weightDecay: numFlag("weight-decay", f["weight-decay"]),
    schedule: f.schedule,
    warmup: numFlag("warmup", f.warmup),
    dropPath: numFlag("drop-path", f["drop-path"]),
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
  await trainMctformer({ ...input, resume: f.resume ?? false });
});
