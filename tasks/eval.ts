/**
 * `deno task eval`: scores a checkpoint's CAMs (`--ckpt`) or a folder of predicted masks
 * (`--masks`) on a dataset split; writes metrics.json and report.html (default: the run folder,
 * or the mask folder). See src/methods/cam/evaluate.ts.
 */
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { ConfigError } from "../src/io/config.ts";
import "../src/methods/seam/cams.ts"; // SEAM checkpoints' CAMs (registers their loader)
import "../src/methods/mctformer/cams.ts"; // MCTformer checkpoints' maps (likewise)
import {
  COMMON_FLAGS,
  COMMON_USAGE,
  commonFlagInput,
  evaluate,
  withProgress,
} from "../src/methods/cam/mod.ts";
import { evaluateSegmenter, isSegCheckpoint } from "../src/methods/seg/mod.ts";

const USAGE = `usage: deno task eval (--ckpt runs/NAME/last.safetensors | --masks DIR) (split: val)
${COMMON_USAGE}
  [--bg 0.15 | --sweep 0.05:0.6:0.05] [--tau 0.3] [--examples 6]
  [--out DIR (default: the checkpoint's run folder, or the mask folder)]
  a segmenter checkpoint (deno task seg) is scored on its predicted masks (default scales
  0.75,1,1.25 + flip; --crf refines them with the dense CRF; default --out
  <run>/pred-<split>[-crf])`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    ...COMMON_FLAGS,
    masks: { type: "string" },
    sweep: { type: "string" },
    tau: { type: "string" },
    examples: { type: "string" },
    crf: { type: "boolean" },
  }, USAGE);
  if (f.help) {
    console.log(USAGE);
    return;
  }
  if (!f.ckpt === !f.masks) {
    throw new ConfigError(`give exactly one of --ckpt and --masks\n${USAGE}`);
  }
  // A checkpoint that cannot be read is left to the CAM path, whose errors name the fix.
  if (f.ckpt && await isSegCheckpoint(f.ckpt).catch(() => false)) {
    if (f.bg || f.sweep || f.tau) {
      throw new ConfigError("--bg, --sweep and --tau apply to CAMs, not to a segmenter");
    }
    const { bg: _bg, ...common } = commonFlagInput(f);
    await withProgress("eval", (onProgress) =>
      evaluateSegmenter({
        ...common,
        ckpt: f.ckpt!,
        crf: f.crf ?? false,
        examples: numFlag("examples", f.examples),
      }, { onProgress }));
    return;
  }
  if (f.crf) throw new ConfigError("--crf applies to a segmenter checkpoint (deno task seg)");
  const input = {
    ...commonFlagInput(f),
    masks: f.masks,
    sweep: f.sweep,
    tau: numFlag("tau", f.tau),
    examples: numFlag("examples", f.examples),
  };
  await withProgress("eval", (onProgress) => evaluate(input, { onProgress }));
});
