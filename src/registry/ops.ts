/**
 * Every op unit (src/ops/unit.ts) of the project, and for the ops that models use on the
 * gradient tape, the differentiable function of src/autograd/functions.ts that the unit's
 * cases also run through (so each derivative rule is checked against the op's f64 reference
 * backward). The generic test (tests/ops_test.ts, via ./check.ts) runs every unit's cases,
 * `deno task bench --op NAME` its benchmark shapes.
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import * as F from "../autograd/functions.ts";
import type { Conv2dCase } from "../ops/conv.ts";
import type { BatchNormCase } from "../ops/batchnorm.ts";
import type { GapCase, MaxPoolCase } from "../ops/pool.ts";
import type { ResizeCase } from "../ops/resize.ts";
import type { AffinityCase } from "../ops/affinity.ts";
import { batchNormEvalUnit, batchNormTrainUnit } from "../ops/batchnorm.ts";
import { affinityLossUnit } from "../losses/affinity.ts";
import { multilabelUnit } from "../losses/multilabel.ts";
import { ocrUnit } from "../losses/ocr.ts";
import { type SegCeCase, segCrossEntropyUnit } from "../losses/segmentation.ts";
import { type DropoutCase, dropoutUnit } from "../ops/dropout.ts";
import { camDNormUnit, type PcmCase, pcmUnit } from "../ops/pcm.ts";
import {
  dropBackgroundUnit,
  ecrUnit,
  erUnit,
  fgMaxUnit,
  maxNormUnit,
  type SeamMapCase,
  type TopkCase,
  topkUnit,
} from "../losses/seam.ts";
import { affinityUnit } from "../ops/affinity.ts";
import { argmaxUnit, softmaxUnit } from "../ops/channel.ts";
import { conv2dUnit } from "../ops/conv.ts";
import { type MatmulCase, matmulUnit } from "../ops/matmul.ts";
import { type LinearCase, linearUnit } from "../ops/linear.ts";
import { type LayerNormCase, layerNormUnit } from "../ops/layernorm.ts";
import { type SoftmaxRowsCase, softmaxRowsUnit } from "../ops/rows.ts";
import type { ExpandCase, PatchifyCase, TokenRangeCase, TokensMapCase } from "../ops/tokens.ts";
import { tokenUnits } from "../ops/tokens.ts";
import { pointwiseUnits } from "../ops/pointwise.ts";
import { globalAvgPoolUnit, maxPoolUnit } from "../ops/pool.ts";
import { resizeBicubicUnit, resizeUnit } from "../ops/resize.ts";
import { type AnyOpUnit, eraseUnit, type OpUnit } from "../ops/unit.ts";

/** The registered units, in a stable order. */
export const OP_UNITS: readonly AnyOpUnit[] = [
  eraseUnit(conv2dUnit),
  eraseUnit(matmulUnit),
  eraseUnit(batchNormTrainUnit),
  eraseUnit(batchNormEvalUnit),
  eraseUnit(maxPoolUnit),
  eraseUnit(globalAvgPoolUnit),
  eraseUnit(resizeUnit),
  eraseUnit(resizeBicubicUnit),
  eraseUnit(softmaxUnit),
  eraseUnit(argmaxUnit),
  eraseUnit(multilabelUnit),
  eraseUnit(ocrUnit),
  eraseUnit(affinityUnit),
  eraseUnit(affinityLossUnit),
  eraseUnit(segCrossEntropyUnit),
  eraseUnit(dropoutUnit),
  eraseUnit(pcmUnit),
  eraseUnit(camDNormUnit),
  eraseUnit(maxNormUnit),
  eraseUnit(topkUnit),
  eraseUnit(fgMaxUnit),
  eraseUnit(erUnit),
  eraseUnit(dropBackgroundUnit),
  eraseUnit(ecrUnit),
  ...pointwiseUnits.map(eraseUnit),
  eraseUnit(linearUnit),
  eraseUnit(layerNormUnit),
  eraseUnit(softmaxRowsUnit),
  ...tokenUnits.map((u) => eraseUnit(u as OpUnit<unknown>)),
];

/** Registry names, in {@link OP_UNITS} order. */
export const OP_NAMES: readonly string[] = OP_UNITS.map((u) => u.name);

/** The unit of a name, or undefined. */
export function opUnit(name: string): AnyOpUnit | undefined {
  return OP_UNITS.find((u) => u.name === name);
}

/**
 * A unit's op as recorded on a tape: the unit's inputs as tensors in, its gradient outputs
 * out (new tensors owned by the caller).
 */
export type TapeFunction<P = unknown> = (
  tape: Tape,
  p: P,
  x: Record<string, Tensor>,
) => Record<string, Tensor>;

const mm: TapeFunction<MatmulCase> = (tape, p, x) => ({
  c: F.bmm(tape, x.a, x.b, { transA: p.transA, transB: p.transB }),
});
const lin: TapeFunction<LinearCase> = (tape, _p, x) => ({
  y: F.linear(tape, x.x, x.w, x.b ?? null),
});
const ln: TapeFunction<LayerNormCase> = (tape, p, x) => ({
  y: F.layerNorm(tape, x.x, x.weight, x.bias, p.eps),
});
const smRows: TapeFunction<SoftmaxRowsCase> = (tape, p, x) => ({
  y: F.softmaxRows(tape, x.x, p.scale),
});
const tokensToMapFn: TapeFunction<TokensMapCase> = (tape, p, x) => ({
  y: F.tokensToMap(tape, x.x, p.h, p.w),
});
const concatFn: TapeFunction<TokenRangeCase> = (tape, _p, x) => ({
  y: F.concatTokens(tape, x.a, x.b),
});
const sliceFn: TapeFunction<TokenRangeCase> = (tape, p, x) => ({
  y: F.sliceTokens(tape, x.x, p.a, p.b),
});
const expandFn: TapeFunction<ExpandCase> = (tape, p, x) => ({ y: F.expandBatch(tape, x.p, p.B) });
const patchifyFn: TapeFunction<PatchifyCase> = (tape, p, x) => ({
  y: F.patchify(tape, x.x, p.patch),
});
const conv: TapeFunction<Conv2dCase> = (tape, p, x) => ({
  y: F.conv2d(tape, x.x, x.w, x.bias ?? null, p.o),
});
const bn = (training: boolean): TapeFunction<BatchNormCase> => (tape, p, x) => ({
  y: F.batchNorm2d(tape, x.x, {
    weight: x.weight,
    bias: x.bias,
    runningMean: x.runningMean,
    runningVar: x.runningVar,
  }, { training, relu: p.relu }),
});
const maxPool: TapeFunction<MaxPoolCase> = (tape, p, x) => ({ y: F.maxPool2d(tape, x.x, p.opts) });
const gap: TapeFunction<GapCase> = (tape, _p, x) => ({ y: F.globalAvgPool(tape, x.x) });
const resize: TapeFunction<ResizeCase> = (tape, p, x) => ({
  y: F.resizeBilinear(tape, x.x, p.opts),
});
const bicubic: TapeFunction<ResizeCase> = (tape, p, x) => ({
  y: F.resizeBicubic(tape, x.x, p.opts),
});
const affinity: TapeFunction<AffinityCase> = (tape, p, x) => ({
  aff: F.pairwiseAffinity(tape, x.feat, p.radius),
});
const segCe: TapeFunction<SegCeCase> = (tape, _p, x) => ({
  loss: F.softmaxCrossEntropy(tape, x.logits, x.labels),
});
const drop: TapeFunction<DropoutCase> = (tape, p, x) => ({
  y: F.dropout(tape, x.x, { p: p.p, seed: p.seed }),
});
const pcmFn: TapeFunction<PcmCase> = (tape, _p, x) => ({ y: F.pcm(tape, x.feat, x.cam) });
const maxNormFn: TapeFunction<SeamMapCase> = (tape, _p, x) => ({ y: F.maxNorm(tape, x.x) });
const topkFn: TapeFunction<TopkCase> = (tape, p, x) => ({ loss: F.topkSum(tape, x.x, p.opts) });
const fgMaxFn: TapeFunction<SeamMapCase> = (tape, _p, x) => ({ m: F.fgMax(tape, x.x, x.tags) });
const erFn: TapeFunction<SeamMapCase> = (tape, _p, x) => ({ v: F.erElems(tape, x.a, x.b, x.tags) });
const dropFn: TapeFunction<SeamMapCase> = (tape, _p, x) => ({ y: F.dropBackground(tape, x.x) });
const ecrFn: TapeFunction<SeamMapCase> = (tape, _p, x) => ({
  v: F.ecrElems(tape, x.target, x.y, x.tags),
});
const act = (name: F.ActivationName): TapeFunction => (tape, _p, x) => ({
  y: F.activation(tape, name, x.a),
});
const add = (relu: boolean): TapeFunction => (tape, _p, x) => ({
  y: F.add(tape, x.a, x.b, { relu }),
});

/** The differentiable function of each unit that has one, by unit name. */
export const TAPE_FUNCTIONS: Readonly<Record<string, TapeFunction>> = {
  conv2d: conv as TapeFunction,
  matmul: mm as TapeFunction,
  batchnorm_train: bn(true) as TapeFunction,
  batchnorm_eval: bn(false) as TapeFunction,
  maxpool: maxPool as TapeFunction,
  global_avg_pool: gap as TapeFunction,
  resize_bilinear: resize as TapeFunction,
  resize_bicubic: bicubic as TapeFunction,
  affinity: affinity as TapeFunction,
  softmax_cross_entropy: segCe as TapeFunction,
  dropout: drop as TapeFunction,
  pcm: pcmFn as TapeFunction,
  seam_max_norm: maxNormFn as TapeFunction,
  seam_topk: topkFn as TapeFunction,
  seam_fg_max: fgMaxFn as TapeFunction,
  seam_er: erFn as TapeFunction,
  seam_ecr: ecrFn as TapeFunction,
  seam_drop_bg: dropFn as TapeFunction,
  "pointwise.relu": act("relu"),
  "pointwise.elu": act("elu"),
  "pointwise.add": add(false),
  "pointwise.add_relu": add(true),
  linear: lin as TapeFunction,
  layernorm: ln as TapeFunction,
  softmax_rows: smRows as TapeFunction,
  permute0213: (tape, _p, x) => ({ y: F.permute0213(tape, x.x) }),
  tokens_to_map: tokensToMapFn as TapeFunction,
  concat_tokens: concatFn as TapeFunction,
  slice_tokens: sliceFn as TapeFunction,
  expand_batch: expandFn as TapeFunction,
  patchify: patchifyFn as TapeFunction,
  "pointwise.gelu": (tape, _p, x) => ({ y: F.gelu(tape, x.a) }),
};
