import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { argmaxChannels, softmaxChannels, softmaxChannelsBackward } from "../src/ops/channel.ts";
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

/** f64 reference softmax over dim 1 of x / T. */
function refSoftmax(x: ArrayLike<number>, [n, c, h, w]: Shape, T: number): Float64Array {
  const hw = h * w;
  const y = new Float64Array(n * c * hw);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      const at = (k: number) => (b * c + k) * hw + i;
      let m = -Infinity;
      for (let k = 0; k < c; k++) m = Math.max(m, x[at(k)] / T);
      let z = 0;
      for (let k = 0; k < c; k++) z += Math.exp(x[at(k)] / T - m);
      for (let k = 0; k < c; k++) y[at(k)] = Math.exp(x[at(k)] / T - m) / z;
    }
  }
  return y;
}

/** f64 analytic softmax backward. */
function refSoftmaxBwd(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  [n, c, h, w]: Shape,
  T: number,
): Float64Array {
  const hw = h * w;
  const dx = new Float64Array(y.length);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      const at = (k: number) => (b * c + k) * hw + i;
      let dot = 0;
      for (let k = 0; k < c; k++) dot += y[at(k)] * dy[at(k)];
      for (let k = 0; k < c; k++) dx[at(k)] = y[at(k)] * (dy[at(k)] - dot) / T;
    }
  }
  return dx;
}

/** Reference argmax over dim 1: first maximum, NaN wins (PyTorch). */
function refArgmax(x: ArrayLike<number>, [n, c, h, w]: Shape): Float64Array {
  const hw = h * w;
  const out = new Float64Array(n * hw);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hw; i++) {
      let best = x[b * c * hw + i];
      let bi = 0;
      for (let k = 1; k < c && !Number.isNaN(best); k++) {
        const v = x[(b * c + k) * hw + i];
        if (v > best || Number.isNaN(v)) {
          best = v;
          bi = k;
        }
      }
      out[b * hw + i] = bi;
    }
  }
  return out;
}

const SHAPES: Shape[] = [[3, 5, 7, 7], [2, 3, 13, 17], [1, 21, 4, 6], [2, 1, 3, 3], [1, 2, 65, 66]];

async function checkSoftmax(gpu: GpuContext, s: Shape, T: number, seed: number) {
  const xs = randArray(s[0] * s[1] * s[2] * s[3], seed, -4, 4);
  const x = Tensor.fromArray(gpu, xs, s);
  const y = softmaxChannels(gpu, x, T);
  const ref = refSoftmax(xs, s, T);
  assertClose(await y.read(), ref, { rtol: 1e-5, atol: 1e-6 }, `softmax ${s} T=${T}`);
  const dys = randArray(xs.length, seed + 1);
  const dy = Tensor.fromArray(gpu, dys, s);
  const dx = softmaxChannelsBackward(gpu, y, dy, T);
  const e = maxRelError(await dx.read(), refSoftmaxBwd(ref, dys, s, T));
  if (!(e < 1e-5)) throw new Error(`softmax dx ${s} T=${T}: GPU vs CPU rel error ${e}`);
  [x, y, dy, dx].forEach((t) => t.dispose());
}

Deno.test("softmax over channels: forward and backward vs reference, with temperature", async () => {
  const gpu = await testGpu();
  for (const [i, s] of SHAPES.entries()) {
    for (const T of [1, 0.5, 3]) await checkSoftmax(gpu, s, T, 10 * i + T * 2);
  }
  // Large logits stay finite (max subtraction).
  const x = Tensor.fromArray(gpu, [1000, 990, -1000, 0], [1, 4, 1, 1]);
  const y = softmaxChannels(gpu, x, 1);
  assertClose(await y.read(), refSoftmax([1000, 990, -1000, 0], [1, 4, 1, 1], 1), {
    rtol: 1e-5,
    atol: 1e-7,
  });
  [x, y].forEach((t) => t.dispose());
});

Deno.test("softmax reference backward agrees with finite differences (f64)", () => {
  const s: Shape = [2, 4, 2, 3];
  const xv = Float64Array.from(randArray(48, 5, -2, 2));
  const w = Float64Array.from(randArray(48, 6));
  for (const T of [1, 0.7]) {
    const f = (v: Float64Array) => refSoftmax(v, s, T).reduce((a, yv, i) => a + yv * w[i], 0);
    const e = maxRelError(refSoftmaxBwd(refSoftmax(xv, s, T), w, s, T), finiteDiff(f, xv.slice()));
    if (!(e < 1e-8)) throw new Error(`softmax finite-diff rel error ${e} (T=${T})`);
  }
});

Deno.test("argmax over channels: first maximum, NaN, odd shapes", async () => {
  const gpu = await testGpu();
  for (const [i, s] of SHAPES.entries()) {
    // Values on a coarse grid so ties occur.
    const xs = randArray(s[0] * s[1] * s[2] * s[3], 40 + i, 0, 4).map(Math.floor);
    if (i === 0) {
      xs[7] = NaN; // channel 0 of a pixel: stays the argmax
      xs[2 * 49 + 3] = NaN; // channel 2 of another: wins over any number
    }
    const x = Tensor.fromArray(gpu, xs, s);
    const a = argmaxChannels(gpu, x);
    assertEquals(a.shape, [s[0], s[2], s[3]]);
    assertClose(await a.read(), refArgmax(xs, s), { rtol: 0, atol: 0 }, `argmax ${s}`);
    [x, a].forEach((t) => t.dispose());
  }
});

Deno.test("channel ops split over samples past a small binding limit", async () => {
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const s: Shape = [5, 3, 7, 9];
    const d0 = gpu.dispatchCount;
    await checkSoftmax(gpu, s, 1, 60);
    if (gpu.dispatchCount - d0 < 6) throw new Error("softmax was not split");
    const xs = randArray(5 * 189, 61);
    const x = Tensor.fromArray(gpu, xs, s);
    const a = argmaxChannels(gpu, x);
    assertClose(await a.read(), refArgmax(xs, s), { rtol: 0, atol: 0 }, "split argmax");
    [x, a].forEach((t) => t.dispose());
    assertThrows(
      () => softmaxChannels(gpu, Tensor.zeros(gpu, [1, 3, 15, 15]), 1),
      RangeError,
      "does not fit",
    );
  } finally {
    gpu.destroy();
  }
  const g = await testGpu();
  assertThrows(
    () => softmaxChannels(g, Tensor.zeros(g, [1, 3, 2, 2]), 0),
    RangeError,
    "temperature",
  );
  assertThrows(() => argmaxChannels(g, Tensor.zeros(g, [3, 2, 2])), RangeError, "NCHW");
});
