/**
 * Per-image resume of the folder writers (src/methods/cam/resume.ts): the same settings skip
 * the images already written, other settings write every image again, and an interrupted
 * `deno task cam` continues at the next unwritten image with the same bytes as an
 * uninterrupted run.
 */
import { join } from "node:path";
import { imagesToWrite } from "../src/methods/cam/resume.ts";
import { computeCams } from "../src/methods/cam/extract.ts";
import { train } from "../src/train/train.ts";
import { assertEquals, assertRejects, testGpu } from "./util.ts";

Deno.test("imagesToWrite: same settings skip written images, other settings redo all", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ids = ["a", "b", "c"];
    const outs = (id: string) => [join(dir, `${id}.png`), join(dir, `${id}.x`)];
    const log: string[] = [];
    assertEquals(await imagesToWrite(dir, { s: 1 }, ids, outs, (l) => log.push(l)), [0, 1, 2]);
    await Deno.writeTextFile(join(dir, "a.png"), "");
    await Deno.writeTextFile(join(dir, "a.x"), "");
    await Deno.writeTextFile(join(dir, "b.png"), ""); // b is half written: redone
    assertEquals(await imagesToWrite(dir, { s: 1 }, ids, outs, (l) => log.push(l)), [1, 2]);
    assertEquals(log.at(-1), "resuming: 1 of 3 images already written");
    assertEquals(await imagesToWrite(dir, { s: 2 }, ids, outs, (l) => log.push(l)), [0, 1, 2]);
    assertEquals(log.at(-1), `${dir} was written with other settings: writing every image again`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task cam: an interrupted run resumes at the next unwritten image, same bytes", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const lines: string[] = [];
  const hooks = { gpu, log: (l: string) => lines.push(l), tty: false };
  try {
    const run = join(root, "cam");
    await train({
      dataset: "synthetic",
      synthetic: { seed: 0, size: "tiny" },
      steps: 2,
      batch: 2,
      size: 48,
      out: run,
      logEvery: 2,
    }, { ...hooks, skipEval: true });
    const opts = { ckpt: run, split: "train", scales: [1], limit: 6 };
    const whole = await computeCams({ ...opts, out: join(root, "whole") }, hooks);
    const part = join(root, "part");
    await assertRejects(
      () =>
        computeCams({ ...opts, out: part }, {
          ...hooks,
          onProgress: (done) => {
            if (done === 3) throw new Error("killed");
          },
        }),
      Error,
      "killed",
    );
    lines.length = 0;
    const resumed = await computeCams({ ...opts, out: part }, hooks);
    assertEquals([resumed.images, resumed.computed], [6, 3]);
    if (!lines.includes("resuming: 3 of 6 images already written")) {
      throw new Error(`no resume line:\n${lines.join("\n")}`);
    }
    for (const id of whole.ids) {
      for (const f of [`masks/${id}.png`, `cams/${id}.safetensors`]) {
        const a = await Deno.readFile(join(root, "whole", f));
        const b = await Deno.readFile(join(part, f));
        assertEquals(b, a, f);
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
