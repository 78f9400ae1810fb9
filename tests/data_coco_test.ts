/**
 * COCO reader: synthetic tree -> reader gives back exactly the generator's masks and tags;
 * a hand-built annotation file with every segmentation form, several polygons per object,
 * painting order and a crowd region, checked against a mask worked out by hand.
 */
import { COCO_CATEGORIES } from "../src/data/classes.ts";
import { openDataset } from "../src/data/dataset.ts";
import { encodeJpeg } from "../src/data/image.ts";
import { rleEncode, rleToString } from "../src/data/coco_rle.ts";
import { cocoIdOfVoc, generateScene, SYNTH_SIZES, synthesize } from "../src/data/synthetic.ts";
import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { decodePaletteMask } from "./independent_png.ts";
import { assertEquals } from "./util.ts";

const SEED = 5;
const dir = await Deno.makeTempDir({ prefix: "ocr-coco-test-" });
const tree = await synthesize({ out: dir, seed: SEED, size: "tiny" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const indexOfId = new Map(COCO_CATEGORIES.map((c, i) => [c.id, i]));
const cocoIndex = (vocCls: number) => indexOfId.get(cocoIdOfVoc(vocCls))!;

for (const split of ["train", "val"] as const) {
  Deno.test(`COCO round trip (${split}): masks and tags identical to the generator's`, async () => {
    const ds = await openDataset({ kind: "coco", root: tree.cocoRoot, split });
    const n = split === "train" ? SYNTH_SIZES.tiny.cocoTrain : SYNTH_SIZES.tiny.cocoVal;
    assertEquals(ds.ids.length, n);
    assertEquals(ds.numClasses, 80);
    assertEquals(ds.classNames, COCO_CATEGORIES.map((c) => c.name));
    for (let i = 0; i < n; i++) {
      const sc = generateScene(SEED, `coco-${split}`, i);
      const s = await ds.load(i);
      assertEquals(s.id, `COCO_${split}2014_${String(i + 1).padStart(12, "0")}`);
      const expected = sc.cocoMask.map((v) => (v === 0 || v === 255 ? v : cocoIndex(v - 1) + 1));
      assertEquals(s.mask, expected, `mask of ${s.id}`);
      // The mask as a palette label PNG (how CAM folders and pseudo masks store COCO labels,
      // indices up to 80 and 255), read back through imagescript rather than our decoder.
      const png = await decodePaletteMask(
        await encodeLabelPng(s.mask!, s.width, s.height, VOC_PALETTE),
        VOC_PALETTE,
        s.id,
      );
      assertEquals(png.data, expected, `${s.id} label PNG through imagescript`);
      const tags = [...new Set(sc.objects.map((o) => cocoIndex(o.cls)))].sort((a, b) => a - b);
      assertEquals(s.tags, tags);
      assertEquals(ds.tagsOf(i), tags);
    }
  });
}

Deno.test("COCO: every segmentation form, painting order and crowd (hand-computed)", async () => {
  const root = await Deno.makeTempDir({ prefix: "ocr-coco-hand-" });
  try {
    await Deno.mkdir(`${root}/annotations`);
    await Deno.mkdir(`${root}/val2014`);
    const w = 6, h = 4;
    await Deno.writeFile(
      `${root}/val2014/a.jpg`,
      await encodeJpeg(new Uint8Array(w * h * 3).fill(90), w, h),
    );
    // dog (id 18) as compressed RLE over x in {2,3}, y in {1,2}:
    const dog = new Uint8Array(w * h);
    for (const y of [1, 2]) for (const x of [2, 3]) dog[y * w + x] = 1;
    const json = {
      images: [{ id: 42, file_name: "a.jpg", width: w, height: h }],
      categories: [
        { id: 18, name: "dog" },
        { id: 1, name: "person" },
        { id: 17, name: "cat" },
      ],
      annotations: [
        // cat: two polygons: x,y in {0,1,2} (square [0,3]^2) and x = 5, y in {0,1}.
        {
          id: 1,
          image_id: 42,
          category_id: 17,
          iscrowd: 0,
          segmentation: [[0, 0, 3, 0, 3, 3, 0, 3], [5, 0, 6, 0, 6, 2, 5, 2]],
        },
        {
          id: 2,
          image_id: 42,
          category_id: 18,
          iscrowd: 0,
          segmentation: { counts: rleToString(rleEncode(dog, h, w)), size: [h, w] },
        },
        // crowd person, uncompressed: column 4 (x = 4) rows 0..3 -> counts [16, 4, 4].
        {
          id: 3,
          image_id: 42,
          category_id: 1,
          iscrowd: 1,
          segmentation: { counts: [16, 4, 4], size: [h, w] },
        },
      ],
    };
    await Deno.writeTextFile(`${root}/annotations/instances_val2014.json`, JSON.stringify(json));
    const ds = await openDataset({ kind: "coco", root, split: "val" });
    // Indices in id order: person (1) -> 0, cat (17) -> 1, dog (18) -> 2.
    assertEquals(ds.classNames, ["person", "cat", "dog"]);
    assertEquals(ds.ids, ["a"]);
    assertEquals(ds.tagsOf(0), [0, 1, 2]);
    const s = await ds.load(0);
    // cat = 2, dog = 3 painted over the cat, crowd = 255.
    // deno-fmt-ignore
    const expected = [
      2, 2, 2, 0, 255, 2,
      2, 2, 3, 3, 255, 2,
      2, 2, 3, 3, 255, 0,
      0, 0, 0, 0, 255, 0,
    ];
    assertEquals([...s.mask!], expected);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
