/**
 * `deno task ablate`: runs a method's stages (default `cam`: train `tiny`, evaluate its CAM
 * pseudo masks with the shared eval code) with and without OCR for 3 seeds on the built-in
 * synthetic data and prints the table (mean ± std). Without --config it trains with
 * ABLATION_DEFAULTS (the README table's setting). Resumable; `--jobs N` runs N runs as parallel
 * processes.
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { numFlag, parseFlags, runMain } from "../src/io/cli.ts";
import { resolveTrainConfig, validate } from "../src/io/config.ts";
import { syntheticFromFlags } from "../src/methods/cam/options.ts";
import { getMethod, METHOD_NAMES, type MethodName } from "../src/workflows/registry.ts";
import {
  ABLATION_DEFAULTS,
  ablationRuns,
  type AblationScore,
  runAblation,
  writeAblation,
} from "../src/workflows/ablate.ts";

const USAGE =
  `usage: deno task ablate [--out runs/ablate] [--seeds 0,1,2] [--steps N] [--config cfg.json]
  [--ocr-lambda L] [--ocr-start F] [--split val] [--sweep 0.05:0.6:0.05] [--limit N] [--jobs N]
  [--only SETTING-sSEED] [--method ${METHOD_NAMES.join("|")} (default cam)]
  [--synthetic-size tiny|small|medium] [--synthetic-variant v2|v1]`;

await runMain(async () => {
  const { values: f } = parseFlags(Deno.args, {
    out: { type: "string" },
    seeds: { type: "string" },
    steps: { type: "string" },
    config: { type: "string" },
    "ocr-lambda": { type: "string" },
    "ocr-start": { type: "string" },
    split: { type: "string" },
    sweep: { type: "string" },
    limit: { type: "string" },
    jobs: { type: "string" },
    only: { type: "string" },
    method: { type: "string" },
    "synthetic-size": { type: "string" },
    "synthetic-variant": { type: "string" },
    help: { type: "boolean", short: "h" },
  }, USAGE);
  if (f.help) return console.log(USAGE);
  const method = getMethod(f.method ?? "cam").name as MethodName;
  const root = f.out ?? "runs/ablate";
  const seeds = validate(
    z.array(z.number().int().min(0)).min(1),
    (f.seeds ?? "0,1,2").split(",").map(Number),
    "--seeds",
  );
  const jobs = validate(z.number().int().min(1).max(16), numFlag("jobs", f.jobs) ?? 1, "--jobs");
  const base = await resolveTrainConfig(f.config, {
    ...(f.config ? {} : ABLATION_DEFAULTS),
    steps: numFlag("steps", f.steps),
    synthetic: syntheticFromFlags(f),
    ocr: {
      lambda: numFlag("ocr-lambda", f["ocr-lambda"]),
      start: numFlag("ocr-start", f["ocr-start"]),
    },
  });
  const evalOpts = {
    split: f.split ?? "val",
    sweep: f.sweep ?? "0.05:0.6:0.05",
    limit: numFlag("limit", f.limit),
    method,
  };
  const runs = ablationRuns(root, seeds).filter((r) => !f.only || join(root, f.only) === r.dir);
  const scores: AblationScore[] = [];
  if (jobs > 1 && !f.only) {
    // Children each handle one run; the parent collects their score files.
    const pending = [...runs];
    const worker = async () => {
      for (let r = pending.shift(); r; r = pending.shift()) {
        const name = r.dir.slice(root.length + 1);
        const args = ["run", "-A", new URL(import.meta.url).pathname, ...Deno.args, "--only", name];
        const child = new Deno.Command(Deno.execPath(), {
          args: args.filter((a, i) => !(a === "--jobs" || args[i - 1] === "--jobs")),
          stdout: "inherit",
          stderr: "inherit",
        });
        const { code } = await child.output();
        if (code !== 0) throw new Error(`ablation run ${name} failed (exit ${code})`);
      }
    };
    await Promise.all(Array.from({ length: jobs }, worker));
  }
  for (const r of runs) {
    scores.push(
      await runAblation(r, base, evalOpts, (l) => console.log(`[${r.setting}-s${r.seed}] ${l}`)),
    );
  }
  if (f.only) return;
  const table = await writeAblation(root, scores);
  console.log(
    `\nOCR ablation (${method}: ${base.model}, ${base.steps} steps, seeds ${seeds.join(",")}, ` +
      `CAM eval on '${evalOpts.split}', sweep ${evalOpts.sweep}):\n${table}`,
  );
  console.log(`wrote ${join(root, "ablation.md")} and ablation.json`);
});
