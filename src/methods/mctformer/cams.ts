/**
 * MCTformer's CAMs for the project's CAM tools: registers the loader of MCTformer checkpoints
 * with src/methods/cam/extract.ts, so `deno task cam` / `deno task eval --ckpt`, `computeCams`
 * and the pipeline's CAM stages (cams-train, cams-val, eval-cam) run on an MCTformer run
 * folder unchanged. Importing this module registers the loader.
 *
 * The class maps are MCTformer-V2's localisation maps (./model.ts `"maps"` view: the class-to-
 * patch attention of the last 3 blocks times the ReLU'd patch CAMs, refined by the patch-to-
 * patch attention summed over all blocks), all C classes. The CAM tools then do what engine.py's
 * `generate_attention_maps_ms` does with them: per scale and flip, the maps of the image
 * (cropped to whole patches by the patch embedding) resized bilinearly to the image, the
 * flipped image's mirrored back, all summed (src/cam/image.ts). These sums are the
 * **unrestricted** maps the OC-error rate is measured on; the tagged classes' maps, each
 * divided by its maximum (+1e-5), are the normalised CAMs and the pseudo masks, as for every
 * other method (engine.py instead min-max normalises each tagged class, (x - min)/(max - min);
 * the maps are non-negative and their minimum is near 0). The scales are the CAM tools'
 * (default 0.5, 1, 1.5, 2 + flip; MCTformer's scripts use `--scales 1.0` + flip: pass
 * `scales: [1]`). docs/mctformer.md#inference.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { loadTensors } from "../../io/checkpoint.ts";
import { readSafetensorsHeader, SafetensorsError } from "../../io/safetensors.ts";
import type { Mctformer } from "../../models/vit.ts";
import { registerCamModelLoader } from "../cam/extract.ts";
import { mctformerCamView, mctformerOf } from "./model.ts";
import { resolveMctformerConfig } from "./train.ts";

/** Loads an MCTformer checkpoint (written by `deno task mctformer`) with its run's config. */
export async function loadMctformer(
  gpu: GpuContext,
  file: string,
  config: Record<string, unknown>,
): Promise<{ model: Mctformer; numClasses: number; step: number | null }> {
  const cfg = resolveMctformerConfig(config, `${file}'s config.json`);
  const shape = (await readSafetensorsHeader(file)).shapes.get("head.weight");
  if (!shape || shape.length !== 4 || !(shape[0] >= 1)) {
    throw new SafetensorsError(
      `${file}: no conv tensor "head.weight" [C, D, 3, 3] (not an MCTformer checkpoint)`,
    );
  }
  const numClasses = shape[0];
  const model = mctformerOf(gpu, cfg, numClasses);
  try {
    const meta = await loadTensors(file, model.stateTensors(), {
      ignoreUnexpected: (n) => n.startsWith("optim."),
    });
    return { model, numClasses, step: meta.step !== undefined ? Number(meta.step) : null };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

registerCamModelLoader("mctformer", async (gpu, file, config) => {
  const { model, numClasses, step } = await loadMctformer(gpu, file, config);
  return { model: mctformerCamView(gpu, model, "maps"), numClasses, step };
});
