/**
 * CAM inference kernels against TypeScript references: horizontal flip, the fused
 * ReLU + bilinear resize + un-flip + sum accumulation, per-class max normalisation, and the
 * whole multi-scale + flip fusion on a tiny random model against per-scale forwards combined
 * on the CPU. Odd sizes throughout; a context with a tiny binding cap forces chunking.
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { createModel } from "../src/models/cam_net.ts";
import {
  accumulateCam,
  accumulateCamRef,
  flipHorizontal,
  flipHorizontalRef,
  normalizeTagged,
  normalizeTaggedRef,
} from "../src/cam/fuse.ts";
import { recordImageCams } from "../src/cam/image.ts";
import { pseudoMaskFromNormalized } from "../src/cam/pseudo_mask.ts";
import { pseudoMaskRef, upsampleBilinearRef } from "../src/eval/cam.ts";
import { resizeBilinearRef } from "../src/ops/resize.ts";
import { Rng } from "../src/rng.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

let small: Promise<GpuContext> | null = null;
/** A debug context whose storage bindings hold at most 2 KiB (512 floats): forces chunks. */
function smallGpu(): Promise<GpuContext> {
  small ??= createGpu({ debug: true, maxBindingBytes: 2048 });
  return small;
}

const FLIP_SHAPES: [number, number, number, number][] = [
  [1, 1, 1, 1],
  [2, 3, 5, 7],
  [3, 2, 9, 13],
  [1, 4, 6, 1],
];

Deno.test("cam: flipHorizontal equals the TS reference (odd sizes, offsets, chunked)", async () => {
  for (const gpu of [await testGpu(), await smallGpu()]) {
    for (const [i, shape] of FLIP_SHAPES.entries()) {
      const n = shape.reduce((a, b) => a * b, 1);
      const data = randArray(n, 10 + i);
      const x = Tensor.fromArray(gpu, data, shape);
      const y = flipHorizontal(gpu, x);
      assertEquals([...await y.read()], [...flipHorizontalRef(data, shape)], `flip [${shape}]`);
      // Into the second half of a pair, as CAM inference builds [image, flipped image].
      const pair = Tensor.zeros(gpu, [2 * shape[0], ...shape.slice(1)]);
      flipHorizontal(gpu, x, { out: pair, outOffset: n });
      const got = await pair.read();
      assertEquals([...got.subarray(0, n)], new Array(n).fill(0), "first half untouched");
      assertEquals([...got.subarray(n)], [...flipHorizontalRef(data, shape)], "second half");
      // Flipping twice is the identity.
      assertEquals([...await flipHorizontal(gpu, y).read()], [...data], "flip twice");
      for (const t of [x, y, pair]) t.dispose();
    }
  }
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [1, 1, 2, 3]);
  assertThrows(() => flipHorizontal(gpu, x, { out: x }), RangeError, "alias");
  assertThrows(() => flipHorizontal(gpu, x, { outOffset: 1 }), RangeError, "does not fit");
  assertThrows(() => flipHorizontal(gpu, Tensor.zeros(gpu, [2, 3])), RangeError, "NCHW");
});

/** [B, C, h, w] → [C, H, W] cases: upsampling, downsampling, identity, from 1x1. */
const ACC_CASES: { cam: [number, number, number, number]; out: [number, number] }[] = [
  { cam: [2, 3, 5, 7], out: [17, 23] },
  { cam: [2, 2, 9, 11], out: [4, 5] },
  { cam: [1, 4, 6, 6], out: [6, 6] },
  { cam: [2, 3, 1, 1], out: [3, 2] },
  { cam: [2, 5, 4, 3], out: [8, 9] },
];

Deno.test("cam: accumulateCam equals the TS reference (add/overwrite, mirror, chunked)", async () => {
  for (const gpu of [await testGpu(), await smallGpu()]) {
    for (const [i, { cam: cs, out }] of ACC_CASES.entries()) {
      const [B, C] = cs;
      const camData = randArray(cs.reduce((a, b) => a * b, 1), 20 + i, -1, 2);
      const accShape = [C, out[0], out[1]];
      const init = randArray(C * out[0] * out[1], 40 + i);
      const cam = Tensor.fromArray(gpu, camData, cs);
      for (const index of [0, B - 1]) {
        for (const mirror of [false, true]) {
          for (const add of [false, true]) {
            const acc = Tensor.fromArray(gpu, init, accShape);
            accumulateCam(gpu, cam, acc, { index, mirror, add });
            const ref = accumulateCamRef(camData, cs, init.slice(), accShape, {
              index,
              mirror,
              add,
            });
            assertClose(await acc.read(), ref, { rtol: 1e-5, atol: 1e-6 }, `[${cs}]→[${out}]`);
            acc.dispose();
          }
        }
      }
      // Overwrite mode ignores the old content, and without add/mirror it is the eval's
      // independent upsampling reference of relu(cam[0]).
      const acc = Tensor.fromArray(gpu, init, accShape);
      accumulateCam(gpu, cam, acc, { add: false });
      const up = upsampleBilinearRef(camData, C, cs[2], cs[3], out[0], out[1], true);
      assertClose(await acc.read(), up, { rtol: 1e-5, atol: 1e-6 }, "vs eval upsampling");
      acc.dispose();
      cam.dispose();
    }
  }
  const gpu = await testGpu();
  const cam = Tensor.zeros(gpu, [2, 3, 4, 4]);
  assertThrows(
    () => accumulateCam(gpu, cam, Tensor.zeros(gpu, [2, 4, 4])),
    RangeError,
    "[3, H, W]",
  );
  assertThrows(
    () => accumulateCam(gpu, cam, Tensor.zeros(gpu, [3, 4, 4]), { index: 2 }),
    RangeError,
    "batch index",
  );
});

Deno.test("cam: normalizeTagged equals the TS reference; pseudo masks match eval's", async () => {
  for (const gpu of [await testGpu(), await smallGpu()]) {
    const C = 5, H = 13, W = 17, n = H * W;
    const data = randArray(C * n, 7, 0, 3);
    data.fill(0, 2 * n, 3 * n); // an all-zero map normalises to 0, not NaN
    const acc = Tensor.fromArray(gpu, data, [C, H, W]);
    for (const tags of [[0], [1, 2, 4], [0, 1, 2, 3, 4]]) {
      const t = normalizeTagged(gpu, acc, tags);
      const got = await t.read();
      const ref = normalizeTaggedRef(data, n, tags);
      // Stated tolerance: WGSL lets an f32 division be 2.5 ulp off (2.5 · 2^-23 < 3e-7
      // relative); the denominator (max + 1e-5) is one f32 addition on both sides.
      assertClose(got, ref, { rtol: 3e-7, atol: 0 }, `normalize tags [${tags}]`);
      t.dispose();
      // The pseudo mask from normalised maps equals the evaluation's reference (which
      // normalises the unrestricted maps itself), for several thresholds.
      for (const bg of [0, 0.15, 0.5, 0.99]) {
        assertEquals(
          [...pseudoMaskFromNormalized(ref, tags, n, bg)],
          [...pseudoMaskRef(data, C, n, tags, bg)],
          `pseudo mask tags [${tags}] bg ${bg}`,
        );
      }
    }
    assertThrows(() => normalizeTagged(gpu, acc, [2, 1]), RangeError, "sorted");
    assertThrows(() => normalizeTagged(gpu, acc, [5]), RangeError, "outside");
    assertThrows(() => normalizeTagged(gpu, acc, []), RangeError, "no tags");
    acc.dispose();
  }
});

Deno.test("cam: multi-scale + flip fusion equals per-scale forwards summed on the CPU", async () => {
  const gpu = await testGpu();
  const C = 4;
  const model = createModel(gpu, { arch: "tiny", numClasses: C, outputStride: 8, seed: 5 });
  const rng = new Rng(3);
  for (const [H, W] of [[37, 29]]) {
    const img = Float32Array.from({ length: 3 * H * W }, () => rng.uniform(-2, 2));
    const x = Tensor.fromArray(gpu, img, [1, 3, H, W]);
    const scales = [0.5, 1.5];
    for (const flip of [false, true]) {
      const acc = recordImageCams(gpu, model, x, { scales, flip });
      const got = await acc.read();
      acc.dispose();
      // Reference: every (scale, flip) variant resized and flipped on the CPU, run through
      // the model one image at a time, its maps ReLU'd + upsampled + un-flipped on the CPU.
      const want = new Float32Array(C * H * W);
      for (const s of scales) {
        const sh = Math.max(1, Math.round(H * s)), sw = Math.max(1, Math.round(W * s));
        const base = sh === H && sw === W
          ? img
          : resizeBilinearRef(img, [1, 3, H, W], { size: [sh, sw] });
        for (const flipped of flip ? [false, true] : [false]) {
          const input = flipped ? flipHorizontalRef(base, [1, 3, sh, sw]) : base;
          const xi = Tensor.fromArray(gpu, input, [1, 3, sh, sw]);
          const { cam, logits } = model.forward(xi, null);
          const [, , h, w] = cam.shape;
          let up = upsampleBilinearRef(await cam.read(), C, h, w, H, W, true);
          if (flipped) up = flipHorizontalRef(up, [1, C, H, W]);
          for (let i = 0; i < up.length; i++) want[i] += up[i];
          for (const t of [xi, cam, logits]) t.dispose();
        }
      }
      const err = maxRelError(got, want);
      if (!(err < 2e-4)) throw new Error(`${H}x${W} flip=${flip}: max rel error ${err}`);
      if (!(Math.max(...want) > 0)) throw new Error("degenerate test: all CAMs are zero");
    }
    x.dispose();
  }
  assertThrows(
    () => recordImageCams(gpu, model, Tensor.zeros(gpu, [2, 3, 8, 8])),
    RangeError,
    "[1, 3, H, W]",
  );
  assertThrows(
    () => recordImageCams(gpu, model, Tensor.zeros(gpu, [1, 3, 8, 8]), { scales: [0] }),
    RangeError,
    "scale",
  );
});
