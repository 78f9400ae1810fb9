import { FMA_CHAINS, recordCopy, recordFma } from "../src/bench/roofline.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

// The roofline probes are benchmarks, but a probe that computes something else (or that the
// compiler folds away) would report a fake peak: each one's output is checked here.

Deno.test("roofline fma probe computes its chains (f64 reference)", async () => {
  const gpu = await testGpu();
  const n = 128;
  const iters = 5;
  const coef = { a: 0.75, b: 0.5 };
  const src = Tensor.zeros(gpu, [4]);
  const out = Tensor.empty(gpu, [n * 4]);
  for (const k of FMA_CHAINS) {
    recordFma(gpu, k, n, iters, coef, src, out);
    const want = new Float64Array(n * 4);
    for (let g = 0; g < n; g++) {
      const seed = Math.fround((g & 7) * Math.fround(1e-3));
      for (let lane = 0; lane < 4; lane++) {
        let sum = 0;
        for (let i = 0; i < k; i++) {
          let a = seed + i + lane * 0.25;
          for (let it = 0; it < iters; it++) a = a * coef.a + coef.b;
          sum += a;
        }
        want[g * 4 + lane] = sum;
      }
    }
    assertClose(await out.read(), want, { rtol: 1e-5, atol: 1e-5 }, `fma${k}`);
  }
  src.dispose();
  out.dispose();
});

Deno.test("roofline copy probe copies every value, for each values-per-invocation", async () => {
  const gpu = await testGpu();
  const vec4s = 4096;
  const data = randArray(vec4s * 4, 9);
  const src = Tensor.fromArray(gpu, data, [vec4s * 4]);
  for (const per of [1, 4, 16]) {
    const out = Tensor.zeros(gpu, [vec4s * 4]);
    recordCopy(gpu, vec4s, per, src, out);
    assertClose(await out.read(), data, { rtol: 0, atol: 0 }, `copy ${per}`);
    out.dispose();
  }
  src.dispose();
});
