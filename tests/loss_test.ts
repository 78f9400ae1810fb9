import { createGpu } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  multilabelSoftMarginLoss,
  multilabelSoftMarginLossBackward,
  multilabelSoftMarginLossRef,
} from "../src/losses/multilabel.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertThrows, finiteDiff, maxRelError, randArray, testGpu } from "./util.ts";

/** The loss's f64 reference value. */
const refLoss = (x: ArrayLike<number>, t: ArrayLike<number>) =>
  multilabelSoftMarginLossRef(x, t).loss;

/** The loss's f64 reference gradient. */
const refGrad = (x: ArrayLike<number>, t: ArrayLike<number>) =>
  multilabelSoftMarginLossRef(x, t).grad;

function tags(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n }, () => (r.next() < 0.3 ? 1 : 0));
}

Deno.test("multilabel soft-margin loss: hand values, reference, stability", async () => {
  const gpu = await testGpu();
  const hand: [number[], number[], number][] = [
    [[0, 0], [1, 0], Math.log(2)],
    // (log(1+e^-1) + log(1+e^-2) + log(1+e^3)) / 3
    [[1, -2, 3], [1, 0, 0], 1.1629257],
    [[50, -50], [1, 0], 0],
    [[-50, 50], [1, 0], 50],
  ];
  for (const [x, t, want] of hand) {
    const l = multilabelSoftMarginLoss(
      gpu,
      Tensor.fromArray(gpu, x, [1, x.length]),
      Tensor.fromArray(gpu, t, [1, t.length]),
    );
    assertClose(await l.read(), [want], { rtol: 1e-5, atol: 1e-6 }, `loss of ${x}`);
  }
  for (const [n, c] of [[3, 20], [7, 13], [1, 1], [16, 80]]) {
    const xs = randArray(n * c, n + c, -6, 6);
    const ts = tags(n * c, n * c);
    const x = Tensor.fromArray(gpu, xs, [n, c]);
    const t = Tensor.fromArray(gpu, ts, [n, c]);
    const l = multilabelSoftMarginLoss(gpu, x, t);
    assertClose(await l.read(), [refLoss(xs, ts)], { rtol: 1e-5, atol: 1e-6 }, `${n}x${c}`);
    const g = multilabelSoftMarginLossBackward(gpu, x, t, 2.5);
    const e = maxRelError(await g.read(), refGrad(xs, ts).map((v) => 2.5 * v));
    if (!(e < 1e-5)) throw new Error(`grad ${n}x${c}: GPU vs CPU rel error ${e}`);
    [x, t, l, g].forEach((v) => v.dispose());
  }
});

Deno.test("multilabel soft-margin gradient agrees with finite differences (f64)", () => {
  const n = 3;
  const c = 5;
  const xs = Float64Array.from(randArray(n * c, 1, -3, 3));
  const ts = Float64Array.from(tags(n * c, 2));
  const e = maxRelError(
    refGrad(xs, ts),
    finiteDiff((v) => refLoss(v, ts), xs.slice()),
  );
  if (!(e < 1e-8)) throw new Error(`finite-diff rel error ${e}`);
});

Deno.test("multilabel loss splits rows past a small binding limit; bad input", async () => {
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const [n, c] = [40, 21]; // 3360 bytes per tensor: several chunks of rows
    const xs = randArray(n * c, 3, -4, 4);
    const ts = tags(n * c, 4);
    const x = Tensor.fromArray(gpu, xs, [n, c]);
    const t = Tensor.fromArray(gpu, ts, [n, c]);
    const d0 = gpu.dispatchCount;
    const l = multilabelSoftMarginLoss(gpu, x, t);
    if (gpu.dispatchCount - d0 < 2) throw new Error("loss was not split");
    assertClose(await l.read(), [refLoss(xs, ts)], { rtol: 1e-5, atol: 1e-6 }, "split loss");
    const g = multilabelSoftMarginLossBackward(gpu, x, t);
    assertClose(await g.read(), refGrad(xs, ts), { rtol: 1e-5, atol: 1e-8 }, "split grad");
    [x, t, l, g].forEach((v) => v.dispose());
  } finally {
    gpu.destroy();
  }
  const g = await testGpu();
  assertThrows(
    () => multilabelSoftMarginLoss(g, Tensor.zeros(g, [2, 3]), Tensor.zeros(g, [2, 4])),
    RangeError,
    "targets has shape [2,4], expected [2,3]",
  );
  assertThrows(
    () => multilabelSoftMarginLoss(g, Tensor.zeros(g, [2, 3, 1]), Tensor.zeros(g, [2, 3, 1])),
    RangeError,
    "[N, C]",
  );
});
