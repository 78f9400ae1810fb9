/**
 * SEAM's CAMs for the project's CAM tools: registers the loader of SEAM checkpoints with
 * src/methods/cam/extract.ts, so `deno task cam` / `deno task eval --ckpt` and the pipeline's
 * CAM stages (cams-train, cams-val, eval-cam) run on a SEAM run folder unchanged. The CAM is
 * SEAM's inference CAM (infer_SEAM.py): the foreground channels of the PCM-refined maps
 * (`cam_rv`) of every scale and its flip, summed and normalised per tagged class by the
 * project's rule (divided by the maximum, + 1e-5), written in the same CAM folder format.
 * Importing this module registers the loader.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { loadTensors } from "../../io/checkpoint.ts";
import { validate } from "../../io/config.ts";
import { readSafetensorsHeader, SafetensorsError } from "../../io/safetensors.ts";
import { registerCamModelLoader } from "../cam/extract.ts";
import type { SeamNet } from "./model.ts";
import { SeamConfigSchema, seamNetOf } from "./train.ts";

/** Loads a SEAM checkpoint (written by `deno task seam`) with its run's config. */
export async function loadSeamNet(
  gpu: GpuContext,
  file: string,
  config: Record<string, unknown>,
): Promise<{ net: SeamNet; numClasses: number; step: number | null }> {
  const cfg = validate(SeamConfigSchema, config, `${file}'s config.json`);
  const shape = (await readSafetensorsHeader(file)).shapes.get("fc8.weight");
  if (!shape || !(shape[0] >= 2)) {
    throw new SafetensorsError(`${file}: no tensor "fc8.weight" (not a SEAM checkpoint)`);
  }
  const numClasses = shape[0] - 1;
  const net = seamNetOf(gpu, cfg, numClasses);
  const meta = await loadTensors(file, net.stateTensors(), {
    ignoreUnexpected: (n) => n.startsWith("optim."),
  });
  return { net, numClasses, step: meta.step !== undefined ? Number(meta.step) : null };
}

registerCamModelLoader("seam", async (gpu, file, config) => {
  const { net, numClasses, step } = await loadSeamNet(gpu, file, config);
  return { model: net.camView("rv"), numClasses, step };
});
