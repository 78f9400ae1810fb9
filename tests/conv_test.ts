import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { Tape } from "../src/autograd/tape.ts";
import { Conv2d } from "../src/models/modules.ts";
import {
  conv2d,
  conv2dGradBias,
  conv2dGradBiasRef,
  conv2dGradInput,
  conv2dGradInputRef,
  conv2dGradWeight,
  conv2dGradWeightRef,
  type Conv2dOptions,
  conv2dRef,
  convOutSize,
  type ConvStyle,
  setConvStyle,
} from "../src/ops/conv.ts";
import { Rng } from "../src/rng.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  finiteDiff,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

interface Case {
  x: number[];
  w: number[];
  o: Conv2dOptions;
  bias?: boolean;
}

// Odd sizes (7x7, 13x17, batch 3, channel counts not multiples of 4), stride 2 and 3,
// dilation 2, padding, a 7x7 stride-2 stem, 1x1 (stride 1 goes through matmul, stride 2 leaves
// pixels no tap reaches), asymmetric geometry.
const CASES: Case[] = [
  { x: [2, 3, 7, 7], w: [5, 3, 3, 3], o: { padding: 1 }, bias: true },
  { x: [3, 5, 13, 17], w: [6, 5, 3, 3], o: { stride: 2, padding: 1 } },
  { x: [2, 4, 13, 17], w: [7, 4, 3, 3], o: { dilation: 2, padding: 2 }, bias: true },
  { x: [1, 3, 20, 22], w: [9, 3, 7, 7], o: { stride: 2, padding: 3 } },
  { x: [2, 6, 9, 11], w: [5, 6, 1, 1], o: { stride: 2 } },
  { x: [3, 6, 7, 9], w: [10, 6, 1, 1], o: {}, bias: true },
  { x: [2, 5, 10, 9], w: [4, 5, 3, 2], o: { stride: [2, 1], padding: [1, 0], dilation: [1, 2] } },
  { x: [1, 3, 12, 12], w: [17, 3, 3, 3], o: { stride: 3, padding: 2, dilation: 2 } },
];

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const square = (o: Conv2dOptions) =>
  ![o.stride, o.padding, o.dilation].some((v) => typeof v === "object");

function outShape(c: Case): number[] {
  const p = (v: Conv2dOptions["stride"], d: number) =>
    v === undefined ? [d, d] : typeof v === "number" ? [v, v] : v;
  const [s, q, d] = [p(c.o.stride, 1), p(c.o.padding, 0), p(c.o.dilation, 1)];
  return [
    c.x[0],
    c.w[0],
    convOutSize(c.x[2], c.w[2], s[0], q[0], d[0]),
    convOutSize(c.x[3], c.w[3], s[1], q[1], d[1]),
  ];
}

/** Runs all four GPU ops of a case and compares with the CPU references (f64). */
async function checkCase(gpu: GpuContext, c: Case, variant: "rb" | "naive", seed: number) {
  const x = randArray(size(c.x), seed);
  const w = randArray(size(c.w), seed + 1);
  const b = c.bias ? randArray(c.w[0], seed + 2) : null;
  const ys = outShape(c);
  const g = randArray(size(ys), seed + 3);
  const tx = Tensor.fromArray(gpu, x, c.x);
  const tw = Tensor.fromArray(gpu, w, c.w);
  const tb = b ? Tensor.fromArray(gpu, b, [c.w[0]]) : null;
  const tg = Tensor.fromArray(gpu, g, ys);
  const o = { ...c.o, variant };
  const what = `${variant} ${JSON.stringify(c)}`;
  const y = conv2d(gpu, tx, tw, tb, o);
  assertEquals(y.shape, ys, what);
  const dx = conv2dGradInput(gpu, tg, tw, c.x, o);
  const dw = conv2dGradWeight(gpu, tx, tg, c.w, o);
  const db = conv2dGradBias(gpu, tg);
  // f32 sums of up to a few hundred products of values in [-1, 1]: relative error (to the
  // largest magnitude) below 2e-6 in practice; the threshold is 1e-5.
  const tol = 1e-5;
  const checks: [string, Float32Array, Float64Array][] = [
    ["forward", await y.read(), conv2dRef(x, c.x, w, c.w, b, c.o)],
    ["grad input", await dx.read(), conv2dGradInputRef(g, w, c.x, c.w, c.o)],
    ["grad weight", await dw.read(), conv2dGradWeightRef(x, g, c.x, c.w, c.o)],
    ["grad bias", await db.read(), conv2dGradBiasRef(g, ys)],
  ];
  for (const [name, got, want] of checks) {
    const e = maxRelError(got, want);
    if (!(e < tol)) throw new Error(`${what}: ${name} relative error ${e} >= ${tol}`);
  }
  // Accumulating variants add onto what is there.
  conv2d(gpu, tx, tw, tb, { ...o, out: y, accumulate: true });
  conv2dGradInput(gpu, tg, tw, c.x, { ...o, out: dx, accumulate: true });
  conv2dGradWeight(gpu, tx, tg, c.w, { ...o, out: dw, accumulate: true });
  for (
    const [name, t, want] of [["forward", y, checks[0][2]], ["grad input", dx, checks[1][2]], [
      "grad weight",
      dw,
      checks[2][2],
    ]] as const
  ) {
    const e = maxRelError(await t.read(), want.map((v) => 2 * v));
    if (!(e < tol)) throw new Error(`${what}: accumulated ${name} relative error ${e}`);
  }
  for (const t of [tx, tw, tb, tg, y, dx, dw, db]) t?.dispose();
}

Deno.test("conv2d forward and backward match the CPU references", async (t) => {
  const gpu = await testGpu();
  const styles: ConvStyle[] = ["cpu", "gpu"];
  for (const style of styles) {
    await t.step(`register-blocked, ${style} blocks`, async () => {
      setConvStyle(gpu, style);
      try {
        for (const [i, c] of CASES.entries()) await checkCase(gpu, c, "rb", 100 * i);
      } finally {
        setConvStyle(gpu, null);
      }
    });
  }
  await t.step("naive reference kernels", async () => {
    for (const [i, c] of CASES.entries()) {
      if (square(c.o)) await checkCase(gpu, c, "naive", 100 * i + 7);
    }
  });
});

Deno.test("conv2d CPU backward agrees with central finite differences (f64)", () => {
  const cases: Case[] = [
    { x: [2, 3, 5, 6], w: [4, 3, 3, 3], o: { stride: 2, padding: 1 }, bias: true },
    { x: [1, 2, 7, 7], w: [3, 2, 3, 2], o: { dilation: 2, padding: [2, 1] }, bias: true },
    { x: [1, 2, 6, 5], w: [2, 2, 1, 1], o: { stride: 2 }, bias: true },
  ];
  for (const c of cases) {
    const x = Float64Array.from(randArray(size(c.x), 5));
    const w = Float64Array.from(randArray(size(c.w), 6));
    const b = Float64Array.from(randArray(c.w[0], 7));
    const ys = outShape(c);
    const g = randArray(size(ys), 8);
    const loss = (xv: Float64Array, wv: Float64Array, bv: Float64Array) =>
      conv2dRef(xv, c.x, wv, c.w, bv, c.o).reduce((s, v, i) => s + v * g[i], 0);
    const fx = finiteDiff((v) => loss(v, w, b), x);
    const fw = finiteDiff((v) => loss(x, v, b), w);
    const fb = finiteDiff((v) => loss(x, w, v), b);
    const pairs: [string, Float64Array, Float64Array][] = [
      ["dx", fx, conv2dGradInputRef(g, w, c.x, c.w, c.o)],
      ["dw", fw, conv2dGradWeightRef(x, g, c.x, c.w, c.o)],
      ["db", fb, conv2dGradBiasRef(g, ys)],
    ];
    // The loss is linear in each argument: differences are exact up to f64 rounding.
    for (const [name, fd, an] of pairs) {
      const e = maxRelError(fd, an);
      if (!(e < 1e-7)) throw new Error(`${JSON.stringify(c)}: ${name} FD error ${e}`);
    }
  }
});

Deno.test("conv2d splits past an artificial binding limit", async () => {
  // 1.5 KiB bindings (384 floats): images, output channels and input channels are split.
  const gpu = await createGpu({ maxBindingBytes: 1536, debug: true });
  try {
    const cases: Case[] = [
      { x: [3, 6, 7, 9], w: [10, 6, 3, 3], o: { padding: 1 }, bias: true },
      { x: [2, 5, 9, 8], w: [7, 5, 3, 3], o: { stride: 2, padding: 1 } },
      { x: [2, 6, 7, 9], w: [9, 6, 1, 1], o: {}, bias: true },
    ];
    for (const [i, c] of cases.entries()) {
      const before = gpu.dispatchCount;
      await checkCase(gpu, c, "rb", 50 + i);
      if (gpu.dispatchCount - before < 12) throw new Error(`${JSON.stringify(c)}: not split`);
    }
    const big = Tensor.zeros(gpu, [1, 3, 20, 20]);
    const w = Tensor.zeros(gpu, [2, 3, 3, 3]);
    assertThrows(() => conv2d(gpu, big, w, null), RangeError, "maxBindingBytes");
  } finally {
    gpu.destroy();
  }
});

Deno.test("Conv2d layer: torchvision names, Kaiming init, forward/backward", async () => {
  const gpu = await testGpu();
  const layer = new Conv2d(gpu, {
    name: "layer1.0.conv1",
    inChannels: 6,
    outChannels: 40,
    kernel: 3,
    stride: 2,
    padding: 1,
    bias: true,
    group: "head",
  }, new Rng(3));
  assertEquals(layer.params().map((p) => [p.name, p.group, p.decay]), [
    ["layer1.0.conv1.weight", "head", true],
    ["layer1.0.conv1.bias", "head", false],
  ]);
  assertEquals(layer.weight.value.shape, [40, 6, 3, 3]);
  // Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (40·9)) ≈ 0.0745 (2160 samples).
  const wv = await layer.weight.value.read();
  const mean = wv.reduce((s, v) => s + v, 0) / wv.length;
  const std = Math.sqrt(wv.reduce((s, v) => s + (v - mean) ** 2, 0) / wv.length);
  if (Math.abs(std / Math.sqrt(2 / 360) - 1) > 0.06 || Math.abs(mean) > 0.01) {
    throw new Error(`weight std ${std} / mean ${mean} not Kaiming (fan_out)`);
  }
  const bv = await layer.bias!.value.read();
  if (bv.some((v) => Math.abs(v) > 1 / Math.sqrt(54))) {
    throw new Error("bias out of ±1/sqrt(fan_in)");
  }
  const xs = [2, 6, 9, 7];
  const x = randArray(size(xs), 9);
  const tx = Tensor.fromArray(gpu, x, xs);
  const tape0 = new Tape(gpu, layer.params());
  const y = layer.forward(tx, tape0);
  tape0.dispose();
  const o = { stride: 2, padding: 1 };
  assertEquals(y.shape, [2, 40, 5, 4]);
  assertClose(await y.read(), conv2dRef(x, xs, wv, [40, 6, 3, 3], bv, o), {
    rtol: 1e-4,
    atol: 1e-5,
  });
  const g = randArray(y.size, 10);
  const dy = Tensor.fromArray(gpu, g, y.shape);
  const dxRef = conv2dGradInputRef(g, wv, xs, [40, 6, 3, 3], o);
  const dwRef = conv2dGradWeightRef(x, g, xs, [40, 6, 3, 3], o);
  const dbRef = conv2dGradBiasRef(g, y.shape);
  // Gradients accumulate across backward passes until zeroGrads: 1x, 2x, then 1x again.
  for (const [rep, zero, k] of [[0, true, 1], [1, false, 2], [2, true, 1]] as const) {
    if (zero) zeroGrads(layer.params());
    const tape = new Tape(gpu, layer.params());
    tape.watch(tx);
    const yr = layer.forward(tx, tape);
    const [dx] = tape.backward([[yr, dy.retain()]], [tx]);
    yr.dispose();
    assertEquals(tape.length, 0, "tape released");
    assertClose(await dx!.read(), dxRef, { rtol: 1e-4, atol: 1e-5 }, `dx (pass ${rep})`);
    assertClose(await layer.weight.grad.read(), dwRef.map((v) => k * v), {
      rtol: 1e-4,
      atol: 1e-4,
    }, `dw (pass ${rep})`);
    assertClose(await layer.bias!.grad.read(), dbRef.map((v) => k * v), {
      rtol: 1e-4,
      atol: 1e-5,
    }, `db (pass ${rep})`);
    dx!.dispose();
  }
  // An input that needs no gradient (the image) gets none: only the parameter gradients run.
  zeroGrads(layer.params());
  const t3 = new Tape(gpu, layer.params());
  const y3 = layer.forward(tx, t3);
  const before = gpu.dispatchCount;
  const [none] = t3.backward([[y3, dy.retain()]], [tx]);
  assertEquals(none, null, "no input gradient for an input that needs none");
  const paramOnly = gpu.dispatchCount - before;
  const t4 = new Tape(gpu, layer.params());
  t4.watch(tx);
  const y4 = layer.forward(tx, t4);
  const before4 = gpu.dispatchCount;
  t4.backward([[y4, dy.retain()]], [tx])[0]!.dispose();
  if (!(gpu.dispatchCount - before4 > paramOnly)) {
    throw new Error("the input gradient should cost dispatches of its own");
  }
  assertClose(await layer.weight.grad.read(), dwRef.map((v) => 2 * v), {
    rtol: 1e-4,
    atol: 1e-4,
  }, "dw after a params-only pass and a full pass");
  [y, y3, y4].forEach((t) => t.dispose());
  assertEquals(tx.disposed, false, "the caller's input survives ctx release");
});

Deno.test("conv2d rejects bad input with clear errors", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [1, 3, 5, 5]);
  assertThrows(() => conv2d(gpu, x, Tensor.zeros(gpu, [4, 2, 3, 3]), null), RangeError, "channels");
  assertThrows(() => conv2d(gpu, x, Tensor.zeros(gpu, [4, 3, 7, 7]), null), RangeError, "fit");
  const w = Tensor.zeros(gpu, [4, 3, 3, 3]);
  assertThrows(() => conv2d(gpu, x, w, null, { stride: 0 }), RangeError, "stride");
  assertThrows(() => conv2d(gpu, x, w, Tensor.zeros(gpu, [3]), {}), RangeError, "bias");
  assertThrows(() => conv2d(gpu, Tensor.zeros(gpu, [3, 5, 5]), w, null), RangeError, "NCHW");
  assertThrows(
    () => conv2dGradInput(gpu, Tensor.zeros(gpu, [1, 4, 4, 4]), w, [1, 3, 5, 5]),
    RangeError,
    "dy must be [1,4,3,3]",
  );
  assertThrows(
    () => new Conv2d(gpu, { name: "c", inChannels: 0, outChannels: 2, kernel: 3 }, new Rng(1)),
    RangeError,
    "inChannels",
  );
});
