/**
 * Uniform structs declared in TypeScript (src/gpu/kernel.ts): WGSL layout, packing, the errors
 * for missing and unknown fields, and that every shader file's markers match its declarations.
 * @module
 */
import { assertEquals, assertThrows } from "./util.ts";
import { declaredParams, declareParams, substituteStructs } from "../src/gpu/kernel.ts";
import { f32bits } from "../src/gpu/context.ts";
import { SHADER_NAMES } from "../src/gpu/shaders.ts";
// Every module that declares the structs of a shader file.
import "../src/ops/pointwise.ts";
import "../src/ops/conv.ts";
import "../src/ops/matmul.ts";
import "../src/ops/batchnorm.ts";
import "../src/ops/pool.ts";
import "../src/ops/resize.ts";
import "../src/ops/channel.ts";
import "../src/ops/affinity.ts";
import "../src/losses/multilabel.ts";
import "../src/losses/ocr.ts";
import "../src/ops/crf.ts";
import "../src/ops/permutohedral.ts";
import "../src/ops/dropout.ts";
import "../src/losses/segmentation.ts";
import "../src/cam/fuse.ts";
import "../src/eval/counters.ts";
import "../src/optim/sgd.ts";
import "../src/ops/pcm.ts";
import "../src/losses/seam.ts";
import "../src/ops/layernorm.ts";
import "../src/ops/rows.ts";
import "../src/ops/tokens.ts";
import "../src/optim/sgd.ts";
import "../src/eval/counters.ts";
import "../src/cam/fuse.ts";

const { T1, T2 } = declareParams("kernel-test", {
  T1: { n: "u32", off: "i32", alpha: "f32" },
  T2: { a: "u32", _gap: "u32", b: "f32", tags: "vec4u", c: "u32" },
});

Deno.test("a declaration gives the WGSL struct with padding and vec4 alignment", () => {
  assertEquals(T1.words, 4);
  assertEquals(T1.wgsl, "struct T1 {\n  n: u32,\n  off: i32,\n  alpha: f32,\n  _p0: u32,\n}");
  assertEquals(T2.words, 12);
  assertEquals(
    T2.wgsl,
    "struct T2 {\n  a: u32,\n  _gap: u32,\n  b: f32,\n  _p0: u32,\n  tags: vec4u,\n  c: u32," +
      "\n  _p1: u32,\n  _p2: u32,\n  _p3: u32,\n}",
  );
  assertEquals(T2.names, ["a", "b", "tags", "c"]);
});

Deno.test("packing stores u32, i32 two's complement, f32 bits and vec4u words", () => {
  assertEquals(Array.from(T1.pack({ n: 7, off: -3, alpha: 0.1 })), [
    7,
    0xfffffffd,
    f32bits(0.1),
    0,
  ]);
  assertEquals(Array.from(T2.pack({ a: 1, b: -2.5, tags: [5, 6, 7, 0xffffffff], c: 9 })), [
    1,
    0,
    f32bits(-2.5),
    0,
    5,
    6,
    7,
    0xffffffff,
    9,
    0,
    0,
    0,
  ]);
  // A u32 field wraps modulo 2^32, as a Uint32Array store does.
  assertEquals(T1.pack({ n: -1, off: 0, alpha: 0 })[0], 0xffffffff);
  assertEquals(Array.from(T1.packPartial({ off: 2 })), [0, 2, 0, 0]);
});

Deno.test("missing and unknown fields are errors naming the struct and the field", () => {
  assertThrows(
    () => T1.pack({ n: 1, off: 0 } as never),
    Error,
    "uniform struct T1 (shaders/kernel-test.wgsl): field alpha is missing",
  );
  assertThrows(
    () => T1.pack({ n: 1, off: 0, alpha: 0, beta: 1 } as never),
    Error,
    "uniform struct T1 (shaders/kernel-test.wgsl): unknown field beta",
  );
  assertThrows(() => T1.packPartial({ nn: 1 } as never), Error, "unknown field nn");
  assertThrows(
    () => T2.pack({ a: 1, _gap: 1, b: 0, tags: [0, 0, 0, 0], c: 0 } as never),
    Error,
    "_gap",
  );
  assertThrows(() => T2.pack({ a: 1, b: 0, tags: [0, 0], c: 0 }), Error, "tags needs 4 words");
  assertThrows(() => declareParams("kernel-bad", { B: { x: "u64" as "u32" } }), Error, "x");
  assertThrows(() => declareParams("kernel-test", { T1: { n: "u32" } }), Error, "declared twice");
});

Deno.test("markers are replaced by the declared structs; mismatches are errors", () => {
  const src = "{{struct:T1}}\n{{struct:T2}}\nvar<uniform> p: T1;";
  assertEquals(
    substituteStructs("kernel-test", src),
    `${T1.wgsl}\n${T2.wgsl}\nvar<uniform> p: T1;`,
  );
  assertThrows(
    () => substituteStructs("kernel-test", "{{struct:T1}}\n{{struct:T3}}"),
    Error,
    "{{struct:T3}} is not declared",
  );
  assertThrows(() => substituteStructs("kernel-test", "{{struct:T1}}"), Error, "T2 has no");
  assertThrows(() => substituteStructs("kernel-none", "{{struct:X}}"), Error, "none is loaded");
  assertEquals(substituteStructs("kernel-none", "fn f() {}"), "fn f() {}");
});

Deno.test("every shader file's struct markers match its declarations", async () => {
  for (const name of SHADER_NAMES) {
    const src = await Deno.readTextFile(new URL(`../shaders/${name}.wgsl`, import.meta.url));
    const out = substituteStructs(name, src);
    if (/\{\{struct:/.test(out)) throw new Error(`${name}: marker left`);
    // No uniform struct is written by hand any more: each is declared in TypeScript.
    for (const m of src.matchAll(/var<uniform>\s+\w+\s*:\s*(\w+)/g)) {
      if (!declaredParams(name)?.has(m[1])) throw new Error(`${name}: ${m[1]} is not declared`);
    }
  }
});

Deno.test("shared helpers live in the prelude only", async () => {
  const prelude = await Deno.readTextFile(new URL("../shaders/prelude.wgsl", import.meta.url));
  const helpers = [...prelude.matchAll(/^fn (\w+)/gm)].map((m) => m[1]);
  assertEquals(helpers.includes("flat_index") && helpers.includes("bilinear_tap"), true);
  for (const name of SHADER_NAMES) {
    const src = await Deno.readTextFile(new URL(`../shaders/${name}.wgsl`, import.meta.url));
    for (const f of helpers) {
      if (new RegExp(`^fn ${f}\\b`, "m").test(src)) throw new Error(`${name}: own copy of ${f}`);
    }
    if (/gid\.x \+ gid\.y \* nwg\.x/.test(src)) throw new Error(`${name}: inline flat index`);
  }
});
