/**
 * The MCTformer-V2 network on the GPU (src/models/vit.ts) against its f64 reference
 * (src/models/vit_reference.ts) and PyTorch: a tiny configuration's forward, attention and
 * localisation maps at the trained patch grid, at a resized one (position embeddings through
 * the bicubic op), with an image remainder, the final norm and the official resize rule; the
 * DeiT-S-shaped model with the fixture generator's weights against
 * tests/fixtures/mctformer.safetensors; a block's backward (input and every parameter) against
 * central differences of the reference block; the whole training loss's gradient along random
 * directions; DeiT weight conversion and its errors.
 *
 * Tolerances (GPU float32 against float64): maxRelError, the largest absolute difference over
 * the largest expected magnitude of each tensor. Measured: 2e-6 for the tiny forward and maps,
 * 4e-6 for DeiT-S's 12 blocks, 4e-7 for the gradients; the threshold (TOL 1e-4, and 1e-4 for
 * DeiT-S against PyTorch) leaves more than an order of magnitude.
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { Tape } from "../src/autograd/tape.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { type HostTensor, readSafetensors, writeSafetensors } from "../src/io/safetensors.ts";
import { loadDeitWeights } from "../src/io/checkpoint.ts";
import {
  multilabelSoftMarginLoss,
  multilabelSoftMarginLossBackward,
  multilabelSoftMarginLossRef,
} from "../src/losses/multilabel.ts";
import { resizeBicubicRef } from "../src/ops/resize.ts";
import {
  Block,
  createMctformer,
  disposeMctformerOutputs,
  type Mctformer,
  mctformerConfig,
  mctformerMaps,
  type MctformerOutputs,
  mctformerStateFromDeit,
} from "../src/models/vit.ts";
import {
  deitSmallConfig,
  headMeanRef,
  MCT_LAYER_INDEX,
  type MctAttentionType,
  mctformerForwardRef,
  mctformerMapsRef,
  vitBlockRef,
  type VitRefConfig,
  type VitRefParam,
  vitRefParamShapes,
} from "../src/models/vit_reference.ts";
import { Rng } from "../src/rng.ts";
import { generated } from "./fixture_gen.ts";
import { assertEquals, assertRejects, assertThrows, maxRelError, randArray } from "./util.ts";

const TOL = 1e-4;

let plain: Promise<GpuContext> | null = null;

/**
 * Runs `fn` on this file's GPU context inside validation and out-of-memory error scopes (a
 * plain context, as tests/model_test.ts: debug mode submits every dispatch on its own, which
 * multiplies a whole model's time on llvmpipe).
 */
async function scoped<T>(fn: (gpu: GpuContext) => Promise<T>): Promise<T> {
  plain ??= createGpu();
  const gpu = await plain;
  gpu.device.pushErrorScope("out-of-memory");
  gpu.device.pushErrorScope("validation");
  const popErrors = async () => {
    await gpu.sync();
    const validation = await gpu.device.popErrorScope();
    const oom = await gpu.device.popErrorScope();
    return validation ?? oom;
  };
  let out: T;
  try {
    out = await fn(gpu);
  } catch (e) {
    const gpuError = await popErrors().catch(() => null);
    if (gpuError) throw new Error(`WebGPU error: ${gpuError.message} (then: ${e})`);
    throw e;
  }
  const gpuError = await popErrors();
  if (gpuError) throw new Error(`WebGPU error: ${gpuError.message}`);
  return out;
}

/** Parameters from the fixture generator, by name, for a configuration. */
function generatedParams(cfg: VitRefConfig): Map<string, VitRefParam> {
  return new Map(
    vitRefParamShapes(cfg).map(([name, shape]) => [name, { shape, data: generated(name, shape) }]),
  );
}

/** Writes `params` into the model (every model parameter must be there). */
function setParams(model: Mctformer, params: ReadonlyMap<string, VitRefParam>): void {
  for (const p of model.params()) {
    const v = params.get(p.name);
    if (!v) throw new Error(`no value for ${p.name}`);
    assertEquals([...p.value.shape], [...v.shape], `${p.name} shape`);
    p.value.write(Float32Array.from(v.data));
  }
}

/** A tiny configuration: 3 blocks, 16 wide, 2 heads, patch 4, a 4x4 trained grid. */
function tinyConfig(extra: Partial<VitRefConfig> = {}): VitRefConfig {
  return { embedDim: 16, depth: 3, numHeads: 2, patch: 4, numClasses: 3, imgSize: 16, ...extra };
}

/** Asserts maxRelError <= tol; returns the error. */
function rel(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): number {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} vs ${want.length}`);
  const e = maxRelError(got, want);
  if (!(e <= tol)) throw new Error(`${what}: max relative error ${e.toExponential(2)} > ${tol}`);
  return e;
}

/**
 * Compares a GPU forward (with attention) and its maps with the reference's; returns the
 * worst error.
 */
async function compareForward(
  gpu: GpuContext,
  model: Mctformer,
  cfg: VitRefConfig,
  params: Map<string, VitRefParam>,
  shape: number[],
  seed: number,
  tol: number,
  what: string,
  maps: { nLayers: number; type: MctAttentionType }[],
): Promise<number> {
  const data = randArray(shape.reduce((a, d) => a * d, 1), seed);
  const x = Tensor.fromArray(gpu, data, shape);
  const out = model.forward(x, { tape: null, attn: true });
  x.dispose();
  const ref = mctformerForwardRef(cfg, params, { shape, data }, { attn: true });
  let worst = 0;
  const note = (e: number) => worst = Math.max(worst, e);
  try {
    assertEquals(out.grid, ref.grid, `${what}: grid`);
    assertEquals([...out.patchMap.shape], ref.patchMap.shape, `${what}: patch map shape`);
    note(rel(await out.clsLogits.read(), ref.clsLogits.data, tol, `${what} clsLogits`));
    note(rel(await out.patchLogits.read(), ref.patchLogits.data, tol, `${what} patchLogits`));
    note(rel(await out.patchMap.read(), ref.patchMap.data, tol, `${what} patchMap`));
    assertEquals(out.attn!.length, cfg.depth);
    for (const [l, a] of out.attn!.entries()) {
      note(rel(await a.read(), headMeanRef(ref.attn![l]).data, tol, `${what} attn ${l}`));
    }
    for (const o of maps) {
      const m = mctformerMaps(gpu, out, o);
      const r = mctformerMapsRef(ref, o);
      const w = `${what} ${o.type} over ${o.nLayers}`;
      try {
        note(rel(await m.mct.read(), r.mct.data, tol, `${w}: mct`));
        note(rel(await m.cams.read(), r.cams.data, tol, `${w}: cams`));
        note(rel(await m.patchAttn!.read(), r.patchAttn.data, tol, `${w}: patchAttn`));
        note(rel(await m.maps.read(), r.refined.data, tol, `${w}: refined`));
        assertEquals(m.maps, m.refined);
      } finally {
        m.dispose();
      }
    }
  } finally {
    disposeMctformerOutputs(out);
  }
  return worst;
}

Deno.test("mctformer: tiny GPU forward, attention and localisation maps equal the f64 reference (trained grid, resized grid, remainder, final norm, official resize)", () =>
  scoped(async (gpu) => {
    const cases: [string, Partial<VitRefConfig>, number[]][] = [
      ["trained 4x4 grid", {}, [2, 3, 16, 16]],
      ["resized 5x3 grid", {}, [2, 3, 20, 12]],
      ["remainder 18x13 → 4x3", {}, [1, 3, 18, 13]],
      ["final norm, 6 classes", { finalNorm: true, numClasses: 6 }, [1, 3, 12, 20]],
      ["official resize, square image", { posEmbedResize: "mctformer" }, [1, 3, 20, 20]],
      ["official resize, rectangle on the trained grid", { posEmbedResize: "mctformer" }, [
        1,
        3,
        16,
        19,
      ]],
    ];
    const maps = [
      { nLayers: MCT_LAYER_INDEX, type: "fused" as const },
      { nLayers: 1, type: "patchcam" as const },
      { nLayers: 2, type: "mct" as const },
    ];
    let worst = 0;
    for (const [i, [what, extra, shape]] of cases.entries()) {
      const cfg = tinyConfig(extra);
      const params = generatedParams(cfg);
      const model = createMctformer(gpu, { ...cfg, seed: i });
      setParams(model, params);
      const e = await compareForward(gpu, model, cfg, params, shape, 10 + i, TOL, what, maps);
      worst = Math.max(worst, e);
      model.dispose();
    }
    console.log(
      `    tiny MCTformer vs f64 reference: max relative error ${worst.toExponential(1)}`,
    );
  }));

Deno.test("mctformer: the DeiT-S-shaped model with the generator's weights equals PyTorch's forward and maps (48x48, 64x48)", () =>
  scoped(async (gpu) => {
    const { tensors, metadata } = await readSafetensors(
      new URL("./fixtures/mctformer.safetensors", import.meta.url).pathname,
    );
    const get = (name: string): HostTensor => {
      const t = tensors.get(name);
      if (!t) throw new Error(`fixture has no tensor "${name}"`);
      return t;
    };
    // The official position resize and the final norm are checked on the tiny model against
    // the reference (which tests/mctformer_ref_test.ts holds to this fixture's variants).
    const cfg = deitSmallConfig(20, 48);
    assertEquals(JSON.parse(metadata.config).dim, cfg.embedDim);
    const layers = Number(metadata.layers);
    const model = createMctformer(gpu, cfg);
    // The fixture's state lists the (unused) final norm too; the model has the rest, in order.
    const state = (JSON.parse(metadata.state) as [string, number[]][])
      .filter(([n]) => !n.startsWith("norm."));
    assertEquals(model.params().map((p) => [p.name, [...p.value.shape]]), state);
    setParams(model, generatedParams(cfg));
    const cases = JSON.parse(metadata.cases) as { name: string; input: string; shape: number[] }[];
    let worst = 0;
    const check = async (t: Tensor, name: string) => {
      const want = get(name);
      assertEquals([...t.shape], want.shape, `${name} shape`);
      worst = Math.max(worst, rel(await t.read(), want.data, 1e-4, name));
    };
    const t0 = performance.now();
    for (const c of cases) {
      const x = Tensor.fromArray(gpu, generated(c.input, c.shape), c.shape);
      const out = model.forward(x, { tape: null, attn: true });
      x.dispose();
      await check(out.clsLogits, `${c.name}.clsLogits`);
      await check(out.patchLogits, `${c.name}.patchLogits`);
      await check(out.patchMap, `${c.name}.patchMap`);
      await check(out.attn![cfg.depth - 1], `${c.name}.attnLast`);
      const m = mctformerMaps(gpu, out, { nLayers: layers });
      await check(m.mct, `${c.name}.mct`);
      await check(m.cams, `${c.name}.fused`);
      await check(m.maps, `${c.name}.refined`);
      m.dispose();
      if (c.name === "sq") {
        const all = mctformerMaps(gpu, out, { nLayers: cfg.depth });
        await check(all.mct, "sq.mct.l12");
        await check(all.maps, "sq.refined.l12");
        all.dispose();
      }
      disposeMctformerOutputs(out);
    }
    model.dispose();
    console.log(
      `    DeiT-S MCTformer on the GPU vs PyTorch: max relative error ${worst.toExponential(1)} ` +
        `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
    );
  }));

Deno.test("mctformer: a block's backward (input and every parameter) equals central differences of the f64 reference block", () =>
  scoped(async (gpu) => {
    const cfg: VitRefConfig = {
      embedDim: 8,
      depth: 1,
      numHeads: 2,
      patch: 4,
      numClasses: 1,
      imgSize: 4,
    };
    const [B, T, D] = [2, 5, 8];
    const params = generatedParams(cfg);
    const block = new Block(gpu, "blocks.0", {
      D,
      heads: 2,
      hidden: 32,
      qkvBias: true,
      eps: 1e-6,
    }, new Rng(1));
    const ps = block.params();
    for (const p of ps) p.value.write(Float32Array.from(params.get(p.name)!.data));
    const xData = randArray(B * T * D, 2);
    const r = randArray(B * T * D, 3);
    zeroGrads(ps);
    const tape = new Tape(gpu, ps);
    const x = tape.watch(Tensor.fromArray(gpu, xData, [B, T, D]));
    const y = block.forward(x, tape);
    const fwd = vitBlockRef(cfg, params, 0, xData, B, T);
    rel(await y.read(), fwd.y, TOL, "block forward");
    const [dx] = tape.backward([[y, Tensor.fromArray(gpu, r, [B, T, D])]], [x]);
    // L = <r, block(x)> in f64, differenced in every input and parameter element.
    const lossAt = (xs: ArrayLike<number>, ps2: Map<string, VitRefParam>) => {
      const o = vitBlockRef(cfg, ps2, 0, xs, B, T).y;
      let l = 0;
      for (let i = 0; i < o.length; i++) l += r[i] * o[i];
      return l;
    };
    const eps = 1e-6;
    const fd = (v: Float64Array, f: () => number) =>
      v.map((_, i) => {
        const keep = v[i];
        v[i] = keep + eps;
        const a = f();
        v[i] = keep - eps;
        const b = f();
        v[i] = keep;
        return (a - b) / (2 * eps);
      });
    const x64 = Float64Array.from(xData);
    const errs: Record<string, number> = {};
    errs.x = rel(await dx!.read(), fd(x64, () => lossAt(x64, params)), TOL, "dx");
    for (const p of ps) {
      const v = Float64Array.from(params.get(p.name)!.data);
      const ps2 = new Map(params);
      ps2.set(p.name, { shape: p.value.shape, data: v });
      const want = fd(v, () => lossAt(xData, ps2));
      if (!want.some((g) => g !== 0)) throw new Error(`${p.name}: zero reference gradient`);
      errs[p.name] = rel(await p.grad.read(), want, TOL, `d ${p.name}`);
    }
    assertEquals(Object.keys(errs).length, 1 + 12);
    const worst = Math.max(...Object.values(errs));
    console.log(
      `    block gradients vs finite differences: max relative error ${worst.toExponential(1)}`,
    );
    for (const t of [x, y, dx!]) t.dispose();
    for (const p of ps) {
      p.value.dispose();
      p.grad.dispose();
    }
  }));

Deno.test("mctformer: the training loss's gradient (cls + patch multilabel, a map term) agrees with finite differences of the f64 model along random directions, with and without drop path", async (t) => {
  await t.step("no drop path", () => scoped((gpu) => checkLossGradient(gpu, 0)));
  await t.step("drop path 0.6", () => scoped((gpu) => checkLossGradient(gpu, 0.6)));
});

/**
 * One training step's gradients against finite differences of the reference loss; with a drop
 * path rate, in training mode with the model's per-sample factors given to the reference.
 */
async function checkLossGradient(gpu: GpuContext, dropPath: number): Promise<void> {
  {
    // A resized 5x3 grid, so pos_embed learns through the bicubic resize's backward.
    const cfg = tinyConfig({ depth: dropPath ? 3 : 2 });
    const shape = [2, 3, 20, 12];
    const params = generatedParams(cfg);
    const model = createMctformer(gpu, { ...cfg, dropPath });
    setParams(model, params);
    const seed = 4;
    const branchScales = dropPath ? model.dropPathScales(seed, 2) : undefined;
    if (branchScales) {
      // The draws drop some branches and scale the kept ones by 1/keep (not all kept).
      const all = branchScales.flatMap((
        b,
      ) => (b ? [...Array.from(b.attn), ...Array.from(b.mlp)] : []));
      assertEquals(branchScales[0], null, "block 0's rate is 0");
      assertEquals([all.includes(0), all.some((v) => v > 1)], [true, true], `factors ${all}`);
    }
    const xData = randArray(shape.reduce((a, d) => a * d, 1), 5);
    const C = cfg.numClasses;
    const targets = Float32Array.from(randArray(2 * C, 6), (v) => (v > 0 ? 1 : 0));
    // L = mlsm(clsLogits) + mlsm(patchLogits) + <R, patchMap> (R: a map gradient, as OCR's).
    const mapSize = 2 * C * 5 * 3;
    const rMap = randArray(mapSize, 7, -0.05, 0.05);
    const refParts = (ps: Map<string, VitRefParam>) => {
      const f = mctformerForwardRef(cfg, ps, { shape, data: xData }, { branchScales });
      let map = 0;
      for (let i = 0; i < mapSize; i++) map += rMap[i] * f.patchMap.data[i];
      const ml = multilabelSoftMarginLossRef(f.clsLogits.data, targets).loss +
        multilabelSoftMarginLossRef(f.patchLogits.data, targets).loss;
      return { ml, map };
    };
    const refLoss = (ps: Map<string, VitRefParam>) => {
      const { ml, map } = refParts(ps);
      return ml + map;
    };
    const ps = model.params();
    zeroGrads(ps);
    const tape = new Tape(gpu, ps);
    const x = Tensor.fromArray(gpu, xData, shape);
    const out = model.forward(x, { tape, train: dropPath > 0, seed });
    const tg = Tensor.fromArray(gpu, targets, [2, C]);
    const lossCls = multilabelSoftMarginLoss(gpu, out.clsLogits, tg);
    const lossPatch = multilabelSoftMarginLoss(gpu, out.patchLogits, tg);
    tape.backward([
      [out.clsLogits, multilabelSoftMarginLossBackward(gpu, out.clsLogits, tg)],
      [out.patchLogits, multilabelSoftMarginLossBackward(gpu, out.patchLogits, tg)],
      [out.patchMap, Tensor.fromArray(gpu, rMap, out.patchMap.shape)],
    ]);
    const l0 = (await lossCls.read())[0] + (await lossPatch.read())[0];
    const want0 = refParts(params).ml;
    if (!(Math.abs(l0 - want0) <= 1e-5 * want0)) throw new Error(`loss ${l0} vs ${want0}`);
    const eps = 1e-5;
    let worst = 0;
    const dropped: string[] = [];
    for (const [k, p] of ps.entries()) {
      const g = await p.grad.read();
      const v = randArray(p.value.size, 100 + k);
      const base = params.get(p.name)!.data;
      const at = (sgn: number) => {
        const ps2 = new Map(params);
        ps2.set(p.name, {
          shape: p.value.shape,
          data: Float64Array.from(base, (b, i) => b + sgn * eps * v[i]),
        });
        return refLoss(ps2);
      };
      const fdv = (at(1) - at(-1)) / (2 * eps);
      let dot = 0, scale = 0;
      for (let i = 0; i < g.length; i++) {
        dot += g[i] * v[i];
        scale += Math.abs(g[i] * v[i]);
      }
      if (!(scale > 0)) {
        // A branch that drop path removed from every sample has no gradient, and neither has
        // the reference.
        if (dropPath && Math.abs(fdv) < 1e-9) {
          dropped.push(p.name);
          continue;
        }
        throw new Error(`${p.name}: zero gradient`);
      }
      const e = Math.abs(dot - fdv) / scale;
      if (!(e <= TOL)) {
        throw new Error(
          `${p.name}: <g, v> ${dot} vs finite difference ${fdv} (${e.toExponential(2)})`,
        );
      }
      worst = Math.max(worst, e);
    }
    console.log(
      `    training loss gradient of ${ps.length} parameters vs finite differences ` +
        `(drop path ${dropPath}): max |<g, v> - fd| / Σ|g·v| ${worst.toExponential(1)}` +
        (dropped.length ? `; none reach ${dropped.join(", ")} (dropped for both samples)` : ""),
    );
    disposeMctformerOutputs(out);
    for (const t of [x, tg, lossCls, lossPatch]) t.dispose();
    if (dropPath) {
      // Out of training, or without a rate, the same model is the eval forward; training
      // without a seed is an error.
      const x2 = Tensor.fromArray(gpu, xData, shape);
      const ev = model.forward(x2, { tape: null, seed });
      const ref = mctformerForwardRef(cfg, params, { shape, data: xData });
      rel(await ev.clsLogits.read(), ref.clsLogits.data, TOL, "eval forward with a drop path rate");
      disposeMctformerOutputs(ev);
      assertThrows(
        () => model.forward(x2, { tape: null, train: true }),
        RangeError,
        "needs a seed",
      );
      x2.dispose();
    }
    model.dispose();
  }
}

Deno.test("mctformer: DeiT weights load by name (class token and position row replicated, grid resized, DeiT's classifier skipped); a bad file is one error listing every problem", () =>
  scoped(async (gpu) => {
    const cfg = tinyConfig({ depth: 1 });
    const { embedDim: D, numClasses: C } = cfg;
    // A DeiT state: one class token, a 3x3 position grid (the model's is 4x4), a Linear head.
    const deit = new Map<string, HostTensor>();
    const put = (name: string, shape: number[]) =>
      deit.set(name, { shape, data: generated(name, shape) });
    put("cls_token", [1, 1, D]);
    put("pos_embed", [1, 1 + 9, D]);
    for (const [name, shape] of vitRefParamShapes(cfg)) {
      if (name.startsWith("blocks.") || name.startsWith("patch_embed.")) put(name, shape);
    }
    put("norm.weight", [D]);
    put("norm.bias", [D]);
    put("head.weight", [10, D]);
    put("head.bias", [10]);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/deit.safetensors`;
    await writeSafetensors(path, deit);
    const model = createMctformer(gpu, cfg);
    const headBefore = await model.head.weight.value.read();
    const notes = await loadDeitWeights(model, path);
    assertEquals(notes, [
      "class token replicated 3 times",
      "position grid resized from 3x3 to 4x4",
      "DeiT's classifier head.* [10,16] skipped",
      "final norm.* unused, skipped",
    ]);
    const value = async (name: string) =>
      await model.params().find((p) => p.name === name)!.value.read();
    const cls = await value("cls_token");
    const pos = await value("pos_embed");
    const c0 = deit.get("cls_token")!.data, p0 = deit.get("pos_embed")!.data;
    for (let k = 0; k < C; k++) {
      assertEquals(cls.subarray(k * D, (k + 1) * D), c0);
      assertEquals(pos.subarray(k * D, (k + 1) * D), p0.subarray(0, D));
    }
    // The patch rows: the 3x3 grid as a [1, D, 3, 3] image, bicubically resized to 4x4.
    const img = new Float64Array(D * 9);
    for (let q = 0; q < 9; q++) for (let d = 0; d < D; d++) img[d * 9 + q] = p0[(1 + q) * D + d];
    const r = resizeBicubicRef(img, [1, D, 3, 3], { size: [4, 4] });
    const want = new Float32Array(16 * D);
    for (let q = 0; q < 16; q++) for (let d = 0; d < D; d++) want[q * D + d] = r[d * 16 + q];
    assertEquals(pos.subarray(C * D), want);
    assertEquals(await value("blocks.0.mlp.fc1.weight"), deit.get("blocks.0.mlp.fc1.weight")!.data);
    assertEquals(await model.head.weight.value.read(), headBefore);

    // An MCTformer checkpoint of the model's own shapes converts to itself.
    const own = new Map<string, HostTensor>();
    for (const p of model.params()) {
      own.set(p.name, { shape: [...p.value.shape], data: await p.value.read() });
    }
    const same = mctformerStateFromDeit(cfg, own);
    assertEquals([same.missing, same.misShaped, same.unexpected, same.notes], [[], [], [], []]);
    for (const [name, t] of own) assertEquals(same.state.get(name)!.data, t.data);

    // Missing, mis-shaped and unexpected tensors: one error naming all of them.
    deit.delete("blocks.0.attn.proj.bias");
    put("blocks.0.norm2.weight", [D + 1]);
    put("dist_token", [1, 1, D]);
    await writeSafetensors(path, deit);
    const err = await assertRejects(() => loadDeitWeights(model, path), Error, path);
    for (
      const part of [
        "missing tensors (1): blocks.0.attn.proj.bias",
        "unexpected tensors (1): dist_token",
        "blocks.0.norm2.weight: file [17], model [16]",
      ]
    ) {
      if (!err.message.includes(part)) throw new Error(`"${part}" not in: ${err.message}`);
    }
    assertEquals(err.name, "SafetensorsError");
    await Deno.remove(dir, { recursive: true });
    model.dispose();
  }));

Deno.test("mctformer: configurations, shapes and errors", () =>
  scoped(async (gpu) => {
    const deit = mctformerConfig("deit-s", 20);
    assertEquals([deit.embedDim, deit.depth, deit.numHeads, deit.patch, deit.imgSize], [
      384,
      12,
      6,
      16,
      224,
    ]);
    const tiny = mctformerConfig("vit-tiny", 20);
    const model = createMctformer(gpu, { ...tiny, seed: 1 });
    // timm's initialisation: std 0.02 for linear weights, class tokens, position embeddings;
    // zero biases; layer norms 1 / 0; PyTorch's conv default for the patch embedding and head.
    const std = (v: Float32Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0) / v.length);
    for (const p of model.params()) {
      const v = await p.value.read();
      const s = std(v);
      const n = p.name;
      const conv = n.startsWith("patch_embed.") || n.startsWith("head.");
      if (conv && n.endsWith(".weight")) {
        // U(±1/√fan_in): std 1/√(3·fan_in).
        const want = 1 / Math.sqrt(3 * (v.length / p.value.shape[0]));
        if (!(Math.abs(s - want) < 0.1 * want)) throw new Error(`${n}: std ${s}, expected ${want}`);
      } else if (conv) {
        assertEquals(v.some((b) => b !== 0), true, n);
      } else if (n.endsWith(".bias")) assertEquals(s, 0, n);
      else if (n.includes("norm")) assertEquals(v.every((w) => w === 1), true, n);
      else if (!(Math.abs(s - 0.02) < 0.002)) throw new Error(`${n}: std ${s}, expected 0.02`);
      assertEquals(
        p.decay,
        p.value.shape.length > 1 && n !== "cls_token" && n !== "pos_embed",
        `${n}: weight decay`,
      );
      assertEquals(p.group, n.startsWith("head.") ? "head" : "backbone", n);
    }
    const x = Tensor.fromArray(gpu, randArray(2 * 3 * 128 * 96, 1), [2, 3, 128, 96]);
    const out: MctformerOutputs = model.forward(x, { tape: null });
    assertEquals(out.grid, [8, 6]);
    assertEquals([out.clsLogits.shape, out.patchLogits.shape, out.patchMap.shape, out.attn], [
      [2, 20],
      [2, 20],
      [2, 20, 8, 6],
      undefined,
    ]);
    assertThrows(
      () => mctformerMaps(gpu, out),
      Error,
      "without attn: true",
    );
    disposeMctformerOutputs(out);
    const withAttn = model.forward(x, { tape: null, attn: true });
    assertEquals(withAttn.attn!.map((a) => a.shape), Array(4).fill([2, 68, 68]));
    assertThrows(() => mctformerMaps(gpu, withAttn, { nLayers: 5 }), RangeError, "not in 1..4");
    const m = mctformerMaps(gpu, withAttn, { patchAttnRefine: false });
    assertEquals([m.patchAttn, m.refined, m.maps === m.cams], [null, null, true]);
    m.dispose();
    disposeMctformerOutputs(withAttn);
    x.dispose();
    // A tape that needs the image's gradient cannot crop it.
    const odd = Tensor.fromArray(gpu, randArray(3 * 20 * 17, 2), [1, 3, 20, 17]);
    const tape = new Tape(gpu, []);
    tape.watch(odd);
    assertThrows(() => model.forward(odd, { tape }), RangeError, "not a multiple of the patch");
    // Without a gradient to give it, the remainder is cropped (the tiny test compares values).
    disposeMctformerOutputs(model.forward(odd, { tape: null }));
    assertThrows(
      () => model.forward(Tensor.zeros(gpu, [1, 1, 32, 32]), { tape: null }),
      RangeError,
      "[B, 3, H, W]",
    );
    assertThrows(
      () => model.forward(Tensor.zeros(gpu, [1, 3, 8, 32]), { tape: null }),
      RangeError,
      "smaller than a patch",
    );
    assertThrows(
      () => createMctformer(gpu, { ...tiny, numHeads: 5 }),
      RangeError,
      "not a multiple of numHeads",
    );
    assertThrows(
      () => createMctformer(gpu, { ...tiny, imgSize: 100 }),
      RangeError,
      "not a multiple of patch",
    );
    odd.dispose();
    model.dispose();
  }));
