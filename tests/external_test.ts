/**
 * External values: the conv and resize kernels, their f64 references and a whole resnet18
 * forward against fixtures computed by PyTorch (tests/fixtures/make_fixtures.py; its float64
 * results are checked in as float32 safetensors, so these tests need no Python), and the
 * pseudo-mask PNGs `computeCams` writes read back through an independent decoder (imagescript,
 * see ./independent_png.ts) instead of the project's own `decodeLabelPng`.
 *
 * The f64 references are held to 1e-6 of the largest expected magnitude (the fixtures differ
 * from the exact values by one float32 rounding, 6e-8 relative); the GPU's float32 kernels to
 * the tolerances stated at each test.
 */
import { join } from "node:path";
import { Tensor } from "../src/gpu/tensor.ts";
import { type HostTensor, readSafetensors } from "../src/io/safetensors.ts";
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
  setConvStyle,
} from "../src/ops/conv.ts";
import {
  resizeBicubic,
  resizeBicubicBackward,
  resizeBicubicBackwardRef,
  resizeBicubicRef,
  resizeBilinear,
  resizeBilinearBackward,
  resizeBilinearBackwardRef,
  resizeBilinearRef,
  type ResizeOptions,
} from "../src/ops/resize.ts";
import { createModel } from "../src/models/cam_net.ts";
import { CamNetRef, type RefState } from "../src/models/reference.ts";
import { decodeLabelPng, encodeLabelPng, VOC_PALETTE } from "../src/data/png.ts";
import { saveTensors } from "../src/io/checkpoint.ts";
import { TrainConfigSchema, validate } from "../src/io/config.ts";
import { computeCams } from "../src/methods/cam/mod.ts";
import { decodeGreyMask, decodePaletteMask, VOC_DEVKIT_COLOURS } from "./independent_png.ts";
import { generated } from "./fixture_gen.ts";
import { assertEquals, maxRelError, testGpu } from "./util.ts";

const fixture = (name: string) =>
  readSafetensors(new URL(`./fixtures/${name}.safetensors`, import.meta.url).pathname);

function get(tensors: Map<string, HostTensor>, name: string): HostTensor {
  const t = tensors.get(name);
  if (!t) throw new Error(`fixture has no tensor "${name}"`);
  return t;
}

/** Asserts maxRelError(actual, expected) <= tol; returns the error. */
function assertRel(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} values, fixture has ${expected.length}`);
  }
  const e = maxRelError(actual, expected);
  if (!(e <= tol)) throw new Error(`${what}: max relative error ${e.toExponential(2)} > ${tol}`);
  return e;
}

const REF_TOL = 1e-6;

// ---------------------------------------------------------------------------------------------
// conv2d

interface ConvFixtureCase {
  name: string;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  bias: boolean;
}

/**
 * float32 sums of up to 147 products of values in [-1, 1] (PyTorch's own float32 conv is
 * within 4e-7 of the float64 result on these cases): 1e-5 of the largest magnitude.
 */
const CONV_GPU_TOL = 1e-5;

Deno.test("external: conv2d forward and gradients (kernels and f64 references) equal PyTorch's", async () => {
  const gpu = await testGpu();
  const { tensors, metadata } = await fixture("conv2d");
  const cases = JSON.parse(metadata.cases) as ConvFixtureCase[];
  assertEquals(cases.length >= 8, true);
  let worstRef = 0;
  let worstGpu = 0;
  for (const c of cases) {
    const t = (k: string) => get(tensors, `${c.name}.${k}`);
    const x = t("x"), w = t("w"), y = t("y"), dy = t("dy");
    const bias = c.bias ? t("bias") : null;
    const o: Conv2dOptions = { stride: c.stride, padding: c.padding, dilation: c.dilation };
    const what = `conv ${c.name}`;
    // f64 references.
    const refs: [string, Float64Array, HostTensor][] = [
      ["y", conv2dRef(x.data, x.shape, w.data, w.shape, bias?.data ?? null, o), y],
      ["dx", conv2dGradInputRef(dy.data, w.data, x.shape, w.shape, o), t("dx")],
      ["dw", conv2dGradWeightRef(x.data, dy.data, x.shape, w.shape, o), t("dw")],
    ];
    if (bias) refs.push(["db", conv2dGradBiasRef(dy.data, y.shape), t("db")]);
    for (const [k, got, want] of refs) {
      worstRef = Math.max(worstRef, assertRel(got, want.data, REF_TOL, `${what} ref ${k}`));
    }
    // GPU kernels: CPU-style and GPU-style register blocks, the naive kernels (square geometry
    // only) and, for 1x1, the conv kernel instead of the matmul route.
    const square = c.stride[0] === c.stride[1] && c.padding[0] === c.padding[1] &&
      c.dilation[0] === c.dilation[1];
    const pointwise = w.shape[2] === 1 && w.shape[3] === 1 && c.stride[0] === 1 &&
      c.stride[1] === 1;
    const variants: [string, "cpu" | "gpu", Conv2dOptions][] = [
      ["rb/cpu", "cpu", o],
      ["rb/gpu", "gpu", o],
      ...(square
        ? [["naive", "cpu", { ...o, variant: "naive" }] as [string, "cpu", Conv2dOptions]]
        : []),
      ...(pointwise
        ? [["rb/no-matmul", "cpu", { ...o, matmul1x1: false }] as [string, "cpu", Conv2dOptions]]
        : []),
    ];
    const X = Tensor.fromArray(gpu, x.data, x.shape);
    const W = Tensor.fromArray(gpu, w.data, w.shape);
    const B = bias ? Tensor.fromArray(gpu, bias.data, bias.shape) : null;
    const DY = Tensor.fromArray(gpu, dy.data, dy.shape);
    try {
      for (const [v, style, vo] of variants) {
        setConvStyle(gpu, style);
        const outs: [string, Tensor, HostTensor][] = [
          ["y", conv2d(gpu, X, W, B, vo), y],
          ["dx", conv2dGradInput(gpu, DY, W, x.shape, vo), t("dx")],
          ["dw", conv2dGradWeight(gpu, X, DY, w.shape, vo), t("dw")],
        ];
        if (bias) outs.push(["db", conv2dGradBias(gpu, DY), t("db")]);
        for (const [k, got, want] of outs) {
          const e = assertRel(await got.read(), want.data, CONV_GPU_TOL, `${what} ${v} ${k}`);
          worstGpu = Math.max(worstGpu, e);
          got.dispose();
        }
      }
    } finally {
      setConvStyle(gpu, null);
      for (const T of [X, W, B, DY]) T?.dispose();
    }
  }
  console.log(
    `    conv2d vs PyTorch: f64 references ${worstRef.toExponential(1)}, ` +
      `GPU ${worstGpu.toExponential(1)} (max relative error)`,
  );
});

// ---------------------------------------------------------------------------------------------
// bilinear resize

interface ResizeFixtureCase {
  name: string;
  size?: [number, number];
  scale_factor?: [number, number];
  align_corners: boolean;
}

/**
 * Each output is a convex combination of 4 inputs with float32 weights from float32 source
 * coordinates (PyTorch's float kernels do the same): 1e-5 of the largest magnitude. The
 * backward sums at most a few dozen such terms per input.
 */
const RESIZE_GPU_TOL = 1e-5;

/** The resize kernels of one mode and their f64 references. */
const RESIZE_MODES = {
  bilinear: {
    fixture: "resize",
    minCases: 8,
    ref: resizeBilinearRef,
    refBackward: resizeBilinearBackwardRef,
    gpu: resizeBilinear,
    gpuBackward: resizeBilinearBackward,
  },
  bicubic: {
    fixture: "bicubic",
    minCases: 7,
    ref: resizeBicubicRef,
    refBackward: resizeBicubicBackwardRef,
    gpu: resizeBicubic,
    gpuBackward: resizeBicubicBackward,
  },
};

Deno.test("external: bilinear resize forward and backward (kernels and f64 references) equal PyTorch's", () =>
  checkResizeFixture("bilinear"));

// Each output: 16 taps with float32 weights (some negative, the largest about 1.07), so the
// same 1e-5 of the largest magnitude.
Deno.test("external: bicubic resize forward and backward (kernels and f64 references) equal PyTorch's", () =>
  checkResizeFixture("bicubic"));

async function checkResizeFixture(mode: keyof typeof RESIZE_MODES): Promise<void> {
  const m = RESIZE_MODES[mode];
  const gpu = await testGpu();
  const { tensors, metadata } = await fixture(m.fixture);
  const cases = JSON.parse(metadata.cases) as ResizeFixtureCase[];
  assertEquals(cases.length >= m.minCases, true);
  assertEquals(cases.some((c) => c.align_corners) && cases.some((c) => !c.align_corners), true);
  let worstRef = 0;
  let worstGpu = 0;
  for (const c of cases) {
    const t = (k: string) => get(tensors, `${c.name}.${k}`);
    const x = t("x"), y = t("y"), dy = t("dy"), dx = t("dx");
    const o: ResizeOptions = c.size
      ? { size: c.size, alignCorners: c.align_corners }
      : { scaleFactor: c.scale_factor!, alignCorners: c.align_corners };
    const what = `${mode} ${c.name}`;
    worstRef = Math.max(
      worstRef,
      assertRel(m.ref(x.data, x.shape, o), y.data, REF_TOL, `${what} ref y`),
      assertRel(m.refBackward(dy.data, x.shape, o), dx.data, REF_TOL, `${what} ref dx`),
    );
    const X = Tensor.fromArray(gpu, x.data, x.shape);
    const DY = Tensor.fromArray(gpu, dy.data, dy.shape);
    const Y = m.gpu(gpu, X, o);
    const DX = m.gpuBackward(gpu, DY, x.shape, o);
    try {
      assertEquals(Y.shape, y.shape, `${what} output shape`);
      worstGpu = Math.max(
        worstGpu,
        assertRel(await Y.read(), y.data, RESIZE_GPU_TOL, `${what} GPU y`),
        assertRel(await DX.read(), dx.data, RESIZE_GPU_TOL, `${what} GPU dx`),
      );
    } finally {
      for (const T of [X, DY, Y, DX]) T.dispose();
    }
  }
  console.log(
    `    ${mode} resize vs PyTorch: f64 references ${worstRef.toExponential(1)}, ` +
      `GPU ${worstGpu.toExponential(1)} (max relative error)`,
  );
}

// ---------------------------------------------------------------------------------------------
// resnet18

/**
 * The GPU's float32 forward through 20 convolutions (PyTorch's own float32 forward is within
 * 1e-6 of its float64 result on the features): 2e-5 of the largest magnitude.
 */
const RESNET_GPU_TOL = 2e-5;

Deno.test("external: resnet18 (output stride 16, eval batchnorm) forward equals torchvision's", async () => {
  const gpu = await testGpu();
  const { tensors, metadata } = await fixture("resnet18");
  const numClasses = Number(metadata.num_classes);
  const expectedState = JSON.parse(metadata.state) as [string, number[]][];
  const x = get(tensors, "input");
  assertEquals([...x.data], [...generated("input", x.shape)], "the generator reproduces the input");
  const model = createModel(gpu, { arch: "resnet18", numClasses, outputStride: 16 });
  const refState: RefState = new Map();
  let X: Tensor | null = null;
  try {
    // The project's state has torchvision's names and shapes, tensor for tensor.
    const sortByName = (a: [string, number[]], b: [string, number[]]) =>
      a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
    assertEquals(
      model.stateTensors().map((t): [string, number[]] => [t.name, [...t.value.shape]]).sort(
        sortByName,
      ),
      [...expectedState].sort(sortByName),
      "state names and shapes",
    );
    for (const { name, value } of model.stateTensors()) {
      const v = generated(name, value.shape);
      value.write(v);
      refState.set(name, { shape: [...value.shape], data: Float64Array.from(v) });
    }
    X = Tensor.fromArray(gpu, x.data, x.shape);
    const feats = model.backbone.forward(X, null);
    const out = model.forward(X, null);
    const eFeat = assertRel(
      await feats.read(),
      get(tensors, "features").data,
      RESNET_GPU_TOL,
      "GPU features",
    );
    assertEquals(feats.shape, get(tensors, "features").shape);
    const eCam = assertRel(
      await out.cam.read(),
      get(tensors, "cam").data,
      RESNET_GPU_TOL,
      "GPU cam",
    );
    const eLogit = assertRel(
      await out.logits.read(),
      get(tensors, "logits").data,
      RESNET_GPU_TOL,
      "GPU logits",
    );
    for (const T of [feats, out.cam, out.logits]) T.dispose();

    const ref = new CamNetRef({ arch: "resnet18", numClasses, outputStride: 16 }, refState);
    const t0 = performance.now();
    const f = ref.forward({ shape: [...x.shape], data: Float64Array.from(x.data) }, false);
    const refMs = performance.now() - t0;
    assertEquals(f.cam.shape, get(tensors, "cam").shape);
    const rCam = assertRel(f.cam.data, get(tensors, "cam").data, REF_TOL, "f64 reference cam");
    const rLogit = assertRel(f.logits.data, get(tensors, "logits").data, REF_TOL, "ref logits");
    console.log(
      `    resnet18 vs torchvision: GPU features ${eFeat.toExponential(1)}, cam ` +
        `${eCam.toExponential(1)}, logits ${eLogit.toExponential(1)}; f64 reference cam ` +
        `${rCam.toExponential(1)}, logits ${rLogit.toExponential(1)} (${
          (refMs / 1000).toFixed(1)
        } s)`,
    );
  } finally {
    X?.dispose();
    model.dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// Label PNGs through an independent decoder.

Deno.test("external: label PNGs decode through imagescript to the labels written (palette, grey, every filter)", async () => {
  // The project's palette against colours written out from the VOC devkit.
  for (const [i, rgb] of VOC_DEVKIT_COLOURS) {
    assertEquals([...VOC_PALETTE.subarray(3 * i, 3 * i + 3)], rgb, `VOC colour of label ${i}`);
  }
  // Every label value, in an odd-sized image, with each row filter and the adaptive choice.
  const w = 23, h = 17;
  const labels = new Uint8Array(w * h).map((_, i) => (i * 37 + (i >> 3)) & 0xff);
  labels.set([0, 1, 2, 20, 21, 80, 254, 255], 0);
  for (const filter of [-1, 0, 1, 2, 3, 4]) {
    const pal = await decodePaletteMask(
      await encodeLabelPng(labels, w, h, VOC_PALETTE, filter),
      VOC_PALETTE,
      `palette filter ${filter}`,
    );
    assertEquals([pal.width, pal.height], [w, h]);
    assertEquals(pal.data, labels, `palette PNG, filter ${filter}`);
    const grey = await decodeGreyMask(await encodeLabelPng(labels, w, h, undefined, filter));
    assertEquals(grey.data, labels, `grey PNG, filter ${filter}`);
  }
});

const quiet = () => {};

Deno.test("external: computeCams' pseudo-mask PNGs decode through imagescript to the rule applied to its CAMs", async () => {
  const gpu = await testGpu();
  const root = await Deno.makeTempDir({ prefix: "ocr-external-cam-" });
  try {
    // An untrained tiny model's checkpoint with the run config beside it (what `deno task
    // train` leaves): its normalised CAMs are as good as any for checking the files.
    const run = join(root, "run");
    await Deno.mkdir(run);
    const model = createModel(gpu, { arch: "tiny", numClasses: 20, seed: 3 });
    await saveTensors(join(run, "last.safetensors"), model.stateTensors(), {});
    model.dispose();
    const config = validate(TrainConfigSchema, {
      dataset: "synthetic",
      synthetic: { seed: 0, size: "tiny" },
      model: "tiny",
      seed: 3,
    }, "test config");
    await Deno.writeTextFile(join(run, "config.json"), JSON.stringify(config));
    const out = join(root, "cam");
    // bg 0.25 is exact in float32, so the threshold compares the same in f32 and f64.
    const bg = 0.25;
    const r = await computeCams(
      { ckpt: join(run, "last.safetensors"), split: "val", scales: [1], bg, out, saveCams: true },
      { gpu, log: quiet },
    );
    assertEquals(r.images > 0, true);
    const seen = new Set<number>();
    for (const id of r.ids) {
      const bytes = await Deno.readFile(join(out, "masks", `${id}.png`));
      const png = await decodePaletteMask(bytes, VOC_PALETTE, id);
      const st = await readSafetensors(join(out, "cams", `${id}.safetensors`));
      const cams = get(st.tensors, "cams");
      const tags = [...get(st.tensors, "classes").data];
      const [T, H, W] = cams.shape;
      assertEquals([png.width, png.height], [W, H], `${id} size`);
      // psa/SEAM's rule written out here: label tags[t] + 1 of the largest normalised CAM when
      // it exceeds bg (the earlier tag on ties), else background.
      const want = new Uint8Array(H * W);
      for (let p = 0; p < H * W; p++) {
        let best = bg;
        for (let k = 0; k < T; k++) {
          const v = cams.data[k * H * W + p];
          if (v > best) {
            best = v;
            want[p] = tags[k] + 1;
          }
        }
      }
      assertEquals(png.data, want, `${id}: mask`);
      assertEquals((await decodeLabelPng(bytes, id)).data, png.data, `${id}: the two decoders`);
      png.data.forEach((v) => seen.add(v));
    }
    console.log(`labels seen: ${[...seen].sort((a, b) => a - b)}`);
    // Not a degenerate check: background and at least one class occur.
    if (!(seen.has(0) && seen.size >= 2)) throw new Error(`labels seen: ${[...seen]}`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
