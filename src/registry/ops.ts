/**
 * Every op unit (./unit.ts) of the project: the generic test (tests/ops_test.ts) runs each
 * one's cases, `deno task bench --op NAME` its benchmark shapes.
 * @module
 */
import { batchNormEvalUnit, batchNormTrainUnit } from "../ops/batchnorm.ts";
import { affinityLossUnit } from "../losses/affinity.ts";
import { multilabelUnit } from "../losses/multilabel.ts";
import { ocrUnit } from "../losses/ocr.ts";
import { affinityUnit } from "../ops/affinity.ts";
import { argmaxUnit, softmaxUnit } from "../ops/channel.ts";
import { conv2dUnit } from "../ops/conv.ts";
import { matmulUnit } from "../ops/matmul.ts";
import { pointwiseUnits } from "../ops/pointwise.ts";
import { globalAvgPoolUnit, maxPoolUnit } from "../ops/pool.ts";
import { resizeUnit } from "../ops/resize.ts";
import { type AnyOpUnit, eraseUnit } from "../ops/unit.ts";

/** The registered units, in a stable order. */
export const OP_UNITS: readonly AnyOpUnit[] = [
  eraseUnit(conv2dUnit),
  eraseUnit(matmulUnit),
  eraseUnit(batchNormTrainUnit),
  eraseUnit(batchNormEvalUnit),
  eraseUnit(maxPoolUnit),
  eraseUnit(globalAvgPoolUnit),
  eraseUnit(resizeUnit),
  eraseUnit(softmaxUnit),
  eraseUnit(argmaxUnit),
  eraseUnit(multilabelUnit),
  eraseUnit(ocrUnit),
  eraseUnit(affinityUnit),
  eraseUnit(affinityLossUnit),
  ...pointwiseUnits.map(eraseUnit),
];

/** Registry names, in {@link OP_UNITS} order. */
export const OP_NAMES: readonly string[] = OP_UNITS.map((u) => u.name);

/** The unit of a name, or undefined. */
export function opUnit(name: string): AnyOpUnit | undefined {
  return OP_UNITS.find((u) => u.name === name);
}
