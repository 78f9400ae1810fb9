import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  argmaxChannels,
  argmaxChannelsRef,
  softmaxChannels,
  softmaxChannelsBackward,
  softmaxChannelsBackwardRef,
  softmaxChannelsRef,
} from "../src/ops/channel.ts";
import { assertClose, assertThrows, finiteDiff, maxRelError, randArray, testGpu } from "./util.ts";

type Shape = [number, number, number, number];

async function checkSoftmax(gpu: GpuContext, s: Shape, T: number, seed: number) {
  const xs = randArray(s[0] * s[1] * s[2] * s[3], seed, -4, 4);
  const x = Tensor.fromArray(gpu, xs, s);
  const y = softmaxChannels(gpu, x, T);
  const ref = softmaxChannelsRef(xs, s, T);
  assertClose(await y.read(), ref, { rtol: 1e-5, atol: 1e-6 }, `softmax ${s} T=${T}`);
  const dys = randArray(xs.length, seed + 1);
  const dy = Tensor.fromArray(gpu, dys, s);
  const dx = softmaxChannelsBackward(gpu, y, dy, T);
  const e = maxRelError(await dx.read(), softmaxChannelsBackwardRef(ref, dys, s, T));
  if (!(e < 1e-5)) throw new Error(`softmax dx ${s} T=${T}: GPU vs CPU rel error ${e}`);
  [x, y, dy, dx].forEach((t) => t.dispose());
}

// Forward/backward on odd shapes with temperatures, and argmax with ties and NaN:
// tests/ops_test.ts (the softmax_channels and argmax_channels units).

Deno.test("softmax over channels: large logits stay finite", async () => {
  const gpu = await testGpu();
  // Large logits stay finite (max subtraction).
  const x = Tensor.fromArray(gpu, [1000, 990, -1000, 0], [1, 4, 1, 1]);
  const y = softmaxChannels(gpu, x, 1);
  assertClose(await y.read(), softmaxChannelsRef([1000, 990, -1000, 0], [1, 4, 1, 1], 1), {
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
    const f = (v: Float64Array) =>
      softmaxChannelsRef(v, s, T).reduce((a, yv, i) => a + yv * w[i], 0);
    const e = maxRelError(
      softmaxChannelsBackwardRef(softmaxChannelsRef(xv, s, T), w, s, T),
      finiteDiff(f, xv.slice()),
    );
    if (!(e < 1e-8)) throw new Error(`softmax finite-diff rel error ${e} (T=${T})`);
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
    assertClose(await a.read(), argmaxChannelsRef(xs, s), { rtol: 0, atol: 0 }, "split argmax");
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
