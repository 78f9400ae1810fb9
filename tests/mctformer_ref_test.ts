/**
 * The f64 MCTformer-V2 reference (src/models/vit_reference.ts) against PyTorch: a DeiT-S-shaped
 * model (384 wide, 12 blocks, 6 heads, 20 class tokens) with generated weights at two input
 * sizes (the trained 3x3 patch grid, and 4x3 with bicubically resized position embeddings), its
 * class and patch logits, patch map, last attention and localisation maps, computed by
 * tests/fixtures/make_fixtures.py in float64 and checked in as float32 (so 1e-6 of the largest
 * magnitude: one float32 rounding is 6e-8). Then self-checks on a tiny configuration.
 */
import { type HostTensor, readSafetensors } from "../src/io/safetensors.ts";
import {
  deitSmallConfig,
  erfRef,
  geluRef,
  headMeanRef,
  MCT_LAYER_INDEX,
  mctformerForwardRef,
  mctformerMapsRef,
  type VitRefConfig,
  type VitRefParam,
  vitRefParamShapes,
} from "../src/models/vit_reference.ts";
import { resizeBicubicRef } from "../src/ops/resize.ts";
import { generated } from "./fixture_gen.ts";
import { assertEquals, assertThrows, maxRelError, randArray } from "./util.ts";

const REF_TOL = 1e-6;

function get(tensors: Map<string, HostTensor>, name: string): HostTensor {
  const t = tensors.get(name);
  if (!t) throw new Error(`fixture has no tensor "${name}"`);
  return t;
}

interface Checked {
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Asserts equal shapes and maxRelError <= REF_TOL; returns the error. */
function check(got: Checked, want: HostTensor, what: string): number {
  assertEquals([...got.shape], want.shape, `${what}: shape`);
  const e = maxRelError(got.data, want.data);
  if (!(e <= REF_TOL)) throw new Error(`${what}: max relative error ${e.toExponential(2)}`);
  return e;
}

Deno.test("mctformer reference: DeiT-S-shaped forward and localisation maps equal PyTorch's (3x3 and 4x3 patch grids)", async () => {
  const { tensors, metadata } = await readSafetensors(
    new URL("./fixtures/mctformer.safetensors", import.meta.url).pathname,
  );
  const m = JSON.parse(metadata.config);
  const cfg: VitRefConfig = {
    embedDim: m.dim,
    depth: m.depth,
    numHeads: m.heads,
    mlpRatio: m.mlp,
    patch: m.patch,
    numClasses: m.classes,
    imgSize: m.img_size,
    lnEps: m.eps,
  };
  assertEquals(cfg, { ...deitSmallConfig(20, 48), lnEps: 1e-6 }, "DeiT-S shape, 20 classes");
  const layers = Number(metadata.layers);
  assertEquals(layers, MCT_LAYER_INDEX);
  // The same names, shapes and order as the fixture's model (with the final norm's parameters).
  assertEquals(vitRefParamShapes({ ...cfg, finalNorm: true }), JSON.parse(metadata.state));
  const params = new Map<string, VitRefParam>();
  for (const [name, shape] of vitRefParamShapes({ ...cfg, finalNorm: true })) {
    params.set(name, { shape, data: generated(name, shape) });
  }
  const cases = JSON.parse(metadata.cases) as { name: string; input: string; shape: number[] }[];
  assertEquals(cases.map((c) => c.name), ["sq", "rect"]);
  let worst = 0;
  const note = (e: number) => worst = Math.max(worst, e);
  const t0 = performance.now();
  for (const c of cases) {
    const t = (k: string) => get(tensors, `${c.name}.${k}`);
    const x = t("input");
    assertEquals(x.data, generated(c.input, c.shape), `${c.name}: the generator makes the input`);
    const f = mctformerForwardRef(cfg, params, x, { attn: true });
    const [h0, w0] = f.grid;
    assertEquals([h0, w0], c.name === "sq" ? [3, 3] : [4, 3]);
    note(check(f.clsLogits, t("clsLogits"), `${c.name} clsLogits`));
    note(check(f.patchLogits, t("patchLogits"), `${c.name} patchLogits`));
    note(check(f.patchMap, t("patchMap"), `${c.name} patchMap`));
    note(check(headMeanRef(f.attn![cfg.depth - 1]), t("attnLast"), `${c.name} attnLast`));
    const maps = mctformerMapsRef(f, { nLayers: layers });
    note(check(maps.mct, t("mct"), `${c.name} mct`));
    note(check(maps.cams, t("fused"), `${c.name} fused`));
    note(check(maps.refined, t("refined"), `${c.name} refined`));
    if (c.name === "sq") {
      const all = mctformerMapsRef(f, { nLayers: cfg.depth });
      note(check(all.mct, t("mct.l12"), "sq mct over 12 blocks"));
      note(check(all.refined, t("refined.l12"), "sq refined over 12 blocks"));
      const fn = mctformerForwardRef({ ...cfg, finalNorm: true }, params, x);
      note(check(fn.clsLogits, t("finalNorm.clsLogits"), "sq clsLogits with the final norm"));
      note(check(fn.patchMap, t("finalNorm.patchMap"), "sq patchMap with the final norm"));
    } else {
      const mp = mctformerForwardRef({ ...cfg, posEmbedResize: "mctformer" }, params, x);
      note(check(mp.clsLogits, t("mctformerPos.clsLogits"), "rect clsLogits, official resize"));
      note(check(mp.patchMap, t("mctformerPos.patchMap"), "rect patchMap, official resize"));
      // The two resize rules do differ here, so the check above is not vacuous.
      assertEquals(maxRelError(mp.patchMap.data, t("patchMap").data) > 1e-3, true);
    }
  }
  console.log(
    `    MCTformer-V2 reference vs PyTorch: max relative error ${worst.toExponential(1)} ` +
      `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
});

/** A tiny configuration: 2 blocks, 8 wide, 2 heads, patch 4, trained on a 2x2 patch grid. */
function tiny(numClasses: number): { cfg: VitRefConfig; params: Map<string, VitRefParam> } {
  const cfg: VitRefConfig = {
    embedDim: 8,
    depth: 2,
    numHeads: 2,
    patch: 4,
    numClasses,
    imgSize: 8,
    finalNorm: true,
  };
  const params = new Map<string, VitRefParam>();
  for (const [name, shape] of vitRefParamShapes(cfg)) {
    params.set(name, { shape, data: generated(name, shape) });
  }
  return { cfg, params };
}

function image(shape: number[], seed: number) {
  return { shape, data: randArray(shape.reduce((a, d) => a * d, 1), seed) };
}

Deno.test("mctformer reference: tiny-config self-checks (shapes with C, softmax rows, maps, resize rules)", () => {
  for (const C of [1, 3, 5]) {
    const { cfg, params } = tiny(C);
    const x = image([2, 3, 12, 8], C); // 3x2 patches: the position grid is resized
    const f = mctformerForwardRef(cfg, params, x, { attn: true });
    const T = C + 6;
    assertEquals(f.grid, [3, 2]);
    assertEquals(f.clsLogits.shape, [2, C]);
    assertEquals(f.patchLogits.shape, [2, C]);
    assertEquals(f.patchMap.shape, [2, C, 3, 2]);
    assertEquals(f.tokens.shape, [2, T, 8]);
    assertEquals(f.attn!.map((a) => a.shape), [[2, 2, T, T], [2, 2, T, T]]);
    for (const a of f.attn!) {
      for (let r = 0; r < 2 * 2 * T; r++) {
        const row = a.data.subarray(r * T, (r + 1) * T);
        const s = row.reduce((u, v) => u + v, 0);
        if (Math.abs(s - 1) > 1e-12 || row.some((v) => !(v > 0))) {
          throw new Error(`C ${C}: attention row ${r} sums to ${s}`);
        }
      }
    }
    // The logits are the means they are documented to be.
    for (let b = 0; b < 2; b++) {
      for (let c = 0; c < C; c++) {
        const tok = f.tokens.data.subarray((b * T + c) * 8, (b * T + c + 1) * 8);
        const map = f.patchMap.data.subarray((b * C + c) * 6, (b * C + c + 1) * 6);
        const mean = (v: Float64Array) => v.reduce((u, w) => u + w, 0) / v.length;
        if (Math.abs(f.clsLogits.data[b * C + c] - mean(tok)) > 1e-12) throw new Error("cls");
        if (Math.abs(f.patchLogits.data[b * C + c] - mean(map)) > 1e-12) throw new Error("patch");
      }
    }
    // Maps: the three types, the refinement by every block's patch attention, nLayers.
    const mct = mctformerMapsRef(f, { nLayers: 1, type: "mct" });
    const fused = mctformerMapsRef(f, { nLayers: 1 });
    const patchcam = mctformerMapsRef(f, { nLayers: 2, type: "patchcam" });
    const last = headMeanRef(f.attn![1]).data;
    const both = [0, 1].map((l) => headMeanRef(f.attn![l]).data);
    for (let b = 0; b < 2; b++) {
      for (let c = 0; c < C; c++) {
        for (let i = 0; i < 6; i++) {
          const k = (b * C + c) * 6 + i;
          const a = last[(b * T + c) * T + C + i];
          const relu = Math.max(f.patchMap.data[k], 0);
          assertEquals(mct.cams.data[k], a);
          if (Math.abs(fused.cams.data[k] - a * relu) > 1e-15) throw new Error("fused");
          assertEquals(patchcam.cams.data[k], relu);
          let r = 0;
          for (let j = 0; j < 6; j++) {
            const pa = both[0][(b * T + C + i) * T + C + j] + both[1][(b * T + C + i) * T + C + j];
            r += pa * fused.cams.data[(b * C + c) * 6 + j];
          }
          if (Math.abs(fused.refined.data[k] - r) > 1e-12) throw new Error("refined");
        }
      }
    }
    assertThrows(() => mctformerMapsRef(f, { nLayers: 3 }), Error, "nLayers 3 not in 1..2");
    assertThrows(() => mctformerMapsRef(mctformerForwardRef(cfg, params, x)), Error, "attn");
  }

  const { cfg, params } = tiny(3);
  // Pure: the same call again gives the same values; the image is not changed.
  const x = image([1, 3, 8, 8], 7);
  const before = Float32Array.from(x.data);
  const a = mctformerForwardRef(cfg, params, x, { attn: true });
  assertEquals(mctformerForwardRef(cfg, params, x, { attn: true }), a);
  assertEquals(x.data, before);
  // A remainder of the image that no patch covers changes nothing ("size" rule: the grid is
  // still the trained 2x2, so the position embeddings are not resized even for 9x11 pixels).
  const big = image([1, 3, 9, 11], 8);
  const crop = { shape: [1, 3, 8, 8], data: new Float32Array(3 * 64) };
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) crop.data[(c * 8 + i) * 8 + j] = big.data[(c * 9 + i) * 11 + j];
    }
  }
  const fb = mctformerForwardRef(cfg, params, big);
  assertEquals(fb, mctformerForwardRef(cfg, params, crop));
  // The official rule resizes for a non-square image even on the trained grid (scale 2.1/2).
  const official = { ...cfg, posEmbedResize: "mctformer" as const };
  assertEquals(mctformerForwardRef(official, params, crop), mctformerForwardRef(cfg, params, crop));
  const fo = mctformerForwardRef(official, params, big);
  assertEquals(maxRelError(fo.patchMap.data, fb.patchMap.data) > 1e-6, true);
  // Bicubic to the same size is the identity; a constant stays constant (weights sum to 1).
  const img = randArray(2 * 5 * 4, 9);
  assertEquals(resizeBicubicRef(img, [1, 2, 5, 4], { size: [5, 4] }), Float64Array.from(img));
  const up = resizeBicubicRef(new Float64Array(12).fill(0.75), [1, 1, 3, 4], { size: [7, 2] });
  if (up.some((v) => Math.abs(v - 0.75) > 1e-15)) throw new Error(`constant: ${up}`);
  // Parameter errors name the tensor.
  const bad = new Map(params);
  bad.delete("blocks.1.mlp.fc2.bias");
  assertThrows(() => mctformerForwardRef(cfg, bad, x), Error, `"blocks.1.mlp.fc2.bias"`);
  bad.set("blocks.1.mlp.fc2.bias", { shape: [7], data: new Float64Array(7) });
  assertThrows(() => mctformerForwardRef(cfg, bad, x), Error, "has shape [7], expected [8]");
  // Without the final norm its parameters are not asked for.
  const noNorm = new Map(params);
  noNorm.delete("norm.weight");
  noNorm.delete("norm.bias");
  mctformerForwardRef({ ...cfg, finalNorm: false }, noNorm, x);
  assertThrows(() => mctformerForwardRef(cfg, noNorm, x), Error, `"norm.weight"`);
});

Deno.test("mctformer reference: erf and exact GELU", () => {
  // erf values from C99 erf (Python's math.erf), to the double.
  const table: [number, number][] = [
    [0, 0],
    [1e-3, 0.0011283787909692365],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3, 0.9999779095030014],
    [-1.5, -0.9661051464753108],
    [5.5, 0.9999999999999927],
    [7, 1],
  ];
  for (const [x, want] of table) {
    if (Math.abs(erfRef(x) - want) > 4e-16) throw new Error(`erf(${x}) = ${erfRef(x)}, ${want}`);
  }
  // gelu(x) = x·Φ(x): Φ(1) = 0.8413447460685429, Φ(-2) = 0.02275013194817921.
  if (Math.abs(geluRef(1) - 0.8413447460685429) > 1e-15) throw new Error(`gelu(1)`);
  if (Math.abs(geluRef(-2) + 2 * 0.02275013194817921) > 1e-15) throw new Error(`gelu(-2)`);
});
