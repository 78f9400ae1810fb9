/**
 * 2-D batch normalisation (PyTorch's `BatchNorm2d`) with explicit forward and backward:
 * training mode (batch statistics over N, H, W, running-stat update with momentum and the
 * unbiased variance), eval mode (running statistics) and psa's frozen mode (running statistics
 * while training, affine parameters trainable or frozen).
 *
 * Kernels: `shaders/batchnorm.wgsl`. Per-channel reductions use a workgroup per channel with
 * register accumulation and a single barrier; inputs larger than one storage binding are
 * reduced chunk by chunk (whole (n, c) planes) and the chunk partials merged.
 *
 * `num_batches_tracked` is not kept: it only matters for PyTorch's `momentum=None`
 * (cumulative average), which is not supported here.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { checkShape, dispatchPlanes, nchw, planeChunks } from "./planes.ts";

/** The four per-channel tensors of a batchnorm ([C] each). */
export interface BatchNormTensors {
  /** gamma. */
  weight: Tensor;
  /** beta. */
  bias: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
}

/** Options of {@link batchNormForward}. */
export interface BatchNormForwardOptions {
  /** Batch statistics (and running-stat update) when true; running statistics when false. */
  training: boolean;
  /** Default 1e-5. */
  eps?: number;
  /** Running-stat momentum (PyTorch convention: new = (1-m)·old + m·batch), default 0.1. */
  momentum?: number;
}

/**
 * Statistics used by a forward pass, needed by its backward. With `eval` false, `mean` is the
 * batch mean and `stat` is 1/sqrt(biased var + eps); with `eval` true they are the running mean
 * and running variance (retained references). Owned by the caller: dispose both.
 */
export interface BatchNormStats {
  mean: Tensor;
  stat: Tensor;
  eval: boolean;
}

const RWG = 64;

/** The uniform blocks of shaders/batchnorm.wgsl (offsets: elements inside the bindings). */
const P = declareParams("batchnorm", {
  StatsParams: { C: "u32", HW: "u32", first: "u32", count: "u32", xoff: "u32", chunk: "u32" },
  FinalParams: { C: "u32", K: "u32", eps: "f32", momentum: "f32", update: "u32" },
  ApplyParams: { C: "u32", HW: "u32", first: "u32", xoff: "u32", yoff: "u32", eps: "f32" },
  BwdReduceParams: {
    C: "u32",
    HW: "u32",
    first: "u32",
    count: "u32",
    xoff: "u32",
    dyoff: "u32",
    chunk: "u32",
  },
  BwdFinalParams: { C: "u32", K: "u32", M: "f32", eps: "f32" },
  BwdApplyParams: { C: "u32", HW: "u32", first: "u32", xoff: "u32", dyoff: "u32", dxoff: "u32" },
});

function checkParams(op: string, x: Tensor, p: BatchNormTensors): [number, number, number] {
  const [n, c, h, w] = nchw(op, x);
  for (const [k, t] of Object.entries(p)) checkShape(op, k, t as Tensor, [c]);
  if (c > 65535) throw new RangeError(`${op}: ${c} channels exceed 65535 workgroups`);
  return [n, c, h * w];
}

/**
 * Records batchnorm forward: y = (x - mean) / sqrt(var + eps) · weight + bias per channel.
 * In training mode the batch statistics are computed over (N, H, W) and the running stats are
 * updated in place (unbiased variance, as PyTorch).
 */
export function batchNormForward(
  gpu: GpuContext,
  x: Tensor,
  p: BatchNormTensors,
  opts: BatchNormForwardOptions,
): { y: Tensor; stats: BatchNormStats } {
  const op = "batchnorm.forward";
  const [n, C, HW] = checkParams(op, x, p);
  const eps = opts.eps ?? 1e-5;
  let stats: BatchNormStats;
  if (opts.training) {
    if (n * HW < 2) {
      throw new RangeError(
        `${op}: expected more than 1 value per channel when training, got input [${x.shape}]`,
      );
    }
    const chunks = planeChunks(gpu, op, n * C, [{ tensor: x, planeSize: HW }]);
    const part = Tensor.empty(gpu, [chunks.length * C * 4]);
    for (const ch of chunks) {
      gpu.dispatch({
        name: `${op}.stats`,
        shader: "batchnorm",
        entry: "stats",
        inputs: [ch.ranges[0]],
        outputs: [part],
        params: P.StatsParams.pack({
          C,
          HW,
          first: ch.first,
          count: ch.count,
          xoff: ch.offsets[0],
          chunk: ch.index,
        }),
        workgroups: [C],
      });
    }
    const mean = Tensor.empty(gpu, [C]);
    const inv = Tensor.empty(gpu, [C]);
    gpu.dispatch({
      name: `${op}.stats_final`,
      shader: "batchnorm",
      entry: "stats_final",
      inputs: [part],
      outputs: [mean, inv, p.runningMean, p.runningVar],
      params: P.FinalParams.pack({
        C,
        K: chunks.length,
        eps,
        momentum: opts.momentum ?? 0.1,
        update: 1,
      }),
      workgroups: [Math.ceil(C / RWG)],
    });
    part.dispose();
    stats = { mean, stat: inv, eval: false };
  } else {
    stats = { mean: p.runningMean.retain(), stat: p.runningVar.retain(), eval: true };
  }
  const y = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, n * C, {
    name: `${op}.apply`,
    shader: "batchnorm",
    entry: "apply",
    constants: { EVAL: stats.eval ? 1 : 0 },
    inputs: [{ tensor: x, planeSize: HW }],
    shared: [stats.mean, stats.stat, p.weight, p.bias],
    outputs: [{ tensor: y, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch) =>
      P.ApplyParams.pack({
        C,
        HW,
        first: ch.first,
        xoff: ch.offsets[0],
        yoff: ch.offsets[1],
        eps,
      }),
  });
  return { y, stats };
}

/** Options of {@link batchNormBackward}. */
export interface BatchNormBackwardOptions {
  /** Default 1e-5 (must match the forward's). */
  eps?: number;
  /**
   * Where to write (overwrite) dweight and dbias ([C] each); omit when the affine parameters
   * are frozen (then, with running statistics, no reduction runs at all).
   */
  grads?: { weight: Tensor; bias: Tensor };
  /** Add into `grads` instead of overwriting them (a parameter with several consumers). */
  accumulate?: boolean;
}

/**
 * Records batchnorm backward and returns dx. With batch statistics:
 * dx = weight·inv·(dy - mean(dy) - x̂·mean(dy·x̂)), x̂ = (x - mean)·inv; with running
 * statistics (eval/frozen) the statistics are constants: dx = weight·inv·dy.
 * dweight = Σ dy·x̂, dbias = Σ dy over (N, H, W).
 */
export function batchNormBackward(
  gpu: GpuContext,
  x: Tensor,
  dy: Tensor,
  p: BatchNormTensors,
  stats: BatchNormStats,
  opts: BatchNormBackwardOptions = {},
): Tensor {
  const op = "batchnorm.backward";
  const [n, C, HW] = checkParams(op, x, p);
  checkShape(op, "dy", dy, x.shape);
  const eps = opts.eps ?? 1e-5;
  const grads = opts.grads ?? { weight: Tensor.empty(gpu, [C]), bias: Tensor.empty(gpu, [C]) };
  checkShape(op, "dweight", grads.weight, [C]);
  checkShape(op, "dbias", grads.bias, [C]);
  const evalConst = { EVAL: stats.eval ? 1 : 0 };
  const reduce = !stats.eval || opts.grads !== undefined;
  let part: Tensor | null = null;
  let k = 0;
  if (reduce) {
    const chunks = planeChunks(gpu, op, n * C, [
      { tensor: x, planeSize: HW },
      { tensor: dy, planeSize: HW },
    ]);
    k = chunks.length;
    part = Tensor.empty(gpu, [k * C * 2]);
    for (const ch of chunks) {
      gpu.dispatch({
        name: `${op}.reduce`,
        shader: "batchnorm",
        entry: "bwd_reduce",
        inputs: [ch.ranges[0], ch.ranges[1], stats.mean],
        outputs: [part],
        params: P.BwdReduceParams.pack({
          C,
          HW,
          first: ch.first,
          count: ch.count,
          xoff: ch.offsets[0],
          dyoff: ch.offsets[1],
          chunk: ch.index,
        }),
        workgroups: [C],
      });
    }
  }
  const coef = Tensor.empty(gpu, [C * 4]);
  gpu.dispatch({
    name: `${op}.final`,
    shader: "batchnorm",
    entry: "bwd_final",
    constants: opts.accumulate ? { ...evalConst, ACC: 1 } : evalConst,
    inputs: [part ?? gpu.dummy, stats.mean, stats.stat, p.weight],
    outputs: [grads.weight, grads.bias, coef],
    params: P.BwdFinalParams.pack({ C, K: k, M: n * HW, eps }),
    workgroups: [Math.ceil(C / RWG)],
  });
  part?.dispose();
  if (!opts.grads) {
    grads.weight.dispose();
    grads.bias.dispose();
  }
  const dx = Tensor.empty(gpu, x.shape);
  dispatchPlanes(gpu, n * C, {
    name: `${op}.apply`,
    shader: "batchnorm",
    entry: "bwd_apply",
    inputs: [{ tensor: x, planeSize: HW }, { tensor: dy, planeSize: HW }],
    shared: [coef],
    outputs: [{ tensor: dx, planeSize: HW }],
    itemsPerPlane: HW,
    params: (ch) =>
      P.BwdApplyParams.pack({
        C,
        HW,
        first: ch.first,
        xoff: ch.offsets[0],
        dyoff: ch.offsets[1],
        dxoff: ch.offsets[2],
      }),
  });
  coef.dispose();
  return dx;
}
