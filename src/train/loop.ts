/**
 * The step loop the trainers share (the CAM classifier, AffinityNet, the segmenter, SEAM):
 * resuming a run folder, the loop's bookkeeping (steps, data position, images seen, the
 * `logEvery`/`ckptEvery` cadence, one readback of a step's losses, the non-finite-loss
 * {@link TrainError}, train.jsonl lines, progress, checkpoints with model + optimizer state)
 * and the epilogue (summary.json and the "done: ..." line). Each trainer keeps its own step
 * recording and log line.
 * @module
 */
import { join } from "node:path";
import type { GpuContext } from "../gpu/context.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { NamedTensor } from "../io/checkpoint.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { fmtDuration, Progress } from "../io/progress.ts";
import type { Param } from "../autograd/param.ts";
import { type Optimizer, polyLr } from "../optim/mod.ts";
import { type ResumePoint, resumeRun, saveRunCheckpoint, startRun, TrainError } from "./train.ts";

/** The fields every line of a train.jsonl has (a trainer's line adds its own after `loss`). */
export interface LoopLine {
  /** Steps done. */
  step: number;
  /** The step's learning rate. */
  lr: number;
  /** The total loss (checked for being finite). */
  loss: number;
  /** Training images per second of this call so far. */
  images_per_s: number;
  /** Training seconds of the run so far (counting earlier calls). */
  elapsed_s: number;
}

/** A trainer's own fields of a log line: `loss` first, then its others, in file order. */
export type LineFields<L extends LoopLine> = Omit<L, "step" | "lr" | "images_per_s" | "elapsed_s">;

/** What {@link RecordedStep.read} makes of the values of a step's tensors. */
export interface StepReading<L extends LoopLine> {
  /** The log line's own fields (`loss` first). */
  fields: LineFields<L>;
  /** Progress fields shown between the loss and img/s. */
  progress?: Record<string, string>;
  /** Said after "at step N" when the loss is not finite (e.g. " (cls 1, ocr NaN)"). */
  detail?: string;
}

/** One recorded (not yet submitted) training step. */
export interface RecordedStep<L extends LoopLine> {
  /** Images in the step's batch. */
  images: number;
  /** The tensors read back on a log or checkpoint step; disposed by the loop after the step. */
  tensors: Tensor[];
  /** Other outputs of the step, disposed after `tensors`. */
  rest?: (Tensor | null)[];
  /** Builds the log line's fields from the values of `tensors` (in their order). */
  read(values: Float32Array[]): StepReading<L>;
}

/** The model + optimizer state tensors of a run's checkpoint (read anew at each call). */
export function runTensors(
  model: { stateTensors(): NamedTensor[] },
  opt: Optimizer,
  params: Param[],
): () => NamedTensor[] {
  return () => [
    ...model.stateTensors(),
    ...opt.state(params).map((b) => ({ name: `optim.${b.name}`, value: b.value })),
  ];
}

/**
 * Where a run starts: step 0 for a fresh run, else the run folder's checkpoint loaded into
 * `tensors` ({@link resumeRun}), with a "resuming" line.
 */
export async function resumeAt(
  resume: boolean,
  out: string,
  tensors: () => NamedTensor[],
  opt: Optimizer,
  configHash: string,
  steps: number,
  log: (l: string) => void,
): Promise<ResumePoint> {
  if (!resume) return { step: 0, position: 0, elapsedBefore: 0 };
  const point = await resumeRun(out, tensors(), opt, configHash);
  log(`resuming ${out} at step ${point.step}/${steps}`);
  return point;
}

/**
 * The random seed of a step's dropout or drop path: a function of the run's seed and the step,
 * so that a resumed run draws what an uninterrupted one draws.
 */
export function stepDropoutSeed(seed: number, step: number): number {
  return (Math.imul(seed, 1000003) ^ Math.imul(step, 0x9e3779b1)) >>> 0;
}

/** The hooks every trainer takes. */
export interface RunHooks {
  /** Reuse a GPU context (tests, scripts). */
  gpu?: GpuContext;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Stop after this many steps of this call (tests simulate an interruption). */
  stopAfter?: number;
  /** Force the progress mode (default: bar on a TTY). */
  tty?: boolean;
}

/** What {@link runSteps} needs. */
export interface StepLoop<B extends { position: number }, L extends LoopLine> {
  gpu: GpuContext;
  /** The run folder. */
  out: string;
  /** Written as the run folder's config.json ({@link startRun}). */
  config: unknown;
  /** The run's batch stream from `start.position`; closed when the loop ends. */
  stream: AsyncIterator<B>;
  /** Whether the run was resumed (its checkpoint is then the last good one). */
  resumed: boolean;
  start: ResumePoint;
  /** The run's total steps and its log and checkpoint cadences. */
  cfg: { steps: number; logEvery: number; ckptEvery: number };
  /** The base learning rate (poly schedule). */
  lr: number;
  /** The learning rate of a step (steps done before it); default psa's poly schedule of `lr`. */
  lrAt?: (step: number) => number;
  /** The progress label ("train", "seam", ...). */
  label: string;
  log: (l: string) => void;
  tty?: boolean;
  /** Stop after this many steps of this call. */
  stopAfter?: number;
  /** Called before each step with the steps done so far. */
  beforeStep?: (step: number) => void | Promise<void>;
  /** Records one step of `batch` at `lr`; `step` counts the steps done before it. */
  step(batch: B, lr: number, step: number): RecordedStep<L>;
  /** The checkpoint's tensors, the optimizer, the config hash and extra metadata. */
  tensors: () => NamedTensor[];
  opt: Optimizer;
  configHash: string;
  metadata?: Record<string, string>;
  /** The error on a non-finite loss: "<what> became ... ; <advice>." */
  failure: { what: string; advice: string };
}

/** What {@link runSteps} returns. */
export interface LoopEnd<L extends LoopLine> {
  out: string;
  /** Steps done so far (counting earlier calls of a resumed run). */
  steps: number;
  /** Whether the run reached its last step. */
  complete: boolean;
  /** Wall-clock seconds of this call's loop. */
  seconds: number;
  imagesPerSecond: number;
  /** The last log line (null if none). */
  last: L | null;
  /** Peak bytes of pooled GPU buffers in use during the loop. */
  peakPoolBytes: number;
  /** The checkpoint file. */
  checkpoint: string;
}

/**
 * Runs a run's steps (module doc): one submit per step, the step's tensors read back in one
 * go every `logEvery` steps and at checkpoints, which are written every `ckptEvery` steps and
 * at the end. The progress line is ended and the stream closed however the loop ends.
 */
export async function runSteps<B extends { position: number }, L extends LoopLine>(
  o: StepLoop<B, L>,
): Promise<LoopEnd<L>> {
  const { gpu, out } = o;
  const { steps, logEvery, ckptEvery } = o.cfg;
  const ckptPath = join(out, "last.safetensors");
  const jsonlPath = join(out, "train.jsonl");
  let { step, position } = o.start;
  const { elapsedBefore } = o.start;
  const nextBatch = await startRun(o.stream, step < steps, out, o.config, !o.resumed);
  const progress = new Progress(o.label, steps, { write: o.log, tty: o.tty });
  const t0 = performance.now();
  let imagesSeen = 0, stepsThisCall = 0, lastGood = o.resumed ? step : 0;
  let last: L | null = null;
  gpu.pool.resetPeak();
  try {
    while (step < steps) {
      if (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter) break;
      await o.beforeStep?.(step);
      const b = await nextBatch();
      const lr = o.lrAt ? o.lrAt(step) : polyLr(o.lr, step, steps);
      const rec = o.step(b, lr, step);
      gpu.flush();
      step++;
      stepsThisCall++;
      imagesSeen += rec.images;
      position = b.position;
      const isLog = step % logEvery === 0 || step === steps;
      const isCkpt = step % ckptEvery === 0 || step === steps;
      if (isLog || isCkpt) {
        // One readback for all the step's values.
        const values = (await gpu.readRanges(rec.tensors.map((t) => t.binding())))
          .map((buf) => new Float32Array(buf));
        const r = rec.read(values);
        const total = r.fields.loss;
        const el = (performance.now() - t0) / 1000;
        if (!Number.isFinite(total)) {
          const kept = lastGood > 0
            ? `The last good checkpoint (step ${lastGood}) is kept in ${ckptPath}`
            : "No checkpoint had been written yet";
          throw new TrainError(
            `${o.failure.what} became ${total} at step ${step}${r.detail ?? ""}; stopped. ` +
              `${kept}; ${o.failure.advice}.`,
          );
        }
        last = {
          step,
          lr,
          ...r.fields,
          images_per_s: imagesSeen / el,
          elapsed_s: elapsedBefore + el,
        } as L;
        if (isLog) {
          await Deno.writeTextFile(jsonlPath, JSON.stringify(last) + "\n", { append: true });
          progress.update(step, {
            loss: total.toFixed(4),
            ...r.progress,
            "img/s": last.images_per_s.toFixed(1),
          });
        }
        if (isCkpt) {
          await saveRunCheckpoint(
            out,
            o.tensors(),
            o.opt,
            o.configHash,
            { step, position, elapsedBefore: elapsedBefore + el },
            o.metadata,
          );
          lastGood = step;
        }
      }
      for (const t of rec.tensors) t.dispose();
      for (const t of rec.rest ?? []) t?.dispose();
    }
  } finally {
    progress.done();
    await o.stream.return?.(undefined);
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    out,
    steps: step,
    complete: step >= steps,
    seconds,
    imagesPerSecond: imagesSeen / Math.max(seconds, 1e-9),
    last,
    peakPoolBytes: gpu.pool.stats().peakInUse,
    checkpoint: ckptPath,
  };
}

/** The result fields every trainer returns (its own go between finalLoss and peakPoolBytes). */
export interface RunResult {
  /** The run folder. */
  out: string;
  /** Steps done so far, counting earlier calls of a resumed run. */
  steps: number;
  /** Wall-clock seconds of this call's training loop. */
  seconds: number;
  /** Training images per second in this call. */
  imagesPerSecond: number;
  /** Loss at the last logged step; NaN if none. */
  finalLoss: number;
  /** Peak bytes of pooled GPU buffers in use. */
  peakPoolBytes: number;
  /** The checkpoint file (`<out>/last.safetensors`). */
  checkpoint: string;
}

/**
 * Ends a run: its result (`own` fields after finalLoss), written as summary.json when the
 * run is complete, and the line "done: N steps in ... (x img/s), final loss L<detail> → ckpt".
 */
export async function finishRun<X extends object>(
  end: LoopEnd<LoopLine>,
  own: X,
  log: (l: string) => void,
  detail = "",
): Promise<RunResult & X> {
  const result = {
    out: end.out,
    steps: end.steps,
    seconds: end.seconds,
    imagesPerSecond: end.imagesPerSecond,
    finalLoss: end.last?.loss ?? NaN,
    ...own,
    peakPoolBytes: end.peakPoolBytes,
    checkpoint: end.checkpoint,
  };
  if (end.complete) await writeJsonAtomic(join(end.out, "summary.json"), result);
  log(
    `done: ${end.steps} steps in ${fmtDuration(end.seconds)} (${
      end.imagesPerSecond.toFixed(1)
    } img/s), final loss ${result.finalLoss.toFixed(4)}${detail} → ${end.checkpoint}`,
  );
  return result;
}
