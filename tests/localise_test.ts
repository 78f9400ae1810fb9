/**
 * That CAMs localise: the `tiny` classifier trained briefly on a three-class toy set with
 * large objects (a VOC tree written here), then `computeCams` on the val split. The peak of
 * each tagged class's CAM must land inside that class's ground-truth object on most images,
 * and the pseudo masks' mIoU (the project's mask evaluation, checked against a plain count
 * here) must clearly beat the all-background mask's. The objects sit off the vertical centre
 * line, so a mirrored CAM misses them.
 */
import { join } from "node:path";
import type { GpuContext } from "../src/gpu/context.ts";
import { createGpu } from "../src/io/gpu.ts";
import { openDataset } from "../src/data/dataset.ts";
import { encodeJpeg } from "../src/data/image.ts";
import { decodeLabelPng, encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { computeCams, evaluate, readImageCams } from "../src/methods/cam/mod.ts";
import { train } from "../src/train/train.ts";
import { Rng } from "../src/rng.ts";

const S = 64;

/** The toy classes: VOC index, colour, shape (each object is one flat-coloured shape). */
const TOY: { cls: number; rgb: [number, number, number]; shape: "disk" | "square" | "diamond" }[] =
  [
    { cls: 2, rgb: [210, 50, 40], shape: "disk" }, // bird
    { cls: 11, rgb: [50, 190, 70], shape: "square" }, // dog
    { cls: 14, rgb: [60, 80, 220], shape: "diamond" }, // person
  ];

/**
 * Writes a VOC tree (JPEGImages, SegmentationClass palette masks, split lists; tags come from
 * the masks) of S×S images: grey noisy background, one or two objects of distinct toy classes,
 * one in the left and one in the right half, radius 10–14 px (a disk covers ~10% of the image).
 */
async function writeToyVoc(root: string, counts: Record<string, number>, seed: number) {
  for (const d of ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]) {
    await Deno.mkdir(join(root, d), { recursive: true });
  }
  const rng = new Rng(seed);
  const clamp = (v: number) => Math.max(0, Math.min(255, v));
  for (const [split, n] of Object.entries(counts)) {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = `${split}_${String(i).padStart(3, "0")}`;
      ids.push(id);
      const rgb = new Uint8Array(S * S * 3);
      const grey = 90 + rng.int(80);
      for (let p = 0; p < rgb.length; p++) rgb[p] = clamp(grey + rng.int(41) - 20);
      const mask = new Uint8Array(S * S);
      const sides = rng.shuffle([0, 1]);
      const kinds = rng.shuffle([0, 1, 2]).slice(0, 1 + rng.int(2));
      kinds.forEach((k, o) => {
        const { cls, rgb: col, shape } = TOY[k];
        const r = 10 + rng.int(5);
        const cx = sides[o] === 0 ? 15 + rng.int(7) : 42 + rng.int(7);
        const cy = 15 + rng.int(34);
        for (let y = 0; y < S; y++) {
          for (let x = 0; x < S; x++) {
            const dx = Math.abs(x - cx), dy = Math.abs(y - cy);
            const inside = shape === "disk"
              ? dx * dx + dy * dy <= r * r
              : shape === "square"
              ? Math.max(dx, dy) <= 0.9 * r
              : dx + dy <= 1.2 * r;
            if (!inside) continue;
            const p = y * S + x;
            mask[p] = cls + 1;
            for (let c = 0; c < 3; c++) rgb[3 * p + c] = clamp(col[c] + rng.int(41) - 20);
          }
        }
      });
      await Deno.writeFile(join(root, "JPEGImages", `${id}.jpg`), await encodeJpeg(rgb, S, S));
      await Deno.writeFile(
        join(root, "SegmentationClass", `${id}.png`),
        await encodeLabelPng(mask, S, S, VOC_PALETTE),
      );
    }
    await Deno.writeTextFile(
      join(root, "ImageSets", "Segmentation", `${split}.txt`),
      ids.join("\n") + "\n",
    );
  }
}

/** Plain mIoU over labels 0..K-1 (255 ignored; classes absent from both left out). */
function plainMiou(pairs: { gt: Uint8Array; pred: Uint8Array }[], K: number): number {
  const inter = new Float64Array(K), gtN = new Float64Array(K), predN = new Float64Array(K);
  for (const { gt, pred } of pairs) {
    for (let p = 0; p < gt.length; p++) {
      if (gt[p] === 255) continue;
      gtN[gt[p]]++;
      predN[pred[p]]++;
      if (gt[p] === pred[p]) inter[gt[p]]++;
    }
  }
  const ious: number[] = [];
  for (let k = 0; k < K; k++) {
    const union = gtN[k] + predN[k] - inter[k];
    if (union > 0) ious.push(inter[k] / union);
  }
  return ious.reduce((a, b) => a + b, 0) / ious.length;
}

Deno.test("CAMs of a briefly trained tiny model localise the objects of a toy set", async () => {
  const gpu: GpuContext = await createGpu(); // plain: debug mode is several times slower
  const root = await Deno.makeTempDir({ prefix: "ocr-localise-" });
  const log = () => {};
  try {
    const t0 = performance.now();
    await writeToyVoc(root, { train: 48, val: 16 }, 1);
    const run = join(root, "run");
    await train({
      dataset: "voc",
      data: root,
      model: "tiny",
      outputStride: 8,
      steps: 30,
      batch: 8,
      size: S,
      seed: 1,
      logEvery: 10,
      ckptEvery: 1000,
      out: run,
    }, { gpu, log, skipEval: true, tty: false });
    const t1 = performance.now();
    const cams = join(root, "cams");
    await computeCams({ ckpt: run, dataset: "voc", data: root, split: "val", out: cams }, {
      gpu,
      log,
    });
    const t2 = performance.now();

    // CAM peaks: the argmax of each tagged class's (normalised, multi-scale + flip) CAM.
    const ds = await openDataset({ kind: "voc", root, split: "val" });
    const pairs: { gt: Uint8Array; pred: Uint8Array }[] = [];
    const allBg: { gt: Uint8Array; pred: Uint8Array }[] = [];
    const bgDir = join(root, "all-background");
    await Deno.mkdir(bgDir);
    let hits = 0;
    let total = 0;
    const misses: string[] = [];
    for (let i = 0; i < ds.ids.length; i++) {
      const s = await ds.load(i);
      const gt = s.mask!;
      const c = await readImageCams(cams, s.id, s);
      const hw = c.width * c.height;
      c.classes.forEach((cls, k) => {
        let best = 0;
        for (let p = 1; p < hw; p++) if (c.cams[k * hw + p] > c.cams[k * hw + best]) best = p;
        total++;
        if (gt[best] === cls + 1) hits++;
        else misses.push(`${s.id} class ${cls} peak (${best % S}, ${Math.floor(best / S)})`);
      });
      const png = join(cams, "masks", `${s.id}.png`);
      pairs.push({ gt, pred: (await decodeLabelPng(await Deno.readFile(png), png)).data });
      const zero = new Uint8Array(hw);
      allBg.push({ gt, pred: zero });
      await Deno.writeFile(join(bgDir, `${s.id}.png`), await encodeLabelPng(zero, S, S));
    }
    const K = ds.numClasses + 1;
    const opts = { dataset: "voc", data: root, split: "val" } as const;
    const m = await evaluate({ ...opts, masks: join(cams, "masks"), out: join(root, "ev") }, {
      gpu,
      log,
    });
    const m0 = await evaluate({ ...opts, masks: bgDir, out: join(root, "ev0") }, { gpu, log });
    const t3 = performance.now();
    console.log(
      `    CAM peak inside the object: ${hits}/${total}; pseudo-mask mIoU ${m.miou!.toFixed(3)}, ` +
        `all background ${m0.miou!.toFixed(3)} (train ${((t1 - t0) / 1000).toFixed(1)} s, ` +
        `CAMs ${((t2 - t1) / 1000).toFixed(1)} s, rest ${((t3 - t2) / 1000).toFixed(1)} s)`,
    );
    // The project's evaluation agrees with a plain count.
    for (const [got, want] of [[m.miou!, plainMiou(pairs, K)], [m0.miou!, plainMiou(allBg, K)]]) {
      if (!(Math.abs(got - want) < 1e-9)) throw new Error(`mIoU ${got}, plain count ${want}`);
    }
    if (!(total >= 20)) throw new Error(`only ${total} tagged objects in the val split`);
    if (!(hits >= 0.8 * total)) {
      throw new Error(`CAM peaks inside the object on ${hits}/${total}: ${misses.join("; ")}`);
    }
    if (!(m.miou! >= m0.miou! + 0.15 && m.miou! >= 1.5 * m0.miou!)) {
      throw new Error(`pseudo-mask mIoU ${m.miou} does not beat all-background ${m0.miou}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
    gpu.destroy();
  }
});
