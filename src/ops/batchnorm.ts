/**
 * 2-D batch normalisation (PyTorch's `BatchNorm2d`) with explicit forward and backward:
 * training mode (batch statistics over N, H, W, running-stat update with momentum and the
 * unbiased variance), eval mode (running statistics) and psa's frozen mode (running statistics
 * while training, affine parameters trainable or frozen), each optionally fused with the ReLU
 * that follows it (`relu`: the forward writes max(y, 0), the backward masks the gradient of
 * that output with it, so the pair costs the batchnorm's passes only).
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
import {
  asShape,
  bytesOf,
  defineOpUnit,
  type OpUnit,
  type RecordedOp,
  type RefValues,
  sizeOf,
  uniformValues,
} from "./unit.ts";

/** The four per-channel tensors of a batchnorm ([C] each). */
export interface BatchNormTensors {
  /** gamma. */
  weight: Tensor;
  /** beta. */
  bias: Tensor;
  /** Running per-channel mean (used in eval mode, updated in training mode). */
  runningMean: Tensor;
  /** Running per-channel variance (used in eval mode, updated in training mode). */
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
  /**
   * Fuse the ReLU that follows: y = max(bn(x), 0), in the same pass (default false). Its
   * backward is {@link batchNormBackward} with `reluOutput` set to this y.
   */
  relu?: boolean;
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
    yoff: "u32",
    chunk: "u32",
  },
  BwdFinalParams: { C: "u32", K: "u32", M: "f32", eps: "f32" },
  BwdApplyParams: {
    C: "u32",
    HW: "u32",
    first: "u32",
    xoff: "u32",
    dyoff: "u32",
    yoff: "u32",
    dxoff: "u32",
  },
});

function checkParams(op: string, x: Tensor, p: BatchNormTensors): [number, number, number] {
  const [n, c, h, w] = nchw(op, x);
  for (const [k, t] of Object.entries(p)) checkShape(op, k, t as Tensor, [c]);
  if (c > 65535) throw new RangeError(`${op}: ${c} channels exceed 65535 workgroups`);
  return [n, c, h * w];
}

/**
 * Records batchnorm forward: y = (x - mean) / sqrt(var + eps) · weight + bias per channel
 * (then max(y, 0) with `opts.relu`). In training mode the batch statistics are computed over
 * (N, H, W) and the running stats are updated in place (unbiased variance, as PyTorch).
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
    constants: { EVAL: stats.eval ? 1 : 0, RELU: opts.relu ? 1 : 0 },
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
  /**
   * The forward's output when it fused the ReLU (`relu: true`): `dy` is then the gradient of
   * max(bn(x), 0) and is masked by `reluOutput > 0` inside the kernels (relu_bwd's rule),
   * with no pass or temporary of its own.
   */
  reluOutput?: Tensor;
}

/**
 * Records batchnorm backward and returns dx. With batch statistics:
 * dx = weight·inv·(dy - mean(dy) - x̂·mean(dy·x̂)), x̂ = (x - mean)·inv; with running
 * statistics (eval/frozen) the statistics are constants: dx = weight·inv·dy.
 * dweight = Σ dy·x̂, dbias = Σ dy over (N, H, W). With `opts.reluOutput`, dy is first
 * replaced by dy·[y > 0] (the fused ReLU's backward).
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
  if (opts.reluOutput) checkShape(op, "reluOutput", opts.reluOutput, x.shape);
  const evalConst = { EVAL: stats.eval ? 1 : 0 };
  const relu = opts.reluOutput !== undefined;
  // Without the ReLU the kernels' y binding holds x again (never read: one binding layout).
  const y = opts.reluOutput ?? x;
  const reduce = !stats.eval || opts.grads !== undefined;
  let part: Tensor | null = null;
  let k = 0;
  if (reduce) {
    const chunks = planeChunks(gpu, op, n * C, [
      { tensor: x, planeSize: HW },
      { tensor: dy, planeSize: HW },
      { tensor: y, planeSize: HW },
    ]);
    k = chunks.length;
    part = Tensor.empty(gpu, [k * C * 2]);
    for (const ch of chunks) {
      gpu.dispatch({
        name: `${op}.reduce`,
        shader: "batchnorm",
        entry: "bwd_reduce",
        constants: { RELU: relu ? 1 : 0 },
        inputs: [ch.ranges[0], ch.ranges[1], ch.ranges[2], stats.mean],
        outputs: [part],
        params: P.BwdReduceParams.pack({
          C,
          HW,
          first: ch.first,
          count: ch.count,
          xoff: ch.offsets[0],
          dyoff: ch.offsets[1],
          yoff: ch.offsets[2],
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
    constants: { RELU: relu ? 1 : 0 },
    inputs: [
      { tensor: x, planeSize: HW },
      { tensor: dy, planeSize: HW },
      { tensor: y, planeSize: HW },
    ],
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
        yoff: ch.offsets[2],
        dxoff: ch.offsets[3],
      }),
  });
  coef.dispose();
  return dx;
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64).

/** Per-channel batch mean and biased variance over (N, H, W) of x [N, C, H, W] (f64). */
export function batchNormStatsRef(
  x: ArrayLike<number>,
  shape: readonly number[],
): { mean: Float64Array; var: Float64Array } {
  const [n, c, h, w] = shape;
  const hw = h * w;
  const mean = new Float64Array(c);
  const vr = new Float64Array(c);
  for (let k = 0; k < c; k++) {
    let s = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < hw; i++) s += x[(b * c + k) * hw + i];
    mean[k] = s / (n * hw);
    let s2 = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) s2 += (x[(b * c + k) * hw + i] - mean[k]) ** 2;
    }
    vr[k] = s2 / (n * hw);
  }
  return { mean, var: vr };
}

/** y = (x - mean) / sqrt(var + eps) · weight + bias with given per-channel statistics (f64). */
export function batchNormApplyRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  mean: ArrayLike<number>,
  vr: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  eps = 1e-5,
): Float64Array {
  const [n, c, h, w] = shape;
  const hw = h * w;
  const y = new Float64Array(n * c * hw);
  for (let j = 0; j < y.length; j++) {
    const k = Math.floor(j / hw) % c;
    y[j] = (x[j] - mean[k]) / Math.sqrt(vr[k] + eps) * weight[k] + bias[k];
  }
  return y;
}

/** The per-channel tensors of a batchnorm as host values. */
export interface BatchNormRefParams {
  weight: ArrayLike<number>;
  bias: ArrayLike<number>;
  runningMean: ArrayLike<number>;
  runningVar: ArrayLike<number>;
}

/**
 * CPU reference of {@link batchNormForward} (f64): batch statistics and the running-stat
 * update (unbiased variance) in training mode, running statistics otherwise (running stats
 * returned unchanged); then max(y, 0) with `opts.relu`.
 */
export function batchNormForwardRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  p: BatchNormRefParams,
  opts: BatchNormForwardOptions,
): { y: Float64Array; runningMean: Float64Array; runningVar: Float64Array } {
  const eps = opts.eps ?? 1e-5;
  const mom = opts.momentum ?? 0.1;
  const act = (y: Float64Array) => opts.relu ? y.map((v) => Math.max(v, 0)) : y;
  if (!opts.training) {
    return {
      y: act(batchNormApplyRef(x, shape, p.runningMean, p.runningVar, p.weight, p.bias, eps)),
      runningMean: Float64Array.from(p.runningMean),
      runningVar: Float64Array.from(p.runningVar),
    };
  }
  const [n, , h, w] = shape;
  const m = n * h * w;
  const s = batchNormStatsRef(x, shape);
  return {
    y: act(batchNormApplyRef(x, shape, s.mean, s.var, p.weight, p.bias, eps)),
    runningMean: Float64Array.from(p.runningMean, (r, k) => (1 - mom) * r + mom * s.mean[k]),
    runningVar: Float64Array.from(
      p.runningVar,
      (r, k) => (1 - mom) * r + mom * s.var[k] * m / (m - 1),
    ),
  };
}

/**
 * CPU reference of {@link batchNormBackward} (f64): with batch statistics (`training`,
 * recomputed from x) dx = weight·inv·(dy - mean(dy) - x̂·mean(dy·x̂)); with the given running
 * statistics dx = weight·inv·dy. dweight = Σ dy·x̂, dbias = Σ dy over (N, H, W). With
 * `reluOutput` (the fused ReLU's output y), dy·[y > 0] takes dy's place.
 */
export function batchNormBackwardRef(
  x: ArrayLike<number>,
  dyIn: ArrayLike<number>,
  shape: readonly number[],
  weight: ArrayLike<number>,
  opts: {
    training: boolean;
    runningMean?: ArrayLike<number>;
    runningVar?: ArrayLike<number>;
    eps?: number;
    reluOutput?: ArrayLike<number>;
  },
): { dx: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  const y = opts.reluOutput;
  const dy = y ? Float64Array.from(dyIn, (g, j) => (y[j] > 0 ? g : 0)) : dyIn;
  const [n, c, h, w] = shape;
  const hw = h * w;
  const m = n * hw;
  const eps = opts.eps ?? 1e-5;
  const train = opts.training;
  const st = train
    ? batchNormStatsRef(x, shape)
    : { mean: opts.runningMean!, var: opts.runningVar! };
  const dg = new Float64Array(c);
  const db = new Float64Array(c);
  const dx = new Float64Array(x.length);
  for (let k = 0; k < c; k++) {
    const inv = 1 / Math.sqrt(st.var[k] + eps);
    for (let bb = 0; bb < n; bb++) {
      for (let i = 0; i < hw; i++) {
        const j = (bb * c + k) * hw + i;
        db[k] += dy[j];
        dg[k] += dy[j] * (x[j] - st.mean[k]) * inv;
      }
    }
    for (let bb = 0; bb < n; bb++) {
      for (let i = 0; i < hw; i++) {
        const j = (bb * c + k) * hw + i;
        const xh = (x[j] - st.mean[k]) * inv;
        dx[j] = train
          ? weight[k] * inv * (dy[j] - db[k] / m - xh * dg[k] / m)
          : weight[k] * inv * dy[j];
      }
    }
  }
  return { dx, dweight: dg, dbias: db };
}

// ---------------------------------------------------------------------------------------------
// Op units (tests and benchmark: ./unit.ts).

/** Parameters of a batchnorm unit case: the input shape [N, C, H, W], the fused ReLU. */
export interface BatchNormCase {
  shape: readonly [number, number, number, number];
  /** Fuse the ReLU that follows (default false). */
  relu?: boolean;
}

function bnUnitOp(training: boolean): RecordedOp<BatchNormCase> {
  const params = (t: Record<string, Tensor>): BatchNormTensors => ({
    weight: t.weight,
    bias: t.bias,
    runningMean: t.runningMean,
    runningVar: t.runningVar,
  });
  return {
    name: training ? "batch statistics" : "running statistics",
    forward: (gpu, p, { tensors: t }): Record<string, Tensor> => {
      const { y, stats } = batchNormForward(gpu, t.x, params(t), { training, relu: p.relu });
      stats.mean.dispose();
      stats.stat.dispose();
      return training
        ? { y, runningMean: t.runningMean.retain(), runningVar: t.runningVar.retain() }
        : { y };
    },
    backward: (gpu, p, { tensors: t }, { tensors: d }) => {
      const { y, stats } = batchNormForward(gpu, t.x, params(t), { training, relu: p.relu });
      const C = p.shape[1];
      const grads = { weight: Tensor.empty(gpu, [C]), bias: Tensor.empty(gpu, [C]) };
      const dx = batchNormBackward(gpu, t.x, asShape(d.y, p.shape), params(t), stats, {
        grads,
        reluOutput: p.relu ? y : undefined,
      });
      [y, stats.mean, stats.stat].forEach((v) => v.dispose());
      return { x: dx, ...grads };
    },
  };
}

/**
 * Sets each channel's bias so that the fused ReLU's kink lies in the middle of the widest gap
 * between the channel's normalised inputs (among the middle half of them): no output is near
 * 0, where the ReLU's derivative jumps and finite differences are ill-posed, and both sides
 * of the kink hold inputs. The statistics are the batch's (`training`) or the running ones.
 */
function reluAwayFromKink(
  shape: readonly number[],
  v: { x: Float32Array; weight: Float32Array; bias: Float32Array } & Record<string, Float32Array>,
  training: boolean,
): void {
  const [n, c, h, w] = shape;
  const hw = h * w;
  const st = training ? batchNormStatsRef(v.x, shape) : { mean: v.runningMean, var: v.runningVar };
  for (let k = 0; k < c; k++) {
    const xs: number[] = [];
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) xs.push(v.x[(b * c + k) * hw + i]);
    }
    xs.sort((a, b) => a - b);
    const m = xs.length;
    let best = Math.floor((m - 1) / 4);
    for (let i = best; i < Math.max(best + 1, Math.ceil(3 * (m - 1) / 4)); i++) {
      if (xs[i + 1] - xs[i] > xs[best + 1] - xs[best]) best = i;
    }
    const t = (xs[best] + xs[best + 1]) / 2;
    // y = (x - mean)·inv·weight + bias is 0 at x = t.
    v.bias[k] = -(t - st.mean[k]) / Math.sqrt(st.var[k] + 1e-5) * v.weight[k];
  }
}

function bnUnit(training: boolean): OpUnit<BatchNormCase> {
  const bnCase = (shape: [number, number, number, number], split = true, relu = false) => ({
    name: shape.join("x") + (relu ? " relu" : ""),
    params: { shape, relu },
    split,
  });
  const ref = (p: BatchNormCase, x: RefValues) =>
    batchNormForwardRef(x.x, p.shape, {
      weight: x.weight,
      bias: x.bias,
      runningMean: x.runningMean,
      runningVar: x.runningVar,
    }, { training, relu: p.relu });
  return defineOpUnit<BatchNormCase>({
    name: training ? "batchnorm_train" : "batchnorm_eval",
    description: training
      ? "BatchNorm2d with batch statistics and the running-stat update"
      : "BatchNorm2d with running statistics (eval, or psa's frozen mode)",
    bound: "memory",
    inputs: ["x", "weight", "bias", "runningMean", "runningVar"],
    outputs: training ? ["y", "runningMean", "runningVar"] : ["y"],
    gradOutputs: ["y"],
    differentiable: ["x", "weight", "bias"],
    // The 65x67 cases have planes over 4096 pixels (the kernels' wide-workgroup path); the
    // relu cases fuse the ReLU that follows.
    cases: [
      bnCase([3, 5, 7, 7]),
      bnCase([2, 3, 13, 17]),
      bnCase([1, 6, 1, 3]),
      bnCase([3, 5, 13, 17]),
      bnCase([2, 2, 65, 67], false),
      bnCase([3, 5, 7, 7], true, true),
      bnCase([1, 6, 1, 3], true, true),
      bnCase([3, 5, 13, 17], true, true),
      bnCase([2, 2, 65, 67], false, true),
    ],
    benchShapes: [bnCase([8, 64, 56, 56]), bnCase([8, 256, 14, 14])],
    tolerance: {
      forward: { rtol: 1e-4, atol: 1e-4 },
      outputs: { runningMean: { rtol: 1e-5, atol: 1e-6 }, runningVar: { rtol: 1e-4, atol: 1e-6 } },
      backward: { maxRel: 1e-4 },
    },
    inputShapes: (p) => {
      const C = [p.shape[1]];
      return { x: [...p.shape], weight: C, bias: C, runningMean: C, runningVar: C };
    },
    outputShapes: (p): Record<string, number[]> =>
      training
        ? { y: [...p.shape], runningMean: [p.shape[1]], runningVar: [p.shape[1]] }
        : { y: [...p.shape] },
    makeInputs: (p, seed) => {
      // A per-channel offset keeps the mean far from 0 (numerical stability of the stats).
      const [, c, h, w] = p.shape;
      const x = uniformValues(sizeOf(p.shape), seed, -2, 2);
      for (let j = 0; j < x.length; j++) x[j] += 3 * (Math.floor(j / (h * w)) % c) - 4;
      const v = {
        x,
        weight: uniformValues(c, seed + 1, 0.5, 1.5),
        bias: uniformValues(c, seed + 2, -0.5, 0.5),
        runningMean: uniformValues(c, seed + 3, -0.2, 0.2),
        runningVar: uniformValues(c, seed + 4, 0.5, 2),
      };
      if (p.relu) reluAwayFromKink(p.shape, v, training);
      return v;
    },
    refForward: (p, x): Record<string, Float64Array> => {
      const r = ref(p, x);
      return training ? r : { y: r.y };
    },
    refBackward: (p, x, d) => {
      const r = batchNormBackwardRef(x.x, d.y, p.shape, x.weight, {
        training,
        runningMean: x.runningMean,
        runningVar: x.runningVar,
        reluOutput: p.relu ? ref(p, x).y : undefined,
      });
      return { x: r.dx, weight: r.dweight, bias: r.dbias };
    },
    cost: (p) => ({
      forward: { flops: 4 * sizeOf(p.shape), bytes: bytesOf(p.shape, p.shape) },
      // x, dy (and the fused ReLU's y) read, dx written.
      backward: {
        flops: 8 * sizeOf(p.shape),
        bytes: p.relu
          ? bytesOf(p.shape, p.shape, p.shape, p.shape)
          : bytesOf(p.shape, p.shape, p.shape),
      },
    }),
    gpu: bnUnitOp(training),
  });
}

/** Batchnorm in training mode (batch statistics, running-stat update) as an op unit. */
export const batchNormTrainUnit: OpUnit<BatchNormCase> = bnUnit(true);

/** Batchnorm with running statistics (eval / psa's frozen mode) as an op unit. */
export const batchNormEvalUnit: OpUnit<BatchNormCase> = bnUnit(false);
