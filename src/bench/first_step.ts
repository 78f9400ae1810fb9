/**
 * The child process of the cold-start benchmark (./cold.ts): in a fresh process, the time to
 * the first result of one case, which includes compiling every pipeline it needs, then the
 * same work again warm. Prints one JSON line. Cases: `train ARCH SIZE BATCH` (a training step,
 * ./train.ts's) and `cam ARCH SIZE` (one image's 4-scale + flip CAMs, as `deno task cam`).
 * @module
 */
import { createGpu } from "../io/gpu.ts";
import { Tensor } from "../gpu/tensor.ts";
import { createModel } from "../models/cam_net.ts";
import type { Arch } from "../models/resnet.ts";
import { recordImageCams } from "../cam/image.ts";
import { Rng } from "../rng.ts";
import { timeTrainStep } from "./train.ts";

/** What the child reports. */
export interface FirstStepResult {
  /** Seconds from process start (module evaluation) to an open device with shaders loaded. */
  startupS: number;
  /** Seconds of the first step (or image), compilation included. */
  firstS: number;
  /** Milliseconds of the same work once compiled. */
  warmMs: number;
  /** Compute pipelines created. */
  pipelines: number;
}

const t0 = performance.now();

async function main(args: string[]): Promise<FirstStepResult> {
  const gpu = await createGpu();
  const startupS = (performance.now() - t0) / 1000;
  const [kind, arch, size, batch] = [args[0], args[1] as Arch, Number(args[2]), Number(args[3])];
  let firstS: number;
  let warmMs: number;
  if (kind === "train") {
    const t = performance.now();
    await timeTrainStep(gpu, { arch, size, batch, ocr: false }, 1, 0);
    firstS = (performance.now() - t) / 1000;
    warmMs = (await timeTrainStep(gpu, { arch, size, batch, ocr: false }, 1, 0)).ms;
  } else if (kind === "cam") {
    const model = createModel(gpu, { arch, numClasses: 20, outputStride: 16, seed: 1 });
    const rng = new Rng(3);
    const x = Tensor.fromArray(gpu, rng.normals(3 * size * size), [1, 3, size, size]);
    const image = async () => {
      const t = performance.now();
      const acc = recordImageCams(gpu, model, x);
      await acc.read();
      acc.dispose();
      return performance.now() - t;
    };
    firstS = (await image()) / 1000;
    warmMs = await image();
  } else {
    throw new Error(
      `first_step.ts: unknown case "${kind}" (train ARCH SIZE BATCH | cam ARCH SIZE)`,
    );
  }
  const pipelines = gpu.pipelinesCreated;
  gpu.destroy();
  return { startupS, firstS, warmMs, pipelines };
}

if (import.meta.main) console.log(JSON.stringify(await main(Deno.args)));
