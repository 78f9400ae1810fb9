/**
 * `deno task affinity`: trains psa's AffinityNet on the confident labels of a CAM folder
 * written by `deno task cam` (see src/methods/affinitynet/train.ts). Flags override the config file's
 * fields; the resolved config is saved in the run folder.
 */
import { ConfigError, deepMerge, readJsonFile } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { asUserError } from "../src/methods/cam/options.ts";
import { trainAffinity } from "../src/methods/affinitynet/train.ts";

const USAGE = `usage: deno task affinity --cams runs/NAME/cam-train [--config cfg.json]
  [--init CKPT | --scratch] [--model tiny|resnet18|resnet34|resnet50|resnet101] [--out DIR]
  [--steps N] [--batch B] [--size PX] [--lr LR] [--seed S] [--lo-alpha 4] [--hi-alpha 24]
  [--radius 5] [--crf (psa's CRF-refined labels)] [--log-every N] [--resume]
  (default --out: beside the CAM folder, <run>/affinity)`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    cams: { type: "string" },
    config: { type: "string" },
    init: { type: "string" },
    scratch: { type: "boolean" },
    model: { type: "string" },
    out: { type: "string" },
    steps: { type: "string" },
    batch: { type: "string" },
    size: { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    optimizer: { type: "string" },
    "lo-alpha": { type: "string" },
    "hi-alpha": { type: "string" },
    radius: { type: "string" },
    crf: { type: "boolean" },
    "log-every": { type: "string" },
    resume: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  if (f.resume && !f.out) throw new ConfigError("--resume needs --out DIR (the run to continue)");
  // Resume with the run's own saved config unless another is given.
  const cfgPath = f.config ?? (f.resume ? `${f.out}/config.json` : undefined);
  const file = cfgPath ? await readJsonFile(cfgPath) as Record<string, unknown> : {};
  delete file.camFolder; // written for the record by a previous run
  const overrides = {
    cams: f.cams,
    init: f.init,
    scratch: f.scratch,
    model: f.model,
    out: f.out,
    steps: numFlag("steps", f.steps),
    batch: numFlag("batch", f.batch),
    size: numFlag("size", f.size),
    lr: numFlag("lr", f.lr),
    seed: numFlag("seed", f.seed),
    optimizer: f.optimizer,
    loAlpha: numFlag("lo-alpha", f["lo-alpha"]),
    hiAlpha: numFlag("hi-alpha", f["hi-alpha"]),
    radius: numFlag("radius", f.radius),
    crf: f.crf,
    logEvery: numFlag("log-every", f["log-every"]),
  };
  const input = deepMerge(file, overrides) as Record<string, unknown>;
  if (!input.cams) throw new ConfigError(`--cams is required\n${USAGE}`);
  try {
    // deno-lint-ignore no-explicit-any
    await trainAffinity({ ...(input as any), resume: f.resume ?? false });
  } catch (e) {
    throw asUserError(e);
  }
});
