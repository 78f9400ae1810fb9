/**
 * The synthetic datasets: byte-identical output for a seed, the cache folder (atomic,
 * generated once, keyed by version/seed/size, env precedence), and the generator's design
 * properties (classes, confusable groups, co-occurrence, difficult objects, COCO forms).
 */
import { VOC_CLASSES } from "../src/data/classes.ts";
import {
  defaultCacheDir,
  ensureSynthetic,
  generateScene,
  SYNTH_VERSION,
  synthesize,
} from "../src/data/synthetic.ts";
import { assertEquals } from "./util.ts";

async function listFiles(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${root}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(root, p));
    else out.push(p);
  }
  return out.sort();
}

Deno.test("synthesize: same seed -> identical bytes; another seed -> other images", async () => {
  const a = await Deno.makeTempDir({ prefix: "ocr-synth-a-" });
  const b = await Deno.makeTempDir({ prefix: "ocr-synth-b-" });
  const c = await Deno.makeTempDir({ prefix: "ocr-synth-c-" });
  try {
    await synthesize({ out: a, seed: 3, size: "tiny" });
    await synthesize({ out: b, seed: 3, size: "tiny" });
    await synthesize({ out: c, seed: 4, size: "tiny" });
    const files = await listFiles(a);
    assertEquals(await listFiles(b), files);
    assertEquals(files.filter((f) => f.endsWith(".jpg")).length, 24 + 12 + 16 + 8);
    for (const f of files) {
      assertEquals(await Deno.readFile(`${b}/${f}`), await Deno.readFile(`${a}/${f}`), f);
    }
    const jpg = "VOCdevkit/VOC2012/JPEGImages/syn_train_000000.jpg";
    const same =
      (await Deno.readFile(`${a}/${jpg}`)).join() === (await Deno.readFile(`${c}/${jpg}`)).join();
    assertEquals(same, false);
    for (
      const f of [
        "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/trainaug.txt",
        "coco/annotations/instances_train2014.json",
        "coco/annotations/instances_val2014.json",
      ]
    ) assertEquals(files.includes(f), true, f);
  } finally {
    for (const d of [a, b, c]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("ensureSynthetic generates once, atomically, keyed by version/seed/size", async () => {
  const cache = await Deno.makeTempDir({ prefix: "ocr-cache-" });
  try {
    // A leftover temp folder of an interrupted run is not taken as a finished set.
    await Deno.mkdir(`${cache}/.tmp-synthetic-v${SYNTH_VERSION}-junk/VOCdevkit`, {
      recursive: true,
    });
    const r1 = await ensureSynthetic({ seed: 2, size: "tiny", cacheDir: cache });
    const dir = `${cache}/synthetic-v${SYNTH_VERSION}-seed2-tiny`;
    assertEquals(r1, { vocRoot: `${dir}/VOCdevkit/VOC2012`, cocoRoot: `${dir}/coco` });
    const probe = `${r1.vocRoot}/ImageSets/Segmentation/train.txt`;
    const before = (await Deno.stat(probe)).mtime!.getTime();
    const r2 = await ensureSynthetic({ seed: 2, size: "tiny", cacheDir: cache });
    assertEquals(r2, r1);
    assertEquals((await Deno.stat(probe)).mtime!.getTime(), before);
    // Only the finished folder and the unrelated leftover remain: no temp folder of ours.
    const names = [];
    for await (const e of Deno.readDir(cache)) names.push(e.name);
    assertEquals(names.sort(), [
      `.tmp-synthetic-v${SYNTH_VERSION}-junk`,
      `synthetic-v${SYNTH_VERSION}-seed2-tiny`,
    ]);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("defaultCacheDir: OCR_WSSS_CACHE, then XDG_CACHE_HOME, then HOME", () => {
  const keys = ["OCR_WSSS_CACHE", "XDG_CACHE_HOME", "HOME"];
  const saved = keys.map((k) => Deno.env.get(k));
  try {
    Deno.env.set("OCR_WSSS_CACHE", "/x/own");
    Deno.env.set("XDG_CACHE_HOME", "/x/xdg");
    Deno.env.set("HOME", "/x/home");
    assertEquals(defaultCacheDir(), "/x/own");
    Deno.env.delete("OCR_WSSS_CACHE");
    assertEquals(defaultCacheDir(), "/x/xdg/ocr-wsss");
    Deno.env.delete("XDG_CACHE_HOME");
    assertEquals(defaultCacheDir(), "/x/home/.cache/ocr-wsss");
  } finally {
    keys.forEach((
      k,
      i,
    ) => (saved[i] === undefined ? Deno.env.delete(k) : Deno.env.set(k, saved[i]!)));
  }
});

Deno.test("generator design: classes, 1-3 objects, co-occurrence, difficult, COCO forms", () => {
  const n = 400;
  const count = new Array(20).fill(0);
  const pair = (a: string, b: string) => [VOC_CLASSES.indexOf(a), VOC_CLASSES.indexOf(b)];
  const withCounts = new Map<string, [number, number]>();
  const cooc = [
    ["bicycle", "person"],
    ["motorbike", "person"],
    ["horse", "person"],
    ["diningtable", "chair"],
    ["diningtable", "bottle"],
    ["sofa", "chair"],
  ];
  let difficult = 0, objects = 0, crowd = 0;
  const forms = new Set<string>();
  for (let i = 0; i < n; i++) {
    const sc = generateScene(1, "voc-train", i);
    const k = sc.objects.length;
    if (!(k >= 1 && k <= 3)) throw new Error(`scene ${i} has ${k} objects`);
    if (!(Math.max(sc.width, sc.height) === 128 && Math.min(sc.width, sc.height) >= 96)) {
      throw new Error(`scene ${i} is ${sc.width}x${sc.height}`);
    }
    for (const c of sc.present) count[c]++;
    for (const o of sc.objects) {
      objects++;
      if (o.difficult) difficult++;
      if (o.crowd) crowd++;
      forms.add(o.cocoSeg);
      if (o.visibleArea < 40) {
        throw new Error(`scene ${i}: an object shows only ${o.visibleArea} px`);
      }
    }
    for (const [a, b] of cooc) {
      const [ca, cb] = pair(a, b);
      if (!sc.present.includes(ca)) continue;
      const s = withCounts.get(`${a}+${b}`) ?? [0, 0];
      withCounts.set(`${a}+${b}`, [s[0] + 1, s[1] + (sc.present.includes(cb) ? 1 : 0)]);
    }
  }
  count.forEach((c, k) => {
    if (c < 8) throw new Error(`class ${VOC_CLASSES[k]} appears in only ${c} of ${n} scenes`);
  });
  for (const [key, [m, both]] of withCounts) {
    if (!(m >= 5 && both / m >= 0.25)) throw new Error(`co-occurrence ${key}: ${both}/${m}`);
  }
  if (!(difficult > 0 && difficult < 0.2 * objects)) {
    throw new Error(`difficult ${difficult}/${objects}`);
  }
  if (!(crowd > 0)) throw new Error("no crowd objects");
  assertEquals([...forms].sort(), ["polygons", "rle", "rle-string"]);
});

Deno.test("confusable groups share size and colour statistics", () => {
  // Within a group only a small part differs, so mean object area and mean brightness of
  // the classes of a group must be close. v1 draws every body colour from the group's
  // palette; v2 gives each class a preference among the group's colours (its colour
  // statistics differ as real cats' and dogs' do, but overlap), so its brightness spread is
  // larger while the areas stay equal.
  const groups = [["cat", "dog"], ["cow", "horse", "sheep"], ["bus", "car", "train"], [
    "bicycle",
    "motorbike",
  ], ["chair", "sofa"]];
  for (const [variant, maxSpread] of [["v1", 30], ["v2", 60]] as const) {
    groupStats(variant, maxSpread);
  }
  function groupStats(variant: "v1" | "v2", maxSpread: number) {
    const stats = new Map<number, { area: number[]; lum: number[] }>();
    for (let i = 0; i < 600; i++) {
      const sc = generateScene(9, "voc-train", i, variant);
      sc.objects.forEach((o, k) => {
        let lum = 0, m = 0;
        for (let q = 0; q < sc.owner.length; q++) {
          if (sc.owner[q] !== k) continue;
          lum += sc.rgb[3 * q] + sc.rgb[3 * q + 1] + sc.rgb[3 * q + 2];
          m++;
        }
        const s = stats.get(o.cls) ?? { area: [], lum: [] };
        s.area.push(o.shape.reduce((a, b) => a + b, 0));
        s.lum.push(lum / (3 * m));
        stats.set(o.cls, s);
      });
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    for (const g of groups) {
      const ms = g.map((name) => stats.get(VOC_CLASSES.indexOf(name))!);
      const lums = ms.map((s) => mean(s.lum));
      const spread = Math.max(...lums) - Math.min(...lums);
      if (!(spread < maxSpread)) {
        throw new Error(`${variant} ${g}: mean brightness differs by ${spread}`);
      }
      const areas = ms.map((s) => mean(s.area));
      if (!(Math.max(...areas) / Math.min(...areas) < 1.35)) {
        throw new Error(`${variant} ${g}: areas ${areas}`);
      }
    }
  }
});

/** FNV-1a of scene 0 (seed 0, voc-train) as the generator wrote it before it had versions. */
const V1_SCENE0_HASH = "195c902b";

Deno.test("generator v2: a VOC-like foreground share, balanced classes; v1 kept as it was", () => {
  // VOC: roughly a quarter to a third of the pixels are foreground; v1 had about a tenth.
  const stats = (variant: "v1" | "v2", n: number) => {
    let fg = 0, px = 0;
    const count = new Array(20).fill(0);
    for (let i = 0; i < n; i++) {
      const sc = generateScene(5, "voc-train", i, variant);
      for (let q = 0; q < sc.owner.length; q++) if (sc.owner[q] >= 0) fg++;
      px += sc.owner.length;
      for (const c of sc.present) count[c]++;
    }
    return { fg: fg / px, count };
  };
  const v2 = stats("v2", 400);
  if (!(v2.fg >= 0.22 && v2.fg <= 0.36)) throw new Error(`v2 foreground share ${v2.fg}`);
  // Class balance: every class in at least 2.5% of the scenes (VOC's rarest are about 3%) and none but person (VOC's most
  // frequent class by far) in more than 25%.
  v2.count.forEach((c, k) => {
    const share = c / 400;
    const max = VOC_CLASSES[k] === "person" ? 0.5 : 0.25;
    if (!(share >= 0.025 && share <= max)) {
      throw new Error(`v2: ${VOC_CLASSES[k]} in ${(100 * share).toFixed(1)}% of the scenes`);
    }
  });
  const v1 = stats("v1", 150);
  if (!(v1.fg < 0.16)) throw new Error(`v1 foreground share ${v1.fg}: v1 must not change`);
  // The first v1 scene of seed 0 still has the bytes it had before versions existed.
  const sc = generateScene(0, "voc-train", 0, "v1");
  let h = 0x811c9dc5;
  for (let q = 0; q < sc.vocMask.length; q++) {
    h = Math.imul(h ^ sc.vocMask[q], 16777619);
    h = Math.imul(h ^ sc.rgb[q * 3], 16777619);
  }
  assertEquals((h >>> 0).toString(16), V1_SCENE0_HASH);
});
