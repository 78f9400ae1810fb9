/**
 * The final stage as pipeline stages (src/methods/method.ts) that any method appends to its
 * list, after the stage that writes its train pseudo masks:
 *
 * | stage          | what it does                                                           |
 * | -------------- | ---------------------------------------------------------------------- |
 * | `seg`          | `deno task seg` on the method's train pseudo masks into `<out>/seg`,   |
 * |                | the backbone starting from the CAM classifier's checkpoint             |
 * | `eval-seg`     | the segmenter's val predictions (no tags) scored into `<out>/eval-seg` |
 * | `eval-seg-crf` | the same with the dense CRF, into `<out>/eval-seg-crf`                 |
 * @module
 */
import { join } from "node:path";
import { z } from "npm:zod@4.6.7";
import { exists } from "../../io/atomic.ts";
import type { SegConfig, TrainConfig } from "../../io/config.ts";
import { camData, camPaths, type CamStageOptions, trainingFinished } from "../cam/stages.ts";
import { withProgress } from "../cam/options.ts";
import type { Stage, StageContext } from "../method.ts";
import { trainSegmenter } from "./train.ts";
import { evaluateSegmenter } from "./predict.ts";

/** The segmenter stages' options (zod fields, for a method's schema). */
export const SEG_FIELDS = {
  /** Segmenter training steps (default: `deno task seg`'s). */
  segSteps: z.number().int().positive().optional(),
  /**
   * More segmenter training options (a partial `deno task seg` config: optimizer, lr, batch,
   * size, head...; the masks, data, init, seed and run folder are the run's).
   */
  seg: z.record(z.string(), z.unknown()).optional(),
};

/** The resolved segmenter stage options. */
export interface SegStageOptions extends CamStageOptions {
  segSteps?: number;
  seg?: Record<string, unknown>;
}

/** The segmenter's folders in a run folder. */
export function segPaths(out: string) {
  return {
    run: join(out, "seg"),
    ckpt: join(out, "seg", "last.safetensors"),
    eval: join(out, "eval-seg"),
    evalCrf: join(out, "eval-seg-crf"),
  };
}

/**
 * The three segmenter stages; `masks` finds the method's train pseudo-mask folder from the
 * earlier stages' records (it throws, naming the stage to rerun, when there is none).
 */
export function segStages<O extends SegStageOptions>(
  masks: (ctx: StageContext<O>) => string,
): Stage<O>[] {
  const evalStage = (crf: boolean): Stage<O> => {
    const name = crf ? "eval-seg-crf" : "eval-seg";
    return {
      name,
      about: `the segmenter's val predictions${crf ? " with the dense CRF" : ""}, scored`,
      outputs: [name],
      // The prediction resumes at the first unwritten mask; --from must predict them all again.
      restart: true,
      run: async ({ o, out, log, gpu, tty }) => {
        const p = segPaths(out);
        const split = o.evalSplit ?? "val";
        const m = await withProgress("eval", (onProgress) =>
          evaluateSegmenter({
            ckpt: p.ckpt,
            ...camData(o),
            split,
            limit: o.evalLimit,
            crf,
            out: crf ? p.evalCrf : p.eval,
          }, { gpu, log, onProgress }), { write: log, tty });
        return { miou: m.miou, oc_rate: m.oc_rate, split };
      },
    };
  };
  const train: Stage<O> = {
    name: "seg",
    about: "deno task seg on the train pseudo masks (backbone from the CAM classifier)",
    outputs: ["seg"],
    restart: true,
    done: async ({ out }) => {
      const p = segPaths(out);
      const summary = join(p.run, "summary.json");
      if (!await exists(p.ckpt) || !await trainingFinished(p.ckpt, summary)) return null;
      const s = JSON.parse(await Deno.readTextFile(summary));
      return { loss: s.finalLoss };
    },
    run: async (ctx) => {
      const { o, out, log, gpu, tty } = ctx;
      const p = segPaths(out);
      const model = (o.train as Partial<TrainConfig> | undefined)?.model ?? "tiny";
      const r = await trainSegmenter({
        ...(o.seg as Partial<SegConfig> | undefined),
        masks: masks(ctx),
        ...camData(o),
        model,
        init: camPaths(out).ckpt,
        seed: o.seed,
        ...(o.camsSplit ? { split: o.camsSplit } : {}),
        limit: o.trainLimit,
        ...(o.segSteps ? { steps: o.segSteps } : {}),
        out: p.run,
        resume: await exists(p.ckpt),
      }, { gpu, log, tty });
      return { loss: r.finalLoss, masks: masks(ctx) };
    },
  };
  return [train, evalStage(false), evalStage(true)];
}
