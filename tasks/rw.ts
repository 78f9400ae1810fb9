/**
 * `deno task rw`: psa's random-walk pseudo masks from an AffinityNet checkpoint and a CAM
 * folder (see src/methods/affinitynet/rw.ts); score them with `deno task eval --masks OUT/masks --split S`.
 */
import { ConfigError } from "../src/io/config.ts";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { parseScales, withProgress } from "../src/methods/cam/options.ts";
import { computeRandomWalk } from "../src/methods/affinitynet/rw.ts";

const USAGE = `usage: deno task rw --ckpt runs/NAME/affinity --cams runs/NAME/cam-val
  [--out DIR (default <affinity run>/rw-SPLIT)] [--beta 8] [--logt auto|N (auto: psa's 8 scaled to the grid)] [--alpha 8 | --alpha 1,2,4,8,16] [--limit N] [--crf]
  [--radius R (default: the one the AffinityNet was trained with)]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    ckpt: { type: "string" },
    cams: { type: "string" },
    out: { type: "string" },
    beta: { type: "string" },
    logt: { type: "string" },
    alpha: { type: "string" },
    limit: { type: "string" },
    crf: { type: "boolean" },
    radius: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  if (!f.ckpt || !f.cams) throw new ConfigError(`--ckpt and --cams are required\n${USAGE}`);
  const r = await withProgress("rw", (onProgress) =>
    computeRandomWalk({
      ckpt: f.ckpt!,
      cams: f.cams!,
      out: f.out,
      beta: numFlag("beta", f.beta),
      logt: f.logt === "auto" ? "auto" : numFlag("logt", f.logt),
      alpha: f.alpha === undefined ? undefined : parseScales(f.alpha, "--alpha"),
      limit: numFlag("limit", f.limit),
      crf: f.crf,
      radius: numFlag("radius", f.radius),
    }, { onProgress }));
  console.log(
    `wrote ${r.images} random-walk pseudo masks per alpha in ${r.seconds.toFixed(1)}s ` +
      `(${(r.images / r.seconds).toFixed(2)} img/s) to ${r.masks.map((m) => m.dir).join(", ")}; ` +
      `score them with deno task eval --masks DIR --split SPLIT`,
  );
});
