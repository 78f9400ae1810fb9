/**
 * The README's code examples run as written: each code block is extracted, the placeholder URL
 * replaced by this checkout's mod.ts, and run in a separate `deno run --no-config`. What the
 * library example prints is checked against what the example should produce: the CAM shape, the 40 logits and
 * the OCR loss / OC pixel count equal those of the same model recomputed here (the OCR values
 * against the f64 reference, with the co-occurrence prior built by hand), and the mIoU / OC
 * rate are finite, in range and those of the metrics.json the example's evaluation wrote. The
 * worked example of adding an op must report its cases checked and the split path taken.
 */
import { join } from "node:path";
import { createGpu } from "../src/io/gpu.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { createModel } from "../src/models/cam_net.ts";
import { ocrLossReference } from "../src/losses/ocr.ts";
import { assertClose, assertEquals } from "./util.ts";

/** The example's numbers, parsed from its output (an error names what is missing). */
function parseOutput(stdout: string) {
  const head = /^\[ 2, 20, 4, 4 \] Float32Array\(40\) \[([^\]]*)\]/m.exec(stdout);
  const ocr = /^OCR loss (\S+) OC pixels (\S+)$/m.exec(stdout);
  const ev = /^pseudo-mask mIoU (\S+) OC-error rate (\S+)$/m.exec(stdout);
  if (!head || !ocr || !ev) throw new Error(`unexpected example output:\n${stdout}`);
  const logits = head[1].split(",").map((v) => Number(v.trim()));
  return {
    logits,
    loss: Number(ocr[1]),
    ocPixels: Number(ocr[2]),
    miou: Number(ev[1]),
    ocRate: Number(ev[2]),
  };
}

/**
 * Runs the first ts code block after `heading` in the README, with the placeholder URL
 * replaced by this checkout's mod.ts, type-checked, in a separate `deno run --no-config` with
 * the given environment; returns its standard output (throws with both streams on failure).
 */
async function runReadmeBlock(heading: string, env: Record<string, string> = {}): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const at = readme.indexOf(heading);
  const code = at < 0 ? undefined : /```ts\n([\s\S]*?)```/.exec(readme.slice(at))?.[1];
  if (!code || !code.includes("https://<host>/<path>/mod.ts")) {
    throw new Error(`README: the example block under "${heading}" was not found`);
  }
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/example.ts`;
    const mod = new URL("../mod.ts", import.meta.url).href;
    await Deno.writeTextFile(script, code.replaceAll("https://<host>/<path>/mod.ts", mod));
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", "--check", script],
      cwd: dir,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`example failed:\n${stdout}\n${new TextDecoder().decode(out.stderr)}`);
    }
    return stdout;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the README example runs as written", async () => {
  // The example's Deno.makeTempDir() (its training run folder) lands in `tmp`.
  const tmp = await Deno.makeTempDir();
  try {
    const stdout = await runReadmeBlock("## Using it from another Deno script", { TMPDIR: tmp });
    const got = parseOutput(stdout);

    // The same model (default seed) on the same input, here.
    const gpu = await createGpu();
    try {
      const model = createModel(gpu, { arch: "tiny", numClasses: 20 });
      const x = Tensor.fromArray(gpu, new Float32Array(2 * 3 * 64 * 64).fill(0.5), [2, 3, 64, 64]);
      const { cam, logits } = model.forward(x, null);
      assertEquals(cam.shape, [2, 20, 4, 4]);
      const want = await logits.read();
      assertEquals(got.logits.length, 40, stdout);
      if (!got.logits.every(Number.isFinite)) throw new Error(`logits: ${got.logits}`);
      assertClose(got.logits, want, { rtol: 1e-6, atol: 1e-7 }, "printed logits");
      // Tags [[14], [1, 14]]; A[c, k] = n(c and k) / n(c), identity rows for untagged classes:
      // n(14) = 2, n(1) = 1, n(1, 14) = 1.
      const tags = new Float32Array(2 * 20);
      tags[14] = tags[20 + 1] = tags[20 + 14] = 1;
      const prior = new Float64Array(20 * 20);
      for (let c = 0; c < 20; c++) prior[c * 20 + c] = 1;
      prior[14 * 20 + 1] = 1 / 2;
      prior[1 * 20 + 14] = 1;
      const ref = ocrLossReference(await cam.read(), cam.shape, tags, prior, { lambda: 0.3 });
      if (!(ref.minGap > 1e-4)) throw new Error(`CAMs within ${ref.minGap} of a threshold`);
      assertEquals(got.ocPixels, ref.ocPixels, "OC pixels");
      assertClose([got.loss], [ref.loss], { rtol: 2e-5, atol: 1e-9 }, "OCR loss");
      for (const t of [x, cam, logits]) t.dispose();
      model.dispose();
    } finally {
      gpu.destroy();
    }

    // The evaluation: in range, and the metrics.json of the example's run folder.
    const runs = [...Deno.readDirSync(tmp)].filter((e) => e.isDirectory);
    assertEquals(runs.length, 1, "one run folder");
    const run = join(tmp, runs[0].name);
    const summary = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
    assertEquals(summary.steps, 20);
    const metrics = JSON.parse(await Deno.readTextFile(join(run, "metrics.json")));
    if (!(got.miou >= 0 && got.miou <= 1 && got.ocRate >= 0 && got.ocRate <= 1)) {
      throw new Error(`mIoU ${got.miou}, OC rate ${got.ocRate}`);
    }
    assertEquals([got.miou, got.ocRate], [metrics.miou, metrics.oc_rate]);
    assertEquals(metrics.oc_rate, metrics.oc_pixels / metrics.oc_denominator);
    assertEquals([metrics.split, metrics.n_images > 0], ["val", true]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("the README's worked example of adding an op runs as written", async () => {
  const stdout = await runReadmeBlock("### Adding an op");
  assertEquals(stdout.trim().split("\n").pop(), "softplus: 2 cases checked, 1 split");
});
