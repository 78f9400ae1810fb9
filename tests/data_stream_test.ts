/**
 * Batches: layout and normalisation against plain references (identity, centred padding,
 * flip, 3x box-average downscale, bilinear upscale), colour jitter properties, deterministic
 * order, exact resume from any batch position (across epochs), dropLast, prefetch bounds.
 */
import { BaseDataset, type Sample } from "../src/data/base.ts";
import { applyAugment, type AugParams, IMAGENET_MEAN, IMAGENET_STD } from "../src/data/augment.ts";
import { type Batch, batches, type BatchOptions } from "../src/data/stream.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertEquals } from "./util.ts";

/** An in-memory dataset of random images (sizes given), 3 classes, counting loads. */
class MemDataset extends BaseDataset {
  loads = 0;
  readonly samples: Sample[];
  constructor(sizes: [number, number][], seed = 1) {
    super({
      kind: "voc",
      root: "mem",
      split: "mem",
      classNames: ["a", "b", "c"],
      skipBad: false,
      hasMasks: true,
    });
    const r = new Rng(seed);
    this.samples = sizes.map(([w, h], i) => {
      const rgb = new Uint8Array(w * h * 3).map(() => r.int(256));
      const mask = new Uint8Array(w * h).map(() => r.int(4));
      const tags = [i % 3, ...(i % 2 ? [(i + 1) % 3] : [])].sort();
      return { id: `m${i}`, width: w, height: h, rgb, mask, tags, present: tags };
    });
    this.ids = this.samples.map((s) => s.id);
    this.tags = this.samples.map((s) => s.tags);
    this.present = this.tags;
    this.finish();
  }
  load(i: number): Promise<Sample> {
    this.loads++;
    return Promise.resolve(this.samples[i]);
  }
}

async function collect(ds: MemDataset, opts: BatchOptions): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of batches(ds, opts)) out.push(b);
  return out;
}

const norm = (v: number, c: number) => (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];

Deno.test("no augmentation, image already SxS: exact normalisation, CHW layout, tags, masks", async () => {
  const ds = new MemDataset([[5, 5], [5, 5], [5, 5]]);
  const [b] = await collect(ds, { batchSize: 3, cropSize: 5, seed: 0, shuffle: false });
  assertEquals(b.size, 3);
  assertEquals(b.ids, ["m0", "m1", "m2"]);
  assertEquals(b.indices, [0, 1, 2]);
  assertEquals(b.images.length, 3 * 3 * 25);
  for (let k = 0; k < 3; k++) {
    const s = ds.samples[k];
    const ref = new Float32Array(75);
    for (let c = 0; c < 3; c++) {
      for (let q = 0; q < 25; q++) ref[c * 25 + q] = norm(s.rgb[q * 3 + c], c);
    }
    assertClose(b.images.subarray(k * 75, (k + 1) * 75), ref, { rtol: 1e-5, atol: 1e-5 });
    assertEquals(b.masks!.subarray(k * 25, (k + 1) * 25), s.mask!);
    const hot = [0, 1, 2].map((c) => (s.tags.includes(c) ? 1 : 0));
    assertEquals([...b.tags.subarray(k * 3, k * 3 + 3)], hot);
  }
});

Deno.test("no augmentation, non-square image: centred, padding = mean (0) and label 255", async () => {
  const ds = new MemDataset([[4, 2]]);
  const [b] = await collect(ds, { batchSize: 1, cropSize: 4, seed: 0 });
  const s = ds.samples[0];
  // Long side 4 already: rows sit at offset floor((4-2)/2) = 1.
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) {
      const inside = y >= 1 && y <= 2;
      const q = (y - 1) * 4 + x;
      assertEquals(b.masks![y * 4 + x], inside ? s.mask![q] : 255);
      for (let c = 0; c < 3; c++) {
        const v = b.images[c * 16 + y * 4 + x];
        assertClose([v], [inside ? norm(s.rgb[q * 3 + c], c) : 0], { atol: 1e-5 });
      }
    }
  }
});

function params(p: Partial<AugParams> & { width: number; height: number }): AugParams {
  return { flip: false, offX: 0, offY: 0, brightness: 1, contrast: 1, saturation: 1, hue: 0, ...p };
}

Deno.test("applyAugment: 3x downscale equals the 3x3 box average; mask takes the centre", () => {
  const r = new Rng(4);
  const w = 9, h = 6, S = 3;
  const rgb = new Uint8Array(w * h * 3).map(() => r.int(256));
  const mask = new Uint8Array(w * h).map((_, i) => i % 7);
  const out = new Float32Array(3 * S * S);
  const outMask = new Uint8Array(S * S);
  applyAugment(rgb, mask, w, h, S, params({ width: 3, height: 2 }), out, 0, outMask, 0);
  for (let oy = 0; oy < 2; oy++) {
    for (let ox = 0; ox < 3; ox++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < 3; dy++) {
          for (let dx = 0; dx < 3; dx++) sum += rgb[((3 * oy + dy) * w + 3 * ox + dx) * 3 + c];
        }
        assertClose([out[c * 9 + oy * 3 + ox]], [norm(sum / 9, c)], { atol: 1e-5 });
      }
      assertEquals(outMask[oy * 3 + ox], mask[(3 * oy + 1) * w + 3 * ox + 1]);
    }
  }
  assertEquals([...outMask.subarray(6)], [255, 255, 255]); // the padded third row
});

Deno.test("applyAugment: bilinear upscale (align_corners=false) and flip against a reference", () => {
  const r = new Rng(5);
  const w = 5, h = 3, W2 = 8, H2 = 5, S = 8;
  const rgb = new Uint8Array(w * h * 3).map(() => r.int(256));
  const ref = (x: number, y: number, c: number) => {
    const sx = Math.min(Math.max((x + 0.5) * (w / W2) - 0.5, 0), w - 1);
    const sy = Math.min(Math.max((y + 0.5) * (h / H2) - 0.5, 0), h - 1);
    const x0 = Math.floor(sx), y0 = Math.floor(sy);
    const x1 = Math.min(x0 + 1, w - 1), y1 = Math.min(y0 + 1, h - 1);
    const fx = sx - x0, fy = sy - y0;
    const v = (xx: number, yy: number) => rgb[(yy * w + xx) * 3 + c];
    return (v(x0, y0) * (1 - fx) + v(x1, y0) * fx) * (1 - fy) +
      (v(x0, y1) * (1 - fx) + v(x1, y1) * fx) * fy;
  };
  for (const flip of [false, true]) {
    const out = new Float32Array(3 * S * S);
    applyAugment(rgb, null, w, h, S, params({ width: W2, height: H2, flip }), out, 0, null, 0);
    for (let y = 0; y < H2; y++) {
      for (let x = 0; x < W2; x++) {
        for (let c = 0; c < 3; c++) {
          const e = norm(ref(flip ? W2 - 1 - x : x, y, c), c);
          assertClose(
            [out[c * 64 + y * 8 + x]],
            [e],
            { atol: 1e-4 },
            `(${x},${y},${c}) flip ${flip}`,
          );
        }
      }
    }
  }
});

Deno.test("applyAugment: crop window offsets and colour jitter properties", () => {
  const r = new Rng(6);
  const w = 6, h = 6;
  const rgb = new Uint8Array(w * h * 3).map(() => r.int(256));
  const run = (p: Partial<AugParams>, S = 6) => {
    const out = new Float32Array(3 * S * S);
    applyAugment(rgb, null, w, h, S, params({ width: 6, height: 6, ...p }), out, 0, null, 0);
    return out;
  };
  const base = run({});
  // A 3x3 window at (2, 1) of the unscaled image.
  const win = run({ offX: 2, offY: 1 }, 3);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 3; x++) {
        assertEquals(win[c * 9 + y * 3 + x], base[c * 36 + (y + 1) * 6 + x + 2]);
      }
    }
  }
  // Brightness scales the 0..1 values (clipped at 1).
  const bright = run({ brightness: 0.5 });
  for (let q = 0; q < 36; q++) {
    for (let c = 0; c < 3; c++) {
      assertClose([bright[c * 36 + q]], [norm(rgb[q * 3 + c] * 0.5, c)], { atol: 1e-5 });
    }
  }
  // Saturation 0 leaves grey pixels; a full hue turn changes nothing.
  const grey = run({ saturation: 0 });
  for (let q = 0; q < 36; q++) {
    const g = [0, 1, 2].map((c) => grey[c * 36 + q] * IMAGENET_STD[c] + IMAGENET_MEAN[c]);
    assertClose([g[1], g[2]], [g[0], g[0]], { atol: 1e-5 });
  }
  assertClose(run({ hue: 1 }), base, { atol: 1e-4 });
  // Contrast 0 makes every pixel the mean grey level.
  const flat = run({ contrast: 0 });
  for (let q = 1; q < 36; q++) assertClose([flat[q]], [flat[0]], { atol: 1e-6 });
});

const SIZES: [number, number][] = Array.from({ length: 11 }, (_, i) => [6 + (i % 4), 5 + (i % 3)]);
const AUG = {
  scaleRange: [5, 12] as [number, number],
  flip: true,
  colorJitter: { brightness: 0.3, contrast: 0.3, saturation: 0.3, hue: 0.05 },
};

Deno.test("batches are deterministic from the seed and differ across seeds", async () => {
  const opts = { batchSize: 4, cropSize: 7, seed: 9, augment: AUG, epochs: 2 };
  const a = await collect(new MemDataset(SIZES), opts);
  const b = await collect(new MemDataset(SIZES), opts);
  assertEquals(a, b);
  assertEquals(a.map((x) => x.size), [4, 4, 3, 4, 4, 3]);
  assertEquals(a.map((x) => x.position), [4, 8, 11, 15, 19, 22]);
  assertEquals(a.map((x) => x.epoch), [0, 0, 0, 1, 1, 1]);
  // Each epoch visits every image once, in a shuffled order that changes per epoch.
  const e0 = a.slice(0, 3).flatMap((x) => x.indices), e1 = a.slice(3).flatMap((x) => x.indices);
  assertEquals([...e0].sort((x, y) => x - y), [...Array(11).keys()]);
  assertEquals([...e1].sort((x, y) => x - y), [...Array(11).keys()]);
  assertEquals(e0.join() === e1.join(), false);
  const c = await collect(new MemDataset(SIZES), { ...opts, seed: 10 });
  assertEquals(c.flatMap((x) => x.indices).join() === [...e0, ...e1].join(), false);
  // Prefetch depth changes nothing.
  assertEquals(await collect(new MemDataset(SIZES), { ...opts, prefetch: 0 }), a);
  assertEquals(await collect(new MemDataset(SIZES), { ...opts, prefetch: 5 }), a);
});

Deno.test("resuming from any batch's position reproduces the rest exactly", async () => {
  const opts = { batchSize: 3, cropSize: 6, seed: 2, augment: AUG, epochs: 3 };
  const full = await collect(new MemDataset(SIZES), opts);
  for (const k of [0, 2, 3, 5, full.length - 2]) {
    const rest = await collect(new MemDataset(SIZES), { ...opts, position: full[k].position });
    assertEquals(rest, full.slice(k + 1), `resume after batch ${k}`);
  }
  const fromEpoch = await collect(new MemDataset(SIZES), { ...opts, epochStart: 1 });
  assertEquals(fromEpoch, full.filter((b) => b.epoch >= 1));
});

Deno.test("dropLast drops each epoch's short batch; bad options are rejected", async () => {
  const ds = new MemDataset(SIZES);
  const got = await collect(ds, { batchSize: 4, cropSize: 5, seed: 1, epochs: 2, dropLast: true });
  assertEquals(got.map((b) => [b.size, b.position, b.epoch]), [[4, 4, 0], [4, 8, 0], [4, 15, 1], [
    4,
    19,
    1,
  ]]);
  const alias = await collect(ds, {
    batchSize: 4,
    cropSize: 5,
    seed: 1,
    epochs: 2,
    drop_last: true,
  });
  assertEquals(alias, got);
  const bad = (o: Partial<BatchOptions>) => () =>
    batches(ds, { batchSize: 4, cropSize: 5, seed: 1, ...o }).next();
  for (
    const [o, msg] of [
      [{ batchSize: 0 }, "batchSize"],
      [{ cropSize: 2.5 }, "cropSize"],
      [{ batchSize: 20, dropLast: true }, "no batch at all"],
      [{ augment: { scaleRange: [9, 3] } }, "scaleRange"],
      [{ augment: { colorJitter: 2 } }, "colorJitter.brightness"],
    ] as [Partial<BatchOptions>, string][]
  ) {
    let threw = false;
    try {
      await bad(o)();
    } catch (e) {
      threw = true;
      if (!(e as Error).message.includes(msg)) {
        throw new Error(`"${(e as Error).message}" lacks ${msg}`);
      }
    }
    assertEquals(threw, true, `options ${JSON.stringify(o)} should be rejected`);
  }
});

Deno.test("prefetch works ahead of the consumer and stays bounded", async () => {
  const ds = new MemDataset(Array.from({ length: 40 }, () => [6, 6] as [number, number]));
  const it = batches(ds, { batchSize: 4, cropSize: 6, seed: 0, prefetch: 2 });
  await it.next();
  await new Promise((r) => setTimeout(r, 30)); // the consumer is "busy": the queue fills
  // First batch (4) plus two batches ahead (8), plus the slot that triggered the refill.
  if (!(ds.loads > 4 && ds.loads <= 4 + 8 + 1)) throw new Error(`loads = ${ds.loads}`);
  await it.return(undefined);
});
