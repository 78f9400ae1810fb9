import {
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
  const a = { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 4, 5, 6]) };
  const b = { shape: [1], data: Float32Array.from([Math.PI]) };
  const bytes = serializeSafetensors([["layer1.0.conv1.weight", a], ["ü", b]], { step: "7" });
  assertEquals(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
  const dir = await Deno.makeTempDir();
  await writeSafetensors(`${dir}/x.safetensors`, [["w", a], ["ü", b]], { step: "7" });
  for (const st of [parseSafetensors(bytes), await readSafetensors(`${dir}/x.safetensors`)]) {
    assertEquals(st.metadata, { step: "7" });
    assertEquals(st.tensors.get("ü")!.data, b.data);
    assertEquals(st.tensors.get("ü")!.shape, [1]);
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
