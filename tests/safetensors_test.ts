import {
  type HostTensor,
  parseSafetensors,
  readSafetensors,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensors,
} from "../src/io/safetensors.ts";
import { assertEquals, assertRejects, assertThrows } from "./util.ts";

function withHeader(header: unknown, dataBytes = 0): Uint8Array {
  const hb = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + hb.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  return out;
}

Deno.test("safetensors round trip keeps names, shapes, values and metadata", async () => {
  // Several tensors: 2-D, 1-element, scalar, empty, 3-D with special values, and a view into
  // a larger buffer (non-zero byte offset); every one is checked after the round trip.
  const big = Float32Array.from({ length: 20 }, (_, i) => i - 7.25);
  const tensors: [string, HostTensor][] = [
    ["layer1.0.conv1.weight", { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 4, 5, 6]) }],
    ["ü", { shape: [1], data: Float32Array.from([Math.PI]) }],
    ["scalar", { shape: [], data: Float32Array.from([-0.125]) }],
    ["empty", { shape: [0, 4], data: new Float32Array(0) }],
    [
      "special",
      { shape: [3, 1, 2], data: Float32Array.from([-0, 1e-45, -3e38, Infinity, -Infinity, NaN]) },
    ],
    ["view", { shape: [2, 2], data: big.subarray(5, 9) }],
  ];
  const metadata = { step: "7", note: "ü → x" };
  const bytes = serializeSafetensors(tensors, metadata);
  assertEquals(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
  const dir = await Deno.makeTempDir();
  await writeSafetensors(`${dir}/x.safetensors`, tensors, metadata);
  const bits = (d: Float32Array) => Array.from(new Uint32Array(Float32Array.from(d).buffer));
  for (const st of [parseSafetensors(bytes), await readSafetensors(`${dir}/x.safetensors`)]) {
    assertEquals(st.metadata, metadata);
    assertEquals([...st.tensors.keys()].sort(), tensors.map(([n]) => n).sort());
    for (const [name, t] of tensors) {
      const got = st.tensors.get(name)!;
      assertEquals(got.shape, t.shape, `${name}: shape`);
      // Bit patterns: -0 and NaN survive too.
      assertEquals(bits(got.data), bits(t.data), `${name}: values`);
    }
  }
  assertEquals([...Deno.readDirSync(dir)].length, 1, "no temp file left behind");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors reads F16 and BF16 as f32", () => {
  const bytes = withHeader({
    h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
    b: { dtype: "BF16", shape: [2], data_offsets: [6, 10] },
  }, 10);
  const hlen = bytes.length - 10;
  const dv = new DataView(bytes.buffer, hlen);
  [0x3c00, 0xc000, 0x3555].forEach((v, i) => dv.setUint16(i * 2, v, true)); // 1, -2, ~0.333
  [0x3f80, 0x4049].forEach((v, i) => dv.setUint16(6 + i * 2, v, true)); // 1, ~3.14
  const st = parseSafetensors(bytes);
  const h = st.tensors.get("h")!.data;
  assertEquals([h[0], h[1]], [1, -2]);
  assertEquals(Math.abs(h[2] - 1 / 3) < 1e-3, true);
  const b = st.tensors.get("b")!.data;
  assertEquals(b[0], 1);
  assertEquals(Math.abs(b[1] - 3.140625) < 1e-6, true);
});

Deno.test("safetensors reads integer and F64 tensors as f32 (torchvision's num_batches_tracked)", () => {
  const bytes = withHeader({
    n: { dtype: "I64", shape: [], data_offsets: [0, 8] },
    d: { dtype: "F64", shape: [1], data_offsets: [8, 16] },
    i: { dtype: "I32", shape: [2], data_offsets: [16, 24] },
    b: { dtype: "BOOL", shape: [1], data_offsets: [24, 25] },
  }, 25);
  const dv = new DataView(bytes.buffer, bytes.length - 25);
  dv.setBigInt64(0, 12345n, true);
  dv.setFloat64(8, -0.5, true);
  dv.setInt32(16, -7, true);
  dv.setInt32(20, 9, true);
  dv.setUint8(24, 1);
  const st = parseSafetensors(bytes);
  assertEquals(Array.from(st.tensors.get("n")!.data), [12345]);
  assertEquals(st.tensors.get("n")!.shape, []);
  assertEquals(Array.from(st.tensors.get("d")!.data), [-0.5]);
  assertEquals(Array.from(st.tensors.get("i")!.data), [-7, 9]);
  assertEquals(Array.from(st.tensors.get("b")!.data), [1]);
});

Deno.test("malformed safetensors files give errors naming the file and problem", async () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array(4), "too short"],
    [
      (() => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setBigUint64(0, 1000n, true);
        return b;
      })(),
      "runs past the end",
    ],
    [withHeader("x").map((v, i) => i === 8 ? 0x7b : v), "not valid JSON"],
    [withHeader({ t: { dtype: "C64", shape: [1], data_offsets: [0, 8] } }, 8), "unsupported dtype"],
    [withHeader({ t: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }, 4), "needs 8 bytes"],
    [withHeader({ t: { dtype: "F32", shape: [1], data_offsets: [0, 8] } }, 4), "outside"],
    [
      withHeader({
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      }, 8),
      "overlap",
    ],
    [withHeader({ t: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, 4), "bad shape"],
  ];
  for (const [bytes, msg] of cases) {
    assertThrows(() => parseSafetensors(bytes, "model.safetensors"), SafetensorsError, msg);
    assertThrows(
      () => parseSafetensors(bytes, "model.safetensors"),
      SafetensorsError,
      "model.safetensors",
    );
  }
  await assertRejects(
    () => readSafetensors("/nonexistent/w.safetensors"),
    SafetensorsError,
    "/nonexistent/w.safetensors",
  );
});
