/**
 * SEAM training: the losses are finite and repeat bit for bit, an interrupted and resumed run
 * equals an uninterrupted one, OCR runs, a used run folder is not overwritten.
 */
import { join } from "node:path";
import { exists } from "../src/io/atomic.ts";
import { type SeamInput, type SeamStepLog, trainSeam } from "../src/methods/seam/train.ts";
import { TrainError } from "../src/train/train.ts";
import { assertEquals, assertRejects, testGpu } from "./util.ts";

const BASE: SeamInput = {
  dataset: "synthetic",
  synthetic: { seed: 0, size: "tiny" },
  model: "tiny",
  steps: 4,
  batch: 2,
  size: 32,
  seed: 3,
  logEvery: 1,
  ckptEvery: 2,
  prefetch: 2,
};

async function readSeamLog(dir: string): Promise<SeamStepLog[]> {
  const text = await Deno.readTextFile(join(dir, "train.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

const lossesOf = (log: SeamStepLog[]) =>
  log.map(({ step, lr, loss, loss_cls, loss_rvmin, loss_er, loss_ecr, loss_ocr }) => ({
    step,
    lr,
    loss,
    loss_cls,
    loss_rvmin,
    loss_er,
    loss_ecr,
    loss_ocr,
  }));

Deno.test("seam train: repeatable, resume equals uninterrupted, OCR", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const quiet = { gpu, log: () => {}, skipEval: true, tty: false };
  try {
    const a = join(root, "a");
    const c = join(root, "c");
    const r = await trainSeam({ ...BASE, out: a }, quiet);
    const la = await readSeamLog(a);
    assertEquals(la.length, BASE.steps);
    if (!la.every((l) => Number.isFinite(l.loss) && l.loss_ecr > 0 && l.loss_cls > 0)) {
      throw new Error(`bad losses ${JSON.stringify(la)}`);
    }
    if (!(await exists(r.checkpoint))) throw new Error("no checkpoint");
    // Interrupted after 3 steps (checkpoint at 2), then resumed.
    await trainSeam({ ...BASE, out: c }, { ...quiet, stopAfter: 3 });
    await trainSeam({ ...BASE, out: c, resume: true }, quiet);
    assertEquals(lossesOf(await readSeamLog(c)), lossesOf(la), "resumed equals uninterrupted");
    await assertRejects(() => trainSeam({ ...BASE, out: a }, quiet), TrainError, "--resume");
    const o = join(root, "ocr");
    await trainSeam({ ...BASE, steps: 2, out: o, ocr: { enabled: true } }, quiet);
    const lo = await readSeamLog(o);
    if (!lo.every((l) => Number.isFinite(l.loss_ocr) && Number.isFinite(l.loss))) {
      throw new Error(`bad OCR losses ${JSON.stringify(lo)}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
