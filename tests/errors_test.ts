/**
 * The error classes a script may catch are exported from mod.ts, and what the library throws
 * is an instance of them.
 */
import * as ocr from "../mod.ts";
import { assertEquals, assertRejects } from "./util.ts";

Deno.test("mod.ts exports the error classes; thrown errors are their instances", async () => {
  const root = await Deno.makeTempDir({ prefix: "ocr-errors-" });
  try {
    // A VOC tree whose list file is missing: a DataError naming it.
    await Deno.mkdir(`${root}/JPEGImages`);
    const e = await assertRejects(() => ocr.openDataset({ kind: "voc", root, split: "train" }));
    if (!(e instanceof ocr.DataError)) throw new Error(`expected DataError, got ${e}`);
    assertEquals(e.path, `${root}/ImageSets/Segmentation/train.txt`);
    assertEquals(e.problem, "split list 'train' not found");

    await assertRejects(
      () => ocr.train({ tags: "bogus" as ocr.VocTagMode }),
      ocr.ConfigError,
      "tags",
    );
    await assertRejects(
      () => ocr.train({ out: `${root}/none`, resume: true }),
      ocr.TrainError,
      "no checkpoint",
    );
    await Deno.writeFile(`${root}/bad.safetensors`, new Uint8Array([1, 2, 3]));
    await assertRejects(() => ocr.readSafetensors(`${root}/bad.safetensors`), ocr.SafetensorsError);
    await assertRejects(() => ocr.readCamFolder(root), ocr.CamError, "is not a CAM folder");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
