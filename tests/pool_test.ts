import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { Tape } from "../src/autograd/tape.ts";
import { globalAvgPool as gapOp } from "../src/autograd/functions.ts";
import { MaxPool2d } from "../src/models/modules.ts";
import {
  globalAvgPool,
  globalAvgPoolBackward,
  globalAvgPoolBackwardRef,
  globalAvgPoolRef,
  maxPool2d,
  maxPool2dBackward,
  maxPool2dBackwardRef,
  maxPool2dRef,
  type MaxPoolOptions,
} from "../src/ops/pool.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  finiteDiff,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

type Shape = [number, number, number, number];

// GPU vs reference on odd shapes: tests/ops_test.ts (the maxpool and global_avg_pool units).

async function checkMaxPool(gpu: GpuContext, s: Shape, o: MaxPoolOptions, seed: number) {
  const xs = randArray(s[0] * s[1] * s[2] * s[3], seed, -2, 2);
  const ref = maxPool2dRef(xs, s, o);
  const x = Tensor.fromArray(gpu, xs, s);
  const { y, indices } = maxPool2d(gpu, x, o);
  assertEquals(y.shape, ref.shape);
  assertClose(await y.read(), ref.y, { rtol: 0, atol: 0 }, `maxpool y ${s}`);
  const gi = new Uint32Array((await indices.read()).buffer);
  assertEquals([...gi], [...ref.indices], `maxpool indices ${s}`);
  const dys = randArray(y.size, seed + 1);
  const dy = Tensor.fromArray(gpu, dys, y.shape);
  const dx = maxPool2dBackward(gpu, dy, indices, s, o);
  const want = maxPool2dBackwardRef(dys, ref.indices, s);
  const e = maxRelError(await dx.read(), want);
  if (!(e < 1e-6)) throw new Error(`maxpool dx ${s}: GPU vs CPU rel error ${e}`);
  [x, y, indices, dy, dx].forEach((t) => t.dispose());
}

Deno.test("max pool ties pick the first maximum; reference backward vs finite diffs", async () => {
  const gpu = await testGpu();
  // Ties: a constant image with a few equal peaks.
  const s: Shape = [1, 2, 7, 7];
  const xs = new Float32Array(98).fill(1);
  xs[49 + 8] = NaN; // plane 1, (1, 1): NaN wins its windows (PyTorch propagates NaN)
  const x = Tensor.fromArray(gpu, xs, s);
  const { y, indices } = maxPool2d(gpu, x, {});
  const ref = maxPool2dRef(xs, s, {});
  assertEquals([...new Uint32Array((await indices.read()).buffer)], [...ref.indices]);
  assertEquals([...await y.read()].map(Number.isNaN), [...ref.y].map(Number.isNaN));
  if (!ref.y.some(Number.isNaN)) throw new Error("test input has no NaN window");
  [x, y, indices].forEach((t) => t.dispose());
  // f64 central differences of L = Σ maxpool(x)·w (values distinct, so locally linear).
  const sh: Shape = [2, 2, 7, 6];
  const xv = Float64Array.from(randArray(168, 5, -2, 2));
  for (const o of [{}, { kernel: 2, stride: 1, padding: 1 }] as MaxPoolOptions[]) {
    const r = maxPool2dRef(xv, sh, o);
    const w = Float64Array.from(randArray(r.y.length, 6));
    const f = (v: Float64Array) => maxPool2dRef(v, sh, o).y.reduce((a, yv, i) => a + yv * w[i], 0);
    const e = maxRelError(maxPool2dBackwardRef(w, r.indices, sh), finiteDiff(f, xv.slice(), 1e-7));
    if (!(e < 1e-6)) throw new Error(`maxpool finite-diff rel error ${e}`);
  }
});

Deno.test("global average pool forward/backward (reference, finite diffs, GPU)", async () => {
  const gpu = await testGpu();
  const sh: Shape = [2, 3, 3, 5];
  const xv = Float64Array.from(randArray(90, 9));
  const w = Float64Array.from(randArray(6, 10));
  const f = (v: Float64Array) => globalAvgPoolRef(v, sh).reduce((a, yv, i) => a + yv * w[i], 0);
  const analytic = new Float64Array(90).map((_, j) => w[Math.floor(j / 15)] / 15);
  assertClose(globalAvgPoolBackwardRef(w, sh), analytic, { rtol: 1e-15, atol: 0 }, "gap ref dx");
  const e0 = maxRelError(analytic, finiteDiff(f, xv.slice()));
  if (!(e0 < 1e-8)) throw new Error(`gap finite-diff rel error ${e0}`);
  for (const [i, s] of ([[3, 5, 7, 7], [2, 3, 13, 17], [1, 7, 1, 1]] as Shape[]).entries()) {
    const xs = randArray(s[0] * s[1] * s[2] * s[3], 20 + i);
    const x = Tensor.fromArray(gpu, xs, s);
    const y = globalAvgPool(gpu, x);
    assertEquals(y.shape, [s[0], s[1]]);
    assertClose(await y.read(), globalAvgPoolRef(xs, s), { rtol: 1e-5, atol: 1e-6 }, `gap ${s}`);
    const dys = randArray(s[0] * s[1], 30 + i);
    const dy = Tensor.fromArray(gpu, dys, [s[0], s[1]]);
    const dx = globalAvgPoolBackward(gpu, dy, s);
    const hw = s[2] * s[3];
    assertClose(
      await dx.read(),
      new Float64Array(x.size).map((_, j) => dys[Math.floor(j / hw)] / hw),
      { rtol: 1e-6, atol: 1e-7 },
      `gap dx ${s}`,
    );
    [x, y, dy, dx].forEach((t) => t.dispose());
  }
});

Deno.test("pooling splits over planes past a small binding limit", async () => {
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    await checkMaxPool(gpu, [3, 5, 13, 17], {}, 40);
    const s: Shape = [3, 5, 13, 17];
    const xs = randArray(3315, 41);
    const x = Tensor.fromArray(gpu, xs, s);
    const d0 = gpu.dispatchCount;
    const y = globalAvgPool(gpu, x);
    if (gpu.dispatchCount - d0 < 8) throw new Error("gap was not split");
    assertClose(await y.read(), globalAvgPoolRef(xs, s), { rtol: 1e-5, atol: 1e-6 }, "split gap");
    const dx = globalAvgPoolBackward(gpu, y, s);
    const yv = await y.read();
    assertClose(
      await dx.read(),
      new Float64Array(3315).map((_, j) => yv[Math.floor(j / 221)] / 221),
      {
        rtol: 1e-6,
        atol: 1e-7,
      },
      "split gap dx",
    );
    [x, y, dx].forEach((t) => t.dispose());
  } finally {
    gpu.destroy();
  }
});

Deno.test("pool layers and bad input", async () => {
  const gpu = await testGpu();
  const s: Shape = [2, 3, 9, 9];
  const xs = randArray(486, 50);
  const x = Tensor.fromArray(gpu, xs, s);
  const mp = new MaxPool2d();
  const tape = new Tape(gpu);
  tape.watch(x);
  const y = mp.forward(x, tape);
  const ref = maxPool2dRef(xs, s, {});
  assertClose(await y.read(), ref.y, { rtol: 0, atol: 0 }, "layer y");
  const dys = randArray(y.size, 51);
  const dy = Tensor.fromArray(gpu, dys, y.shape);
  const [dx] = tape.backward([[y, dy.retain()]], [x]);
  assertEquals(tape.length, 0);
  assertClose(await dx!.read(), maxPool2dBackwardRef(dys, ref.indices, s), {}, "layer dx");
  // GAP on the tape; its rule writes into the input's gradient (here a fresh one).
  const t2 = new Tape(gpu);
  t2.watch(x);
  const g = gapOp(t2, x);
  const gv = await g.read();
  const [gdx] = t2.backward([[g, g.retain()]], [x]);
  assertEquals(gdx!.shape, s);
  const gdxRef = Float64Array.from({ length: xs.length }, (_, i) => gv[Math.floor(i / 81)] / 81);
  assertClose(await gdx!.read(), gdxRef, { rtol: 1e-6, atol: 0 }, "gap dx");
  [x, y, dy, dx!, g, gdx!].forEach((t) => t.dispose());
  assertThrows(() => new MaxPool2d({ kernel: 3, padding: 2 }), RangeError, "at most half");
  assertThrows(() => maxPool2d(gpu, Tensor.zeros(gpu, [2, 3, 4]), {}), RangeError, "NCHW");
  assertThrows(
    () => maxPool2d(gpu, Tensor.zeros(gpu, [1, 1, 1, 1]), { kernel: 3, padding: 0 }),
    RangeError,
    "too small",
  );
});
