/**
 * The segmenter (src/models/deeplab.ts) and its loss: SegNet on `tiny` against the f64
 * reference (backbone reference of src/models/reference.ts + segHeadRef), a whole training
 * step (logits upsampled to the label size, cross-entropy with ignored pixels) against the
 * reference's gradients, finite differences of the reference head + loss, the loss at
 * 321x321, invalid labels, dropout's mask, resnet101's names and torchvision weight loading.
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { Tape } from "../src/autograd/tape.ts";
import * as F from "../src/autograd/functions.ts";
import {
  checkSegLabels,
  IGNORE_LABEL,
  softmaxCrossEntropyLoss,
  softmaxCrossEntropyRef,
} from "../src/losses/segmentation.ts";
import { dropout, dropoutKeep, dropoutRef } from "../src/ops/dropout.ts";
import { resizeBilinearBackwardRef, resizeBilinearRef } from "../src/ops/resize.ts";
import {
  createSegModel,
  type SegHead,
  segHeadRef,
  segModelDefaults,
  type SegNet,
  type SegNetOptions,
} from "../src/models/deeplab.ts";
import {
  CamNetRef,
  readModelState,
  type RefState,
  type RefTensor,
} from "../src/models/reference.ts";
import { loadTorchvisionWeights } from "../src/io/checkpoint.ts";
import { type HostTensor, writeSafetensors } from "../src/io/safetensors.ts";
import { Rng } from "../src/rng.ts";
import { assertClose, assertEquals, assertThrows, maxRelError, randArray } from "./util.ts";

let plain: Promise<GpuContext> | null = null;

/** A plain context inside validation / out-of-memory error scopes (as tests/model_test.ts). */
async function scoped<T>(fn: (gpu: GpuContext) => Promise<T>): Promise<T> {
  plain ??= createGpu();
  const gpu = await plain;
  gpu.device.pushErrorScope("out-of-memory");
  gpu.device.pushErrorScope("validation");
  const pop = async () => {
    await gpu.sync();
    const v = await gpu.device.popErrorScope();
    const o = await gpu.device.popErrorScope();
    return v ?? o;
  };
  let out: T;
  try {
    out = await fn(gpu);
  } catch (e) {
    const err = await pop().catch(() => null);
    if (err) throw new Error(`WebGPU error: ${err.message} (then: ${e})`);
    throw e;
  }
  const err = await pop();
  if (err) throw new Error(`WebGPU error: ${err.message}`);
  return out;
}

/** Random batchnorm statistics and affine values, random head biases (else all zero). */
function randomizeState(model: SegNet, seed: number): void {
  let s = seed;
  for (const { name, value } of model.stateTensors()) {
    const n = value.size;
    if (name.endsWith(".running_var")) value.write(randArray(n, s++, 0.5, 1.5));
    else if (name.endsWith(".running_mean")) value.write(randArray(n, s++, -0.2, 0.2));
    else if (name.endsWith(".bias")) value.write(randArray(n, s++, -0.2, 0.2));
    else if (value.shape.length === 1) value.write(randArray(n, s++, 0.5, 1.5));
  }
}

/** Labels [B, H, W]: classes 0..K-1 with about `ignored` of the pixels 255. */
function labelsFor(b: number, h: number, w: number, K: number, seed: number, ignored = 0.2) {
  const r = new Rng(seed);
  return Float32Array.from({ length: b * h * w }, () => (r.next() < ignored ? 255 : r.int(K)));
}

const backboneRef = (o: SegNetOptions, state: RefState) =>
  new CamNetRef({
    arch: o.arch,
    numClasses: o.numClasses,
    outputStride: o.outputStride,
    frozenBn: o.frozenBn,
    classifier: false,
  }, state);

// GPU f32 against the f64 reference: max|a-e| / max|e| per tensor (model_test's threshold).
const TOL = 1e-4;

Deno.test("segmenter options: defaults per arch and head, bad options", () => {
  const a = segModelDefaults({ arch: "resnet101", numClasses: 21 });
  assertEquals([a.head, a.outputStride, a.rates, a.width], ["aspp", 8, [6, 12, 18, 24], 1024]);
  const t = segModelDefaults({ arch: "tiny", numClasses: 4 });
  assertEquals(t.rates, [2, 4, 6, 8]);
  const l = segModelDefaults({ arch: "tiny", numClasses: 4, head: "largefov" });
  assertEquals([l.rates, l.width, l.dropout], [[4], 128, 0.5]);
  assertEquals(segModelDefaults({ arch: "resnet50", numClasses: 2, head: "largefov" }).rates, [12]);
  for (
    const [bad, msg] of [
      [{ numClasses: 0 }, "class count"],
      [{ rates: [6, 0] }, "rates"],
      [{ head: "largefov", rates: [6, 12] }, "one rate"],
      [{ dropout: 1 }, "dropout"],
      [{ head: "fcn" }, "unknown head"],
    ] as const
  ) {
    assertThrows(
      () => segModelDefaults({ arch: "tiny", numClasses: 3, ...bad } as never),
      RangeError,
      msg,
    );
  }
});

for (const head of ["aspp", "largefov"] as const) {
  Deno.test(`SegNet tiny ${head} eval forward matches the CPU reference`, () =>
    scoped(async (gpu) => {
      const model = createSegModel(gpu, { arch: "tiny", numClasses: 5, head, width: 12, seed: 1 });
      randomizeState(model, 2);
      const state = await readModelState(model);
      const shape = [2, 3, 40, 48];
      const xData = randArray(2 * 3 * 40 * 48, 3);
      const x = Tensor.fromArray(gpu, xData, shape);
      const y = model.forward(x, null);
      const o = model.options;
      const f = backboneRef(o, state).features({ shape, data: Float64Array.from(xData) }, false);
      const want = segHeadRef(o, state, f.feats).logits;
      // 40x48 → stem 20x24 → layer2 10x12 → layer3 5x6 → layer4 (dilated) 5x6.
      assertEquals(want.shape, [2, 5, 5, 6]);
      assertEquals([...y.shape], want.shape);
      assertEquals(model.stride, 8);
      const err = maxRelError(await y.read(), want.data);
      if (!(err <= TOL)) throw new Error(`${head}: logits differ from the reference by ${err}`);
      for (const t of [x, y]) t.dispose();
      model.dispose();
    }));
}

/**
 * One training step on the GPU (logits upsampled to the labels' size, cross-entropy) and the
 * same in the reference: loss and every parameter gradient.
 */
async function checkTrainStep(gpu: GpuContext, head: SegHead, frozenBn: boolean, seed: number) {
  const K = 4;
  const model = createSegModel(gpu, {
    arch: "tiny",
    numClasses: K,
    head,
    width: 10,
    frozenBn,
    seed,
  });
  randomizeState(model, seed + 1);
  const state = await readModelState(model);
  const [B, H, W] = [2, 33, 29];
  const shape = [B, 3, H, W];
  const xData = randArray(B * 3 * H * W, seed + 2);
  const labels = labelsFor(B, H, W, K, seed + 3);
  const dropoutSeed = 12345;
  const params = model.params();
  zeroGrads(params);
  const tape = new Tape(gpu, params);
  const x = Tensor.fromArray(gpu, xData, shape);
  const lab = Tensor.fromArray(gpu, labels, [B, H, W]);
  const logits = model.forward(x, tape, { dropoutSeed });
  const up = F.resizeBilinear(tape, logits, { size: [H, W] });
  const loss = F.softmaxCrossEntropy(tape, up, lab);
  tape.backward([[loss, Tensor.fromArray(gpu, new Float32Array([1]), [1])]]);
  const gotLoss = (await loss.read())[0];

  const o = model.options;
  const bref = backboneRef(o, state);
  const f = bref.features({ shape, data: Float64Array.from(xData) }, true);
  const h = segHeadRef(o, state, f.feats, { training: true, dropoutSeed });
  const rs = { size: [H, W] as [number, number] };
  const upRef = resizeBilinearRef(h.logits.data, h.logits.shape, rs);
  const ce = softmaxCrossEntropyRef(upRef, labels, [B, K, H, W]);
  assertClose([gotLoss], [ce.loss], { rtol: TOL, atol: 0 }, `${head}: loss`);
  const hb = h.backward(resizeBilinearBackwardRef(ce.grad, h.logits.shape, rs));
  const { grads } = bref.backwardFeatures(f, hb.dFeat);
  for (const [k, v] of hb.grads) grads.set(k, v);
  assertEquals(params.map((p) => p.name).sort(), [...grads.keys()].sort());
  const bad: string[] = [];
  for (const p of params) {
    const err = maxRelError(await p.grad.read(), grads.get(p.name)!);
    if (!(err <= TOL)) bad.push(`${p.name} ${err.toExponential(2)}`);
    if (!grads.get(p.name)!.some((v) => v !== 0)) bad.push(`${p.name}: zero reference gradient`);
  }
  if (bad.length) throw new Error(`${head}: gradients differ: ${bad.slice(0, 8).join(", ")}`);
  for (const t of [x, lab, logits, up, loss]) t.dispose();
  model.dispose();
}

Deno.test("SegNet tiny training step (upsample + cross-entropy) matches the reference", async (t) => {
  await t.step(
    "aspp, batchnorm in training mode",
    () => scoped((gpu) => checkTrainStep(gpu, "aspp", false, 10)),
  );
  await t.step(
    "largefov with dropout, frozen batchnorm",
    () => scoped((gpu) => checkTrainStep(gpu, "largefov", true, 20)),
  );
});

/** L(feats, head) = CE(resize(head(feats))) of the f64 reference. */
function refHeadLoss(
  o: SegNetOptions,
  state: RefState,
  feats: RefTensor,
  labels: Float32Array,
  size: [number, number],
) {
  const h = segHeadRef(o, state, feats, { training: true, dropoutSeed: 7 });
  const up = resizeBilinearRef(h.logits.data, h.logits.shape, { size });
  const [B, K] = h.logits.shape;
  return { h, ce: softmaxCrossEntropyRef(up, labels, [B, K, ...size]) };
}

Deno.test("head + loss: finite differences of the reference, GPU gradients", () =>
  scoped(async (gpu) => {
    for (const head of ["aspp", "largefov"] as const) {
      const model = createSegModel(gpu, { arch: "tiny", numClasses: 3, head, width: 8, seed: 5 });
      randomizeState(model, 6);
      const state = await readModelState(model);
      const o = model.options;
      const fShape = [2, 128, 4, 5];
      const fData = Float64Array.from(randArray(2 * 128 * 20, 7));
      const size: [number, number] = [13, 17];
      const labels = labelsFor(2, 13, 17, 3, 8, 0.3);
      const base = refHeadLoss(o, state, { shape: fShape, data: fData }, labels, size);
      const back = base.h.backward(
        resizeBilinearBackwardRef(base.ce.grad, base.h.logits.shape, { size }),
      );
      // Central differences along a random direction, for the features and each head tensor.
      const targets: [string, Float64Array, Float64Array][] = [["features", fData, back.dFeat]];
      for (const [name, g] of back.grads) targets.push([name, state.get(name)!.data, g]);
      for (const [k, [name, v, g]] of targets.entries()) {
        const dir = Float64Array.from(randArray(v.length, 100 + k));
        const orig = Float64Array.from(v);
        const at = (s: number) => {
          for (let i = 0; i < v.length; i++) v[i] = orig[i] + s * dir[i];
          return refHeadLoss(o, state, { shape: fShape, data: fData }, labels, size).ce.loss;
        };
        const eps = 1e-6;
        const fd = (at(eps) - at(-eps)) / (2 * eps);
        v.set(orig);
        let an = 0;
        let scale = 0;
        for (let i = 0; i < v.length; i++) {
          an += g[i] * dir[i];
          scale += Math.abs(g[i] * dir[i]);
        }
        if (!(Math.abs(an - fd) <= 1e-6 * scale + 1e-10)) {
          throw new Error(`${head} ${name}: reference <g, v> ${an} vs finite difference ${fd}`);
        }
      }
      // The GPU head on the same features (watched), same loss: gradients vs the reference.
      const params = model.params();
      zeroGrads(params);
      const tape = new Tape(gpu, params);
      const feats = tape.watch(Tensor.fromArray(gpu, Float32Array.from(fData), fShape));
      const lab = Tensor.fromArray(gpu, labels, [2, ...size]);
      const logits = model.forwardHead(feats, tape, { dropoutSeed: 7 });
      const up = F.resizeBilinear(tape, logits, { size });
      const loss = F.softmaxCrossEntropy(tape, up, lab);
      const [dFeat] = tape.backward(
        [[loss, Tensor.fromArray(gpu, new Float32Array([1]), [1])]],
        [feats],
      );
      assertClose(await loss.read(), [base.ce.loss], { rtol: 1e-5, atol: 0 }, `${head}: loss`);
      const errs: [string, number][] = [["features", maxRelError(await dFeat!.read(), back.dFeat)]];
      for (const p of params.filter((p) => p.group === "head")) {
        errs.push([p.name, maxRelError(await p.grad.read(), back.grads.get(p.name)!)]);
      }
      const bad = errs.filter(([, e]) => !(e <= TOL));
      if (bad.length) throw new Error(`${head}: GPU head gradients differ: ${bad.join("; ")}`);
      for (const t of [feats, lab, logits, up, loss, dFeat!]) t.dispose();
      model.dispose();
    }
  }));

Deno.test("cross-entropy at 321x321 with 21 classes matches the reference", () =>
  scoped(async (gpu) => {
    const shape = [2, 21, 321, 321];
    const n = 2 * 321 * 321;
    const x = randArray(21 * n, 40, -5, 5);
    const labels = labelsFor(2, 321, 321, 21, 41, 0.15);
    const lt = Tensor.fromArray(gpu, x, shape);
    const yt = Tensor.fromArray(gpu, labels, [2, 1, 321, 321]);
    const { loss, stats } = softmaxCrossEntropyLoss(gpu, lt, yt);
    const [l, s] = await gpu.readRanges([loss.binding(), stats.binding()]);
    const ref = softmaxCrossEntropyRef(x, labels, shape);
    assertClose(new Float32Array(l), [ref.loss], { rtol: 1e-5, atol: 0 }, "loss");
    assertEquals([...new Float32Array(s).slice(1)], [ref.valid, 0]);
    for (const t of [lt, yt, loss, stats]) t.dispose();
  }));

Deno.test("cross-entropy: invalid labels are reported, never used as indices", () =>
  scoped(async (gpu) => {
    const labels = Float32Array.from([0, 1, 2, 255, 3, 7, -1, 1.5]);
    assertThrows(() => checkSegLabels(labels, 3), RangeError, "label 3 at index 4");
    checkSegLabels(labels.slice(0, 4), 3);
    // On the GPU such pixels count as ignored and are counted in stats[2].
    const x = randArray(3 * 8, 50);
    const lt = Tensor.fromArray(gpu, x, [1, 3, 2, 4]);
    const yt = Tensor.fromArray(gpu, labels, [1, 2, 4]);
    const { loss, stats } = softmaxCrossEntropyLoss(gpu, lt, yt);
    const [l, s] = await gpu.readRanges([loss.binding(), stats.binding()]);
    const good = labels.map((v, i) => (i < 3 ? v : IGNORE_LABEL));
    const ref = softmaxCrossEntropyRef(x, good, [1, 3, 2, 4]);
    assertClose(new Float32Array(l), [ref.loss], { rtol: 1e-5, atol: 0 }, "loss");
    assertEquals([...new Float32Array(s).slice(1)], [3, 4]);
    assertThrows(
      () => softmaxCrossEntropyLoss(gpu, lt, Tensor.fromArray(gpu, labels, [1, 4, 2])),
      RangeError,
      "labels has shape",
    );
    for (const t of [lt, yt, loss, stats]) t.dispose();
  }));

Deno.test("dropout: hash mask keeps about 1-p, repeats, identity when not training", () =>
  scoped(async (gpu) => {
    const n = 100003;
    const x = Tensor.fromArray(gpu, new Float32Array(n).fill(1), [n]);
    const y = dropout(gpu, x, { p: 0.3, seed: 9 });
    const got = await y.read();
    const kept = got.filter((v) => v !== 0).length / n;
    if (!(Math.abs(kept - 0.7) < 0.01)) throw new Error(`kept ${kept}, expected about 0.7`);
    assertEquals(
      got,
      Float32Array.from(dropoutRef(new Float32Array(n).fill(1), { p: 0.3, seed: 9 })),
    );
    let same = 0;
    for (let i = 0; i < 1000; i++) {
      same += dropoutKeep(9, i, 0.5) === dropoutKeep(10, i, 0.5) ? 1 : 0;
    }
    if (!(same > 400 && same < 600)) throw new Error(`seeds 9 and 10 share ${same}/1000 decisions`);
    const id = F.dropout(null, x, { p: 0.5, seed: 1, training: false });
    if (id !== x) throw new Error("dropout outside training is not the identity");
    id.dispose();
    assertThrows(() => dropout(gpu, x, { p: 1, seed: 0 }), RangeError, "[0, 1)");
    for (const t of [x, y]) t.dispose();
  }));

Deno.test("SegNet loads torchvision-named backbone weights; resnet101 has torchvision's names", () =>
  scoped(async (gpu) => {
    const src = createSegModel(gpu, { arch: "tiny", numClasses: 3, seed: 1 });
    randomizeState(src, 2);
    const host: [string, HostTensor][] = [];
    for (const { name, value } of src.stateTensors()) {
      if (!name.startsWith("head.")) {
        host.push([name, { shape: [...value.shape], data: await value.read() }]);
      }
    }
    host.push(["fc.weight", { shape: [10, 128], data: new Float32Array(1280) }]);
    host.push(["bn1.num_batches_tracked", { shape: [], data: new Float32Array(1) }]);
    const file = await Deno.makeTempFile({ suffix: ".safetensors" });
    try {
      await writeSafetensors(file, host, {});
      const dst = createSegModel(gpu, { arch: "tiny", numClasses: 3, head: "aspp", seed: 9 });
      await loadTorchvisionWeights(dst, file);
      const byName = new Map(host);
      for (const { name, value } of dst.stateTensors()) {
        if (name.startsWith("head.")) continue;
        assertEquals(await value.read(), byName.get(name)!.data, name);
      }
      dst.dispose();
    } finally {
      await Deno.remove(file);
      src.dispose();
    }
    const r101 = createSegModel(gpu, { arch: "resnet101", numClasses: 21, outputStride: 16 });
    const names = r101.stateTensors().map((t) => t.name);
    const backbone = r101.params().filter((p) => p.group === "backbone");
    const count = backbone.reduce((a, p) => a + p.value.size, 0);
    // torchvision resnet101 without fc: 44,549,160 - 2,049,000 parameters.
    assertEquals(count, 42_500_160);
    for (const n of ["layer3.22.conv3.weight", "layer4.2.bn3.running_var", "head.aspp.c3.bias"]) {
      if (!names.includes(n)) throw new Error(`resnet101 segmenter has no ${n}`);
    }
    if (names.some((n) => n.startsWith("layer3.23."))) throw new Error("layer3 has 24 blocks");
    assertEquals(r101.params().filter((p) => p.group === "head").length, 8);
    r101.dispose();
  }));
