/**
 * safetensors reader/writer: 8-byte little-endian header length, a JSON header mapping names
 * to `{dtype, shape, data_offsets}` (plus an optional `__metadata__` of string → string), then
 * raw little-endian data. Reads F64, F32, F16, BF16 and the integer/bool dtypes (all converted
 * to f32, so a raw torchvision state_dict with its I64 `num_batches_tracked` loads); writes F32.
 * @module
 */
import { writeFileAtomic } from "./atomic.ts";

/** A named f32 tensor on the CPU. */
export interface HostTensor {
  /** Dimensions, outermost first. */
  shape: number[];
  /** The values, row-major (converted to f32 on read). */
  data: Float32Array;
}

/** Contents of a safetensors file. */
export interface SafeTensors {
  /** The tensors by name. */
  tensors: Map<string, HostTensor>;
  /** The header's `__metadata__` (empty when absent). */
  metadata: Record<string, string>;
}

/**
 * A safetensors file that is malformed, or (checkpoints, weights) does not match the model it
 * is loaded into; the message names the file and the problem.
 */
export class SafetensorsError extends Error {
  /** Always "SafetensorsError". */
  override name = "SafetensorsError";
}

const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const MAX_HEADER = 100 * 1024 * 1024;

function f16ToF32(h: number): number {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Parses safetensors bytes. `source` names the file in errors. */
export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): SafeTensors {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`);
  };
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, too short for a header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER) fail(`header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
  if (8 + n > bytes.length) fail(`header length ${n} runs past the end of the file`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("header is not a JSON object");
  }
  const data = bytes.subarray(8 + n);
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, HostTensor>();
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null) fail("__metadata__ is not an object");
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null) fail(`tensor "${name}": entry is not an object`);
    const dtype = e.dtype as string;
    if (!(dtype in DTYPE_BYTES)) {
      fail(
        `tensor "${name}": unsupported dtype ${JSON.stringify(e.dtype)} ` +
          `(${Object.keys(DTYPE_BYTES).join(", ")})`,
      );
    }
    const shape = e.shape as number[];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`tensor "${name}": bad shape ${JSON.stringify(e.shape)}`);
    }
    const offs = e.data_offsets as number[];
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(Number.isInteger)) {
      fail(`tensor "${name}": bad data_offsets ${JSON.stringify(e.data_offsets)}`);
    }
    const [b, end] = offs;
    if (b < 0 || end < b || end > data.length) {
      fail(`tensor "${name}": data_offsets [${b}, ${end}] outside the ${data.length} data bytes`);
    }
    const count = shape.reduce((a, d) => a * d, 1);
    if (count * DTYPE_BYTES[dtype] !== end - b) {
      fail(
        `tensor "${name}": shape [${shape}] of ${dtype} needs ${count * DTYPE_BYTES[dtype]} ` +
          `bytes, offsets give ${end - b}`,
      );
    }
    ranges.push([b, end, name]);
    const out = new Float32Array(count);
    const tv = new DataView(data.buffer, data.byteOffset + b, end - b);
    if (dtype === "F32") {
      for (let i = 0; i < count; i++) out[i] = tv.getFloat32(i * 4, true);
    } else if (dtype === "F16") {
      for (let i = 0; i < count; i++) out[i] = f16ToF32(tv.getUint16(i * 2, true));
    } else if (dtype === "F64") {
      for (let i = 0; i < count; i++) out[i] = tv.getFloat64(i * 8, true);
    } else if (dtype === "I64") {
      for (let i = 0; i < count; i++) out[i] = Number(tv.getBigInt64(i * 8, true));
    } else if (dtype === "I32") {
      for (let i = 0; i < count; i++) out[i] = tv.getInt32(i * 4, true);
    } else if (dtype === "I16") {
      for (let i = 0; i < count; i++) out[i] = tv.getInt16(i * 2, true);
    } else if (dtype === "I8") {
      for (let i = 0; i < count; i++) out[i] = tv.getInt8(i);
    } else if (dtype === "U8" || dtype === "BOOL") {
      for (let i = 0; i < count; i++) out[i] = tv.getUint8(i);
    } else {
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < count; i++) {
        u[0] = tv.getUint16(i * 2, true) << 16;
        out[i] = f[0];
      }
    }
    tensors.set(name, { shape: [...shape], data: out });
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i][0] < ranges[i - 1][1]) {
      fail(`tensors "${ranges[i - 1][2]}" and "${ranges[i][2]}" overlap`);
    }
  }
  return { tensors, metadata };
}

/** Reads and parses a safetensors file. */
export async function readSafetensors(path: string): Promise<SafeTensors> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseSafetensors(bytes, path);
}

/** The header of a safetensors file: tensor shapes by name and the `__metadata__` strings. */
export interface SafetensorsHeader {
  shapes: Map<string, number[]>;
  metadata: Record<string, string>;
}

/**
 * Reads only the header of a safetensors file (shapes and metadata, no tensor data): for a
 * checkpoint's step or a classifier's class count without loading the weights.
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    const len = new Uint8Array(8);
    if ((await f.read(len)) !== 8) throw new SafetensorsError(`${path}: too short for a header`);
    const n = Number(new DataView(len.buffer).getBigUint64(0, true));
    if (n > MAX_HEADER) {
      throw new SafetensorsError(
        `${path}: header length ${n} exceeds the ${MAX_HEADER}-byte limit`,
      );
    }
    const buf = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const r = await f.read(buf.subarray(off));
      if (r === null) throw new SafetensorsError(`${path}: header runs past the end of the file`);
      off += r;
    }
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder().decode(buf));
    } catch (e) {
      throw new SafetensorsError(`${path}: header is not valid JSON: ${(e as Error).message}`);
    }
    const shapes = new Map<string, number[]>();
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(header)) {
      if (name === "__metadata__") metadata = (v ?? {}) as Record<string, string>;
      else if (Array.isArray((v as { shape?: unknown })?.shape)) {
        shapes.set(name, (v as { shape: number[] }).shape);
      }
    }
    return { shapes, metadata };
  } finally {
    f.close();
  }
}

/** Serialises tensors (as F32, in the given order) and metadata. */
export function serializeSafetensors(
  tensors: Iterable<[string, HostTensor]>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  const list = [...tensors];
  let off = 0;
  for (const [name, t] of list) {
    const count = t.shape.reduce((a, d) => a * d, 1);
    if (count !== t.data.length) {
      throw new RangeError(`tensor "${name}": shape [${t.shape}] but ${t.data.length} values`);
    }
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [off, off + count * 4] };
    off += count * 4;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const hb = new Uint8Array(Math.ceil(raw.length / 8) * 8).fill(0x20); // space-padded
  hb.set(raw);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  for (const [, t] of list) {
    if (le) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    } else {
      const dv = new DataView(out.buffer, p);
      t.data.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    }
    p += t.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically. */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<[string, HostTensor]>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
