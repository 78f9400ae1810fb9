import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import type { Param } from "../src/autograd/param.ts";
import {
  AdamW,
  adamwStepRef,
  cosineLr,
  type LrMultipliers,
  type Optimizer,
  paramLr,
  polyLr,
  PSA_LR_MULT,
  SGD,
  sgdStepRef,
} from "../src/optim/mod.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  maxRelError,
  randArray,
  testGpu,
} from "./util.ts";

interface Spec {
  name: string;
  shape: number[];
  group: "backbone" | "head";
  decay: boolean;
}

const SPECS: Spec[] = [
  { name: "layer1.0.conv1.weight", shape: [5, 3, 3, 3], group: "backbone", decay: true },
  { name: "layer1.0.conv1.bias", shape: [5], group: "backbone", decay: false },
  { name: "classifier.weight", shape: [7, 37], group: "head", decay: true },
  { name: "classifier.bias", shape: [7], group: "head", decay: false },
];

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

function makeParams(gpu: GpuContext, specs = SPECS): { params: Param[]; host: Float64Array[] } {
  const host = specs.map((s, i) => Float64Array.from(randArray(size(s.shape), 100 + i)));
  const params = specs.map((s, i) => ({
    ...s,
    value: Tensor.fromArray(gpu, host[i], s.shape),
    grad: Tensor.zeros(gpu, s.shape),
  }));
  return { params, host };
}

function grads(step: number, specs = SPECS): Float32Array[] {
  return specs.map((s, i) => randArray(size(s.shape), 1000 * step + i, -2, 2));
}

function lrOf(s: Spec, lr: number, m: LrMultipliers): number {
  return lr * m[s.group] * (s.name.endsWith(".bias") ? m.bias : 1);
}

async function runSteps(
  opt: Optimizer,
  params: Param[],
  from: number,
  to: number,
  lrs: (s: number) => number,
) {
  for (let s = from; s < to; s++) {
    grads(s).forEach((g, i) => params[i].grad.write(g));
    opt.step(params, lrs(s));
  }
  return await Promise.all(params.map((p) => p.value.read()));
}

const poly = (s: number) => polyLr(0.05, s, 10);

Deno.test("SGD (momentum, weight decay, nesterov, lr groups) matches PyTorch's formulas", async () => {
  const gpu = await testGpu();
  const variants = [
    { momentum: 0.9, weightDecay: 1e-2, nesterov: false },
    { momentum: 0.9, weightDecay: 1e-2, nesterov: true },
    { momentum: 0, weightDecay: 5e-4, nesterov: false },
  ];
  for (const v of variants) {
    const { params, host } = makeParams(gpu);
    const opt = new SGD(gpu, { ...v, lrMult: PSA_LR_MULT });
    const got = await runSteps(opt, params, 0, 5, poly);
    const bufs = host.map((h) => new Float64Array(h.length));
    for (let s = 0; s < 5; s++) {
      const gs = grads(s);
      SPECS.forEach((sp, i) => {
        const wd = sp.decay ? v.weightDecay : 0;
        const lr = lrOf(sp, poly(s), PSA_LR_MULT);
        sgdStepRef(host[i], gs[i], bufs[i], {
          lr,
          momentum: v.momentum,
          weightDecay: wd,
          nesterov: v.nesterov,
          first: s === 0,
        });
      });
    }
    got.forEach((g, i) => {
      const e = maxRelError(g, host[i]);
      if (!(e < 1e-6)) throw new Error(`SGD ${JSON.stringify(v)} ${SPECS[i].name}: rel error ${e}`);
    });
    assertEquals(opt.stepCount, 5);
    assertEquals(
      opt.state(params).map((b) => b.name),
      v.momentum ? SPECS.map((s) => `${s.name}.momentum_buffer`) : [],
    );
    if (v.momentum) {
      const e = maxRelError(await opt.state(params)[2].value.read(), bufs[2]);
      if (!(e < 1e-6)) throw new Error(`momentum buffer rel error ${e}`);
    }
    opt.dispose();
    params.forEach((p) => [p.value, p.grad].forEach((t) => t.dispose()));
  }
});

Deno.test("AdamW matches PyTorch's formulas over several steps", async () => {
  const gpu = await testGpu();
  const { params, host } = makeParams(gpu);
  const o = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05 };
  const opt = new AdamW(gpu, o);
  const lr = (s: number) => cosineLr(1e-2, s, 6, { warmupSteps: 2, warmupStart: 1e-3 });
  const got = await runSteps(opt, params, 0, 6, lr);
  const ms = host.map((h) => new Float64Array(h.length));
  const vs = host.map((h) => new Float64Array(h.length));
  for (let s = 0; s < 6; s++) {
    const gs = grads(s);
    SPECS.forEach((sp, i) => {
      const l = lrOf(sp, lr(s), { backbone: 1, head: 10, bias: 1 });
      adamwStepRef(host[i], gs[i], ms[i], vs[i], {
        step: s + 1,
        lr: l,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weightDecay: sp.decay ? o.weightDecay : 0,
      });
    });
  }
  got.forEach((g, i) => {
    const e = maxRelError(g, host[i]);
    if (!(e < 1e-5)) throw new Error(`AdamW ${SPECS[i].name}: rel error ${e}`);
  });
  const st = opt.state(params);
  assertEquals(st.map((b) => b.name).slice(0, 2), [
    "layer1.0.conv1.weight.exp_avg",
    "layer1.0.conv1.weight.exp_avg_sq",
  ]);
  assertClose(await st[5].value.read(), vs[2], { rtol: 1e-5, atol: 1e-9 }, "exp_avg_sq");
  opt.dispose();
  params.forEach((p) => [p.value, p.grad].forEach((t) => t.dispose()));
});

Deno.test("optimizer state save/restore continues bit for bit", async () => {
  const gpu = await testGpu();
  for (const make of [() => new SGD(gpu, { weightDecay: 1e-3 }), () => new AdamW(gpu)]) {
    const a = makeParams(gpu);
    const optA = make();
    await runSteps(optA, a.params, 0, 3, poly);
    const snapValues = await Promise.all(a.params.map((p) => p.value.read()));
    const snapState: Record<string, Float32Array> = {};
    for (const b of optA.state(a.params)) snapState[b.name] = await b.value.read();
    const endA = await runSteps(optA, a.params, 3, 6, poly);

    const b = makeParams(gpu);
    b.params.forEach((p, i) => p.value.write(snapValues[i]));
    const optB = make();
    optB.loadState(b.params, snapState, 3);
    assertEquals(optB.stepCount, 3);
    const endB = await runSteps(optB, b.params, 3, 6, poly);
    endA.forEach((v, i) => assertEquals([...endB[i]], [...v], `resumed ${SPECS[i].name}`));

    const missing = { ...snapState };
    delete missing[Object.keys(missing)[0]];
    assertThrows(
      () => make().loadState(b.params, missing, 3),
      RangeError,
      "missing optimizer state",
    );
    for (const o of [optA, optB]) o.dispose();
    [...a.params, ...b.params].forEach((p) => [p.value, p.grad].forEach((t) => t.dispose()));
  }
});

Deno.test("optimizer updates split past a small binding limit", async () => {
  const gpu = await createGpu({ maxBindingBytes: 1024, debug: true });
  try {
    const specs: Spec[] = [{ name: "w", shape: [1000], group: "backbone", decay: true }];
    const { params, host } = makeParams(gpu, specs);
    const opt = new SGD(gpu, { momentum: 0.9, weightDecay: 0.1 });
    const g = grads(0, specs)[0];
    params[0].grad.write(g);
    const d0 = gpu.dispatchCount;
    opt.step(params, 0.1);
    if (gpu.dispatchCount - d0 < 4) throw new Error("update was not split");
    sgdStepRef(host[0], g, new Float64Array(1000), {
      lr: 0.1,
      momentum: 0.9,
      weightDecay: 0.1,
      nesterov: false,
      first: true,
    });
    assertClose(await params[0].value.read(), host[0], { rtol: 1e-6, atol: 1e-7 }, "split sgd");
    opt.dispose();
  } finally {
    gpu.destroy();
  }
});

Deno.test("lr schedules, multipliers and bad input", async () => {
  assertEquals(polyLr(0.01, 0, 100), 0.01);
  assertClose([polyLr(0.01, 50, 100)], [0.01 * 0.5 ** 0.9], { rtol: 1e-12, atol: 0 });
  assertEquals(polyLr(0.01, 100, 100), 0);
  assertEquals(polyLr(0.01, 120, 100), 0);
  assertEquals(cosineLr(1, 0, 10, { warmupSteps: 2, warmupStart: 0.1 }), 0.1);
  assertClose([cosineLr(1, 1, 10, { warmupSteps: 2 })], [0.5], { rtol: 1e-12, atol: 0 });
  assertEquals(cosineLr(1, 2, 10, { warmupSteps: 2 }), 1);
  assertClose([cosineLr(1, 6, 10, { warmupSteps: 2, min: 0.1 })], [0.55], { rtol: 1e-12, atol: 0 });
  assertClose([cosineLr(1, 10, 10, { min: 0.1 })], [0.1], { rtol: 1e-12, atol: 0 });
  assertThrows(() => polyLr(0.01, 1, 0), RangeError, "maxStep");
  assertThrows(() => cosineLr(1, 1, 10, { warmupSteps: 10 }), RangeError, "warmupSteps");

  const gpu = await testGpu();
  const { params } = makeParams(gpu);
  assertEquals(params.map((p) => paramLr(p, 1, PSA_LR_MULT)), [1, 2, 10, 20]);
  const opt = new SGD(gpu);
  assertThrows(() => opt.step(params, NaN), RangeError, "bad lr");
  assertThrows(() => opt.step([params[0], params[0]], 0.1), RangeError, "given twice");
  const bad = { ...params[0], grad: Tensor.zeros(gpu, [3]) };
  assertThrows(() => opt.step([bad], 0.1), RangeError, "differs from value");
  assertThrows(() => new SGD(gpu, { momentum: 1.5 }), RangeError, "momentum");
  assertThrows(() => new SGD(gpu, { momentum: 0, nesterov: true }), RangeError, "Nesterov");
  assertThrows(() => new AdamW(gpu, { beta2: 1 }), RangeError, "beta2");
  assertThrows(() => new SGD(gpu, { lrMult: { head: -1 } }), RangeError, "multiplier");
  bad.grad.dispose();
  params.forEach((p) => [p.value, p.grad].forEach((t) => t.dispose()));
});
