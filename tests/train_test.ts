/**
 * Training loop: the loss goes down, two runs with one seed agree bit for bit, an interrupted
 * and resumed run equals an uninterrupted one, a NaN loss stops with the step and keeps the
 * last good checkpoint, a used run folder is not overwritten, a run that fails on its first
 * batch leaves no half run, and `--resume` of a run without a checkpoint starts it afresh.
 */
import { join } from "node:path";
import { exists } from "../src/io/atomic.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { openDataset } from "../src/data/dataset.ts";
import { DataError } from "../src/data/errors.ts";
import { epochOrder } from "../src/data/stream.ts";
import { synthesize } from "../src/data/synthetic.ts";
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

Deno.test("train: a run that fails on its first batch leaves no half run; --resume of one without a checkpoint starts afresh", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const lines: string[] = [];
  const hooks = { gpu, log: (l: string) => lines.push(l), skipEval: true, tty: false };
  try {
    const tree = await synthesize({ out: join(root, "data"), seed: 0, size: "tiny" });
    const run: TrainInput = {
      ...BASE,
      dataset: "voc",
      data: tree.vocRoot,
      steps: 1,
      batch: 2,
      size: 32,
      logEvery: 1,
      ckptEvery: 1,
    };
    // Corrupt the first image of the first batch (the stream's epoch-0 order).
    const ds = await openDataset({ kind: "voc", root: tree.vocRoot, split: "train" });
    const firstId = ds.ids[epochOrder(ds.ids.length, run.seed!, 0, true)[0]];
    const jpg = join(tree.vocRoot, "JPEGImages", `${firstId}.jpg`);
    const good = await Deno.readFile(jpg);
    await Deno.writeFile(jpg, good.slice(0, 200));

    const fresh = join(root, "fresh");
    const e = await assertRejects(() => train({ ...run, out: fresh }, hooks), DataError);
    assertEquals((e as DataError).path, jpg);
    assertEquals(await exists(fresh), false, "the failed run left a folder behind");
    // A folder that was there before is left as it was.
    const used = join(root, "used");
    await Deno.mkdir(used);
    await Deno.writeTextFile(join(used, "notes.txt"), "mine");
    await assertRejects(() => train({ ...run, out: used }, hooks), DataError);
    assertEquals([...Deno.readDirSync(used)].map((f) => f.name), ["notes.txt"]);

    // A run folder with config.json but no checkpoint (stopped before its first one):
    // --resume starts it afresh with a note.
    await Deno.writeFile(jpg, good);
    await Deno.writeTextFile(join(used, "config.json"), "{}");
    await Deno.writeTextFile(join(used, "train.jsonl"), '{"step":7}\n');
    const r = await train({ ...run, out: used, resume: true }, hooks);
    assertEquals(r.steps, 1);
    if (!lines.some((l) => l.includes("stopped before its first checkpoint; starting it afresh"))) {
      throw new Error(`no note:\n${lines.join("\n")}`);
    }
    assertEquals((await readLog(used)).map((l) => l.step), [1]);
    assertEquals(await exists(join(used, "last.safetensors")), true);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
