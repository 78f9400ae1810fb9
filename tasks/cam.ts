/**
 * `deno task cam`: CAMs of a dataset split from a checkpoint (multi-scale + flip, fused on the
 * GPU), written per image as normalised tagged-class CAM arrays (`cams/<id>.safetensors`) and
 * pseudo-mask palette PNGs (`masks/<id>.png`); see src/methods/cam/extract.ts for the formats.
 */
import { parseFlags, runMain } from "../src/io/cli.ts";
import { ConfigError } from "../src/io/config.ts";
import "../src/methods/seam/cams.ts"; // SEAM checkpoints' CAMs (registers their loader)
import "../src/methods/mctformer/cams.ts"; // MCTformer checkpoints' maps (likewise)
import {
  COMMON_FLAGS,
  COMMON_USAGE,
  commonFlagInput,
  computeCams,
  withProgress,
} from "../src/methods/cam/mod.ts";

const USAGE = `usage: deno task cam --ckpt runs/NAME/last.safetensors (default split: train)
${COMMON_USAGE}
  [--bg 0.15] [--no-cams] [--out DIR (default runs/NAME/cam-SPLIT)]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    ...COMMON_FLAGS,
    "no-cams": { type: "boolean" },
  }, USAGE);
  if (f.help) {
    console.log(USAGE);
    return;
  }
  if (!f.ckpt) throw new ConfigError(`--ckpt is required\n${USAGE}`);
  const input = { ...commonFlagInput(f), ckpt: f.ckpt, saveCams: f["no-cams"] ? false : undefined };
  const r = await withProgress(
    "cam",
    (onProgress) => computeCams(input, { onProgress }),
  );
  console.log(
    `wrote ${r.images} pseudo masks${f["no-cams"] ? "" : " and CAM arrays"} to ${r.out} ` +
      `in ${r.seconds.toFixed(1)}s (${(r.images / r.seconds).toFixed(2)} img/s)`,
  );
});
