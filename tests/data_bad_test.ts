/**
 * Bad input to the readers: each case gives one DataError naming the file and the problem;
 * with skipBad the entry is skipped and counted instead (at open time, on load, and inside
 * the batch stream).
 */
import { openDataset, type VocTagMode } from "../src/data/dataset.ts";
import { DataError } from "../src/data/errors.ts";
import { encodeJpeg } from "../src/data/image.ts";
import { encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { batches } from "../src/data/stream.ts";
import { assertEquals, assertRejects } from "./util.ts";

const W = 8, H = 6;
const IDS = ["a", "b", "c", "d"];

/** A valid 4-image VOC tree (cat masks, XML per image). */
async function vocTree(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "ocr-bad-voc-" });
  for (const d of ["JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  const mask = new Uint8Array(W * H).fill(8, 10, 30);
  for (const id of IDS) {
    const rgb = new Uint8Array(W * H * 3).map((_, i) => (i * 13) & 255);
    await Deno.writeFile(`${root}/JPEGImages/${id}.jpg`, await encodeJpeg(rgb, W, H));
    await Deno.writeFile(
      `${root}/SegmentationClass/${id}.png`,
      await encodeLabelPng(mask, W, H, VOC_PALETTE),
    );
    await Deno.writeTextFile(
      `${root}/Annotations/${id}.xml`,
      "<annotation><object><name>cat</name><difficult>0</difficult></object></annotation>",
    );
  }
  await Deno.writeTextFile(`${root}/ImageSets/Segmentation/train.txt`, IDS.join("\n") + "\n");
  return root;
}

async function withVoc(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await vocTree();
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function assertMessage(e: Error, path: string, fragment: string): void {
  if (!(e instanceof DataError)) throw new Error(`expected DataError, got ${e}`);
  assertEquals(e.path, path);
  if (!e.message.startsWith(`${path}: `) || !e.message.includes(fragment)) {
    throw new Error(`message "${e.message}" should start with the path and say "${fragment}"`);
  }
}

Deno.test("bad VOC: missing dataset folder / not a VOC folder / missing list file", async () => {
  let e = await assertRejects(() =>
    openDataset({ kind: "voc", root: "/nonexistent/voc", split: "train" })
  );
  assertMessage(e, "/nonexistent/voc", "VOC dataset folder not found");
  await withVoc(async (root) => {
    e = await assertRejects(() =>
      openDataset({ kind: "voc", root: `${root}/Annotations`, split: "train" })
    );
    assertMessage(e, `${root}/Annotations`, "no JPEGImages/");
    e = await assertRejects(() =>
      openDataset({ kind: "voc", root, split: "nosuch", skipBad: true })
    );
    assertMessage(e, `${root}/ImageSets/Segmentation/nosuch.txt`, "split list 'nosuch' not found");
  });
});

Deno.test("bad VOC: list entry whose image is missing", async () => {
  await withVoc(async (root) => {
    await Deno.remove(`${root}/JPEGImages/b.jpg`);
    const e = await assertRejects(() => openDataset({ kind: "voc", root, split: "train" }));
    assertMessage(e, `${root}/JPEGImages/b.jpg`, "image listed in");
    const ds = await openDataset({ kind: "voc", root, split: "train", skipBad: true });
    assertEquals(ds.ids, ["a", "c", "d"]);
    assertEquals(ds.skipped, 1);
    assertEquals(ds.skippedItems[0].id, "b");
  });
});

Deno.test("bad VOC: malformed XML", async () => {
  await withVoc(async (root) => {
    const xml = `${root}/Annotations/c.xml`;
    await Deno.writeTextFile(xml, "<annotation>\n<object><name>cat</name></objekt>\n</annotation>");
    const e = await assertRejects(() => openDataset({ kind: "voc", root, split: "train" }));
    assertMessage(e, xml, "malformed XML at line 2: closing tag </objekt> does not match <object>");
    const ds = await openDataset({ kind: "voc", root, split: "train", skipBad: true });
    assertEquals(ds.ids, ["a", "b", "d"]);
    assertEquals(ds.skipped, 1);
    // An unknown class name is reported too.
    await Deno.writeTextFile(xml, "<annotation><object><name>unicorn</name></object></annotation>");
    const e2 = await assertRejects(() => openDataset({ kind: "voc", root, split: "train" }));
    assertMessage(e2, xml, "unknown class 'unicorn'");
  });
});

/**
 * With the default tags ("mask") a bad mask is found when the split is opened: an error naming
 * it, or with skipBad a skipped entry.
 */
async function openFails(root: string, i: number, path: string, fragment: string) {
  const e = await assertRejects(() => openDataset({ kind: "voc", root, split: "train" }));
  assertMessage(e, path, fragment);
  const lenient = await openDataset({ kind: "voc", root, split: "train", skipBad: true });
  assertEquals(lenient.ids, IDS.filter((_, k) => k !== i));
  assertEquals(lenient.skippedItems.map((x) => [x.id, x.path]), [[IDS[i], path]]);
}

/**
 * Opens the tree, checks load(i) fails with the message, and that skipBad skips it. `tags`:
 * the tag mode (with the default, "mask", masks are decoded when the split is opened).
 */
async function loadFails(
  root: string,
  i: number,
  path: string,
  fragment: string,
  tags?: VocTagMode,
) {
  const ds = await openDataset({ kind: "voc", root, split: "train", tags });
  const e = await assertRejects(() => ds.load(i));
  assertMessage(e, path, fragment);
  await assertRejects(() => ds.tryLoad(i), DataError);
  const lenient = await openDataset({ kind: "voc", root, split: "train", skipBad: true, tags });
  assertEquals(await lenient.tryLoad(i), null);
  assertEquals(await lenient.tryLoad(i), null);
  assertEquals(lenient.skipped, 1); // counted once per image
  assertEquals((await lenient.tryLoad((i + 1) % 4))?.id, IDS[(i + 1) % 4]);
}

Deno.test("bad VOC: truncated JPEG", async () => {
  await withVoc(async (root) => {
    const p = `${root}/JPEGImages/b.jpg`;
    const bytes = await Deno.readFile(p);
    await Deno.writeFile(p, bytes.slice(0, Math.floor(bytes.length / 2)));
    await loadFails(root, 1, p, "cannot decode JPEG");
  });
});

Deno.test("bad VOC: mask PNG with a bad CRC", async () => {
  await withVoc(async (root) => {
    const p = `${root}/SegmentationClass/c.png`;
    const bytes = await Deno.readFile(p);
    bytes[bytes.length - 20] ^= 0xff; // inside the IDAT payload
    await Deno.writeFile(p, bytes);
    await openFails(root, 2, p, "bad CRC in IDAT chunk");
    await loadFails(root, 2, p, "bad CRC in IDAT chunk", "xml-nondifficult");
  });
});

Deno.test("bad VOC: mask size differs from the image", async () => {
  await withVoc(async (root) => {
    const p = `${root}/SegmentationClass/a.png`;
    await Deno.writeFile(
      p,
      await encodeLabelPng(new Uint8Array(W * (H + 1)), W, H + 1, VOC_PALETTE),
    );
    await loadFails(root, 0, p, `mask is ${W}x${H + 1} but its image`);
  });
});

Deno.test("bad VOC: mask value out of range", async () => {
  await withVoc(async (root) => {
    const p = `${root}/SegmentationClass/d.png`;
    const m = new Uint8Array(W * H);
    m[2 * W + 5] = 21;
    await Deno.writeFile(p, await encodeLabelPng(m, W, H, VOC_PALETTE));
    const msg = "mask value 21 at pixel (x=5, y=2) is out of range (expected 0..20 or 255)";
    await openFails(root, 3, p, msg);
    await loadFails(root, 3, p, msg, "xml-nondifficult");
  });
});

Deno.test("bad input inside the stream: skipBad fills the batch from the next images", async () => {
  await withVoc(async (root) => {
    const p = `${root}/JPEGImages/b.jpg`;
    await Deno.writeFile(p, (await Deno.readFile(p)).slice(0, 100));
    const strict = await openDataset({ kind: "voc", root, split: "train" });
    const opts = { batchSize: 3, cropSize: 8, seed: 1, shuffle: false };
    await assertRejects(
      async () => {
        for await (const _ of batches(strict, opts)) { /* consume */ }
      },
      DataError,
      "cannot decode JPEG",
    );
    const ds = await openDataset({ kind: "voc", root, split: "train", skipBad: true });
    const got = [];
    for await (const b of batches(ds, opts)) got.push([b.ids, b.position]);
    assertEquals(got, [[["a", "c", "d"], 4]]);
    assertEquals(ds.skipped, 1);
  });
});

// ---------------------------------------------------------------------------------------------
// COCO

async function withCoco(annotations: unknown, fn: (root: string, json: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "ocr-bad-coco-" });
  try {
    await Deno.mkdir(`${root}/annotations`);
    await Deno.mkdir(`${root}/train2014`);
    for (const f of ["x.jpg", "y.jpg"]) {
      await Deno.writeFile(
        `${root}/train2014/${f}`,
        await encodeJpeg(new Uint8Array(W * H * 3), W, H),
      );
    }
    const json = `${root}/annotations/instances_train2014.json`;
    const text = typeof annotations === "string" ? annotations : JSON.stringify({
      images: [
        { id: 1, file_name: "x.jpg", width: W, height: H },
        { id: 2, file_name: "y.jpg", width: W, height: H },
      ],
      categories: [{ id: 1, name: "person" }, { id: 3, name: "car" }],
      annotations,
    });
    await Deno.writeTextFile(json, text);
    await fn(root, json);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const okAnn = {
  id: 1,
  image_id: 2,
  category_id: 3,
  iscrowd: 0,
  segmentation: [[0, 0, 4, 0, 4, 4]],
};

Deno.test("bad COCO: missing folder and missing annotation file", async () => {
  const e = await assertRejects(() =>
    openDataset({ kind: "coco", root: "/nonexistent/coco", split: "train" })
  );
  assertMessage(e, "/nonexistent/coco", "COCO dataset folder not found");
  await withCoco([okAnn], async (root) => {
    const e2 = await assertRejects(() => openDataset({ kind: "coco", root, split: "val" }));
    assertMessage(
      e2,
      `${root}/annotations/instances_val2014.json`,
      "annotation file for split 'val' not found",
    );
  });
});

Deno.test("bad COCO: annotation file that is not JSON (even with skipBad)", async () => {
  await withCoco('{"images": [', async (root, json) => {
    const e = await assertRejects(() =>
      openDataset({ kind: "coco", root, split: "train", skipBad: true })
    );
    assertMessage(e, json, "not valid JSON");
  });
  await withCoco("[1, 2]", async (root, json) => {
    const e = await assertRejects(() => openDataset({ kind: "coco", root, split: "train" }));
    assertMessage(e, json, "no 'images' list");
  });
});

/** One bad annotation next to a good one: an error naming it; skipBad keeps the other image. */
function badAnnotation(what: string, bad: object, message: string, kept: string) {
  Deno.test(`bad COCO: ${what}`, async () => {
    await withCoco([okAnn, bad], async (root, json) => {
      const e = await assertRejects(() => openDataset({ kind: "coco", root, split: "train" }));
      assertMessage(e, json, message);
      const ds = await openDataset({ kind: "coco", root, split: "train", skipBad: true });
      assertEquals(ds.ids, [kept]);
      assertEquals(ds.skipped, 1);
      assertEquals(ds.skippedItems[0].problem, message);
    });
  });
}

badAnnotation(
  "unknown category id",
  { id: 7, image_id: 1, category_id: 999, iscrowd: 0, segmentation: [[0, 0, 2, 0, 2, 2]] },
  "annotation 7 (image 1): unknown category id 999",
  "y",
);
badAnnotation(
  "polygon with an odd number of coordinates",
  { id: 8, image_id: 2, category_id: 1, iscrowd: 0, segmentation: [[0, 0, 2, 0, 2, 2, 1]] },
  "annotation 8 (image 2): polygon 0 has an odd number of coordinates (7)",
  "x",
);

Deno.test("bad COCO: RLE of the wrong size, missing image file", async () => {
  const bad = {
    id: 9,
    image_id: 1,
    category_id: 1,
    iscrowd: 1,
    segmentation: { counts: [48], size: [8, 6] },
  };
  await withCoco([okAnn, bad], async (root, json) => {
    const e = await assertRejects(() => openDataset({ kind: "coco", root, split: "train" }));
    assertMessage(e, json, "RLE size [8,6] differs from the image size [6, 8]");
  });
  await withCoco([okAnn], async (root) => {
    await Deno.remove(`${root}/train2014/y.jpg`);
    const e = await assertRejects(() => openDataset({ kind: "coco", root, split: "train" }));
    assertMessage(e, `${root}/train2014/y.jpg`, "image listed in");
  });
});

Deno.test("bad COCO: image size differs from the annotation file", async () => {
  await withCoco([okAnn], async (root) => {
    const p = `${root}/train2014/x.jpg`;
    await Deno.writeFile(p, await encodeJpeg(new Uint8Array(5 * 4 * 3), 5, 4));
    const ds = await openDataset({ kind: "coco", root, split: "train" });
    const e = await assertRejects(() => ds.load(0));
    assertMessage(e, p, `image is 5x4 but ${root}/annotations/instances_train2014.json says 8x6`);
    const lenient = await openDataset({ kind: "coco", root, split: "train", skipBad: true });
    assertEquals(await lenient.tryLoad(0), null);
    assertEquals((await lenient.tryLoad(1))?.id, "y");
    assertEquals(lenient.skipped, 1);
  });
});
