/**
 * torchvision compatibility of the resnets (issue 5): parameter names and shapes equal
 * torchvision's `state_dict` keys, converted weights load by name (ignoring `fc.*` and
 * `num_batches_tracked`), a file that does not fit is one error listing every problem, and the
 * loaded model computes what the CPU reference computes with the file's weights at output
 * stride 16 and 8.
 */
import { createGpu, type GpuContext } from "../src/gpu/context.ts";
import { Tensor } from "../src/gpu/tensor.ts";
import { type HostTensor, SafetensorsError, writeSafetensors } from "../src/io/safetensors.ts";
import { loadTorchvisionWeights } from "../src/io/checkpoint.ts";
import { type CamNet, createModel } from "../src/models/cam_net.ts";
import { CamNetRef, type RefState } from "../src/models/reference.ts";
import { assertEquals, assertRejects, maxRelError, randArray } from "./util.ts";

type ResNet = "resnet18" | "resnet34" | "resnet50";

/**
 * torchvision's `resnetXX().state_dict()` keys and shapes, written out from its definition
 * (torchvision/models/resnet.py): `conv1` 7x7 + `bn1`; `_make_layer` for 4 stages of
 * planes 64·2^s with [2,2,2,2] BasicBlocks (resnet18) or [3,4,6,3] BasicBlocks / Bottlenecks
 * (resnet34 / resnet50, expansion 4, width = planes); a `downsample` (1x1 conv + BN) in the
 * first block of a stage when the stride is not 1 or the channels change; every BN holds
 * weight, bias, running_mean, running_var and num_batches_tracked (a scalar); then `fc`.
 */
function torchvisionStateDict(arch: ResNet): [string, number[]][] {
  const keys: [string, number[]][] = [];
  const bn = (p: string, c: number) => {
    for (const k of ["weight", "bias", "running_mean", "running_var"]) {
      keys.push([`${p}.${k}`, [c]]);
    }
    keys.push([`${p}.num_batches_tracked`, []]);
  };
  keys.push(["conv1.weight", [64, 3, 7, 7]]);
  bn("bn1", 64);
  const bottleneck = arch === "resnet50";
  const expansion = bottleneck ? 4 : 1;
  const blocks = arch === "resnet18" ? [2, 2, 2, 2] : [3, 4, 6, 3];
  let inplanes = 64;
  for (let s = 0; s < 4; s++) {
    const planes = 64 << s;
    const stride = s === 0 ? 1 : 2;
    for (let i = 0; i < blocks[s]; i++) {
      const p = `layer${s + 1}.${i}`;
      const cin = i === 0 ? inplanes : planes * expansion;
      if (bottleneck) {
        keys.push([`${p}.conv1.weight`, [planes, cin, 1, 1]]);
        bn(`${p}.bn1`, planes);
        keys.push([`${p}.conv2.weight`, [planes, planes, 3, 3]]);
        bn(`${p}.bn2`, planes);
        keys.push([`${p}.conv3.weight`, [planes * 4, planes, 1, 1]]);
        bn(`${p}.bn3`, planes * 4);
      } else {
        keys.push([`${p}.conv1.weight`, [planes, cin, 3, 3]]);
        bn(`${p}.bn1`, planes);
        keys.push([`${p}.conv2.weight`, [planes, planes, 3, 3]]);
        bn(`${p}.bn2`, planes);
      }
      if (i === 0 && (stride !== 1 || inplanes !== planes * expansion)) {
        keys.push([`${p}.downsample.0.weight`, [planes * expansion, inplanes, 1, 1]]);
        bn(`${p}.downsample.1`, planes * expansion);
      }
    }
    inplanes = planes * expansion;
  }
  keys.push(["fc.weight", [1000, 512 * expansion]], ["fc.bias", [1000]]);
  return keys;
}

const isTorchBuffer = (k: string) =>
  k.endsWith(".running_mean") || k.endsWith(".running_var") || k.endsWith(".num_batches_tracked");

/**
 * Runs `fn` on a fresh plain (non-debug) GPU context inside validation and out-of-memory
 * error scopes, fails on any captured error, and destroys the device (freeing the models).
 */
async function withGpu(fn: (gpu: GpuContext) => void | Promise<void>): Promise<void> {
  const gpu = await createGpu();
  gpu.device.pushErrorScope("out-of-memory");
  gpu.device.pushErrorScope("validation");
  try {
    await fn(gpu);
    await gpu.sync();
    const e = (await gpu.device.popErrorScope()) ?? (await gpu.device.popErrorScope());
    if (e) throw new Error(`WebGPU error: ${e.message}`);
  } finally {
    gpu.device.destroy();
  }
}

/** The model's state as `name [shape]` strings, sorted. */
function describe(entries: { name: string; value: { shape: readonly number[] } }[]): string[] {
  return entries.map((e) => `${e.name} [${e.value.shape}]`).sort();
}

Deno.test("resnet18/34/50 parameter names and shapes equal torchvision's state_dict", () =>
  withGpu((gpu) => {
    // len(state_dict()) and len(list(parameters())) of torchvision's models: resnet18 has
    // 20 convs + 20 BNs (62 params incl. fc, 60 buffers), resnet34 36 + 36 (110, 108),
    // resnet50 53 + 53 (161, 159).
    const counts = { resnet18: [122, 62], resnet34: [218, 110], resnet50: [320, 161] };
    const samples: Record<ResNet, [string, number[] | null][]> = {
      resnet18: [
        ["conv1.weight", [64, 3, 7, 7]],
        ["bn1.running_var", [64]],
        ["layer1.1.conv2.weight", [64, 64, 3, 3]],
        ["layer3.0.downsample.0.weight", [256, 128, 1, 1]],
        ["layer4.0.downsample.1.running_mean", [512]],
        ["layer4.1.bn2.bias", [512]],
        ["classifier.weight", [20, 512, 1, 1]],
        ["layer1.0.downsample.0.weight", null],
        ["layer1.0.conv3.weight", null],
        ["layer4.2.conv1.weight", null],
      ],
      resnet34: [
        ["layer2.3.bn2.running_var", [128]],
        ["layer3.5.conv2.weight", [256, 256, 3, 3]],
        ["layer4.0.conv1.weight", [512, 256, 3, 3]],
        ["layer3.6.conv1.weight", null],
      ],
      resnet50: [
        ["conv1.weight", [64, 3, 7, 7]],
        ["bn1.running_var", [64]],
        ["layer1.0.conv1.weight", [64, 64, 1, 1]],
        ["layer1.0.downsample.0.weight", [256, 64, 1, 1]],
        ["layer2.3.conv2.weight", [128, 128, 3, 3]],
        ["layer3.0.downsample.0.weight", [1024, 512, 1, 1]],
        ["layer3.5.bn2.weight", [256]],
        ["layer4.0.conv1.weight", [512, 1024, 1, 1]],
        ["layer4.2.conv3.weight", [2048, 512, 1, 1]],
        ["layer4.2.bn3.running_mean", [2048]],
        ["classifier.weight", [20, 2048, 1, 1]],
        ["layer3.6.conv1.weight", null],
        ["fc.weight", null],
        ["layer1.0.bn1.num_batches_tracked", null],
      ],
    };
    for (const arch of ["resnet18", "resnet34", "resnet50"] as const) {
      const tv = torchvisionStateDict(arch);
      const tvParams = tv.filter(([k]) => !isTorchBuffer(k));
      assertEquals([tv.length, tvParams.length], counts[arch], `${arch}: torchvision counts`);
      const model = createModel(gpu, { arch, numClasses: 20, outputStride: 16 });
      const state = model.stateTensors();
      const names = state.map((s) => s.name);
      assertEquals(new Set(names).size, names.length, `${arch}: duplicate names`);
      // Expected: torchvision's keys without fc.* and num_batches_tracked, plus the classifier.
      const cls = ["classifier.weight", [20, arch === "resnet50" ? 2048 : 512, 1, 1]] as const;
      const expected = [...tv, cls]
        .filter(([k]) => !k.startsWith("fc.") && !k.endsWith(".num_batches_tracked"))
        .map(([k, s]) => `${k} [${s}]`).sort();
      assertEquals(describe(state), expected, `${arch}: state names and shapes`);
      // Parameters are torchvision's parameters (plus the classifier), buffers its buffers.
      assertEquals(
        describe(model.params().map((p) => ({ name: p.name, value: p.value }))),
        [...tvParams.filter(([k]) => !k.startsWith("fc.")), cls].map(([k, s]) => `${k} [${s}]`)
          .sort(),
        `${arch}: parameters`,
      );
      assertEquals(
        model.params().filter((p) => p.group === "head").map((p) => p.name),
        ["classifier.weight"],
      );
      const byName = new Map(state.map((s) => [s.name, [...s.value.shape]]));
      for (const [name, shape] of samples[arch]) {
        assertEquals(byName.get(name) ?? null, shape, `${arch}: ${name}`);
      }
      if (arch === "resnet18") {
        // Output stride only turns strides into dilations: same names and shapes.
        const os8 = createModel(gpu, { arch, numClasses: 20, outputStride: 8 });
        assertEquals(describe(os8.stateTensors()), describe(state), `${arch}: OS8 vs OS16`);
      }
    }
  }));

/** A torchvision-style resnet18 file: every state_dict key (fc, num_batches_tracked too). */
function fakeTorchvisionFile(seed: number): Map<string, HostTensor> {
  const file = new Map<string, HostTensor>();
  let s = seed;
  for (const [name, shape] of torchvisionStateDict("resnet18")) {
    const n = shape.reduce((a, d) => a * d, 1);
    const data = name.endsWith(".num_batches_tracked")
      ? new Float32Array([1234])
      : name.endsWith(".running_var")
      ? randArray(n, s++, 0.5, 1.5)
      : name.endsWith(".running_mean") || name.endsWith(".bias")
      ? randArray(n, s++, -0.2, 0.2)
      : shape.length === 1
      ? randArray(n, s++, 0.5, 1.5)
      : randArray(n, s++, -1, 1).map((v) => v * Math.sqrt(3 / (shape[1] * shape[2] * shape[3])));
    file.set(name, { shape, data });
  }
  return file;
}

async function checkAgainstFile(
  gpu: GpuContext,
  model: CamNet,
  file: Map<string, HostTensor>,
): Promise<void> {
  const os = model.options.outputStride;
  const state: RefState = new Map();
  for (const [name, t] of file) {
    state.set(name, { shape: t.shape, data: Float64Array.from(t.data) });
  }
  const cls = model.classifier.weight.value;
  state.set("classifier.weight", {
    shape: [...cls.shape],
    data: Float64Array.from(await cls.read()),
  });
  const ref = new CamNetRef({ arch: "resnet18", numClasses: 5, outputStride: os }, state);
  const shape = [1, 3, 33, 33];
  const xData = randArray(3 * 33 * 33, 90 + os);
  const x = Tensor.fromArray(gpu, xData, shape);
  const { cam, logits } = model.forward(x, null);
  const f = ref.forward({ shape, data: Float64Array.from(xData) }, false);
  // 33 → conv1 17 → pool 9 → layer2 5 → layer3 3 (OS16) or 5 (OS8, dilated).
  const side = os === 16 ? 3 : 5;
  assertEquals([...cam.shape], [1, 5, side, side], `OS${os} cam shape`);
  assertEquals(f.cam.shape, [1, 5, side, side]);
  const err = Math.max(
    maxRelError(await cam.read(), f.cam.data),
    maxRelError(await logits.read(), f.logits.data),
  );
  // GPU f32 vs f64 reference; measured about 1e-6.
  if (!(err <= 1e-4)) throw new Error(`OS${os}: loaded model differs from the reference: ${err}`);
  for (const t of [x, cam, logits]) t.dispose();
}

Deno.test("loadTorchvisionWeights: torchvision-named resnet18 weights load at OS16 and OS8", () =>
  withGpu(async (gpu) => {
    const dir = await Deno.makeTempDir({ prefix: "ocr-weights-" });
    try {
      const good = fakeTorchvisionFile(100);
      const path = `${dir}/resnet18.safetensors`;
      await writeSafetensors(path, good);
      for (const os of [16, 8] as const) {
        const model = createModel(gpu, { arch: "resnet18", numClasses: 5, outputStride: os });
        const clsBefore = await model.classifier.weight.value.read();
        await loadTorchvisionWeights(model, path);
        const byName = new Map(model.stateTensors().map((t) => [t.name, t.value]));
        for (
          const name of [
            "conv1.weight",
            "bn1.bias",
            "layer3.0.downsample.0.weight",
            "layer4.1.bn2.running_var",
          ]
        ) {
          assertEquals(
            await byName.get(name)!.read(),
            good.get(name)!.data,
            `${name} after loading`,
          );
        }
        // The classifier is not in the file: it keeps its initialisation.
        assertEquals(await model.classifier.weight.value.read(), clsBefore);
        await checkAgainstFile(gpu, model, good);
      }

      // Missing, unexpected and mis-shaped: one error naming all three; nothing is written.
      const bad = fakeTorchvisionFile(200);
      bad.delete("layer2.1.bn2.running_var");
      bad.set("layer5.0.conv1.weight", { shape: [4], data: new Float32Array(4) });
      bad.set("layer3.0.conv1.weight", {
        shape: [128, 256, 3, 3], // torchvision's is [256, 128, 3, 3]
        data: bad.get("layer3.0.conv1.weight")!.data,
      });
      const badPath = `${dir}/bad.safetensors`;
      await writeSafetensors(badPath, bad);
      const model = createModel(gpu, { arch: "resnet18", numClasses: 5, outputStride: 16 });
      await loadTorchvisionWeights(model, path);
      const err = await assertRejects(
        () => loadTorchvisionWeights(model, badPath),
        SafetensorsError,
      );
      for (
        const part of [
          badPath,
          "missing tensors (1): layer2.1.bn2.running_var",
          "unexpected tensors (1): layer5.0.conv1.weight",
          "mis-shaped tensors: layer3.0.conv1.weight: file [128,256,3,3], model [256,128,3,3]",
        ]
      ) {
        if (!err.message.includes(part)) {
          throw new Error(`error message lacks "${part}":\n${err.message}`);
        }
      }
      for (const name of ["conv1.weight", "layer3.0.conv1.weight", "layer4.1.bn2.weight"]) {
        const t = model.stateTensors().find((s) => s.name === name)!.value;
        assertEquals(await t.read(), good.get(name)!.data, `${name} after the failed load`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));
