import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import {
  batchNormApplyRef,
  batchNormBackward,
  batchNormBackwardRef,
  batchNormForward,
  batchNormStatsRef,
  type BatchNormTensors,
} from "../src/ops/batchnorm.ts";
import { BatchNorm2d, ReLU } from "../src/models/modules.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { Tape } from "../src/autograd/tape.ts";
import { add } from "../src/autograd/functions.ts";
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
const EPS = 1e-5;

/** f64 training forward (batch statistics) through the op's references. */
const refTrain = (x: ArrayLike<number>, s: Shape, g: ArrayLike<number>, b: ArrayLike<number>) => {
  const { mean, var: vr } = batchNormStatsRef(x, s);
  return batchNormApplyRef(x, s, mean, vr, g, b, EPS);
};

/** The op's f64 backward reference (batch statistics when `train`, else running stats). */
function refBackward(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: Shape,
  g: ArrayLike<number>,
  train: boolean,
  rm?: ArrayLike<number>,
  rv?: ArrayLike<number>,
) {
  const r = batchNormBackwardRef(x, dy, s, g, {
    training: train,
    runningMean: rm,
    runningVar: rv,
    eps: EPS,
  });
  return { dx: r.dx, dg: r.dweight, db: r.dbias };
}

function makeParams(gpu: GpuContext, c: number, seed: number) {
  const host = {
    weight: randArray(c, seed, 0.5, 1.5),
    bias: randArray(c, seed + 1, -0.5, 0.5),
    runningMean: randArray(c, seed + 2, -0.2, 0.2),
    runningVar: randArray(c, seed + 3, 0.5, 2),
  };
  const dev: BatchNormTensors = {
    weight: Tensor.fromArray(gpu, host.weight, [c]),
    bias: Tensor.fromArray(gpu, host.bias, [c]),
    runningMean: Tensor.fromArray(gpu, host.runningMean, [c]),
    runningVar: Tensor.fromArray(gpu, host.runningVar, [c]),
  };
  return { host, dev };
}

// The last has planes over 4096 pixels (the kernels' wide-workgroup path).
const SHAPES: Shape[] = [[3, 5, 7, 7], [2, 3, 13, 17], [1, 6, 1, 3], [2, 2, 65, 67]];

/** Random input with a per-channel offset so the mean is far from 0 (tests stability). */
function input(s: Shape, seed: number): Float32Array {
  const x = randArray(s[0] * s[1] * s[2] * s[3], seed, -2, 2);
  const hw = s[2] * s[3];
  for (let j = 0; j < x.length; j++) x[j] += 3 * (Math.floor(j / hw) % s[1]) - 4;
  return x;
}

async function checkTrainForward(gpu: GpuContext, s: Shape, seed: number) {
  const x = input(s, seed);
  const { host, dev } = makeParams(gpu, s[1], seed + 10);
  const tx = Tensor.fromArray(gpu, x, s);
  const { y, stats } = batchNormForward(gpu, tx, dev, { training: true, momentum: 0.1 });
  const want = refTrain(x, s, host.weight, host.bias);
  assertClose(await y.read(), want, { rtol: 1e-4, atol: 1e-4 }, `y ${s}`);
  const { mean, var: vr } = batchNormStatsRef(x, s);
  const m = s[0] * s[2] * s[3];
  assertClose(await stats.mean.read(), mean, { rtol: 1e-5, atol: 1e-5 }, "batch mean");
  assertClose(
    await stats.stat.read(),
    vr.map((v) => 1 / Math.sqrt(v + EPS)),
    { rtol: 1e-4, atol: 1e-5 },
    "inv std",
  );
  assertClose(
    await dev.runningMean.read(),
    host.runningMean.map((r, k) => 0.9 * r + 0.1 * mean[k]),
    { rtol: 1e-5, atol: 1e-6 },
    "running mean",
  );
  assertClose(
    await dev.runningVar.read(),
    host.runningVar.map((r, k) => 0.9 * r + 0.1 * vr[k] * m / (m - 1)),
    { rtol: 1e-4, atol: 1e-6 },
    "running var (unbiased)",
  );
  for (const t of [tx, y, stats.mean, stats.stat, ...Object.values(dev)]) t.dispose();
}

Deno.test("batchnorm training forward and running stats match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const [i, s] of SHAPES.entries()) await checkTrainForward(gpu, s, 100 + i);
});

Deno.test("batchnorm eval forward uses running statistics", async () => {
  const gpu = await testGpu();
  const s: Shape = [3, 5, 7, 7];
  const x = input(s, 7);
  const { host, dev } = makeParams(gpu, s[1], 8);
  const tx = Tensor.fromArray(gpu, x, s);
  const { y, stats } = batchNormForward(gpu, tx, dev, { training: false });
  const want = batchNormApplyRef(x, s, host.runningMean, host.runningVar, host.weight, host.bias);
  assertClose(await y.read(), want, { rtol: 1e-5, atol: 1e-4 }, "eval y");
  assertClose(await dev.runningMean.read(), host.runningMean, { rtol: 0, atol: 0 }, "untouched");
  for (const t of [tx, y, stats.mean, stats.stat, ...Object.values(dev)]) t.dispose();
});

Deno.test("batchnorm backward: finite differences (f64) and GPU vs CPU analytic", async () => {
  const gpu = await testGpu();
  // CPU analytic vs central differences of L = Σ y·w on a small shape, all three modes.
  const s: Shape = [2, 3, 3, 5];
  const n = s[0] * s[1] * s[2] * s[3];
  const x = Float64Array.from(input(s, 21));
  const w = Float64Array.from(randArray(n, 22));
  const g = Float64Array.from(randArray(s[1], 23, 0.5, 1.5));
  const b = Float64Array.from(randArray(s[1], 24));
  const rm = Float64Array.from(randArray(s[1], 25));
  const rv = Float64Array.from(randArray(s[1], 26, 0.5, 2));
  const dot = (y: Float64Array) => y.reduce((a, v, i) => a + v * w[i], 0);
  for (const train of [true, false]) {
    const fwd = (xx: Float64Array, gg: Float64Array, bb: Float64Array) =>
      train ? refTrain(xx, s, gg, bb) : batchNormApplyRef(xx, s, rm, rv, gg, bb);
    const an = refBackward(x, w, s, g, train, rm, rv);
    const fx = finiteDiff((v) => dot(fwd(v, g, b)), x.slice());
    const fg = finiteDiff((v) => dot(fwd(x, v, b)), g.slice());
    const fb = finiteDiff((v) => dot(fwd(x, g, v)), b.slice());
    const tol = 1e-6;
    for (const [name, a, f] of [["dx", an.dx, fx], ["dg", an.dg, fg], ["db", an.db, fb]] as const) {
      const e = maxRelError(a, f);
      if (!(e < tol)) throw new Error(`${name} (train ${train}): finite-diff rel error ${e}`);
    }
  }
  // GPU vs CPU analytic on odd shapes (relative error < 1e-4 of the largest value).
  for (const [i, sh] of SHAPES.entries()) {
    for (const train of [true, false]) {
      const xs = input(sh, 30 + i);
      const dys = randArray(xs.length, 40 + i);
      const { host, dev } = makeParams(gpu, sh[1], 50 + i);
      const tx = Tensor.fromArray(gpu, xs, sh);
      const tdy = Tensor.fromArray(gpu, dys, sh);
      const { y, stats } = batchNormForward(gpu, tx, dev, { training: train });
      const grads = { weight: Tensor.empty(gpu, [sh[1]]), bias: Tensor.empty(gpu, [sh[1]]) };
      const dx = batchNormBackward(gpu, tx, tdy, dev, stats, { grads });
      // The running stats were updated by the training forward; reference uses pre-update ones.
      const ref = refBackward(xs, dys, sh, host.weight, train, host.runningMean, host.runningVar);
      const tag = `${sh} train=${train}`;
      for (
        const [name, got, want] of [
          ["dx", await dx.read(), ref.dx],
          ["dweight", await grads.weight.read(), ref.dg],
          ["dbias", await grads.bias.read(), ref.db],
        ] as const
      ) {
        const e = maxRelError(got, want);
        if (!(e < 1e-4)) throw new Error(`${name} ${tag}: GPU vs CPU rel error ${e}`);
      }
      // Frozen affine: same dx, no grads written.
      const dx2 = batchNormBackward(gpu, tx, tdy, dev, stats);
      assertClose(
        await dx2.read(),
        await dx.read(),
        { rtol: 1e-6, atol: 1e-7 },
        `dx no grads ${tag}`,
      );
      for (const t of [tx, tdy, y, dx, dx2, stats.mean, stats.stat, grads.weight, grads.bias]) {
        t.dispose();
      }
      Object.values(dev).forEach((t) => t.dispose());
    }
  }
});

Deno.test("batchnorm splits past a small binding limit", async () => {
  // 2 KiB bindings: 512 floats; with 64-float offset alignment a 13x17 plane (221 floats)
  // chunk holds one or two planes, so 15 planes take 8+ chunks.
  const gpu = await createGpu({ maxBindingBytes: 2048, debug: true });
  try {
    const s: Shape = [3, 5, 13, 17];
    const xs = input(s, 60);
    const dys = randArray(xs.length, 61);
    const { host, dev } = makeParams(gpu, s[1], 62);
    const tx = Tensor.fromArray(gpu, xs, s);
    const tdy = Tensor.fromArray(gpu, dys, s);
    const d0 = gpu.dispatchCount;
    const { y, stats } = batchNormForward(gpu, tx, dev, { training: true });
    // >= 8 stats chunks + 1 merge + 7 apply chunks (3315 floats in 512-float bindings).
    if (gpu.dispatchCount - d0 < 16) throw new Error(`not split: ${gpu.dispatchCount - d0}`);
    assertClose(await y.read(), refTrain(xs, s, host.weight, host.bias), {
      rtol: 1e-4,
      atol: 1e-4,
    }, "split y");
    const grads = { weight: Tensor.empty(gpu, [s[1]]), bias: Tensor.empty(gpu, [s[1]]) };
    const dx = batchNormBackward(gpu, tx, tdy, dev, stats, { grads });
    const ref = refBackward(xs, dys, s, host.weight, true);
    const e = Math.max(
      maxRelError(await dx.read(), ref.dx),
      maxRelError(await grads.weight.read(), ref.dg),
      maxRelError(await grads.bias.read(), ref.db),
    );
    if (!(e < 1e-4)) throw new Error(`split backward rel error ${e}`);
    // A plane larger than one binding is a clear error.
    const big = Tensor.zeros(gpu, [1, 2, 23, 23]);
    assertThrows(
      () => batchNormForward(gpu, big, makeParams(gpu, 2, 1).dev, { training: true }),
      RangeError,
      "does not fit the storage binding limit",
    );
  } finally {
    gpu.destroy();
  }
});

Deno.test("BatchNorm2d layer: names, modes, running stats over steps, frozen mode", async () => {
  const gpu = await testGpu();
  const s: Shape = [3, 6, 5, 7];
  const bn = new BatchNorm2d(gpu, 6, "layer1.0.bn1");
  assertEquals(bn.params().map((p) => p.name), ["layer1.0.bn1.weight", "layer1.0.bn1.bias"]);
  assertEquals(bn.buffers().map((b) => b.name), [
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
  ]);
  let rm = new Float64Array(6);
  let rv = new Float64Array(6).fill(1);
  const m = s[0] * s[2] * s[3];
  for (let step = 0; step < 3; step++) {
    const xs = input(s, 70 + step);
    const x = Tensor.fromArray(gpu, xs, s);
    zeroGrads(bn.params());
    const tape = new Tape(gpu, bn.params());
    const y = bn.forward(x, tape);
    const { mean, var: vr } = batchNormStatsRef(xs, s);
    rm = rm.map((r, k) => 0.9 * r + 0.1 * mean[k]);
    rv = rv.map((r, k) => 0.9 * r + 0.1 * vr[k] * m / (m - 1));
    const dy = Tensor.fromArray(gpu, randArray(xs.length, 80 + step), s);
    tape.backward([[y, dy.retain()]]);
    assertEquals(tape.length, 0, "backward releases the tape");
    const ref = refBackward(xs, await dy.read(), s, new Float64Array(6).fill(1), true);
    const e = maxRelError(await bn.weight.grad.read(), ref.dg);
    if (!(e < 1e-4)) throw new Error(`layer dweight rel error ${e}`);
    [x, y, dy].forEach((t) => t.dispose());
  }
  assertClose(await bn.runningMean.value.read(), rm, { rtol: 1e-5, atol: 1e-6 }, "running mean");
  assertClose(await bn.runningVar.value.read(), rv, { rtol: 1e-4, atol: 1e-6 }, "running var");

  // Frozen (psa): running statistics in training, running stats untouched, affine frozen.
  const fz = new BatchNorm2d(gpu, 6, "bn", { frozen: true, affineTrainable: false });
  assertEquals(fz.params().length, 0);
  assertEquals(fz.buffers().map((b) => b.name), [
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
  ]);
  fz.runningMean.value.write(Float32Array.from(rm));
  fz.runningVar.value.write(Float32Array.from(rv));
  const xs = input(s, 90);
  const x = Tensor.fromArray(gpu, xs, s);
  const tape = new Tape(gpu, fz.params());
  tape.watch(x);
  const y = fz.forward(x, tape);
  const ones = new Float64Array(6).fill(1);
  assertClose(await y.read(), batchNormApplyRef(xs, s, rm, rv, ones, new Float64Array(6)), {
    rtol: 1e-5,
    atol: 1e-4,
  }, "frozen y");
  const dy = Tensor.fromArray(gpu, randArray(xs.length, 91), s);
  const [dx] = tape.backward([[y, dy.retain()]], [x]);
  const ref = refBackward(xs, await dy.read(), s, ones, false, rm, rv);
  const e = maxRelError(await dx!.read(), ref.dx);
  if (!(e < 1e-5)) throw new Error(`frozen dx rel error ${e}`);
  assertClose(await fz.runningMean.value.read(), rm, { rtol: 1e-6, atol: 1e-7 }, "frozen rm");
  [x, y, dy, dx!].forEach((t) => t.dispose());

  assertThrows(
    () => bn.forward(Tensor.zeros(gpu, [2, 5, 3, 3]), null),
    RangeError,
    "weight has shape [6], expected [5]",
  );
  assertThrows(
    () => bn.forward(Tensor.zeros(gpu, [1, 6, 1, 1]), new Tape(gpu)),
    RangeError,
    "more than 1 value per channel",
  );
});

Deno.test("BatchNorm2d → in-place ReLU → residual add: forward and backward", async () => {
  const gpu = await testGpu();
  const s: Shape = [2, 3, 5, 7];
  const n = 210;
  const xs = input(s, 300);
  const skip = randArray(n, 301);
  const dys = randArray(n, 302);
  const bn = new BatchNorm2d(gpu, 3, "bn");
  const relu = new ReLU({ inplace: true });
  const x = Tensor.fromArray(gpu, xs, s);
  const sk = Tensor.fromArray(gpu, skip, s);
  const tape = new Tape(gpu);
  tape.watch(x);
  tape.watch(sk);
  const h = bn.forward(x, tape);
  const r = relu.forward(h, tape);
  assertEquals(r.buffer, h.buffer, "in-place ReLU writes over its input");
  const y = add(tape, r, sk, { relu: true });
  // Reference: f64 chain and its gradient through add_relu, relu and batchnorm.
  const ones = new Float64Array(3).fill(1);
  const hv = refTrain(xs, s, ones, new Float64Array(3));
  const rv = hv.map((v) => Math.max(v, 0));
  const yv = rv.map((v, i) => Math.max(v + skip[i], 0));
  assertClose(await y.read(), yv, { rtol: 1e-4, atol: 1e-4 }, "chain y");
  const dy = Tensor.fromArray(gpu, dys, s);
  // sk's gradient is add_relu's; h's (kept before the in-place ReLU) is the ReLU's input grad.
  const [dz, dr, dx] = tape.backward([[y, dy.retain()]], [sk, h, x]);
  const dzv = Float64Array.from(dys, (g, i) => (yv[i] > 0 ? g : 0));
  assertClose(await dz!.read(), dzv, { rtol: 0, atol: 0 }, "add_relu grad (both branches)");
  const drv = dzv.map((g, i) => (rv[i] > 0 ? g : 0));
  assertClose(await dr!.read(), drv, { rtol: 0, atol: 0 }, "relu grad from the saved output");
  const e = maxRelError(await dx!.read(), refBackward(xs, drv, s, ones, true).dx);
  if (!(e < 1e-4)) throw new Error(`chain dx rel error ${e}`);
  const t2 = new Tape(gpu);
  t2.watch(x);
  t2.watch(sk);
  const y2 = add(t2, x, sk);
  assertClose(await y2.read(), xs.map((v, i) => v + skip[i]), { rtol: 1e-6, atol: 1e-6 }, "add");
  const [d2a, d2b] = t2.backward([[y2, dy.retain()]], [x, sk]);
  assertClose(await d2a!.read(), dys, { rtol: 0, atol: 0 }, "add grad (a)");
  assertClose(await d2b!.read(), dys, { rtol: 0, atol: 0 }, "add grad (b)");
  [x, sk, h, r, y, dy, dz!, dr!, dx!, y2, d2a!, d2b!].forEach((t) => t.dispose());
  assertEquals(relu.params().length, 0);
});

Deno.test("BatchNorm2d with the fused ReLU equals BatchNorm2d → in-place ReLU bit for bit", async () => {
  const gpu = await testGpu();
  const s: Shape = [2, 3, 9, 11];
  const c = s[1];
  const xs = input(s, 400);
  const dys = randArray(xs.length, 401);
  const host = makeParams(gpu, c, 402).host;
  // Training (batch statistics), psa's frozen mode with trainable and with frozen affine
  // parameters, and eval (no tape).
  const modes = [
    { name: "train", frozen: false, affineTrainable: true, tape: true },
    { name: "frozen", frozen: true, affineTrainable: true, tape: true },
    { name: "frozen affine", frozen: true, affineTrainable: false, tape: true },
    { name: "eval", frozen: false, affineTrainable: true, tape: false },
  ];
  try {
    for (const m of modes) {
      const run = async (fused: boolean) => {
        const bn = new BatchNorm2d(gpu, c, "bn", { ...m, relu: fused });
        bn.weight.value.write(host.weight);
        bn.bias.value.write(host.bias);
        bn.runningMean.value.write(host.runningMean);
        bn.runningVar.value.write(host.runningVar);
        const x = Tensor.fromArray(gpu, xs, s);
        const tape = m.tape ? new Tape(gpu, bn.params()) : null;
        tape?.watch(x);
        zeroGrads(bn.params());
        const d0 = gpu.dispatchCount;
        const h = bn.forward(x, tape);
        const y = fused ? h.retain() : new ReLU({ inplace: true }).forward(h, tape);
        const entries = tape?.length ?? 0;
        const dy = Tensor.fromArray(gpu, dys, s);
        const [dx] = tape ? tape.backward([[y, dy.retain()]], [x]) : [null];
        const out = {
          y: await y.read(),
          dx: dx ? await dx.read() : null,
          dweight: m.tape && m.affineTrainable ? await bn.weight.grad.read() : null,
          dbias: m.tape && m.affineTrainable ? await bn.bias.grad.read() : null,
          runningMean: await bn.runningMean.value.read(),
          runningVar: await bn.runningVar.value.read(),
          entries,
          dispatches: gpu.dispatchCount - d0,
        };
        [x, h, y, dy].forEach((t) => t.dispose());
        dx?.dispose();
        for (const p of [...bn.params(), ...bn.buffers()]) p.value.dispose();
        for (const p of bn.params()) p.grad.dispose();
        return out;
      };
      const fused = await run(true);
      const plain = await run(false);
      for (const k of ["y", "dx", "dweight", "dbias", "runningMean", "runningVar"] as const) {
        const a = fused[k];
        const b = plain[k];
        assertEquals(a === null, b === null, `${m.name} ${k} present`);
        if (a && b) assertClose(a, b, { rtol: 0, atol: 0 }, `${m.name} ${k}`);
      }
      assertEquals(fused.y.some((v) => v === 0) && fused.y.some((v) => v > 0), true, "both sides");
      // One tape entry instead of two; no ReLU forward dispatch and no relu_bwd dispatch.
      if (m.tape) assertEquals([fused.entries, plain.entries], [1, 2], `${m.name} entries`);
      assertEquals(plain.dispatches - fused.dispatches, m.tape ? 2 : 1, `${m.name} dispatches`);
    }
  } finally {
    gpu.destroy();
  }
});
