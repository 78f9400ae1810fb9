import { parse } from "npm:parse5@8.1.1";
import { Image } from "npm:imagescript@1.3.1";
import { Buffer } from "node:buffer";
import { Rng } from "../src/rng.ts";
import { CamEvaluator, camHeatmap } from "../src/eval/cam.ts";
import { camMetrics, maskMetrics, type Metrics } from "../src/eval/metrics.ts";
import {
  buildReportHtml,
  type ReportExample,
  writeMetrics,
  writeReport,
} from "../src/methods/cam/report.ts";
import { emptyMaskCounts } from "../src/eval/confusion.ts";
import { assertEquals, testGpu } from "./util.ts";

// parse5's tree, loosely typed.
interface Node {
  nodeName: string;
  attrs?: { name: string; value: string }[];
  childNodes?: Node[];
  value?: string;
}

function walk(n: Node, f: (n: Node) => void): void {
  f(n);
  for (const c of n.childNodes ?? []) walk(c, f);
  // <template> content is not used by the report.
}

const attr = (n: Node, name: string) => n.attrs?.find((a) => a.name === name)?.value;

function find(root: Node, pred: (n: Node) => boolean): Node[] {
  const out: Node[] = [];
  walk(root, (n) => {
    if (pred(n)) out.push(n);
  });
  return out;
}

function text(n: Node): string {
  let s = "";
  walk(n, (c) => {
    if (c.nodeName === "#text") s += c.value;
  });
  return s;
}

/** Synthetic scene: discs of classes on a textured background, CAMs peaked on the discs with
 * leakage into a confusable class (so OC pixels exist). */
function scene(rng: Rng, id: string, C: number, W: number, H: number) {
  const objs = [...Array(1 + rng.int(2))].map(() => ({
    c: rng.int(C),
    x: rng.uniform(12, W - 12),
    y: rng.uniform(12, H - 12),
    r: rng.uniform(8, 18),
  }));
  const rgb = new Uint8Array(W * H * 3);
  const gt = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = y * W + x;
      let v = 0;
      for (const o of objs) {
        const d = Math.hypot(x - o.x, y - o.y);
        if (d < o.r) v = o.c + 1;
        else if (d < o.r + 1.5 && v === 0) v = 255;
      }
      gt[i] = v;
      const base = v > 0 && v < 255 ? [30 + 11 * v, 210 - 9 * v, 100] : [80, 130, 190];
      for (let k = 0; k < 3; k++) rgb[3 * i + k] = base[k] + rng.int(25);
    }
  }
  const h = Math.ceil(H / 8), w = Math.ceil(W / 8);
  const cam = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let v = rng.uniform(-0.2, 0.2);
        for (const o of objs) {
          const d2 = ((x + 0.5) * W / w - o.x) ** 2 + ((y + 0.5) * H / h - o.y) ** 2;
          const bump = Math.exp(-d2 / (o.r * o.r));
          if (c === o.c) v += 3 * bump;
          // the confusable class wins on one side of the object
          if (c === (o.c + 1) % C) {
            v += 3.4 *
              Math.exp(
                -(((x + 0.5) * W / w - o.x - o.r / 2) ** 2 + ((y + 0.5) * H / h - o.y) ** 2) /
                  (o.r * o.r / 4),
              );
          }
        }
        cam[(c * h + y) * w + x] = v;
      }
    }
  }
  const tags = [...new Set(objs.map((o) => o.c))];
  return { id, rgb, gt, cam, h, w, tags };
}

async function syntheticRun(): Promise<{ metrics: Metrics; examples: ReportExample[] }> {
  const gpu = await testGpu();
  const rng = new Rng(2);
  const C = 20, W = 80, H = 64;
  const ev = new CamEvaluator(gpu, C, { thresholds: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] });
  const examples: ReportExample[] = [];
  for (let i = 0; i < 6; i++) {
    const s = scene(rng, `img_${i}`, C, W, H);
    const pred = await ev.add({
      id: s.id,
      cam: s.cam,
      camShape: [C, s.h, s.w],
      width: W,
      height: H,
      tags: s.tags,
      gt: { width: W, height: H, data: s.gt },
    }, { pseudoThreshold: 0.3 });
    if (i < 3) {
      const heat = camHeatmap(s.cam, [C, s.h, s.w], W, H, s.tags);
      examples.push({
        id: s.id,
        width: W,
        height: H,
        rgb: s.rgb,
        gt: s.gt,
        pred: pred!.data,
        cam: heat,
      });
    }
  }
  const counts = await ev.result();
  ev.dispose();
  const names = [..."abcdefghijklmnopqrst"].map((c) => `cls_${c}`);
  names[3] = "<b>&'\"";
  return {
    metrics: camMetrics(counts, { classNames: names, split: "val", source: "synthetic" }),
    examples,
  };
}

Deno.test("report.html: parses, has every section, images are valid PNG data URLs", async () => {
  const { metrics, examples } = await syntheticRun();
  if (!(metrics.oc_pixels > 0 && metrics.sweep)) throw new Error("test data lacks OC / sweep");
  const html = await buildReportHtml(metrics, examples);
  const errors: string[] = [];
  const doc = parse(html, { onParseError: (e: { code: string }) => errors.push(e.code) }) as Node;
  assertEquals(errors, []);
  const sections = find(doc, (n) => n.nodeName === "section").map((n) => attr(n, "id"));
  assertEquals(sections, ["summary", "per-class", "oc-breakdown", "threshold-curve", "examples"]);
  const byId = (id: string) => find(doc, (n) => attr(n, "id") === id)[0];
  // Summary: mIoU and OC rate as shown.
  const summary = text(byId("summary"));
  for (
    const want of [
      `${(100 * metrics.miou!).toFixed(1)}%`,
      `${(100 * metrics.oc_rate!).toFixed(2)}%`,
    ]
  ) {
    if (!summary.includes(want)) throw new Error(`summary lacks ${want}: ${summary}`);
  }
  // Per-class bars: one label per class (escaped names come back intact).
  const barText = find(byId("per-class"), (n) => n.nodeName === "text").map(text);
  for (const name of metrics.class_names) {
    if (!barText.includes(name)) throw new Error(`no bar label for ${name}`);
  }
  if (html.includes("<b>&'")) throw new Error("class name not escaped");
  // OC table: one row per pair, counts as listed.
  const rows = find(byId("oc-breakdown"), (n) => n.nodeName === "tr").slice(1);
  assertEquals(rows.length, metrics.oc_pairs.length);
  assertEquals(
    rows.map((r) => find(r, (n) => n.nodeName === "td").slice(0, 3).map(text)),
    metrics.oc_pairs.map((p) => [p.true, p.pred, String(p.count)]),
  );
  // Threshold curve: an SVG polyline with one vertex per threshold.
  const poly = find(byId("threshold-curve"), (n) => n.nodeName === "polyline");
  assertEquals(poly.length, 1);
  assertEquals(attr(poly[0], "points")!.trim().split(/\s+/).length, metrics.sweep!.length);
  // Examples: 4 images per example, each a decodable PNG of the thumbnail size.
  const imgs = find(byId("examples"), (n) => n.nodeName === "img");
  assertEquals(imgs.length, 4 * examples.length);
  for (const img of imgs) {
    const src = attr(img, "src")!;
    const prefix = "data:image/png;base64,";
    if (!src.startsWith(prefix)) throw new Error(`not a PNG data URL: ${src.slice(0, 40)}`);
    const bytes = new Uint8Array(Buffer.from(src.slice(prefix.length), "base64"));
    const im = await Image.decode(bytes);
    assertEquals([im.width, im.height], [160, 128]);
  }
  // Nothing external.
  const ext = find(
    doc,
    (n) => ["script", "link"].includes(n.nodeName) || /^https?:/.test(attr(n, "src") ?? ""),
  );
  assertEquals(ext.length, 0);
});

Deno.test("report and metrics files are written atomically; mask reports show no curve", async () => {
  const dir = await Deno.makeTempDir();
  const counts = emptyMaskCounts(2);
  counts.confusion.set([5, 1, 0, 0, 3, 0, 0, 0, 0]);
  counts.nImages = 1;
  const m = maskMetrics(counts, { split: "val", source: "unit" });
  const ex: ReportExample = {
    id: "one",
    width: 3,
    height: 2,
    rgb: new Uint8Array(18).fill(128),
    gt: Uint8Array.from([0, 1, 255, 0, 1, 1]),
    pred: null,
  };
  await writeMetrics(`${dir}/metrics.json`, m);
  await writeReport(`${dir}/report.html`, m, [ex]);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assertEquals(names, ["metrics.json", "report.html"]);
  assertEquals(
    JSON.parse(await Deno.readTextFile(`${dir}/metrics.json`)),
    JSON.parse(JSON.stringify(m)),
  );
  const html = await Deno.readTextFile(`${dir}/report.html`);
  if (!html.includes("No threshold sweep")) throw new Error("mask report should say no sweep");
  if (!html.includes("no prediction")) throw new Error("missing prediction not shown as empty");
  await Deno.remove(dir, { recursive: true });
});

function hasChromium(): string | null {
  for (const p of ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]) {
    try {
      Deno.statSync(p);
      return p;
    } catch { /* next */ }
  }
  return null;
}

const chromium = hasChromium();

Deno.test({
  name: "report renders in headless Chromium (skipped when chromium is absent)",
  ignore: chromium === null,
  async fn() {
    const { metrics, examples } = await syntheticRun();
    const dir = await Deno.makeTempDir();
    await writeReport(`${dir}/report.html`, metrics, examples);
    const shot = `${dir}/shot.png`;
    const out = await new Deno.Command(chromium!, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--screenshot=${shot}`,
        "--window-size=1200,1600",
        `file://${dir}/report.html`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(out.code, 0);
    const im = await Image.decode(await Deno.readFile(shot));
    assertEquals([im.width, im.height], [1200, 1600]);
    // Not blank: the page has dark text on white and coloured bars.
    const colours = new Set<number>();
    for (let y = 0; y < im.height; y += 7) {
      for (let x = 0; x < im.width; x += 7) colours.add(im.getPixelAt(x + 1, y + 1) >>> 8);
    }
    if (colours.size < 50) throw new Error(`screenshot looks blank (${colours.size} colours)`);
    await Deno.remove(dir, { recursive: true });
  },
});

import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { openDataset } from "../src/data/dataset.ts";
import { accumulateMaskCounts } from "../src/eval/confusion.ts";
import { evaluateMaskFolder } from "../src/methods/cam/mask_folder.ts";
import { writeEvalOutputs } from "../src/methods/cam/report.ts";

Deno.test("end to end: VOC tree + mask folder -> metrics.json + report.html", async () => {
  const gpu = await testGpu();
  const rng = new Rng(9);
  const root = await Deno.makeTempDir();
  const voc = `${root}/VOCdevkit/VOC2012`;
  for (const d of ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]) {
    await Deno.mkdir(`${voc}/${d}`, { recursive: true });
  }
  await Deno.mkdir(`${root}/pred`);
  const ids = ["2007_000001", "2007_000002", "2007_000003"];
  const want = emptyMaskCounts(20);
  for (const id of ids) {
    const W = 48 + rng.int(16), H = 40;
    const s = scene(rng, id, 20, W, H);
    const jpg = new Image(W, H);
    for (let i = 0; i < W * H; i++) {
      jpg.bitmap.set([s.rgb[3 * i], s.rgb[3 * i + 1], s.rgb[3 * i + 2], 255], 4 * i);
    }
    await Deno.writeFile(`${voc}/JPEGImages/${id}.jpg`, await jpg.encodeJPEG(90));
    await Deno.writeFile(
      `${voc}/SegmentationClass/${id}.png`,
      await encodeLabelPng(s.gt, W, H, VOC_PALETTE),
    );
    // Prediction: the ground truth with one disc relabelled as another class (an OC error).
    const pred = s.gt.map((
      v,
    ) => (v === 255 ? 0 : v === s.tags[0] + 1 ? (s.tags[0] + 1) % 20 + 1 : v));
    await Deno.writeFile(`${root}/pred/${id}.png`, await encodeLabelPng(pred, W, H, VOC_PALETTE));
    const tags = [...new Set(s.gt.filter((v) => v > 0 && v < 255))].map((v) => v - 1).sort((a, b) =>
      a - b
    );
    accumulateMaskCounts(want, {
      id,
      gt: { width: W, height: H, data: s.gt },
      pred: { width: W, height: H, data: pred },
      tags,
    });
  }
  await Deno.writeTextFile(`${voc}/ImageSets/Segmentation/val.txt`, ids.join("\n") + "\n");
  const dataset = await openDataset({ kind: "voc", root, split: "val" });
  const r = await evaluateMaskFolder({ gpu, dataset, masksDir: `${root}/pred` });
  assertEquals(r.counts, want);
  if (!(r.metrics.oc_rate! > 0 && r.metrics.miou! < 1)) throw new Error("expected OC errors");
  const out = await writeEvalOutputs(`${root}/out`, r.metrics, r.examples);
  assertEquals(JSON.parse(await Deno.readTextFile(out.metricsPath)).oc_rate, r.metrics.oc_rate);
  const html = await Deno.readTextFile(out.reportPath);
  const imgs = find(parse(html) as Node, (n) => n.nodeName === "img");
  assertEquals(imgs.length, 3 * 3); // image, ground truth, prediction; no CAM for masks
  await Deno.remove(root, { recursive: true });
});
