/**
 * A plain TypeScript CPU reference (f64) of the CAM classifier ({@link CamNet}): forward in
 * eval and training mode (batch statistics with the running-statistic update, or psa's frozen
 * batchnorm) and backward to every parameter, for the `tiny` and `resnet18/34/50/101` backbones.
 *
 * The architecture is written out here independently of `resnet.ts`, from torchvision's ResNet
 * definition (v1.5 bottleneck: stride on the 3x3 conv; downsample = 1x1 conv + BN whenever the
 * stride or the channel count changes) and this project's conventions (docs/architecture.md#the-cam-classifier): output
 * stride 16 removes the stride of `layer4` and dilates all its 3x3 convs by 2; output stride 8
 * also removes `layer3`'s stride and dilates it by 2 and `layer4` by 4 (every block of a
 * dilated stage uses the stage's dilation, as DeepLab-v2/psa; torchvision's
 * `replace_stride_with_dilation` would keep the previous dilation in a stage's first block).
 * `tiny`: a 3x3 stride-2 stem (16 channels) and one basic block per stage (16, 32, 64, 128
 * channels; strides 1, 2, 2, 2 for output stride 16, the last replaced by dilation 2 for 8).
 *
 * Every layer composes its op family's f64 reference (`conv2dRef` and its gradients,
 * `batchNormForwardRef`/`batchNormBackwardRef`, the pointwise table's `relu`/`relu_bwd`,
 * `maxPool2dRef`, `globalAvgPoolRef`); only the wiring is written out here. The weights come
 * by name from a {@link RefState}, e.g. the GPU model's state read back with
 * {@link readModelState}, so the reference checks the GPU model's wiring and kernels at once.
 * @module
 */
import { batchNormBackwardRef, batchNormForwardRef } from "../ops/batchnorm.ts";
import { conv2dGradInputRef, conv2dGradWeightRef, conv2dRef, convOutSize } from "../ops/conv.ts";
import { pointwiseRef } from "../ops/pointwise.ts";
import { globalAvgPoolRef, maxPool2dBackwardRef, maxPool2dRef } from "../ops/pool.ts";
import type { CamNet } from "./cam_net.ts";
import type { Arch } from "./resnet.ts";

/** An f64 tensor on the CPU. */
export interface RefTensor {
  /** Dimensions (NCHW for activations). */
  shape: number[];
  /** Row-major values. */
  data: Float64Array;
}

/** Named tensors of a model's state (parameters and batchnorm buffers). */
export type RefState = Map<string, RefTensor>;

/** Options of {@link CamNetRef} (as {@link createModel}'s). */
export interface RefModelOptions {
  /** Backbone architecture. */
  arch: Arch;
  /** Number of classes C (class maps / logits). */
  numClasses: number;
  /** Total stride of the features. */
  outputStride: 8 | 16;
  /** psa-style frozen batchnorm: running statistics in training too. Default false. */
  frozenBn?: boolean;
  /** Batchnorm epsilon, default 1e-5. */
  eps?: number;
  /** Running-statistic momentum (PyTorch convention), default 0.1. */
  momentum?: number;
  /**
   * Whether the state has the CAM classifier (`classifier.weight`); default true. False: the
   * backbone alone ({@link CamNetRef.features}), e.g. under another head.
   */
  classifier?: boolean;
}

/** Result of {@link CamNetRef.features}. */
export interface RefFeatures {
  /** Backbone features [N, C, h, w]. */
  feats: RefTensor;
  /** Running statistics after this pass (as {@link RefForward.runningStats}). */
  runningStats: RefState;
  /** What {@link CamNetRef.backwardFeatures} needs; opaque. */
  tape: RefTape;
}

/** Result of {@link CamNetRef.forward}. */
export interface RefForward {
  /** Class maps [N, C, h, w]. */
  cam: RefTensor;
  /** Image logits [N, C] (spatial means of the class maps). */
  logits: RefTensor;
  /**
   * Running statistics after this pass (`*.running_mean`, `*.running_var`): updated with the
   * batch statistics in training mode (unbiased variance), unchanged otherwise.
   */
  runningStats: RefState;
  /** What {@link CamNetRef.backward} needs; opaque. */
  tape: RefTape;
}

/** Saved backward closures of a forward pass. */
export interface RefTape {
  /** Backward steps in forward order; each maps dy to dx and accumulates parameter grads. */
  steps: ((dy: Float64Array) => Float64Array)[];
  /** Shape of the class maps [N, C, h, w]. */
  camShape: number[];
}

/** Result of {@link CamNetRef.backward}. */
export interface RefGradients {
  /** Gradient of every trainable parameter by name. */
  grads: Map<string, Float64Array>;
  /** Gradient of the input image. */
  dx: Float64Array;
}

interface ConvNode {
  op: "conv";
  name: string;
  cin: number;
  cout: number;
  k: number;
  stride: number;
  pad: number;
  dil: number;
}

type Node =
  | ConvNode
  | { op: "bn"; name: string; c: number }
  | { op: "relu" }
  | { op: "maxpool" }
  | { op: "block"; main: Node[]; down: Node[] | null };

function conv(
  name: string,
  cin: number,
  cout: number,
  k: number,
  stride = 1,
  dil = 1,
  pad = k === 1 ? 0 : dil * ((k - 1) / 2),
): ConvNode {
  return { op: "conv", name, cin, cout, k, stride, pad, dil };
}

const bn = (name: string, c: number): Node => ({ op: "bn", name, c });
const RELU: Node = { op: "relu" };

function downsample(p: string, cin: number, cout: number, stride: number): Node[] | null {
  return stride !== 1 || cin !== cout
    ? [conv(`${p}.downsample.0`, cin, cout, 1, stride), bn(`${p}.downsample.1`, cout)]
    : null;
}

function basic(p: string, cin: number, c: number, stride: number, dil: number): Node {
  return {
    op: "block",
    main: [
      conv(`${p}.conv1`, cin, c, 3, stride, dil),
      bn(`${p}.bn1`, c),
      RELU,
      conv(`${p}.conv2`, c, c, 3, 1, dil),
      bn(`${p}.bn2`, c),
    ],
    down: downsample(p, cin, c, stride),
  };
}

function bottleneck(p: string, cin: number, planes: number, stride: number, dil: number): Node {
  const out = planes * 4;
  return {
    op: "block",
    main: [
      conv(`${p}.conv1`, cin, planes, 1),
      bn(`${p}.bn1`, planes),
      RELU,
      conv(`${p}.conv2`, planes, planes, 3, stride, dil),
      bn(`${p}.bn2`, planes),
      RELU,
      conv(`${p}.conv3`, planes, out, 1),
      bn(`${p}.bn3`, out),
    ],
    down: downsample(p, cin, out, stride),
  };
}

/** The backbone as a list of nodes, and its output channel count. */
function architecture(arch: Arch, os: 8 | 16): { nodes: Node[]; channels: number } {
  if (os !== 8 && os !== 16) throw new RangeError(`reference: bad output stride ${os}`);
  if (arch === "tiny") {
    const widths = [16, 32, 64, 128];
    const strides = [1, 2, 2, os === 16 ? 2 : 1];
    const dils = [1, 1, 1, os === 16 ? 1 : 2];
    const nodes: Node[] = [conv("conv1", 3, 16, 3, 2, 1, 1), bn("bn1", 16), RELU];
    let cin = 16;
    widths.forEach((w, i) => {
      nodes.push(basic(`layer${i + 1}.0`, cin, w, strides[i], dils[i]));
      cin = w;
    });
    return { nodes, channels: cin };
  }
  const depths = {
    resnet18: [2, 2, 2, 2],
    resnet34: [3, 4, 6, 3],
    resnet50: [3, 4, 6, 3],
    resnet101: [3, 4, 23, 3],
  }[arch];
  if (!depths) throw new RangeError(`reference: unknown architecture "${arch}"`);
  const isBottleneck = arch === "resnet50" || arch === "resnet101";
  const nodes: Node[] = [conv("conv1", 3, 64, 7, 2, 1, 3), bn("bn1", 64), RELU, {
    op: "maxpool",
  }];
  const strides = [1, 2, os === 16 ? 2 : 1, 1];
  const dils = [1, 1, os === 16 ? 1 : 2, os === 16 ? 2 : 4];
  let cin = 64;
  [64, 128, 256, 512].forEach((planes, s) => {
    for (let i = 0; i < depths[s]; i++) {
      const p = `layer${s + 1}.${i}`;
      const st = i === 0 ? strides[s] : 1;
      nodes.push(
        isBottleneck ? bottleneck(p, cin, planes, st, dils[s]) : basic(p, cin, planes, st, dils[s]),
      );
      cin = isBottleneck ? planes * 4 : planes;
    }
  });
  return { nodes, channels: cin };
}

function collectNames(nodes: Node[], out: { params: string[]; buffers: string[] }): void {
  for (const n of nodes) {
    if (n.op === "conv") out.params.push(`${n.name}.weight`);
    else if (n.op === "bn") {
      out.params.push(`${n.name}.weight`, `${n.name}.bias`);
      out.buffers.push(`${n.name}.running_mean`, `${n.name}.running_var`);
    } else if (n.op === "block") {
      collectNames(n.main, out);
      if (n.down) collectNames(n.down, out);
    }
  }
}

function addInto(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

/** Reads every state tensor of a GPU model back as f64 (parameters and buffers). */
export async function readModelState(
  model: Pick<CamNet, "stateTensors">,
): Promise<RefState> {
  const state: RefState = new Map();
  for (const { name, value } of model.stateTensors()) {
    state.set(name, { shape: [...value.shape], data: Float64Array.from(await value.read()) });
  }
  return state;
}

/**
 * The CPU reference model. Construction checks that the state holds every tensor the
 * architecture needs with the expected shape (one error listing every problem).
 */
export class CamNetRef {
  readonly #nodes: Node[];
  /** Channels of the backbone features (the classifier's input). */
  readonly featureChannels: number;
  /** Batchnorm epsilon. */
  readonly eps: number;
  /** Running-statistic momentum. */
  readonly momentum: number;

  /**
   * Builds the reference over `state`; throws one error listing every missing or mis-shaped
   * tensor.
   * @param options the architecture (as the GPU model's options).
   * @param state parameters and buffers by torchvision name (read, never modified).
   */
  constructor(readonly options: RefModelOptions, readonly state: RefState) {
    const a = architecture(options.arch, options.outputStride);
    this.#nodes = a.nodes;
    this.featureChannels = a.channels;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    const problems: string[] = [];
    for (const [name, shape] of this.expectedShapes()) {
      const t = state.get(name);
      if (!t) problems.push(`missing ${name}`);
      else if (t.shape.join(",") !== shape.join(",")) {
        problems.push(`${name}: state [${t.shape}], expected [${shape}]`);
      }
    }
    if (problems.length) throw new Error(`CamNetRef: state does not fit: ${problems.join("; ")}`);
  }

  /** Names of the trainable parameters (backbone then classifier) and of the buffers. */
  names(): { params: string[]; buffers: string[] } {
    const out = { params: [] as string[], buffers: [] as string[] };
    collectNames(this.#nodes, out);
    if (this.options.classifier !== false) out.params.push("classifier.weight");
    return out;
  }

  /** Expected shape of every state tensor by name. */
  expectedShapes(): Map<string, number[]> {
    const m = new Map<string, number[]>();
    const walk = (nodes: Node[]) => {
      for (const n of nodes) {
        if (n.op === "conv") m.set(`${n.name}.weight`, [n.cout, n.cin, n.k, n.k]);
        else if (n.op === "bn") {
          for (const s of ["weight", "bias", "running_mean", "running_var"]) {
            m.set(`${n.name}.${s}`, [n.c]);
          }
        } else if (n.op === "block") {
          walk(n.main);
          if (n.down) walk(n.down);
        }
      }
    };
    walk(this.#nodes);
    if (this.options.classifier !== false) {
      m.set("classifier.weight", [this.options.numClasses, this.featureChannels, 1, 1]);
    }
    return m;
  }

  #get(name: string): Float64Array {
    const t = this.state.get(name);
    if (!t) throw new Error(`CamNetRef: no tensor "${name}" in the state`);
    return t.data;
  }

  /**
   * Forward pass of an image batch x [N, 3, H, W]. `train`: batchnorm uses batch statistics
   * (unless `frozenBn`) and the returned running statistics are updated; the state itself is
   * never modified.
   */
  forward(x: RefTensor, train: boolean): RefForward {
    if (x.shape.length !== 4 || x.shape[1] !== 3) {
      throw new RangeError(`CamNetRef.forward: input must be [N, 3, H, W], got [${x.shape}]`);
    }
    if (this.options.classifier === false) {
      throw new Error("CamNetRef.forward: no classifier (use features)");
    }
    const runningStats: RefState = new Map();
    const steps: RefTape["steps"] = [];
    const feats = this.#run(this.#nodes, x, train, steps, runningStats);
    const cls = conv("classifier", this.featureChannels, this.options.numClasses, 1);
    const cam = this.#conv(cls, feats, steps);
    const logits = globalAvgPoolRef(cam.data, cam.shape);
    return {
      cam,
      logits: { shape: cam.shape.slice(0, 2), data: logits },
      runningStats,
      tape: { steps, camShape: cam.shape },
    };
  }

  /**
   * The backbone alone: features of an image batch x [N, 3, H, W] (batchnorm as in
   * {@link forward}).
   */
  features(x: RefTensor, train: boolean): RefFeatures {
    if (x.shape.length !== 4 || x.shape[1] !== 3) {
      throw new RangeError(`CamNetRef.features: input must be [N, 3, H, W], got [${x.shape}]`);
    }
    const runningStats: RefState = new Map();
    const steps: RefTape["steps"] = [];
    const feats = this.#run(this.#nodes, x, train, steps, runningStats);
    return { feats, runningStats, tape: { steps, camShape: feats.shape } };
  }

  /**
   * Backward of {@link features} from the gradient of the features: the gradient of every
   * backbone parameter (the classifier's, if the state has one, stays zero) and of the input.
   */
  backwardFeatures(f: RefFeatures, dFeat: Float64Array): RefGradients {
    return this.#backward(f.tape, dFeat);
  }

  /**
   * Backward from the gradient of the class maps `dCam` [N, C, h, w] (e.g.
   * `globalAvgPoolBackwardRef` of a logit gradient, plus any loss on the maps). Returns the
   * gradient of every trainable parameter and of the input.
   */
  backward(fwd: RefForward, dCam: Float64Array): RefGradients {
    if (this.options.classifier === false) {
      throw new Error("CamNetRef.backward: no classifier (use backwardFeatures)");
    }
    return this.#backward(fwd.tape, dCam);
  }

  #backward(tape: RefTape, dCam: Float64Array): RefGradients {
    const size = tape.camShape.reduce((a, d) => a * d, 1);
    if (dCam.length !== size) {
      throw new RangeError(
        `CamNetRef.backward: gradient has ${dCam.length} values, expected ${size}`,
      );
    }
    const grads = new Map<string, Float64Array>();
    for (const name of this.names().params) {
      grads.set(name, new Float64Array(this.#get(name).length));
    }
    this.#grads = grads;
    let g = dCam;
    for (let i = tape.steps.length - 1; i >= 0; i--) g = tape.steps[i](g);
    this.#grads = null;
    return { grads, dx: g };
  }

  #grads: Map<string, Float64Array> | null = null;

  #accumulate(name: string, g: Float64Array): void {
    if (!this.#grads) throw new Error("CamNetRef: backward step outside backward()");
    addInto(this.#grads.get(name)!, g);
  }

  #run(
    nodes: Node[],
    x: RefTensor,
    train: boolean,
    steps: RefTape["steps"],
    stats: RefState,
  ): RefTensor {
    let h = x;
    for (const n of nodes) {
      if (n.op === "conv") h = this.#conv(n, h, steps);
      else if (n.op === "bn") h = this.#bn(n, h, train, steps, stats);
      else if (n.op === "relu") h = relu(h, steps);
      else if (n.op === "maxpool") h = maxPool(h, steps);
      else h = this.#block(n, h, train, steps, stats);
    }
    return h;
  }

  #block(
    n: Extract<Node, { op: "block" }>,
    x: RefTensor,
    train: boolean,
    steps: RefTape["steps"],
    stats: RefState,
  ): RefTensor {
    const ms: RefTape["steps"] = [];
    const ds: RefTape["steps"] = [];
    const m = this.#run(n.main, x, train, ms, stats);
    const s = n.down ? this.#run(n.down, x, train, ds, stats) : x;
    if (m.shape.join(",") !== s.shape.join(",")) {
      throw new Error(`CamNetRef: residual shapes differ: [${m.shape}] vs [${s.shape}]`);
    }
    const sum = { shape: m.shape, data: addInto(Float64Array.from(m.data), s.data) };
    const inner: RefTape["steps"] = [];
    const y = relu(sum, inner);
    steps.push((dy) => {
      const g = inner[0](dy);
      let gm = g;
      for (let i = ms.length - 1; i >= 0; i--) gm = ms[i](gm);
      let gs = g;
      for (let i = ds.length - 1; i >= 0; i--) gs = ds[i](gs);
      return addInto(Float64Array.from(gm), gs);
    });
    return y;
  }

  #conv(n: ConvNode, x: RefTensor, steps: RefTape["steps"]): RefTensor {
    const w = this.#get(`${n.name}.weight`);
    const wShape = [n.cout, n.cin, n.k, n.k];
    const o = { stride: n.stride, padding: n.pad, dilation: n.dil };
    const [N, , H, W] = x.shape;
    const shape = [
      N,
      n.cout,
      convOutSize(H, n.k, n.stride, n.pad, n.dil),
      convOutSize(W, n.k, n.stride, n.pad, n.dil),
    ];
    const y = conv2dRef(x.data, x.shape, w, wShape, null, o);
    steps.push((dy) => {
      this.#accumulate(`${n.name}.weight`, conv2dGradWeightRef(x.data, dy, x.shape, wShape, o));
      return conv2dGradInputRef(dy, w, x.shape, wShape, o);
    });
    return { shape, data: y };
  }

  #bn(
    n: Extract<Node, { op: "bn" }>,
    x: RefTensor,
    train: boolean,
    steps: RefTape["steps"],
    stats: RefState,
  ): RefTensor {
    const [N, , H, W] = x.shape;
    const p = {
      weight: this.#get(`${n.name}.weight`),
      bias: this.#get(`${n.name}.bias`),
      runningMean: this.#get(`${n.name}.running_mean`),
      runningVar: this.#get(`${n.name}.running_var`),
    };
    const training = train && !this.options.frozenBn;
    if (training && N * H * W < 2) {
      throw new RangeError(`CamNetRef: batchnorm ${n.name} needs more than 1 value per channel`);
    }
    const { y, runningMean, runningVar } = batchNormForwardRef(x.data, x.shape, p, {
      training,
      eps: this.eps,
      momentum: this.momentum,
    });
    stats.set(`${n.name}.running_mean`, { shape: [n.c], data: runningMean });
    stats.set(`${n.name}.running_var`, { shape: [n.c], data: runningVar });
    steps.push((dy) => {
      const g = batchNormBackwardRef(x.data, dy, x.shape, p.weight, {
        ...p,
        training,
        eps: this.eps,
      });
      this.#accumulate(`${n.name}.weight`, g.dweight);
      this.#accumulate(`${n.name}.bias`, g.dbias);
      return g.dx;
    });
    return { shape: x.shape, data: y };
  }
}

/** ReLU and its backward from the output, on the pointwise table's references. */
function relu(x: RefTensor, steps: RefTape["steps"]): RefTensor {
  const y = pointwiseRef("relu", [x.data]);
  steps.push((dy) => pointwiseRef("relu_bwd", [y, dy]));
  return { shape: x.shape, data: y };
}

/** The ResNet stem's 3x3 stride-2 padding-1 max pool (the op's reference). */
function maxPool(x: RefTensor, steps: RefTape["steps"]): RefTensor {
  const r = maxPool2dRef(x.data, x.shape, { kernel: 3, stride: 2, padding: 1 });
  steps.push((dy) => maxPool2dBackwardRef(dy, r.indices, x.shape));
  return { shape: r.shape, data: r.y };
}
