/**
 * VOC reader: synthetic tree -> reader gives back exactly the generator's masks and tags
 * (train, val, trainaug with grey masks); tags from the mask when there is no XML; the
 * difficult-object convention; psa-style list lines; listHash.
 */
import { openDataset } from "../src/data/dataset.ts";
import { VOC_CLASSES } from "../src/data/classes.ts";
import { encodeJpeg } from "../src/data/image.ts";
import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { generateScene, SYNTH_SIZES, synthesize, synthVocId } from "../src/data/synthetic.ts";
import type { VocDataset } from "../src/data/voc.ts";
import { child, parseXml } from "../src/data/xml.ts";
import { decodeGreyMask, decodePaletteMask } from "./independent_png.ts";
import { assertEquals } from "./util.ts";

const SEED = 7;
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
      assertEquals(s.tags, sc.vocTags, `tags of ${s.id}`);
      assertEquals(ds.tagsOf(i), sc.vocTags);
      assertEquals(s.present, sc.present);
      let err = 0;
      for (let q = 0; q < s.rgb.length; q++) err += Math.abs(s.rgb[q] - sc.rgb[q]);
      const mae = err / s.rgb.length;
      if (!(mae < 6)) throw new Error(`${s.id}: JPEG differs from the scene by ${mae}/px`);
    }
  });
}

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
