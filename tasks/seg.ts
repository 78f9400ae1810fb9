/**
 * `deno task seg`: trains the final stage's DeepLab segmenter on a folder of pseudo masks
 * (`--masks DIR`) or the ground truth (`--masks gt`), then scores it on the val split (see
 * src/methods/seg/). Flags override the config file's fields; the resolved config is saved in
 * the run folder.
 */
import { ConfigError, deepMerge, readJsonFile } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import {
  asUserError,
  parseScales,
  SYNTHETIC_FLAGS,
  syntheticFromFlags,
  withProgress,
} from "../src/methods/cam/options.ts";
import { evaluateSegmenter, trainSegmenter } from "../src/methods/seg/mod.ts";

const USAGE = `usage: deno task seg --masks DIR|gt [--config cfg.json] [--out runs/NAME]
  [--data DIR] [--dataset synthetic|voc|coco] [--split train] [--val-split val] [--limit N]
  [--model tiny|resnet18|resnet34|resnet50|resnet101] [--head aspp|largefov]
  [--output-stride 8|16] [--weights IMAGENET.safetensors | --init CKPT]
  [--steps N] [--batch B] [--size PX] [--optimizer sgd|adamw] [--lr LR] [--seed S]
  [--log-every N] [--resume]
  [--synthetic-size tiny|small|medium] [--synthetic-seed S] [--synthetic-variant v2|v1]
  after training, the val split is segmented and scored (skip with --no-eval):
  [--scales 0.75,1,1.25] [--no-flip] [--crf]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    masks: { type: "string" },
    config: { type: "string" },
    out: { type: "string" },
    data: { type: "string" },
    dataset: { type: "string" },
    split: { type: "string" },
    "val-split": { type: "string" },
    limit: { type: "string" },
    ...SYNTHETIC_FLAGS,
    model: { type: "string" },
    head: { type: "string" },
    "output-stride": { type: "string" },
    weights: { type: "string" },
    init: { type: "string" },
    steps: { type: "string" },
    batch: { type: "string" },
    size: { type: "string" },
    optimizer: { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    "log-every": { type: "string" },
    resume: { type: "boolean" },
    "no-eval": { type: "boolean" },
    scales: { type: "string" },
    "no-flip": { type: "boolean" },
    crf: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  if (f.resume && !f.out) throw new ConfigError("--resume needs --out DIR (the run to continue)");
  const cfgPath = f.config ?? (f.resume ? `${f.out}/config.json` : undefined);
  const file = cfgPath ? await readJsonFile(cfgPath) : {};
  const overrides = {
    masks: f.masks,
    out: f.out,
    data: f.data,
    dataset: f.dataset,
    split: f.split,
    valSplit: f["val-split"],
    limit: numFlag("limit", f.limit),
    synthetic: syntheticFromFlags(f),
    model: f.model,
    head: f.head,
    outputStride: numFlag("output-stride", f["output-stride"]),
    weights: f.weights,
    init: f.init,
    steps: numFlag("steps", f.steps),
    batch: numFlag("batch", f.batch),
    size: numFlag("size", f.size),
    optimizer: f.optimizer,
    lr: numFlag("lr", f.lr),
    seed: numFlag("seed", f.seed),
    logEvery: numFlag("log-every", f["log-every"]),
  };
  const input = deepMerge(file, overrides) as Record<string, unknown>;
  if (!input.masks) throw new ConfigError(`--masks DIR|gt is required\n${USAGE}`);
  try {
    // deno-lint-ignore no-explicit-any
    const r = await trainSegmenter({ ...(input as any), resume: f.resume ?? false });
    if (f["no-eval"] || r.steps === 0) return;
    await withProgress("eval", (onProgress) =>
      evaluateSegmenter({
        ckpt: r.checkpoint,
        split: (input.valSplit as string | undefined) ?? "val",
        ...(f.scales ? { scales: parseScales(f.scales) } : {}),
        flip: !f["no-flip"],
        crf: f.crf ?? false,
      }, { onProgress }));
  } catch (e) {
    throw asUserError(e);
  }
});
