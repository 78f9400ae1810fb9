/**
 * The gradient tape: fan-out sums (a residual input, a weight used twice as in a siamese
 * network), parameter gradients that accumulate until zeroGrads, unreached parameters
 * zeroed, in-place chains, no recording without a gradient to compute, and saved tensors
 * released by backward. Values are checked against f64 references of the composed ops.
 */
import { Tensor } from "../src/gpu/tensor.ts";
import { type Param, zeroGrads } from "../src/autograd/param.ts";
import { Tape } from "../src/autograd/tape.ts";
import * as F from "../src/autograd/functions.ts";
import { Conv2d } from "../src/models/modules.ts";
import { conv2dGradInputRef, conv2dGradWeightRef, conv2dRef } from "../src/ops/conv.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertEquals, assertThrows, randArray, testGpu } from "./util.ts";

const geom = { stride: 1, padding: 1 };
const W_SHAPE = [4, 4, 3, 3];
const X_SHAPE = [2, 4, 5, 5];

Deno.test("tape: a weight used twice gets the sum of both uses' gradients", async () => {
  const gpu = await testGpu();
  const conv = new Conv2d(
    gpu,
    { name: "c", inChannels: 4, outChannels: 4, kernel: 3, padding: 1 },
    new Rng(3),
  );
  const wv = await conv.weight.value.read();
  const a = randArray(200, 1);
  const b = randArray(200, 2);
  const ga = randArray(200, 3);
  const gb = randArray(200, 4);
  const xa = Tensor.fromArray(gpu, a, X_SHAPE);
  const xb = Tensor.fromArray(gpu, b, X_SHAPE);
  // Siamese: the same module on two inputs; L = <ga, conv(a)> + <gb, conv(b)>.
  zeroGrads(conv.params());
  const tape = new Tape(gpu, conv.params());
  const ya = conv.forward(xa, tape);
  const yb = conv.forward(xb, tape);
  tape.backward([[ya, Tensor.fromArray(gpu, ga, X_SHAPE)], [
    yb,
    Tensor.fromArray(gpu, gb, X_SHAPE),
  ]]);
  const want = conv2dGradWeightRef(a, ga, X_SHAPE, W_SHAPE, geom).map((v, i) =>
    v + conv2dGradWeightRef(b, gb, X_SHAPE, W_SHAPE, geom)[i]
  );
  assertClose(await conv.weight.grad.read(), want, { rtol: 1e-4, atol: 1e-4 }, "shared dW");
  // A gradient-overwrite protocol would leave only one branch: make sure that is not close.
  const one = conv2dGradWeightRef(b, gb, X_SHAPE, W_SHAPE, geom);
  const g = await conv.weight.grad.read();
  let diff = 0;
  for (let i = 0; i < g.length; i++) diff = Math.max(diff, Math.abs(g[i] - one[i]));
  if (!(diff > 1e-2)) throw new Error("shared gradient equals one branch's");
  const y1 = conv2dRef(a, X_SHAPE, wv, W_SHAPE, null, geom);
  assertClose(await ya.read(), y1, { rtol: 1e-4, atol: 1e-5 }, "forward");
  [xa, xb, ya, yb].forEach((t) => t.dispose());
  conv.weight.value.dispose();
  conv.weight.grad.dispose();
});

Deno.test("tape: fan-out of an activation is summed (y = relu(x) + conv(relu(x)))", async () => {
  const gpu = await testGpu();
  const conv = new Conv2d(
    gpu,
    { name: "c", inChannels: 4, outChannels: 4, kernel: 3, padding: 1 },
    new Rng(5),
  );
  const wv = await conv.weight.value.read();
  const xs = randArray(200, 11);
  const gs = randArray(200, 12);
  const x = Tensor.fromArray(gpu, xs, X_SHAPE);
  const tape = new Tape(gpu, conv.params());
  tape.watch(x);
  zeroGrads(conv.params());
  const r = F.activation(tape, "relu", x);
  const c = conv.forward(r, tape);
  const y = F.add(tape, r, c);
  const [dx] = tape.backward([[y, Tensor.fromArray(gpu, gs, X_SHAPE)]], [x]);
  // dr = g + convᵀ(g); dx = dr·[x > 0].
  const rv = Float64Array.from(xs, (v) => Math.max(v, 0));
  const dt = conv2dGradInputRef(gs, wv, X_SHAPE, W_SHAPE, geom);
  const want = Float64Array.from(xs, (v, i) => (v > 0 ? gs[i] + dt[i] : 0));
  assertClose(await dx!.read(), want, { rtol: 1e-4, atol: 1e-5 }, "dx");
  assertClose(
    await conv.weight.grad.read(),
    conv2dGradWeightRef(rv, gs, X_SHAPE, W_SHAPE, geom),
    { rtol: 1e-4, atol: 1e-4 },
    "dW",
  );
  [x, r, c, y, dx!].forEach((t) => t.dispose());
  conv.weight.value.dispose();
  conv.weight.grad.dispose();
});

Deno.test("tape: accumulate until zeroGrads; unreached parameters are zeroed", async () => {
  const gpu = await testGpu();
  const rng = new Rng(9);
  const used = new Conv2d(
    gpu,
    { name: "u", inChannels: 4, outChannels: 4, kernel: 3, padding: 1 },
    rng,
  );
  const unused = new Conv2d(gpu, {
    name: "n",
    inChannels: 4,
    outChannels: 4,
    kernel: 3,
    padding: 1,
    bias: true,
  }, rng);
  const params: Param[] = [...used.params(), ...unused.params()];
  const xs = randArray(200, 21);
  const gs = randArray(200, 22);
  const x = Tensor.fromArray(gpu, xs, X_SHAPE);
  // Garbage in the unused gradients: zeroGrads + a backward that never reaches them clears it.
  unused.weight.grad.write(new Float32Array(unused.weight.grad.size).fill(7));
  unused.bias!.grad.write(new Float32Array(4).fill(7));
  const ref = conv2dGradWeightRef(xs, gs, X_SHAPE, W_SHAPE, geom);
  for (const [zero, k] of [[true, 1], [false, 2], [false, 3], [true, 1]] as const) {
    if (zero) zeroGrads(params);
    const tape = new Tape(gpu, params);
    const y = used.forward(x, tape);
    tape.backward([[y, Tensor.fromArray(gpu, gs, X_SHAPE)]]);
    y.dispose();
    assertClose(await used.weight.grad.read(), ref.map((v) => k * v), {
      rtol: 1e-4,
      atol: 1e-4,
    }, `dW x${k}`);
  }
  assertEquals([...new Set(await unused.weight.grad.read())], [0], "unused dW zeroed");
  assertEquals([...new Set(await unused.bias!.grad.read())], [0], "unused db zeroed");
  x.dispose();
  for (const p of params) [p.value, p.grad].forEach((t) => t.dispose());
});

Deno.test("tape: records nothing without a gradient to compute; releases what it saved", async () => {
  const gpu = await testGpu();
  const conv = new Conv2d(
    gpu,
    { name: "c", inChannels: 4, outChannels: 4, kernel: 3, padding: 1 },
    new Rng(2),
  );
  const x = Tensor.fromArray(gpu, randArray(200, 31), X_SHAPE);
  const plain = new Tape(gpu);
  const y0 = conv.forward(x, plain);
  assertEquals(plain.length, 0, "no parameter and no watched input: nothing recorded");
  await gpu.sync();
  const inUse = gpu.pool.stats().inUse;
  const tape = new Tape(gpu, conv.params());
  zeroGrads(conv.params());
  const c = conv.forward(x, tape);
  const h = F.activation(tape, "relu", c, true);
  assertEquals(h, c, "in place: the input itself, with one more reference");
  const y = F.globalAvgPool(tape, h);
  assertEquals(tape.length, 3);
  // The tape's saved references keep what the rules need.
  c.dispose();
  h.dispose();
  tape.backward([[y, Tensor.fromArray(gpu, randArray(8, 32), [2, 4])]]);
  y.dispose();
  await gpu.sync();
  assertEquals(gpu.pool.stats().inUse, inUse, "every saved tensor and gradient released");
  assertThrows(() => tape.backward([]), Error, "twice");
  assertThrows(() => F.add(tape, x, x), Error, "after backward");
  [x, y0].forEach((t) => t.dispose());
  conv.weight.value.dispose();
  conv.weight.grad.dispose();
});

Deno.test("tape: reshape is an owning view (no copy) that keeps its base alive and is never written in place while shared", async () => {
  const gpu = await testGpu();
  const w: Param = {
    name: "w",
    value: Tensor.fromArray(gpu, randArray(12, 1), [3, 4]),
    grad: Tensor.zeros(gpu, [3, 4]),
    group: "head",
    decay: false,
  };
  const x = Tensor.fromArray(gpu, randArray(12, 2), [2, 6]);
  const v = x.view([3, 2, 2]);
  assertEquals(v.buffer, x.buffer);
  assertEquals([x.shared, v.shared], [true, true]);
  x.dispose();
  // The base lives on through the view, which alone holds it now.
  assertEquals([x.disposed, v.shared], [false, false]);
  assertEquals(await v.read(), randArray(12, 2));
  assertThrows(() => v.view([5]), RangeError, "sizes differ");
  v.dispose();
  assertEquals(x.disposed, true);

  // On the tape: y = sum of two uses of reshape(w) (a parameter seen through a view); each use
  // gives w the gradient viewed back to [3, 4], and the two add up in w.grad.
  zeroGrads([w]);
  const tape = new Tape(gpu, [w]);
  const r = F.reshape(tape, w.value, [2, 6]);
  const a = F.add(tape, r, r);
  r.dispose();
  const dy = randArray(12, 3);
  tape.backward([[a, Tensor.fromArray(gpu, dy, [2, 6])]]);
  assertClose(await w.grad.read(), dy.map((g) => 2 * g), { atol: 0, rtol: 0 }, "dw");
  assertThrows(() => F.reshape(null, a, [5]), RangeError, "reshape: [2,6] → [5]");
  for (const t of [a, w.value, w.grad]) t.dispose();
});
