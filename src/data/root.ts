/**
 * Where a config's dataset lives: the given root, or the built-in synthetic data (generated on
 * first use).
 * @module
 */
import { ensureSynthetic } from "./synthetic.ts";
import { ConfigError, type TrainConfig } from "../io/config.ts";

/** Resolves the dataset root of a config (generating the synthetic data on first use). */
export async function resolveDataRoot(
  cfg: Pick<TrainConfig, "dataset" | "data" | "synthetic">,
  log: (l: string) => void = console.log,
): Promise<{ kind: "voc" | "coco"; root: string; describe: string }> {
  if (cfg.dataset === "synthetic") {
    const t0 = performance.now();
    const { vocRoot } = await ensureSynthetic({
      seed: cfg.synthetic.seed,
      size: cfg.synthetic.size,
      variant: cfg.synthetic.variant,
    });
    const dt = (performance.now() - t0) / 1000;
    if (dt > 1) log(`synthetic data ready in ${dt.toFixed(1)}s: ${vocRoot}`);
    return {
      kind: "voc",
      root: vocRoot,
      describe: `synthetic VOC-format data ${cfg.synthetic.variant} ` +
        `(seed ${cfg.synthetic.seed}, ${cfg.synthetic.size})`,
    };
  }
  if (!cfg.data) {
    throw new ConfigError(`--dataset ${cfg.dataset} needs --data DIR (the dataset root)`);
  }
  return { kind: cfg.dataset, root: cfg.data, describe: `${cfg.dataset} at ${cfg.data}` };
}
