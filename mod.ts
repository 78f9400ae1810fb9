/**
 * ocr-wsss: weakly supervised semantic segmentation with Out-of-Candidate Rectification
 * (Cheng et al., CVPR 2023) on WebGPU. Import this module from a URL:
 *
 * ```ts
 * import * as ocr from "https://<host>/<path>/mod.ts";
 * const gpu = await ocr.createGpu();
 * const x = ocr.Tensor.fromArray(gpu, [1, 2, 3], [3]);
 * const y = ocr.pointwise(gpu, "relu", [x]);
 * console.log(await y.read());
 * ```
 * @module
 */
export {
  ADAPTER_HELP,
  type Bindable,
  type BufferRange,
  createGpu,
  type DispatchSpec,
  f32bits,
  GpuContext,
  GpuError,
  type GpuOptions,
} from "./src/gpu/context.ts";
export { numel, Tensor } from "./src/gpu/tensor.ts";
export { BufferPool, type PoolStats } from "./src/gpu/pool.ts";
export { POINTWISE, pointwise, type PointwiseName } from "./src/nn/pointwise.ts";
