/**
 * The shared splitter (src/gpu/split.ts) on a fake context: aligned windows, whole-plane chunks
 * with base offsets, element chunks; the ops' split paths are tested with a small
 * `maxBindingBytes` in their own test files.
 * @module
 */
import { assertEquals, assertThrows } from "./util.ts";
import type { GpuContext } from "../src/gpu/context.ts";
import {
  bindingWindow,
  elementChunks,
  planeChunks,
  spans,
  windowCapacity,
  windowFits,
} from "../src/gpu/split.ts";

const fake = (maxBindingBytes: number) =>
  ({ maxBindingBytes, limits: { minStorageBufferOffsetAlignment: 256 } }) as GpuContext;
const buf = (size: number) => ({ size }) as GPUBuffer;

Deno.test("binding windows start aligned and tell the shift", () => {
  const gpu = fake(4096);
  const w = bindingWindow(gpu, buf(8192), 70, 10);
  assertEquals(w.shift, 6);
  assertEquals(w.range.offset, 256);
  assertEquals(w.range.size, 64); // 16 elements rounded up to 16 bytes
  assertEquals(bindingWindow(gpu, buf(300), 70, 10).range.size, 44); // clamped to the buffer
  assertEquals(windowCapacity(gpu), 1024 - 64 - 4);
  assertEquals([windowFits(gpu, 956), windowFits(gpu, 957)], [true, false]);
  assertEquals([...spans(10, 4)], [[0, 4], [4, 4], [8, 2]]);
});

Deno.test("plane chunks fit every window, honour bases and name the op on failure", () => {
  const gpu = fake(1024); // 256 elements per binding, alignment 64 elements
  const a = { buffer: buf(4000), size: 1000 };
  const b = { buffer: buf(4000), size: 1000 };
  const chunks = planeChunks(gpu, "op", 10, [
    { tensor: a, planeSize: 50 },
    { tensor: b, planeSize: 30, base: 100 },
  ]);
  let next = 0;
  for (const ch of chunks) {
    assertEquals(ch.first, next);
    next += ch.count;
    const lo = [ch.first * 50, 100 + ch.first * 30];
    ch.ranges.forEach((r, i) => {
      assertEquals(r.offset! % 256, 0);
      assertEquals(r.offset! / 4 + ch.offsets[i], lo[i]);
      if (r.size! > 1024) throw new Error(`window of ${r.size} bytes`);
    });
  }
  assertEquals(next, 10);
  assertEquals(chunks.map((c) => c.count), [5, 3, 2]);
  assertThrows(
    () => planeChunks(gpu, "big", 2, [{ tensor: a, planeSize: 300 }]),
    RangeError,
    "big",
  );
  assertThrows(
    () => planeChunks(gpu, "short", 4, [{ tensor: a, planeSize: 200, base: 300 }]),
    RangeError,
    "fewer than 4 planes",
  );
});

Deno.test("element chunks are aligned, bounded and reject a too-small limit", () => {
  const gpu = fake(1024);
  assertEquals(elementChunks(gpu, 600), [
    { start: 0, count: 256 },
    { start: 256, count: 256 },
    { start: 512, count: 88 },
  ]);
  const px = elementChunks(gpu, 1000, { elementBytes: 1, align: 256, maxCount: 600 });
  assertEquals(px.map((c) => c.start), [0, 512]);
  assertThrows(() => elementChunks(fake(128), 10), RangeError, "exceed the binding limit 128");
});
