/**
 * Training loop: the loss goes down, two runs with one seed agree bit for bit, an interrupted
 * and resumed run equals an uninterrupted one, a NaN loss stops with the step and keeps the
 * last good checkpoint, and a used run folder is not overwritten.
 */
import { join } from "node:path";
import { exists } from "../src/io/atomic.ts";
import {
  checkpointMetadata,
  type StepLog,
  train,
  TrainError,
  type TrainInput,
} from "../src/train/train.ts";
import { assertEquals, assertRejects, testGpu } from "./util.ts";

const BASE: TrainInput = {
  dataset: "synthetic",
  synthetic: { seed: 0, size: "tiny" },
  model: "tiny",
  optimizer: "sgd",
  steps: 8,
  batch: 4,
  size: 64,
  seed: 3,
  lr: 0.02,
  logEvery: 1,
  ckptEvery: 4,
  prefetch: 2,
};

async function readLog(dir: string): Promise<StepLog[]> {
  const text = await Deno.readTextFile(join(dir, "train.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** The deterministic part of a log line (timing fields differ between runs). */
function losses(log: StepLog[]) {
  return log.map(({ step, lr, loss, loss_cls, loss_ocr, oc_pixels }) => ({
    step,
    lr,
    loss,
    loss_cls,
    loss_ocr,
    oc_pixels,
  }));
}

Deno.test("train: loss decreases, runs repeat bit for bit, resume equals uninterrupted", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, skipEval: true, tty: false };
  try {
    const a = join(root, "a");
    const b = join(root, "b");
    const c = join(root, "c");
    await train({ ...BASE, out: a }, quiet);
    await train({ ...BASE, out: b }, quiet);
    const la = await readLog(a);
    assertEquals(la.length, BASE.steps);
    assertEquals(losses(await readLog(b)), losses(la), "same seed, same losses");
    const first = la[0].loss_cls;
    const lastMean = la.slice(-3).reduce((s, l) => s + l.loss_cls, 0) / 3;
    if (!(lastMean < first)) throw new Error(`loss did not decrease: ${first} → ${lastMean}`);

    // Interrupted after 5 steps (checkpoint at 4), then resumed: steps 5..8 are redone.
    await train({ ...BASE, out: c }, { ...quiet, stopAfter: 5 });
    assertEquals((await readLog(c)).length, 5);
    await train({ ...BASE, out: c, resume: true }, quiet);
    assertEquals(losses(await readLog(c)), losses(la), "resumed run equals uninterrupted run");

    await assertRejects(() => train({ ...BASE, out: a }, quiet), TrainError, "--resume");
    await assertRejects(
      () => train({ ...BASE, out: join(root, "none"), resume: true }, quiet),
      TrainError,
      "no checkpoint",
    );
    await assertRejects(
      () => train({ ...BASE, out: c, resume: true, lr: 0.5 }, quiet),
      TrainError,
      "different config",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("train: a NaN loss stops with the step and keeps the last good checkpoint", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  try {
    const out = join(root, "nan");
    const err = await assertRejects(
      () =>
        train({ ...BASE, out, lr: 1e30, steps: 12, logEvery: 4, ckptEvery: 4 }, {
          gpu,
          log: () => {},
          skipEval: true,
          tty: false,
        }),
      TrainError,
      "at step",
    );
    const failed = Number(/at step (\d+)/.exec(err.message)![1]);
    const kept = /last good checkpoint \(step (\d+)\)/.exec(err.message);
    if (kept) {
      const meta = await checkpointMetadata(join(out, "last.safetensors"));
      assertEquals(meta.step, kept[1], "the checkpoint named is the one on disk");
      if (!(Number(kept[1]) < failed)) {
        throw new Error(`checkpoint ${kept[1]} not before ${failed}`);
      }
    } else {
      if (!err.message.includes("No checkpoint had been written yet")) throw err;
      assertEquals(await exists(join(out, "last.safetensors")), false);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
