import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { Tape } from "../src/autograd/tape.ts";
import { BilinearResize } from "../src/models/modules.ts";
import {
  BICUBIC_MAX_GATHER,
  resizeBicubic,
  resizeBicubicBackward,
  resizeBicubicBackwardRef,
  resizeBicubicRef,
  resizeBilinear,
  resizeBilinearBackward,
  resizeBilinearBackwardRef,
  resizeBilinearRef,
  type ResizeOptions,
} from "../src/ops/resize.ts";
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

async function run(gpu: GpuContext, xs: ArrayLike<number>, s: Shape, o: ResizeOptions) {
  const x = Tensor.fromArray(gpu, xs, s);
  const y = resizeBilinear(gpu, x, o);
  const v = await y.read();
  x.dispose();
  y.dispose();
  return v;
}

Deno.test("bilinear resize matches hand-computed PyTorch values (both align_corners)", async () => {
  const gpu = await testGpu();
  // PyTorch's nn.Upsample documentation example (2x2 → 4x4), checked by hand.
  const x2 = [1, 2, 3, 4];
  assertClose(
    await run(gpu, x2, [1, 1, 2, 2], { scaleFactor: 2 }),
    [
      1,
      1.25,
      1.75,
      2,
      1.5,
      1.75,
      2.25,
      2.5,
      2.5,
      2.75,
      3.25,
      3.5,
      3,
      3.25,
      3.75,
      4,
    ],
    { rtol: 1e-6, atol: 1e-6 },
    "2x2→4x4 align_corners=False",
  );
  const t = 1 / 3;
  assertClose(
    await run(gpu, x2, [1, 1, 2, 2], { size: [4, 4], alignCorners: true }),
    [
      1,
      1 + t,
      2 - t,
      2,
      2 - t,
      2,
      2 + t,
      3 - t,
      2 + t,
      3 - t,
      3,
      3 + t,
      3,
      3 + t,
      4 - t,
      4,
    ],
    { rtol: 1e-6, atol: 1e-6 },
    "2x2→4x4 align_corners=True",
  );
  // The same documentation's 3x3 example (zero-padded input) → 6x6.
  const x3 = [1, 2, 0, 3, 4, 0, 0, 0, 0];
  assertClose(
    await run(gpu, x3, [1, 1, 3, 3], { scaleFactor: 2 }),
    [
      [1, 1.25, 1.75, 1.5, 0.5, 0],
      [1.5, 1.75, 2.25, 1.875, 0.625, 0],
      [2.5, 2.75, 3.25, 2.625, 0.875, 0],
      [2.25, 2.4375, 2.8125, 2.25, 0.75, 0],
      [0.75, 0.8125, 0.9375, 0.75, 0.25, 0],
      [0, 0, 0, 0, 0, 0],
    ].flat(),
    { rtol: 1e-6, atol: 1e-6 },
    "3x3→6x6 align_corners=False",
  );
  assertClose(
    await run(gpu, x3, [1, 1, 3, 3], { scaleFactor: 2, alignCorners: true }),
    [
      [1, 1.4, 1.8, 1.6, 0.8, 0],
      [1.8, 2.2, 2.6, 2.24, 1.12, 0],
      [2.6, 3, 3.4, 2.88, 1.44, 0],
      [2.4, 2.72, 3.04, 2.56, 1.28, 0],
      [1.2, 1.36, 1.52, 1.28, 0.64, 0],
      [0, 0, 0, 0, 0, 0],
    ].flat(),
    { rtol: 1e-5, atol: 1e-6 },
    "3x3→6x6 align_corners=True",
  );
  // Down: 4x4 arange → 2x2 averages 2x2 blocks (False) or takes corners (True).
  const a16 = Array.from({ length: 16 }, (_, i) => i);
  assertClose(await run(gpu, a16, [1, 1, 4, 4], { size: [2, 2] }), [2.5, 4.5, 10.5, 12.5]);
  assertClose(await run(gpu, a16, [1, 1, 4, 4], { size: [2, 2], alignCorners: true }), [
    0,
    3,
    12,
    15,
  ]);
  // scale_factor 0.5 on width 5 uses 1/0.5 = 2 as the source scale, size 2 uses 5/2.
  const r5 = [0, 1, 2, 3, 4];
  assertClose(await run(gpu, r5, [1, 1, 1, 5], { scaleFactor: [1, 0.5] }), [0.5, 2.5]);
  assertClose(await run(gpu, r5, [1, 1, 1, 5], { size: [1, 2] }), [0.75, 3.25]);
});

// Forward/backward against the f64 reference on odd shapes: tests/ops_test.ts (the
// resize_bilinear unit).

Deno.test("bilinear reference backward agrees with finite differences (f64)", () => {
  for (
    const [s, OH, OW, ac] of [[[1, 2, 3, 4], 5, 7, false], [[1, 1, 5, 4], 3, 6, true]] as const
  ) {
    const sh = s as unknown as Shape;
    const n = sh[0] * sh[1] * sh[2] * sh[3];
    const xv = Float64Array.from(randArray(n, 3));
    const w = Float64Array.from(randArray(sh[0] * sh[1] * OH * OW, 4));
    const o = { size: [OH, OW] as [number, number], alignCorners: ac };
    const f = (v: Float64Array) =>
      resizeBilinearRef(v, sh, o).reduce((a, yv, i) => a + yv * w[i], 0);
    const e = maxRelError(resizeBilinearBackwardRef(w, sh, o), finiteDiff(f, xv.slice()));
    if (!(e < 1e-8)) throw new Error(`resize finite-diff rel error ${e}`);
  }
});

Deno.test("bilinear resize splits past a small binding limit; layer; bad options", async () => {
  const big = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const s: Shape = [3, 5, 13, 17];
    const xs = randArray(3315, 7);
    const x = Tensor.fromArray(big, xs, s);
    const d0 = big.dispatchCount;
    const y = resizeBilinear(big, x, { size: [9, 11] });
    if (big.dispatchCount - d0 < 8) throw new Error("resize was not split");
    const ref = resizeBilinearRef(xs, s, { size: [9, 11] });
    assertClose(await y.read(), ref, { rtol: 1e-5, atol: 1e-5 }, "split y");
    const dx = resizeBilinearBackward(big, y, s, { size: [9, 11] });
    const e = maxRelError(
      await dx.read(),
      resizeBilinearBackwardRef(await y.read(), s, { size: [9, 11] }),
    );
    if (!(e < 1e-5)) throw new Error(`split dx rel error ${e}`);
    [x, y, dx].forEach((t) => t.dispose());
  } finally {
    big.destroy();
  }
  const gpu = await testGpu();
  const layer = new BilinearResize({ scaleFactor: 2, alignCorners: true });
  const x = Tensor.fromArray(gpu, randArray(2 * 3 * 5 * 5, 9), [2, 3, 5, 5]);
  const tape = new Tape(gpu);
  tape.watch(x);
  const y = layer.forward(x, tape);
  assertEquals(y.shape, [2, 3, 10, 10]);
  const [dx] = tape.backward([[y, y.retain()]], [x]);
  assertEquals(dx!.shape, [2, 3, 5, 5]);
  const direct = resizeBilinearBackward(gpu, y, x.shape, { scaleFactor: 2, alignCorners: true });
  assertClose(await dx!.read(), await direct.read(), { rtol: 0, atol: 0 }, "layer dx");
  [x, y, dx!, direct].forEach((t) => t.dispose());
  assertThrows(() => new BilinearResize({}), RangeError, "exactly one of size");
  assertThrows(
    () => resizeBilinear(gpu, Tensor.zeros(gpu, [1, 1, 2, 2]), { scaleFactor: 0.1 }),
    RangeError,
    "bad output size",
  );
});

Deno.test("bicubic: long gathers (a 3-pixel axis to 20,000) stay under the loop budget; longer ones are an error naming it", async () => {
  const gpu = await testGpu();
  // Each input of the 3-pixel axis is read by about 4·20000/3 = 26,700 outputs: one loop of that
  // length per invocation (llvmpipe would cut a loop past 65,535 silently).
  const shape: Shape = [1, 2, 2, 3];
  const o: ResizeOptions = { size: [3, 20000] };
  const xs = randArray(12, 1);
  const dys = randArray(2 * 3 * 20000, 2);
  const x = Tensor.fromArray(gpu, xs, shape);
  const dy = Tensor.fromArray(gpu, dys, [1, 2, 3, 20000]);
  const y = resizeBicubic(gpu, x, o);
  const dx = resizeBicubicBackward(gpu, dy, shape, o);
  assertEquals(maxRelError(await y.read(), resizeBicubicRef(xs, shape, o)) < 1e-5, true);
  const e = maxRelError(await dx.read(), resizeBicubicBackwardRef(dys, shape, o));
  if (!(e < 1e-5)) throw new Error(`long gather: max relative error ${e}`);
  const one = Tensor.zeros(gpu, [1, 1, 1, BICUBIC_MAX_GATHER + 1]);
  assertThrows(
    () => resizeBicubicBackward(gpu, one, [1, 1, 1, 1], { size: [1, BICUBIC_MAX_GATHER + 1] }),
    RangeError,
    "resizeBicubicBackward: 1 → 32769 needs 32769 iterations per invocation",
  );
  for (const t of [x, dy, y, dx, one]) t.dispose();
});
