/**
 * SEAM's PCM beyond the generic op test (tests/ops_test.ts runs its unit): a 56x56 map (the
 * 3,136² affinity is never stored) against the f64 reference, shapes past llvmpipe's loop
 * budget (the kernels' pixel ranges), determinism, bad input.
 */
import { throws } from "node:assert";
import { Tensor } from "../src/gpu/tensor.ts";
import { createGpu } from "../src/io/gpu.ts";
import {
  camDNorm,
  pcm,
  PCM_LOOP_BUDGET,
  pcmBackward,
  pcmBackwardRef,
  pcmForward,
  pcmLoopTrips,
  pcmRanges,
  pcmRef,
} from "../src/ops/pcm.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

Deno.test("pcm: a 56x56 map under a 64 KiB binding cap matches the f64 reference", async () => {
  // One sample's features (4 x 3136 floats = 49 KiB) fit a binding; the affinity (39 MB)
  // would not: the kernels recompute it.
  const gpu = await createGpu({ maxBindingBytes: 65536 });
  try {
    const N = 2, C = 3, D = 4, h = 56, w = 56, HW = h * w;
    const f = randArray(N * D * HW, 5).map((v) => v + 0.2);
    const x = randArray(N * C * HW, 6, 0, 1);
    const dy = randArray(N * C * HW, 7);
    const feat = Tensor.fromArray(gpu, f, [N, D, h, w]);
    const cam = Tensor.fromArray(gpu, x, [N, C, h, w]);
    const dyT = Tensor.fromArray(gpu, dy, [N, C, h, w]);
    const r = pcmForward(gpu, feat, cam);
    const df = pcmBackward(gpu, feat, cam, r.fn, r.s, dyT);
    const [y, g] = [await r.y.read(), await df.read()];
    // Sample 1 against the reference (the f64 backward materialises the affinity).
    const f1 = Float64Array.from(f.subarray(D * HW));
    const x1 = Float64Array.from(x.subarray(C * HW));
    assertClose(y.subarray(C * HW), pcmRef(f1, x1, C, D, HW), { rtol: 1e-4, atol: 1e-6 }, "y");
    const gRef = pcmBackwardRef(f1, x1, Float64Array.from(dy.subarray(C * HW)), C, D, HW);
    const scale = gRef.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    assertClose(g.subarray(D * HW), gRef, { rtol: 1e-3, atol: 1e-4 * scale }, "dfeat");
    for (const t of [feat, cam, dyT, r.y, r.fn, r.s, df]) t.dispose();
  } finally {
    gpu.destroy();
  }
});

// llvmpipe ends an invocation's loops silently past 65535 iterations in all: a kernel looping
// over all HW pixels, with D + C inner trips each, returned ~0 here before the pixel ranges.
for (
  const [h, D, C, why] of [
    [48, 64, 21, "2304·85 = 196k trips in one pass; 2-3 ranges"],
    [26, 256, 64, "the maxima: full ranges of ~59.9k trips"],
  ] as const
) {
  Deno.test(`pcm: ${h}x${h}, D ${D}, C ${C} (${why}) matches the f64 reference`, async () => {
    const gpu = await testGpu();
    const HW = h * h;
    for (const k of ["pcm_fwd", "pcm_bwd_col", "pcm_bwd_feat"] as const) {
      const { fixed, perPixel } = pcmLoopTrips(k, C, D);
      const ranges = pcmRanges(k, C, D, HW);
      if (ranges.length < 2) throw new Error(`${k}: one range: the test misses the split`);
      for (const [i0, i1] of ranges) {
        if (fixed + (i1 - i0) * perPixel > PCM_LOOP_BUDGET) throw new Error(`${k}: over budget`);
      }
    }
    const f = randArray(D * HW, 11).map((v) => v + 0.3);
    const x = randArray(C * HW, 12, 0, 1);
    const dy = randArray(C * HW, 13);
    const feat = Tensor.fromArray(gpu, f, [1, D, h, h]);
    const cam = Tensor.fromArray(gpu, x, [1, C, h, h]);
    const dyT = Tensor.fromArray(gpu, dy, [1, C, h, h]);
    const r = pcmForward(gpu, feat, cam);
    const df = pcmBackward(gpu, feat, cam, r.fn, r.s, dyT);
    const [y, g] = [await r.y.read(), await df.read()];
    const [f64, x64] = [Float64Array.from(f), Float64Array.from(x)];
    assertClose(y, pcmRef(f64, x64, C, D, HW), { rtol: 1e-4, atol: 1e-6 }, "y");
    const gRef = pcmBackwardRef(f64, x64, Float64Array.from(dy), C, D, HW);
    const scale = gRef.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    assertClose(g, gRef, { rtol: 1e-3, atol: 1e-4 * scale }, "dfeat");
    for (const t of [feat, cam, dyT, r.y, r.fn, r.s, df]) t.dispose();
  });
}

Deno.test("pcm: deterministic (bitwise equal reruns)", async () => {
  const gpu = await testGpu();
  const feat = Tensor.fromArray(gpu, randArray(2 * 5 * 30, 1), [2, 5, 5, 6]);
  const cam = Tensor.fromArray(gpu, randArray(2 * 4 * 30, 2, 0, 1), [2, 4, 5, 6]);
  const dy = Tensor.fromArray(gpu, randArray(2 * 4 * 30, 3), [2, 4, 5, 6]);
  const runs: Float32Array[] = [];
  for (let k = 0; k < 2; k++) {
    const r = pcmForward(gpu, feat, cam);
    const df = pcmBackward(gpu, feat, cam, r.fn, r.s, dy);
    const y = await r.y.read();
    const g = await df.read();
    runs.push(Float32Array.of(...y, ...g));
    for (const t of [r.y, r.fn, r.s, df]) t.dispose();
  }
  if (runs[0].some((v, i) => !Object.is(v, runs[1][i]))) throw new Error("reruns differ");
  for (const t of [feat, cam, dy]) t.dispose();
});

Deno.test("pcm: bad input throws RangeError", async () => {
  const gpu = await testGpu();
  const feat = Tensor.zeros(gpu, [1, 4, 3, 3]);
  const cam = Tensor.zeros(gpu, [1, 2, 3, 4]);
  const many = Tensor.zeros(gpu, [1, 65, 3, 3]);
  const flat = Tensor.zeros(gpu, [4, 9]);
  throws(() => pcm(gpu, feat, cam), RangeError);
  throws(() => pcm(gpu, feat, many), RangeError);
  throws(() => pcm(gpu, flat, cam), RangeError);
  throws(() => camDNorm(gpu, flat), RangeError);
  for (const t of [feat, cam, many, flat]) t.dispose();
});
