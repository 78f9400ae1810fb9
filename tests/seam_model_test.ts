/**
 * SEAM's network and training loss: the step's losses against the f64 reference composed from
 * the branch outputs, shared-weight gradients as the sum of the branches' gradients, OCR.
 */
import { Tensor } from "../src/gpu/tensor.ts";
import { Tape } from "../src/autograd/tape.ts";
import { zeroGrads } from "../src/autograd/param.ts";
import { OcrConfigSchema } from "../src/io/config.ts";
import { createSeamNet, type SeamNet } from "../src/methods/seam/model.ts";
import {
  recordSeamLosses,
  type SeamLosses,
  seamLossRef,
  type SeamStepInputs,
} from "../src/methods/seam/loss.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

const N = 2, C = 3, S = 32;

async function setup(arch: "tiny" | "resnet50" = "tiny", size = S) {
  const gpu = await testGpu();
  const model = createSeamNet(gpu, { arch, numClasses: C, seed: 3 });
  const x = Tensor.fromArray(gpu, randArray(N * 3 * size * size, 4), [N, 3, size, size]);
  const tags = Tensor.fromArray(gpu, Float32Array.of(1, 0, 1, 0, 1, 0), [N, C]);
  return { gpu, model, x, tags };
}

function inputs(x: Tensor, tags: Tensor, extra: Partial<SeamStepInputs> = {}): SeamStepInputs {
  return {
    x,
    tags,
    prior: null,
    ocr: OcrConfigSchema.parse({}),
    dropoutSeed: 7,
    scaleFactor: 0.3,
    ecrTopk: 0.2,
    ...extra,
  };
}

const LOSS_KEYS = ["cls1", "cls2", "rvmin1", "rvmin2", "er", "ecr1", "ecr2"] as const;

async function gradsOf(model: SeamNet, s: SeamStepInputs): Promise<Float32Array[]> {
  const gpu = model.gpu;
  const params = model.params();
  const tape = new Tape(gpu, params);
  zeroGrads(params);
  const r = recordSeamLosses(gpu, model, tape, s);
  tape.backward(r.seeds);
  r.release();
  disposeLosses(r.losses);
  return await Promise.all(params.map((p) => p.grad.read()));
}

function disposeLosses(l: SeamLosses): void {
  for (const t of Object.values(l)) t?.dispose();
}

Deno.test("seam step: the losses match the f64 reference of the branch outputs", async () => {
  const { gpu, model, x, tags } = await setup();
  const tape = new Tape(gpu, model.params());
  const r = recordSeamLosses(gpu, model, tape, inputs(x, tags));
  const host = async (t: Tensor) => ({ data: await t.read(), shape: t.shape });
  const [o1, o2] = r.outputs;
  const b1 = { cam: await host(o1.cam), camRv: await host(o1.camRv) };
  const b2 = { cam: await host(o2.cam), camRv: await host(o2.camRv) };
  if (b2.cam.shape[2] !== Math.floor(S * 0.3)) throw new Error(`branch 2 is ${b2.cam.shape}`);
  const want = seamLossRef(b1, b2, await tags.read(), { scaleFactor: 0.3, ecrTopk: 0.2 });
  for (const k of LOSS_KEYS) {
    const got = await r.losses[k].read();
    assertClose(got, [want[k]], { rtol: 1e-4, atol: 1e-6 }, k);
  }
  if (!(want.ecr1 > 0 && want.er > 0 && want.cls1 > 0)) throw new Error("degenerate losses");
  tape.dispose();
  r.release();
  disposeLosses(r.losses);
  model.dispose();
  x.dispose();
  tags.dispose();
});

Deno.test("seam step: shared-weight gradients are the sum of the two branches'", async () => {
  const { model, x, tags } = await setup();
  const both = await gradsOf(model, inputs(x, tags));
  const only1 = await gradsOf(model, inputs(x, tags, { detach: [false, true] }));
  const only2 = await gradsOf(model, inputs(x, tags, { detach: [true, false] }));
  const params = model.params();
  let nonzero1 = 0, nonzero2 = 0;
  both.forEach((g, i) => {
    const sum = only1[i].map((v, j) => v + only2[i][j]);
    const scale = g.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    assertClose(g, sum, { rtol: 1e-3, atol: 1e-5 * scale + 1e-9 }, params[i].name);
    if (only1[i].some((v) => v !== 0)) nonzero1++;
    if (only2[i].some((v) => v !== 0)) nonzero2++;
  });
  // Both branches reach (almost) every parameter; the PCM convs get gradient from both.
  if (nonzero1 < params.length - 2 || nonzero2 < params.length - 2) {
    throw new Error(`branch gradients reach ${nonzero1}, ${nonzero2} of ${params.length}`);
  }
  model.dispose();
  x.dispose();
  tags.dispose();
});

Deno.test("seam step: OCR adds its losses and gradients on both branches", async () => {
  const { gpu, model, x, tags } = await setup();
  const prior = Tensor.fromArray(gpu, Float32Array.of(1, 0.5, 0.2, 0.5, 1, 0.1, 0.2, 0.1, 1), [
    C,
    C,
  ]);
  const ocr = OcrConfigSchema.parse({ enabled: true });
  const tape = new Tape(gpu, model.params());
  const r = recordSeamLosses(gpu, model, tape, inputs(x, tags, { prior, ocr }));
  tape.backward(r.seeds);
  const l1 = await r.losses.ocr1!.read();
  const l2 = await r.losses.ocr2!.read();
  if (!Number.isFinite(l1[0]) || !Number.isFinite(l2[0])) throw new Error("OCR loss not finite");
  r.release();
  disposeLosses(r.losses);
  prior.dispose();
  model.dispose();
  x.dispose();
  tags.dispose();
});

Deno.test("seam net: resnet50 maps at output stride 8, cam_rv non-negative", async () => {
  const { model, x, tags } = await setup("resnet50", 24);
  const m = model.forwardMaps(x, null);
  if (m.cam.shape.join() !== [N, C + 1, 3, 3].join()) throw new Error(`cam ${m.cam.shape}`);
  const rv = await m.camRv.read();
  if (rv.some((v) => !(v >= 0))) throw new Error("cam_rv has negative values");
  m.cam.dispose();
  m.camRv.dispose();
  model.dispose();
  x.dispose();
  tags.dispose();
});
