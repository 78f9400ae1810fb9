import {
  ConfigError,
  deepMerge,
  hashJson,
  resolveTrainConfig,
  stableStringify,
} from "../src/io/config.ts";
import { assertEquals, assertRejects } from "./util.ts";

Deno.test("config: defaults, file, flags layer in order", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/cfg.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({ steps: 50, ocr: { enabled: true, lambda: 0.2 } }),
  );
  const cfg = await resolveTrainConfig(path, { steps: 7, ocr: { margin: 0.5 } });
  assertEquals(cfg.steps, 7);
  assertEquals(cfg.ocr.enabled, true);
  assertEquals(cfg.ocr.lambda, 0.2);
  assertEquals(cfg.ocr.margin, 0.5);
  assertEquals(cfg.ocr.tauAct, 0.3);
  assertEquals(cfg.model, "tiny");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config: errors name the file and field", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bad.json`;
  await Deno.writeTextFile(path, JSON.stringify({ batch: "sixteen" }));
  await assertRejects(() => resolveTrainConfig(path, {}), ConfigError, `${path}: batch:`);
  await Deno.writeTextFile(path, "{ not json");
  await assertRejects(() => resolveTrainConfig(path, {}), ConfigError, `${path}: not valid JSON`);
  await assertRejects(
    () => resolveTrainConfig(undefined, { ocr: { grad: "sideways" } }),
    ConfigError,
    "ocr.grad",
  );
  await assertRejects(() => resolveTrainConfig(undefined, { stpes: 3 }), ConfigError, "stpes");
  await assertRejects(
    () => resolveTrainConfig(`${dir}/none.json`, {}),
    ConfigError,
    `${dir}/none.json: cannot read`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config: stable hashing ignores key order", async () => {
  assertEquals(stableStringify({ b: 1, a: [2, { d: 3, c: 4 }] }), '{"a":[2,{"c":4,"d":3}],"b":1}');
  assertEquals(await hashJson({ x: 1, y: 2 }), await hashJson({ y: 2, x: 1 }));
  assertEquals(deepMerge({ a: { b: 1, c: 2 } }, { a: { c: 3 } }), { a: { b: 1, c: 3 } });
});

Deno.test("config: VOC tag mode, default mask, a bad one names the field", async () => {
  assertEquals((await resolveTrainConfig(undefined, {})).tags, "mask");
  assertEquals((await resolveTrainConfig(undefined, { tags: "xml" })).tags, "xml");
  await assertRejects(
    () => resolveTrainConfig(undefined, { tags: "difficult" }),
    ConfigError,
    "config: tags:",
  );
});
