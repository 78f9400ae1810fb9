/**
 * SEAM's loss pieces beyond the generic op test (tests/ops_test.ts runs their units): the
 * top-k selection with ties and on long rows, determinism, bad input.
 */
import { throws } from "node:assert";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  ecrElems,
  erElems,
  fgMax,
  maxNorm,
  topkSum,
  topkSumBackward,
  topkSumBackwardRef,
  topkSumRef,
} from "../src/losses/seam.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

Deno.test("seam topk: ties at the k-th value are summed exactly, their gradient shared", async () => {
  const gpu = await testGpu();
  // Values on a 0.25 grid: many ties, including at the k-th value.
  const R = 3, L = 97;
  const x = randArray(R * L, 11, -1, 1).map((v) => Math.round(v * 4) / 4);
  const xt = Tensor.fromArray(gpu, x, [R, L]);
  const dl = Tensor.fromArray(gpu, Float32Array.of(2), [1]);
  for (const o of [{ k: 19 }, { k: 24, smallest: true, relu: true, scale: 0.1 }, { k: 97 }]) {
    const r = topkSum(gpu, xt, o);
    const dx = topkSumBackward(gpu, xt, r.stats, dl, o);
    const [loss, g] = [await r.loss.read(), await dx.read()];
    assertClose(loss, [topkSumRef(x, R, o)], { rtol: 1e-6, atol: 1e-6 }, `loss k${o.k}`);
    assertClose(g, topkSumBackwardRef(x, R, o, 2), { rtol: 1e-6, atol: 1e-7 }, `grad k${o.k}`);
    // The weights of each row add up to k picks (relu aside).
    if (!("relu" in o)) {
      for (let q = 0; q < R; q++) {
        const s = g.subarray(q * L, (q + 1) * L).reduce((a, v) => a + v, 0);
        assertClose([s], [2 * o.k * ((o as { scale?: number }).scale ?? 1)], {}, "picks");
      }
    }
    for (const t of [r.loss, r.stats, dx]) t.dispose();
  }
  xt.dispose();
  dl.dispose();
});

Deno.test("seam topk: a 21x30x30 row (SEAM's 20% ECR pick) matches the reference, twice", async () => {
  const gpu = await testGpu();
  const R = 2, L = 21 * 30 * 30, k = Math.floor(L * 0.2);
  const x = randArray(R * L, 12, 0, 1);
  const xt = Tensor.fromArray(gpu, x, [R, L]);
  const o = { k, scale: 1 / (R * k) };
  const a = topkSum(gpu, xt, o);
  const b = topkSum(gpu, xt, o);
  const [la, lb] = [await a.loss.read(), await b.loss.read()];
  assertClose(la, [topkSumRef(x, R, o)], { rtol: 1e-5 }, "loss");
  if (!Object.is(la[0], lb[0])) throw new Error("reruns differ");
  for (const t of [xt, a.loss, a.stats, b.loss, b.stats]) t.dispose();
});

Deno.test("seam losses: bad input throws RangeError", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [2, 4, 3, 3]);
  const one = Tensor.zeros(gpu, [2, 1, 3, 3]);
  const tags = Tensor.zeros(gpu, [2, 3]);
  const badTags = Tensor.zeros(gpu, [2, 4]);
  const flat = Tensor.zeros(gpu, [6]);
  throws(() => topkSum(gpu, x, { k: 0 }), RangeError);
  throws(() => topkSum(gpu, x, { k: 37 }), RangeError);
  throws(() => topkSum(gpu, x, { k: 2.5 }), RangeError);
  throws(() => fgMax(gpu, x, badTags), RangeError);
  throws(() => fgMax(gpu, one, tags), RangeError);
  throws(() => erElems(gpu, x, one, tags), RangeError);
  throws(() => ecrElems(gpu, one, x, tags), RangeError);
  throws(() => maxNorm(gpu, flat), RangeError);
  for (const t of [x, one, tags, badTags, flat]) t.dispose();
});
