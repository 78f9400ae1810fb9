import { createGpu, f32bits, type GpuContext, GpuError, grid1d } from "../src/gpu/context.ts";
import { sizeClass } from "../src/gpu/pool.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { expandTemplate } from "../src/gpu/shaders.ts";
import { describeBackend, vulkanDrivers } from "../src/io/gpu.ts";
import { POINTWISE, pointwise, type PointwiseName, PointwiseParams } from "../src/ops/pointwise.ts";
import {
  assertClose,
  assertEquals,
  assertRejects,
  assertThrows,
  randArray,
  testGpu,
} from "./util.ts";

Deno.test("missing WebGPU gives an actionable error", async () => {
  const e1 = await assertRejects(() => createGpu({ gpuApi: null }), GpuError);
  const none = { requestAdapter: () => Promise.resolve(null) } as unknown as GPU;
  const e2 = await assertRejects(() => createGpu({ gpuApi: none }), GpuError);
  for (const e of [e1, e2]) {
    if (!/mesa-vulkan-drivers/.test(e.message)) throw new Error(`no install hint: ${e.message}`);
  }
});

Deno.test("adapter and device come up", async () => {
  const gpu = await testGpu();
  const lines: string[] = [];
  const g2 = await createGpu({ verbose: true, log: (l) => lines.push(l) });
  g2.destroy();
  if (!/WebGPU adapter: .*fallback (true|false)/.test(lines[0] ?? "")) {
    throw new Error(`verbose line missing: ${lines[0]}`);
  }
  assertEquals(gpu.maxBindingBytes > 0, true);
});

// The table entries against their references: tests/ops_test.ts (the pointwise.* units).

Deno.test("pointwise backward entries match finite differences of their forward", () => {
  // Each `X_bwd` entry takes (forward output y, dy) and must equal dy · dX/dx; GELU's derivative
  // is not a function of its output, so its entry takes the forward input x instead.
  const fromInput = new Set(["gelu_bwd"]);
  const xs = [-2.5, -1, -0.3, -1e-3, 1e-3, 0.4, 1.7];
  const checked: string[] = [];
  for (const [name, op] of Object.entries(POINTWISE)) {
    if (!name.endsWith("_bwd")) continue;
    checked.push(name);
    const fwd = POINTWISE[name.slice(0, -4) as PointwiseName];
    const f = (x: number) => fwd.ref(x, 0, 0, 0, 0);
    for (const x of xs) {
      const fd = (f(x + 1e-6) - f(x - 1e-6)) / 2e-6;
      const got = op.ref(fromInput.has(name) ? x : f(x), 0.8, 0, 0, 0);
      if (Math.abs(got - 0.8 * fd) > 1e-5) {
        throw new Error(`${name} at x=${x}: ${got} vs finite difference ${0.8 * fd}`);
      }
    }
  }
  assertEquals(checked.sort(), ["elu_bwd", "gelu_bwd", "relu_bwd", "sigmoid_bwd"]);
});

Deno.test("in-place pointwise and splitting past an artificial binding limit", async () => {
  const gpu = await createGpu({ maxBindingBytes: 1024, debug: true });
  const n = 1000; // 4000 bytes: four chunks of 256 floats
  const a = randArray(n, 3);
  const b = randArray(n, 4);
  const ta = Tensor.fromArray(gpu, a, [n]);
  const tb = Tensor.fromArray(gpu, b, [n]);
  pointwise(gpu, "add", [ta, tb], { out: ta });
  pointwise(gpu, "relu", [ta], { out: ta });
  const got = await ta.read();
  assertClose(got, a.map((v, i) => Math.max(v + b[i], 0)), {}, "split in-place add+relu");
  gpu.destroy();
});

Deno.test("pool reuses buffers by size class and tracks the peak", async () => {
  const gpu = await createGpu();
  const s0 = gpu.pool.stats();
  const t1 = Tensor.empty(gpu, [1000]);
  const b1 = t1.buffer;
  t1.dispose();
  const t2 = Tensor.empty(gpu, [990]);
  assertEquals(t2.buffer, b1, "same size class reuses the buffer");
  const t3 = Tensor.empty(gpu, [5000]);
  const s = gpu.pool.stats();
  assertEquals(s.creations - s0.creations, 2);
  assertEquals(s.peakInUse, sizeClass(4000) + sizeClass(20000));
  t2.retain();
  t2.dispose();
  assertEquals(t2.disposed, false, "a retained tensor survives one dispose");
  t2.dispose();
  t3.dispose();
  assertEquals(gpu.pool.stats().inUse, 0);
  assertThrows(() => t2.binding(), Error, "used after dispose");
  gpu.destroy();
});

/** Records t[i] += 1 for the first n values, in 64-wide workgroups. */
function addOneInPlace(gpu: GpuContext, t: Tensor, n: number): void {
  gpu.dispatch1d(
    {
      shader: "elementwise",
      entry: "inplace",
      defines: { EXPR: "a + 1.0" },
      constants: { WG: 64 },
      inputs: [gpu.dummy, gpu.dummy, gpu.dummy],
      outputs: [t],
      params: PointwiseParams.pack({ n, alpha: 0, beta: 0 }),
    },
    n,
    64,
  );
}

Deno.test("pool hands out the oldest free buffer of a class, whatever the release order", async () => {
  const gpu = await createGpu();
  const ts = [0, 1, 2].map(() => Tensor.empty(gpu, [100]));
  const bufs = ts.map((t) => t.buffer);
  // Released newest-first, then oldest-first: either way the next acquisitions go oldest first,
  // so a loop that acquires in a fixed order gets the same buffers every iteration.
  for (const order of [[2, 1, 0], [0, 2, 1]]) {
    for (const i of order) ts[i].dispose();
    for (let i = 0; i < 3; i++) ts[i] = Tensor.empty(gpu, [100]);
    assertEquals(ts.map((t) => bufs.indexOf(t.buffer)), [0, 1, 2], `release order ${order}`);
  }
  ts.forEach((t) => t.dispose());
  gpu.destroy();
});

Deno.test("bind groups are reused for repeated dispatches, never for other buffers", async () => {
  const gpu = await createGpu();
  const n = 64;
  const a = Tensor.fromArray(gpu, Float32Array.from({ length: n }, (_, i) => i), [n]);
  const b = Tensor.fromArray(gpu, new Float32Array(n).fill(10), [n]);
  const addOne = (t: Tensor) => addOneInPlace(gpu, t, n);
  // A "step" of three dispatches, twice: the second step binds the same ranges (same buffers,
  // same uniform slots) and creates no bind group.
  const step = () => {
    addOne(a);
    addOne(b);
    addOne(a);
  };
  step();
  await gpu.sync();
  const created = gpu.bindGroupsCreated;
  step();
  await gpu.sync();
  assertEquals(gpu.bindGroupsCreated, created, "a repeated step creates no bind group");
  // Another buffer in a's role gets its own bind group (and the right result).
  const c = Tensor.fromArray(gpu, new Float32Array(n).fill(-1), [n]);
  addOne(c);
  await gpu.sync();
  assertEquals(gpu.bindGroupsCreated, created + 1);
  assertClose(await a.read(), Float32Array.from({ length: n }, (_, i) => i + 4), {}, "a");
  assertClose(await b.read(), new Float32Array(n).fill(12), {}, "b");
  assertClose(await c.read(), new Float32Array(n).fill(0), {}, "c");
  [a, b, c].forEach((t) => t.dispose());
  gpu.destroy();
});

Deno.test("size classes and workgroup grid splitting", () => {
  assertEquals(sizeClass(1), 256);
  assertEquals(sizeClass(4097), 5120);
  assertEquals(sizeClass(8192), 8192);
  assertEquals(grid1d(1000, 256), [4, 1]);
  const [x, y] = grid1d(70000 * 256, 256, 65535);
  assertEquals(x <= 65535 && x * y >= 70000, true);
});

Deno.test("dispatch1d covers more workgroups than one dimension allows", async () => {
  const gpu = await testGpu();
  // 65535 * 64 + 100 elements with 64-wide groups: needs a 2-D grid.
  const n = 65535 * 64 + 100;
  const t = Tensor.zeros(gpu, [n]);
  addOneInPlace(gpu, t, n);
  const v = await t.read();
  let bad = 0;
  for (let i = 0; i < n; i++) if (v[i] !== 1) bad++;
  assertEquals(bad, 0);
  t.dispose();
});

Deno.test("debug mode turns a validation error into an error naming the op", async () => {
  const gpu = await createGpu({ debug: true });
  gpu.addShader("broken", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }");
  try {
    gpu.dispatch({ name: "my-broken-op", shader: "broken", entry: "main", workgroups: [1] });
  } catch { /* some implementations throw synchronously; the scope still records it */ }
  await assertRejects(() => gpu.sync(), GpuError, "my-broken-op");
  gpu.destroy();
});

Deno.test("templates reject unknown and missing placeholders", () => {
  assertEquals(expandTemplate("x {{A}} y", { A: 1 }), "x 1 y");
  assertThrows(() => expandTemplate("x {{A}}", { B: 1 }), Error, "no placeholder");
  assertThrows(() => expandTemplate("x {{A}}", {}), Error, "no value");
});

Deno.test("one pass mixes pipelines whose params structs differ in size", async () => {
  const gpu = await createGpu({ debug: false });
  gpu.addShader(
    "mix",
    `struct Big { a: f32, b: f32, c: f32, d: f32, e: f32, f: f32, g: f32, h: f32 }
struct Small { a: f32 }
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<uniform> pb: Big;
@compute @workgroup_size(1) fn big() { y[0] = y[0] + pb.h; }
@group(0) @binding(1) var<uniform> ps: Small;
@compute @workgroup_size(1) fn small() { y[0] = y[0] * ps.a; }`,
  );
  const y = Tensor.fromArray(gpu, [1], [1]);
  for (let i = 0; i < 3; i++) {
    gpu.dispatch({
      shader: "mix",
      entry: "big",
      outputs: [y],
      params: [0, 0, 0, 0, 0, 0, 0, f32bits(1)],
      workgroups: [1],
    });
    gpu.dispatch({
      shader: "mix",
      entry: "small",
      outputs: [y],
      params: [f32bits(2)],
      workgroups: [1],
    });
  }
  assertEquals(Array.from(await y.read()), [22]); // ((1+1)*2+1)*2+1)*2
  await gpu.checkErrors();
  gpu.destroy();
});

Deno.test("profiling times each dispatch by op name", async () => {
  const gpu = await createGpu({ profile: true });
  if (!gpu.device.features.has("timestamp-query")) {
    // Nothing to check on this adapter; say so, so that a green run is not read as checked.
    console.log(`profiling test skipped: no timestamp-query on ${gpu.describe()}`);
    gpu.destroy();
    return;
  }
  const x = Tensor.fromArray(gpu, randArray(4096, 1), [4096]);
  pointwise(gpu, "relu", [x]).dispose();
  pointwise(gpu, "relu", [x]).dispose();
  pointwise(gpu, "sigmoid", [x]).dispose();
  const rep = await gpu.profileReport();
  assertEquals(rep.map((r) => [r.name, r.calls]).sort(), [["pointwise.relu", 2], [
    "pointwise.sigmoid",
    1,
  ]]);
  assertEquals(rep.every((r) => r.ms >= 0), true);
  gpu.destroy();
});

Deno.test("readRanges reads several ranges in one readback", async () => {
  const gpu = await testGpu();
  const a = Tensor.fromArray(gpu, [1, 2, 3], [3]);
  const b = Tensor.fromArray(gpu, [4.5], [1]);
  const [ra, rb, rs] = await gpu.readRanges([a.binding(), b.binding(), a.slice(1, 2)]);
  assertEquals(Array.from(new Float32Array(ra)), [1, 2, 3]);
  assertEquals(Array.from(new Float32Array(rb)), [4.5]);
  assertEquals(Array.from(new Float32Array(rs)), [2, 3]);
  a.dispose();
  b.dispose();
});

Deno.test("the adapter line names the backend and how it was chosen", async () => {
  const gpu = await testGpu();
  const old = Deno.env.get("DENO_WEBGPU_BACKEND");
  try {
    Deno.env.set("DENO_WEBGPU_BACKEND", "gl");
    const line = describeBackend(gpu);
    assertEquals(line.startsWith("backend gl"), true, line);
    assertEquals(line.includes("set by DENO_WEBGPU_BACKEND"), true, line);
    Deno.env.delete("DENO_WEBGPU_BACKEND");
    const dflt = describeBackend(gpu);
    const want = vulkanDrivers().length ? "backend vulkan" : "backend gl";
    assertEquals(dflt.startsWith(want) && dflt.includes("Deno's default"), true, dflt);
  } finally {
    if (old === undefined) Deno.env.delete("DENO_WEBGPU_BACKEND");
    else Deno.env.set("DENO_WEBGPU_BACKEND", old);
  }
});
