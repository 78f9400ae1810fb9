/**
 * VOC reader: synthetic tree -> reader gives back exactly the generator's masks and tags
 * (train, val, trainaug with grey masks); the three tag modes (mask, xml, xml-nondifficult)
 * on the synthetic tree and on hand-built images, their fallbacks, the error for an XML
 * without objects over a labelled mask and the warning for all-difficult images; psa-style
 * list lines; listHash.
 */
import { openDataset, type VocTagMode } from "../src/data/dataset.ts";
import { DataError } from "../src/data/errors.ts";
import { VOC_CLASSES } from "../src/data/classes.ts";
import { encodeJpeg } from "../src/data/image.ts";
import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { generateScene, SYNTH_SIZES, synthesize, synthVocId } from "../src/data/synthetic.ts";
import type { VocDataset } from "../src/data/voc.ts";
import { child, parseXml } from "../src/data/xml.ts";
import { decodeGreyMask, decodePaletteMask } from "./independent_png.ts";
import { assertEquals, assertRejects } from "./util.ts";

const SEED = 12; // a seed whose tiny tree has difficult-only classes (the tag modes differ)
const dir = await Deno.makeTempDir({ prefix: "ocr-voc-test-" });
const tree = await synthesize({ out: dir, seed: SEED, size: "tiny" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

for (const split of ["train", "val", "trainaug"] as const) {
  Deno.test(`VOC round trip (${split}): masks and tags identical to the generator's`, async () => {
    const ds = await openDataset({ kind: "voc", root: dir, split }); // root above VOCdevkit
    const sceneSplit = split === "val" ? "val" : "train";
    const n = sceneSplit === "train" ? SYNTH_SIZES.tiny.vocTrain : SYNTH_SIZES.tiny.vocVal;
    assertEquals(ds.ids.length, n);
    assertEquals(ds.numClasses, 20);
    assertEquals(ds.classNames, [...VOC_CLASSES]);
    assertEquals(ds.skipped, 0);
    const aug = (ds as VocDataset).maskPath(0)!.includes("SegmentationClassAug");
    assertEquals(aug, split === "trainaug");
    for (let i = 0; i < n; i++) {
      assertEquals(ds.ids[i], synthVocId(sceneSplit, i));
      const sc = generateScene(SEED, `voc-${sceneSplit}`, i);
      const s = await ds.load(i);
      assertEquals([s.width, s.height], [sc.width, sc.height]);
      assertEquals(s.mask, sc.vocMask, `mask of ${s.id}`);
      // The written PNG through a decoder that is not the project's (imagescript, colours
      // mapped back through the VOC palette; trainaug's masks are grey).
      const path = (ds as VocDataset).maskPath(i)!;
      const bytes = await Deno.readFile(path);
      const png = aug ? await decodeGreyMask(bytes, path) : await decodePaletteMask(
        bytes,
        VOC_PALETTE,
        path,
      );
      assertEquals([png.width, png.height], [sc.width, sc.height]);
      assertEquals(png.data, sc.vocMask, `${path} through imagescript`);
      // Default tags: the classes of the generator's mask (values 1..20), counted here.
      const inMask = [...new Set(sc.vocMask)].filter((v) => v >= 1 && v <= 20).map((v) => v - 1)
        .sort((a, b) => a - b);
      assertEquals(s.tags, inMask, `tags of ${s.id}`);
      assertEquals(ds.tagsOf(i), inMask);
      assertEquals(s.present, [...new Set([...inMask, ...sc.present])].sort((a, b) => a - b));
      let err = 0;
      for (let q = 0; q < s.rgb.length; q++) err += Math.abs(s.rgb[q] - sc.rgb[q]);
      const mae = err / s.rgb.length;
      if (!(mae < 6)) throw new Error(`${s.id}: JPEG differs from the scene by ${mae}/px`);
    }
  });
}

Deno.test("VOC tag modes on the synthetic tree: xml = all objects, xml-nondifficult = generator's tags", async () => {
  const n = SYNTH_SIZES.tiny.vocTrain;
  const xml = await openDataset({ kind: "voc", root: dir, split: "train", tags: "xml" });
  const nd = await openDataset({
    kind: "voc",
    root: dir,
    split: "train",
    tags: "xml-nondifficult",
  });
  const mask = await openDataset({ kind: "voc", root: dir, split: "train" });
  assertEquals((mask as VocDataset).tagMode, "mask");
  let differ = 0;
  for (let i = 0; i < n; i++) {
    const sc = generateScene(SEED, "voc-train", i);
    assertEquals(xml.tagsOf(i), sc.present, `xml tags of ${xml.ids[i]}`);
    assertEquals(xml.presentOf(i), sc.present);
    assertEquals(nd.tagsOf(i), sc.vocTags, `xml-nondifficult tags of ${nd.ids[i]}`);
    assertEquals(nd.presentOf(i), sc.present);
    if (sc.vocTags.length > 0 || !sc.vocMask.some((v) => v >= 1 && v <= 20)) continue;
    // All objects difficult over a labelled mask: kept with no tags, and listed.
    if (!nd.warnings.some((w) => w.id === nd.ids[i])) throw new Error(`no warning for ${i}`);
  }
  for (let i = 0; i < n; i++) if (xml.tagsOf(i).join() !== mask.tagsOf(i).join()) differ++;
  // Some image of the tiny tree has a difficult object: the modes are not all the same.
  if (differ === 0) throw new Error("xml and mask tags agree on every image of the tiny tree");
  // Tags differ, so does the list hash (the co-occurrence prior's cache key also names the mode).
  assertEquals(xml.listHash === mask.listHash, false);
  assertEquals(mask.warnings.length + xml.warnings.length, 0);
  await assertRejects(
    () => openDataset({ kind: "voc", root: dir, split: "train", tags: "bogus" as VocTagMode }),
    RangeError,
    "tags must be one of mask, xml, xml-nondifficult",
  );
});

Deno.test("VOC listHash is stable and depends on the split", async () => {
  const a = await openDataset({ kind: "voc", root: tree.vocRoot, split: "train" });
  const b = await openDataset({ kind: "voc", root: tree.vocRoot, split: "train" });
  const c = await openDataset({ kind: "voc", root: tree.vocRoot, split: "val" });
  assertEquals(/^[0-9a-f]{64}$/.test(a.listHash), true);
  assertEquals(a.listHash, b.listHash);
  assertEquals(a.listHash === c.listHash, false);
});

Deno.test("VOC: tags from the mask without XML; difficult-only classes; psa list lines", async () => {
  const root = await Deno.makeTempDir({ prefix: "ocr-voc-hand-" });
  try {
    for (const d of ["JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"]) {
      await Deno.mkdir(`${root}/${d}`, { recursive: true });
    }
    const w = 6, h = 4;
    const rgb = new Uint8Array(w * h * 3).fill(128);
    // a: no XML; mask has cat (8), dog (12) and void -> tags [7, 11].
    // b: XML with a non-difficult person and a difficult-only bottle; mask has person only.
    const maskA = new Uint8Array(w * h);
    maskA.fill(8, 0, 6);
    maskA.fill(12, 12, 15);
    maskA[20] = 255;
    const maskB = new Uint8Array(w * h).fill(15, 6, 12);
    for (const [id, m] of [["a", maskA], ["b", maskB]] as const) {
      await Deno.writeFile(`${root}/JPEGImages/${id}.jpg`, await encodeJpeg(rgb, w, h));
      await Deno.writeFile(
        `${root}/SegmentationClass/${id}.png`,
        await encodeLabelPng(m, w, h, VOC_PALETTE),
      );
    }
    await Deno.writeTextFile(
      `${root}/Annotations/b.xml`,
      `<?xml version="1.0"?>
<annotation><filename>b.jpg</filename>
  <!-- a comment -->
  <object><name>person</name><difficult>0</difficult></object>
  <object><name> bottle </name><difficult>1</difficult></object>
</annotation>`,
    );
    await Deno.writeTextFile(
      `${root}/ImageSets/Segmentation/psa.txt`,
      "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n\n/JPEGImages/b.jpg /SegmentationClassAug/b.png\n",
    );
    const ds = await openDataset({ kind: "voc", root, split: "psa" });
    assertEquals(ds.ids, ["a", "b"]);
    assertEquals(ds.tagsOf(0), [7, 11]);
    assertEquals(ds.presentOf(0), [7, 11]);
    assertEquals(ds.tagsOf(1), [14]);
    assertEquals(ds.presentOf(1), [4, 14]);
    const s = await ds.load(0);
    assertEquals(s.mask, maskA);
    // A list given by path works too.
    const byPath = await openDataset({
      kind: "voc",
      root,
      split: `${root}/ImageSets/Segmentation/psa.txt`,
    });
    assertEquals(byPath.ids, ["a", "b"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("VOC tag modes on hand-built images: fallbacks, no objects over a mask, all difficult", async () => {
  const root = await Deno.makeTempDir({ prefix: "ocr-voc-modes-" });
  try {
    const dirs = ["JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations"];
    for (const d of [...dirs, "ImageSets/Segmentation"]) {
      await Deno.mkdir(`${root}/${d}`, { recursive: true });
    }
    const w = 6, h = 4;
    const obj = (name: string, difficult: number) =>
      `<object><name>${name}</name><difficult>${difficult}</difficult></object>`;
    const fill = (v: number) => new Uint8Array(w * h).fill(v, 4, 12);
    // id: XML objects (null: no XML file), SegmentationClass mask, SegmentationClassAug mask.
    const images: [string, string | null, Uint8Array | null, Uint8Array | null][] = [
      ["c", obj("cat", 1), fill(8), null], // only a difficult cat; the mask shows it
      ["d", "", fill(12), null], // an XML without objects over a dog mask
      ["e", obj("person", 0), null, null], // no mask file
      ["f", obj("horse", 0) + obj("bottle", 1), fill(13), fill(10)], // Aug mask: a cow
      ["g", null, fill(255), null], // no XML, a mask of void only
    ];
    for (const [id, xml, m, aug] of images) {
      await Deno.writeFile(
        `${root}/JPEGImages/${id}.jpg`,
        await encodeJpeg(new Uint8Array(w * h * 3), w, h),
      );
      if (xml !== null) {
        await Deno.writeTextFile(
          `${root}/Annotations/${id}.xml`,
          `<annotation>${xml}</annotation>`,
        );
      }
      if (m) {
        await Deno.writeFile(
          `${root}/SegmentationClass/${id}.png`,
          await encodeLabelPng(m, w, h, VOC_PALETTE),
        );
      }
      if (aug) {
        await Deno.writeFile(
          `${root}/SegmentationClassAug/${id}.png`,
          await encodeLabelPng(aug, w, h),
        );
      }
    }
    await Deno.writeTextFile(
      `${root}/ImageSets/Segmentation/all.txt`,
      images.map((x) => x[0]).join("\n"),
    );
    const open = (tags?: VocTagMode, skipBad = false) =>
      openDataset({ kind: "voc", root, split: "all", tags, skipBad });
    const cat = 7, dog = 11, horse = 12, person = 14, bottle = 4, cow = 9;

    // mask (default): the mask's classes (SegmentationClassAug first), present adds the XML's.
    const m = await open();
    assertEquals(m.ids, ["c", "d", "e", "f", "g"]);
    assertEquals(m.ids.map((_, i) => m.tagsOf(i)), [[cat], [dog], [person], [cow], []]);
    assertEquals(m.ids.map((_, i) => m.presentOf(i)), [
      [cat],
      [dog],
      [person],
      [bottle, cow, horse],
      [],
    ]);
    assertEquals(m.warnings.length, 0);
    // The sample's own mask is still the split's kind (SegmentationClass for a non-aug split).
    assertEquals((m as VocDataset).maskPath(3), `${root}/SegmentationClass/f.png`);

    // xml / xml-nondifficult: an XML without objects over a labelled mask is an error naming it.
    for (const mode of ["xml", "xml-nondifficult"] as const) {
      const e = await assertRejects(() => open(mode), DataError);
      assertEquals((e as DataError).path, `${root}/Annotations/d.xml`);
      if (!e.message.includes("lists no objects but the mask") || !e.message.includes("dog")) {
        throw new Error(`unexpected message: ${e.message}`);
      }
      const ds = await open(mode, true);
      assertEquals(ds.ids, ["c", "e", "f", "g"]);
      assertEquals(ds.skippedItems.map((x) => x.id), ["d"]);
    }
    const x = await open("xml", true);
    assertEquals(x.ids.map((_, i) => x.tagsOf(i)), [[cat], [person], [bottle, horse], []]);
    assertEquals(x.warnings.length, 0);
    const nd = await open("xml-nondifficult", true);
    assertEquals(nd.ids.map((_, i) => nd.tagsOf(i)), [[], [person], [horse], []]);
    assertEquals(nd.presentOf(0), [cat]);
    // The all-difficult cat keeps its empty tags (the mode's convention) but is listed.
    assertEquals(nd.warnings.map((w) => [w.id, w.path]), [["c", `${root}/Annotations/c.xml`]]);
    if (!nd.warnings[0].problem.includes("all its objects are difficult")) {
      throw new Error(nd.warnings[0].problem);
    }
    // Neither an XML nor a mask: no tags can be known in any mode.
    await Deno.remove(`${root}/SegmentationClass/g.png`);
    const e = await assertRejects(() => open("mask"), DataError, "its tags cannot be known");
    assertEquals((e as DataError).path, `${root}/JPEGImages/g.jpg`);
    for (const mode of ["mask", "xml", "xml-nondifficult"] as const) {
      const ds = await open(mode, true);
      assertEquals(ds.skippedItems.at(-1)?.path, `${root}/JPEGImages/g.jpg`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("parseXml: entities, CDATA, attributes, self-closing tags; malformed input", () => {
  const root = parseXml(
    `<?xml version="1.0"?>\n<!DOCTYPE a>\n<a k="1" j='x &amp; y'><b>A &lt;&#65;&#x42;&gt;</b>` +
      `<c/><b><![CDATA[<raw>]]></b><!-- <b>no</b> --></a>\n`,
  );
  assertEquals(root.name, "a");
  assertEquals(root.attrs, { k: "1", j: "x & y" });
  assertEquals(root.children.map((c) => c.name), ["b", "c", "b"]);
  assertEquals(child(root, "b")!.text, "A <AB>");
  assertEquals(root.children[2].text, "<raw>");
  const bad: [string, string][] = [
    ["<a><b></a>", "line 1: closing tag </a> does not match <b>"],
    ["<a>\n<b>\n", "line 3: unclosed tag <b>"],
    ["<a/>junk", "text outside the root element"],
    ["<a/><b/>", "second root element <b>"],
    ["", "no root element"],
    ["<a>&nbsp;</a>", "unknown entity '&nbsp;'"],
    ["<a><!-- x</a>", "unterminated comment"],
    ["<a b=1></a>", "bad start tag"],
  ];
  for (const [src, msg] of bad) {
    let m = "";
    try {
      parseXml(src);
    } catch (e) {
      m = (e as Error).message;
    }
    if (!m.startsWith("malformed XML at ") || !m.includes(msg)) {
      throw new Error(`parseXml(${JSON.stringify(src)}): got "${m}", want "${msg}"`);
    }
  }
});
