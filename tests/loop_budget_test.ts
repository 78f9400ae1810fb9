/**
 * Mesa's llvmpipe gives every shader invocation a budget of 65,535 loop iterations in all and
 * then silently exits its loops (docs/architecture.md#gpu-runtime-conventions). The probe
 * measures it; the ops whose invocations reduce over many elements are run here at sizes past
 * that budget against their f64 references, so a kernel that loops too long in one invocation
 * fails a test on the CPU adapter instead of giving quietly wrong values.
 */
import { Tensor } from "../src/gpu/tensor.ts";
import { LOOP_PROBE, measureLoopBudget } from "../src/bench/roofline.ts";
import { conv2dGradWeight, conv2dGradWeightRef } from "../src/ops/conv.ts";
import { matmul, matmulRef } from "../src/ops/matmul.ts";
import { globalAvgPool, globalAvgPoolRef } from "../src/ops/pool.ts";
import { batchNormForward, batchNormStatsRef } from "../src/ops/batchnorm.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

Deno.test("loop budget: the probe runs a loop to the end or reports where the adapter cut it", async () => {
  const gpu = await testGpu();
  const n = await measureLoopBudget(gpu);
  if (!(Number.isInteger(n) && n > 1000 && n <= LOOP_PROBE)) throw new Error(`budget ${n}`);
});

Deno.test("loop budget: long reductions (conv weight gradient, summed 1x1 weight gradient, matmul K, GAP, batchnorm) past 65,535 elements", async () => {
  const gpu = await testGpu();
  const up = (x: Float32Array, s: number[]) => Tensor.fromArray(gpu, x, s);
  for (const k of [3, 1]) {
    // N·H·W = 80,000 values summed into each weight gradient.
    const xs = [2, 3, 200, 200], ws = [2, 3, k, k], ds = [2, 2, 200, 200];
    const x = randArray(2 * 3 * 40000, 1), dy = randArray(2 * 2 * 40000, 2);
    const o = { padding: k === 3 ? 1 : 0 };
    const g = await conv2dGradWeight(gpu, up(x, xs), up(dy, ds), ws, o).read();
    assertClose(g, conv2dGradWeightRef(x, dy, xs, ws, o), { rtol: 1e-3, atol: 1e-2 }, `wgrad ${k}`);
  }
  {
    // The 1x1 weight gradient sums its images in one rb invocation (gemm's `sum`): 8 images of
    // 40,000 pixels are 8 · 10,001 loop iterations, so gemm must split them over dispatches.
    const xs = [8, 3, 200, 200], ws = [2, 3, 1, 1], ds = [8, 2, 200, 200];
    const x = randArray(8 * 3 * 40000, 7), dy = randArray(8 * 2 * 40000, 8);
    const g = await conv2dGradWeight(gpu, up(x, xs), up(dy, ds), ws).read();
    assertClose(
      g,
      conv2dGradWeightRef(x, dy, xs, ws, {}),
      { rtol: 1e-3, atol: 1e-2 },
      "wgrad 1x1 N 8",
    );
  }
  const K = 100000;
  const a = randArray(4 * K, 3), b = randArray(K * 4, 4);
  const c = await matmul(gpu, up(a, [4, K]), up(b, [K, 4])).read();
  assertClose(c, matmulRef(a, [4, K], b, [K, 4]), { rtol: 1e-3, atol: 1e-2 }, "matmul K 1e5");
  const gx = randArray(2 * 300 * 300, 5);
  const gap = await globalAvgPool(gpu, up(gx, [1, 2, 300, 300])).read();
  assertClose(gap, globalAvgPoolRef(gx, [1, 2, 300, 300]), { atol: 1e-5 }, "GAP 300x300");
  const bs = [2, 2, 200, 200], bx = randArray(2 * 2 * 40000, 6);
  const one = (v: number) => up(new Float32Array([v, v]), [2]);
  const r = batchNormForward(gpu, up(bx, bs), {
    weight: one(1),
    bias: one(0),
    runningMean: one(0),
    runningVar: one(1),
  }, { training: true });
  assertClose(await r.stats.mean.read(), batchNormStatsRef(bx, bs).mean, { atol: 1e-5 }, "bn mean");
});
