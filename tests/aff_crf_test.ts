/**
 * psa's CRF-refined affinity labels: the GPU label map equals the rule applied to the f64
 * exact CRF reference, and `deno task affinity --crf` writes one label map per image beside
 * the CAMs (resumable), labels within the tags, and trains on them.
 */
import { join } from "node:path";
import { Tensor } from "../src/gpu/tensor.ts";
import { denseCrfRef } from "../src/ops/crf.ts";
import { camsWithBackgroundScore, crfAffinityLabelMap } from "../src/methods/affinitynet/labels.ts";
import { crfLabelDir, trainAffinity } from "../src/methods/affinitynet/train.ts";
import { crfWalkedMasks } from "../src/methods/affinitynet/rw.ts";
import { readCamFolder, readImageCams } from "../src/methods/cam/cam_folder.ts";
import { computeCams } from "../src/methods/cam/extract.ts";
import { train } from "../src/train/train.ts";
import { decodeLabelPng } from "../src/data/png.ts";
import { Rng } from "../src/rng.ts";
import { assertEquals, testGpu } from "./util.ts";

Deno.test("CRF affinity labels: psa's la/ha rule on the exact CRF of both alphas", async () => {
  const gpu = await testGpu();
  const [h, w] = [12, 14];
  const n = h * w;
  const rng = new Rng(3);
  // Two colour regions; CAMs of two classes, noisy, with a weak patch.
  const image = new Float32Array(3 * n);
  const cams = new Float32Array(2 * n);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      const left = x < 7;
      for (let k = 0; k < 3; k++) image[k * n + p] = (left ? 40 : 200) + rng.uniform(-10, 10);
      cams[p] = Math.min(1, Math.max(0, (left ? 0.7 : 0.1) + rng.uniform(-0.3, 0.3)));
      cams[n + p] = Math.min(1, Math.max(0, (y < 4 ? 0.5 : 0.05) + rng.uniform(-0.2, 0.2)));
    }
  }
  const classes = [3, 11];
  const crf = { method: "exact" as const };
  const img = Tensor.fromArray(gpu, image, [3, h, w]);
  const got = await crfAffinityLabelMap(gpu, img, cams, classes, h, w, {
    loAlpha: 4,
    hiAlpha: 24,
    crf,
  });
  img.dispose();
  // The host side: argmax of the f64 CRF of each alpha's score maps; pixels whose top two
  // labels are within 1e-4 may go either way on the GPU (f32) and are not compared.
  const argmax = (alpha: number) => {
    const q = denseCrfRef(image, camsWithBackgroundScore(cams, 2, n, alpha), h, w, 3, crf);
    const best = new Int32Array(n);
    const tie = new Uint8Array(n);
    for (let p = 0; p < n; p++) {
      const v = [0, 1, 2].map((l) => q[l * n + p]);
      const order = [0, 1, 2].sort((a, b) => v[b] - v[a]);
      best[p] = order[0];
      tie[p] = v[order[0]] - v[order[1]] < 1e-4 ? 1 : 0;
    }
    return { best, tie };
  };
  const la = argmax(4), ha = argmax(24);
  let compared = 0, bg = 0, ignored = 0, fg = 0;
  for (let p = 0; p < n; p++) {
    if (la.tie[p] || ha.tie[p]) continue;
    const want = ha.best[p] === 0 ? 0 : la.best[p] === 0 ? 255 : classes[la.best[p] - 1] + 1;
    if (got[p] !== want) throw new Error(`pixel ${p}: label ${got[p]}, want ${want}`);
    compared++;
    if (want === 0) bg++;
    else if (want === 255) ignored++;
    else fg++;
  }
  if (compared < 0.95 * n) throw new Error(`only ${compared} of ${n} pixels compared`);
  // The case exercises every branch of the rule.
  if (!(bg > 0 && fg > 0)) throw new Error(`bg ${bg}, ignored ${ignored}, fg ${fg}`);
  // An image without tags is all background.
  const none = Tensor.fromArray(gpu, image, [3, h, w]);
  assertEquals(
    Array.from(await crfAffinityLabelMap(gpu, none, [], [], h, w)),
    Array(n).fill(0),
  );
  none.dispose();
});

Deno.test("affinity --crf: label maps written beside the CAMs (resumable), within the tags, trained on", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir();
  const lines: string[] = [];
  const hooks = { gpu, log: (l: string) => lines.push(l), tty: false };
  try {
    const camRun = join(root, "cam");
    await train({
      dataset: "synthetic",
      synthetic: { seed: 0, size: "tiny" },
      steps: 4,
      batch: 4,
      size: 64,
      out: camRun,
      logEvery: 4,
    }, { ...hooks, skipEval: true });
    const camDir = join(root, "cam-train");
    await computeCams({ ckpt: camRun, split: "train", out: camDir, scales: [1], limit: 6 }, hooks);
    const base = {
      cams: camDir,
      steps: 2,
      batch: 2,
      size: 80,
      logEvery: 1,
      prefetch: 1,
      crf: true,
    };
    await trainAffinity({ ...base, out: join(root, "aff") }, hooks);
    const dir = crfLabelDir(camDir, { loAlpha: 4, hiAlpha: 24 });
    const files = [...Deno.readDirSync(dir)].map((f) => f.name).filter((f) => f.endsWith(".png"))
      .sort();
    assertEquals(files.length, 6);
    for (const f of files) {
      const id = f.replace(".png", "");
      const { data } = await decodeLabelPng(await Deno.readFile(join(dir, f)), f);
      const c = await readImageCams(camDir, id);
      const allowed = new Set([0, 255, ...c.classes.map((k) => k + 1)]);
      for (const v of new Set(data)) {
        if (!allowed.has(v)) throw new Error(`${f}: label ${v} outside ${[...allowed]}`);
      }
    }
    // A second run finds every label map written and computes none.
    lines.length = 0;
    await trainAffinity({ ...base, out: join(root, "aff2") }, hooks);
    if (lines.some((l) => l.startsWith("CRF affinity labels"))) {
      throw new Error(`labels recomputed:\n${lines.join("\n")}`);
    }
    assertEquals((await readCamFolder(camDir)).images, 6);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("rw --crf: per alpha, the argmax of the CRF of the walked scores normalised per pixel", async () => {
  const gpu = await testGpu();
  const [H, W, Hp, Wp, A] = [10, 13, 16, 16, 2];
  const classes = [5, 9];
  const T = classes.length;
  const rng = new Rng(11);
  const up = new Float32Array((A + T) * Hp * Wp).map(() => rng.uniform(-0.05, 1));
  const image = new Float32Array(3 * H * W).map((_, i) => (i % W < 6 ? 30 : 220) + (i % 7));
  const img = Tensor.fromArray(gpu, image, [3, H, W]);
  const crf = { method: "exact" as const };
  const got = await crfWalkedMasks(gpu, img, up, A, classes, Hp, Wp, crf);
  img.dispose();
  const n = H * W;
  for (let a = 0; a < A; a++) {
    const probs = new Float64Array((T + 1) * n);
    for (let p = 0; p < n; p++) {
      const q = Math.floor(p / W) * Wp + (p % W);
      const v = [a, A, A + 1].map((c) => Math.max(0, up[c * Hp * Wp + q]));
      const sum = v.reduce((s, x) => s + x, 0);
      v.forEach((x, l) => (probs[l * n + p] = x / sum));
    }
    const qr = denseCrfRef(image, probs, H, W, T + 1, crf);
    let compared = 0;
    for (let p = 0; p < n; p++) {
      const v = [0, 1, 2].map((l) => qr[l * n + p]);
      const order = [0, 1, 2].sort((x, y) => v[y] - v[x]);
      if (v[order[0]] - v[order[1]] < 1e-4) continue;
      const want = order[0] === 0 ? 0 : classes[order[0] - 1] + 1;
      if (got[a][p] !== want) throw new Error(`alpha ${a}, pixel ${p}: ${got[a][p]} vs ${want}`);
      compared++;
    }
    if (compared < 0.95 * n) throw new Error(`alpha ${a}: only ${compared} of ${n} compared`);
  }
});
