/**
 * `deno task synth --out DIR [--seed N] [--size tiny|small|medium]`: writes the synthetic
 * VOC-format and COCO-format trees (see src/data/synthetic.ts). Without --out, fills the
 * cache folder instead (what every task uses by default) and prints where it is.
 */
import { parseArgs } from "node:util";
import { z } from "npm:zod@4.6.7";
import { defaultCacheDir, ensureSynthetic, synthesize } from "../src/data/synthetic.ts";

const HELP =
  `usage: deno task synth [--out DIR] [--seed N] [--size tiny|small|medium] [--variant v2|v1]

  --out DIR    write VOCdevkit/VOC2012/ and coco/ under DIR (default: the cache folder,
               ${"$"}OCR_WSSS_CACHE or ~/.cache/ocr-wsss, generated once per seed and size)
  --seed N     generator seed, integer 0..4294967295 (default 0)
  --size S     tiny (24/12 VOC, 16/8 COCO), small (1000/250, 300/100; default),
               medium (4000/1000, 1200/400)
  --variant V  generator version: v2 (default; VOC-like object sizes) or v1 (the first
               version, small objects; reproduces older runs)`;

const Flags = z.object({
  out: z.string().min(1, "--out needs a folder").optional(),
  seed: z.coerce.number({ error: "--seed must be a number" }).int("--seed must be an integer")
    .min(0, "--seed must be >= 0").max(0xffffffff, "--seed must be < 2^32").default(0),
  size: z.enum(["tiny", "small", "medium"], { error: "--size must be tiny, small or medium" })
    .default("small"),
  variant: z.enum(["v1", "v2"], { error: "--variant must be v1 or v2" }).default("v2"),
  help: z.boolean().default(false),
});

let raw;
try {
  raw = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      seed: { type: "string" },
      size: { type: "string" },
      variant: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (e) {
  console.error(`synth: ${(e as Error).message}\n\n${HELP}`);
  Deno.exit(2);
}
const parsed = Flags.safeParse(raw);
if (!parsed.success) {
  console.error(`synth: ${parsed.error.issues.map((i) => i.message).join("; ")}\n\n${HELP}`);
  Deno.exit(2);
}
const flags = parsed.data;
if (flags.help) {
  console.log(HELP);
  Deno.exit(0);
}

const t0 = performance.now();
const onProgress = (done: number, total: number) =>
  console.error(
    `synth: ${done}/${total} images (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
const roots = flags.out
  ? await synthesize({ ...flags, out: flags.out, onProgress })
  : await ensureSynthetic({ ...flags, onProgress });
console.log(`VOC:  ${roots.vocRoot}`);
console.log(`COCO: ${roots.cocoRoot}`);
if (!flags.out) console.log(`(cache folder ${defaultCacheDir()})`);
console.error(`synth: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
