/**
 * Training loop: the loss goes down, two runs with one seed agree bit for bit, an interrupted
 * and resumed run equals an uninterrupted one, a NaN loss stops with the step and keeps the
 * last good checkpoint, and a used run folder is not overwritten.
 */
import { join } from "node:path";
import { readSafetensors } from "../src/io/safetensors.ts";
import { train, TrainError, type TrainInput } from "../src/train/train.ts";
import { assertEquals, assertRejects, losses, readLog, testGpu } from "./util.ts";

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
    const ckpt = join(out, "last.safetensors");
    // Checkpoints and loss checks at steps 4, 8, 12. After the step-4 checkpoint the test
    // reads the model and the file; before step 6 it writes NaN into the classifier weight, so the loss
    // checked at step 8 is NaN.
    let atFour: { model: Map<string, Float32Array>; file: Map<string, Float32Array> } | null = null;
    const err = await assertRejects(
      () =>
        train({ ...BASE, out, steps: 12, logEvery: 4, ckptEvery: 4 }, {
          gpu,
          log: () => {},
          skipEval: true,
          tty: false,
          beforeStep: async (step, model) => {
            if (step === 4) {
              const m = new Map<string, Float32Array>();
              for (const t of model.stateTensors()) m.set(t.name, await t.value.read());
              const st = await readSafetensors(ckpt);
              assertEquals(st.metadata.step, "4");
              atFour = { model: m, file: new Map([...st.tensors].map(([k, v]) => [k, v.data])) };
            }
            if (step === 5) {
              // The classifier (no ReLU after it, which may map NaN to 0 on some GPUs).
              const w = model.params().find((p) => p.name === "classifier.weight")!;
              w.value.write(new Float32Array(w.value.size).fill(NaN));
            }
          },
        }),
      TrainError,
      "at step",
    );
    if (!atFour) throw new Error("the run did not reach step 4");
    const four: { model: Map<string, Float32Array>; file: Map<string, Float32Array> } = atFour;
    assertEquals(/loss became NaN at step (\d+)/.exec(err.message)?.[1], "8", err.message);
    if (!err.message.includes(`The last good checkpoint (step 4) is kept in ${ckpt}`)) {
      throw new Error(`the message does not name the kept checkpoint: ${err.message}`);
    }
    // The file on disk is still the step-4 checkpoint: its metadata, every tensor finite and
    // bit-equal to what was written at step 4, and the model tensors equal the model's state
    // then (optimizer state besides them).
    const st = await readSafetensors(ckpt);
    assertEquals(st.metadata.step, "4");
    assertEquals([...st.tensors.keys()].sort(), [...four.file.keys()].sort());
    for (const [name, t] of st.tensors) {
      if (!t.data.every(Number.isFinite)) throw new Error(`${name}: non-finite value kept`);
      assertEquals(bits(t.data), bits(four.file.get(name)!), `${name}: changed after step 4`);
    }
    for (const [name, v] of four.model) {
      assertEquals(bits(st.tensors.get(name)!.data), bits(v), `${name}: not the step-4 model`);
    }
    if (![...st.tensors.keys()].some((k) => k.startsWith("optim."))) {
      throw new Error("no optimizer state in the checkpoint");
    }
    // The log stops at the last good step.
    assertEquals((await readLog(out)).map((l) => l.step), [4]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

const bits = (d: Float32Array) => Array.from(new Uint32Array(Float32Array.from(d).buffer));
