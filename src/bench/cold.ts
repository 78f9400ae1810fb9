/**
 * Cold start: the time from a fresh process to its first training step (and to one image's
 * 4-scale CAMs), pipeline compilation included, with Mesa's shader disk cache disabled so that
 * the figure is a fresh machine's, not a warm cache's. Each case runs in a child process
 * (./first_step.ts); the warm time of the same work is the reference. Not in the bench's
 * default sections (it takes minutes on CPU adapters): `deno task bench --only cold`.
 * @module
 */
import type { FirstStepResult } from "./first_step.ts";
import type { BenchRow } from "./table.ts";

/** The cases: training steps of `tiny` and `resnet50`, and `tiny`'s CAM inference. */
export const COLD_CASES = [
  { name: "tiny 128px batch 16 training step", args: ["train", "tiny", "128", "16"] },
  { name: "resnet50 224px batch 8 training step", args: ["train", "resnet50", "224", "8"] },
  { name: "tiny 128px CAMs, scales 0.5/1/1.5/2 + flip", args: ["cam", "tiny", "128"] },
] as const;

/** Runs each case in a fresh process; `quick` keeps the `tiny` training step only. */
export async function benchCold(
  opts: { quick?: boolean; log?: (l: string) => void } = {},
): Promise<BenchRow[]> {
  const cases = opts.quick ? COLD_CASES.slice(0, 1) : COLD_CASES;
  const script = new URL("./first_step.ts", import.meta.url).href;
  const rows: BenchRow[] = [];
  for (const c of cases) {
    opts.log?.(`cold start: ${c.name} (a fresh process, Mesa's shader cache off)...`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...c.args],
      env: { MESA_SHADER_CACHE_DISABLE: "true" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" ");
      rows.push({ section: "cold", name: c.name, value: NaN, unit: "s", note: `failed: ${err}` });
      continue;
    }
    const r = JSON.parse(text) as FirstStepResult;
    rows.push({
      section: "cold",
      name: `${c.name}: time to first`,
      value: r.startupS + r.firstS,
      unit: "s",
      reference: r.warmMs / 1000,
      referenceName: "the same work warm",
      note: `${r.pipelines} pipelines; device + shaders loaded in ${r.startupS.toFixed(1)} s`,
    });
  }
  return rows;
}
