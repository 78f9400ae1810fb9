/**
 * MCTformer-V2 as a method's network (src/models/vit.ts is the network itself): the model of a
 * training config, and its two views for the CAM tools' {@link CamModel} interface:
 *
 * - `"maps"`: MCTformer's localisation maps (docs/mctformer.md#localisation-maps), as its map
 *   scripts make them: the fused class-to-patch attention of the last 3 blocks times the
 *   ReLU'd patch CAMs, refined by the patch-to-patch attention ({@link MCTFORMER_CAM_MAPS});
 *   all C classes (the unrestricted maps the OC-error rate is measured on), at the patch grid;
 *   the logits are the class tokens';
 * - `"patch"`: the head's patch CAMs (no attention kept) with the class tokens' logits: the
 *   validation mAP's forward.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import type { Tensor } from "../../gpu/tensor.ts";
import type { CamModel } from "../../cam/image.ts";
import type { MctformerConfig } from "../../io/config.ts";
import {
  createMctformer,
  type Mctformer,
  mctformerConfig,
  mctformerMaps,
  type MctformerMapsOptions,
} from "../../models/vit.ts";

/**
 * The maps MCTformer's CAM inference uses: `--attention-type fused --layer-index 3
 * --patch-attn-refine` (run.sh's map generation).
 */
export const MCTFORMER_CAM_MAPS: Readonly<Required<MctformerMapsOptions>> = Object.freeze({
  nLayers: 3,
  type: "fused",
  patchAttnRefine: true,
});

/** The network of a training config with C classes (timm's initialisation from its seed). */
export function mctformerOf(
  gpu: GpuContext,
  cfg: Pick<MctformerConfig, "model" | "size" | "seed" | "dropPath">,
  numClasses: number,
): Mctformer {
  return createMctformer(gpu, {
    ...mctformerConfig(cfg.model, numClasses, cfg.size),
    seed: cfg.seed,
    dropPath: cfg.dropPath,
  });
}

/**
 * The model as a {@link CamModel} (inference forward, no tape): `"maps"` gives MCTformer's
 * localisation maps [B, C, h, w] as the class maps, `"patch"` the head's patch CAMs; the
 * logits are the class tokens' in both (module doc). Disposing the view disposes the model.
 */
export function mctformerCamView(
  gpu: GpuContext,
  model: Mctformer,
  which: "maps" | "patch",
): CamModel {
  return {
    options: { numClasses: model.numClasses },
    forward: (x: Tensor) => {
      const out = model.forward(x, { tape: null, attn: which === "maps" });
      out.patchLogits.dispose();
      if (which === "patch") return { cam: out.patchMap, logits: out.clsLogits };
      const m = mctformerMaps(gpu, out, MCTFORMER_CAM_MAPS);
      const cam = m.maps.retain();
      m.dispose();
      out.patchMap.dispose();
      for (const a of out.attn ?? []) a.dispose();
      return { cam, logits: out.clsLogits };
    },
    dispose: () => model.dispose(),
  };
}
