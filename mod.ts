/**
 * ocr-wsss: weakly supervised semantic segmentation with Out-of-Candidate Rectification
 * (Cheng et al., CVPR 2023) on WebGPU. Import this module from a URL; it needs no deno.json
 * of the importer:
 *
 * ```ts
 * import * as ocr from "https://<host>/<path>/mod.ts";
 * const gpu = await ocr.createGpu();
 * const model = ocr.createModel(gpu, { arch: "tiny", numClasses: 20 });
 * const x = ocr.Tensor.fromArray(gpu, new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);
 * const { cam, logits } = model.forward(x, null);
 * console.log(cam.shape, await logits.read());
 * ```
 * @module
 */

// GPU runtime.
export {
  ADAPTER_HELP,
  type Bindable,
  type BufferRange,
  type DispatchSpec,
  f32bits,
  GpuContext,
  GpuError,
  type GpuOptions,
} from "./src/gpu/context.ts";
// createGpu for Deno: the portable src/gpu/context.ts one, with the Vulkan loader quieted.
export { createGpu } from "./src/io/gpu.ts";
export { numel, Tensor } from "./src/gpu/tensor.ts";
export { BufferPool, type PoolStats } from "./src/gpu/pool.ts";

// Layers and ops.
export { declareParams, type FieldType, ParamStruct } from "./src/gpu/kernel.ts";
export { type ElementChunk, elementChunks, planeChunks } from "./src/gpu/split.ts";
export {
  defineOpUnit,
  type OpCase,
  type OpUnit,
  type OpUnitSpec,
  uniformValues,
} from "./src/ops/unit.ts";
export {
  OP_NAMES,
  OP_UNITS,
  opUnit,
  TAPE_FUNCTIONS,
  type TapeFunction,
} from "./src/registry/ops.ts";
export { type CheckOptions, checkUnitCase } from "./src/registry/check.ts";
export { claimGrad, type Param, zeroGrads } from "./src/autograd/param.ts";
export { type BackwardRule, type GradContext, type GradSink, Tape } from "./src/autograd/tape.ts";
export * as F from "./src/autograd/functions.ts";
export {
  Activation,
  BatchNorm2d,
  BilinearResize,
  Conv2d,
  ELU,
  LayerNorm,
  Linear,
  MaxPool2d,
  type Module,
  ReLU,
  Sequential,
} from "./src/models/modules.ts";
export { POINTWISE, pointwise, type PointwiseName } from "./src/ops/pointwise.ts";
export { conv2d, conv2dGradInput, conv2dGradWeight } from "./src/ops/conv.ts";
export { matmul } from "./src/ops/matmul.ts";
export { globalAvgPool, maxPool2d } from "./src/ops/pool.ts";
export {
  resizeBicubic,
  resizeBicubicBackward,
  resizeBilinear,
  resizeBilinearBackward,
} from "./src/ops/resize.ts";
export { argmaxChannels, softmaxChannels } from "./src/ops/channel.ts";
export { linear } from "./src/ops/linear.ts";
export { layerNormForward, type LayerNormResult } from "./src/ops/layernorm.ts";
export { softmaxRows } from "./src/ops/rows.ts";
export {
  concatTokens,
  expandBatch,
  mapToTokens,
  patchify,
  permute0213,
  sliceTokens,
  tokensToMap,
} from "./src/ops/tokens.ts";
export {
  type BilateralKernel,
  DenseCrf,
  denseCrf,
  denseCrfLatticeRef,
  type DenseCrfOptions,
  denseCrfRef,
  type GaussianKernel,
  PSA_CRF,
  type ResolvedCrf,
} from "./src/ops/crf.ts";
export type { BilateralLattice } from "./src/ops/permutohedral.ts";
export { dropout, type DropoutOptions, dropoutRef } from "./src/ops/dropout.ts";

// Models.
export { CamNet, type CamOutputs, createModel, type ModelOptions } from "./src/models/cam_net.ts";
export type { Arch } from "./src/models/resnet.ts";
// MCTformer-V2 (docs/mctformer.md): a ViT with one class token per class and a conv head over
// the patch tokens, its localisation maps, DeiT weights.
export {
  Attention,
  Block,
  createMctformer,
  type DeitConversion,
  disposeMctformerOutputs,
  Mctformer,
  type MctformerConfig,
  mctformerConfig,
  type MctformerForwardOptions,
  type MctformerMaps,
  mctformerMaps,
  type MctformerMapsOptions,
  type MctformerOptions,
  type MctformerOutputs,
  mctformerStateFromDeit,
  Mlp,
  VIT_ARCHS,
  type VitArch,
} from "./src/models/vit.ts";
export { loadDeitWeights } from "./src/io/checkpoint.ts";
export type {
  BranchScales,
  MctAttentionType,
  VitRefConfig,
  VitRefParam,
  VitRefParams,
} from "./src/models/vit_reference.ts";
// The segmenter of the final stage (docs/architecture.md#the-segmenter): DeepLab-v2 ASPP or
// DeepLab-LargeFOV head on a backbone.
export {
  createSegModel,
  type SegForwardOptions,
  type SegHead,
  segModelDefaults,
  type SegModelOptions,
  SegNet,
  type SegNetOptions,
} from "./src/models/deeplab.ts";
export {
  type AffinityBranch,
  AffinityNet,
  type AffinityNetOptions,
  createAffinityNet,
} from "./src/methods/affinitynet/model.ts";

// Losses and optimizers.
export {
  multilabelSoftMarginLoss,
  multilabelSoftMarginLossBackward,
} from "./src/losses/multilabel.ts";
// Pixel-wise softmax cross-entropy, ignore index 255, mean over valid pixels (the segmenter's).
export {
  checkSegLabels,
  IGNORE_LABEL,
  type SegCeResult,
  softmaxCrossEntropyBackward,
  softmaxCrossEntropyLoss,
  softmaxCrossEntropyRef,
} from "./src/losses/segmentation.ts";
export {
  OCR_DEFAULTS,
  ocrLoss,
  ocrLossReference,
  type OcrLossResult,
  type OcrOptions,
} from "./src/losses/ocr.ts";
export { cooccurrence } from "./src/losses/cooccurrence.ts";
export { loadOrComputeCooccurrence } from "./src/train/cooccurrence.ts";
export { AdamW, type Optimizer, polyLr, SGD } from "./src/optim/mod.ts";

// Errors a script may catch; each message names the file or field at fault.
/**
 * A problem with one dataset file (`path`: the file, `problem`: what is wrong with it), from
 * the VOC and COCO readers, image and mask decoding.
 */
export { DataError } from "./src/data/errors.ts";
/** A bad config file, field or flag; the message names the field. */
export { ConfigError } from "./src/io/config.ts";
/** A malformed safetensors file, or a checkpoint or weights file that does not fit the model. */
export { SafetensorsError } from "./src/io/safetensors.ts";
/** A training failure (NaN loss, a used or missing run folder); the message says what to do. */
export { TrainError } from "./src/train/train.ts";
/** Bad inputs of CAM extraction, evaluation and the random walk (CAM folders, checkpoints). */
export { CamError } from "./src/methods/cam/options.ts";

// Data.
export { openDataset } from "./src/data/dataset.ts";
export type { Dataset, Sample } from "./src/data/base.ts";
export { type Batch, batches } from "./src/data/stream.ts";
export {
  DEFAULT_SYNTH_VARIANT,
  ensureSynthetic,
  SYNTH_VARIANTS,
  synthesize,
} from "./src/data/synthetic.ts";
export { VOC_CLASSES, VOC_TAG_MODES, type VocTagMode } from "./src/data/classes.ts";
export { decodeLabelPng, encodeLabelPng, VOC_PALETTE } from "./src/data/png.ts";

// Training, evaluation, files.
export { train, type TrainResult } from "./src/train/train.ts";
export {
  type SyntheticChoice,
  type TrainConfig,
  type TrainConfigInput,
  TrainConfigSchema,
} from "./src/io/config.ts";
export * from "./src/eval/mod.ts";
export {
  buildReportHtml,
  escapeHtml,
  type ReportExample,
  type ReportOptions,
  writeEvalOutputs,
  writeMetrics,
  writeReport,
} from "./src/methods/cam/report.ts";
export {
  type EvalDataset,
  evaluateMaskFolder,
  type MaskFolderOptions,
  type MaskFolderResult,
} from "./src/methods/cam/mask_folder.ts";
export { type CamModel, recordImageCams } from "./src/cam/image.ts";
export { pseudoMask, pseudoMaskFromNormalized, type ScoreGrid } from "./src/cam/pseudo_mask.ts";
export { computeCams, evaluate, loadCamModel } from "./src/methods/cam/mod.ts";
export { tuneMatmul } from "./src/ops/matmul.ts";

// AffinityNet stage (psa): labels, pairwise affinity, loss, random walk, training, pipeline.
export { AFFINITY_RADIUS, pairwiseAffinity, pairwiseAffinityBackward } from "./src/ops/affinity.ts";
export { affinityLabelMap, affinityPairLabels } from "./src/methods/affinitynet/labels.ts";
export { affinityLoss } from "./src/losses/affinity.ts";
export {
  randomWalk,
  type RandomWalkOptions,
  transitionMatrix,
} from "./src/methods/affinitynet/random_walk.ts";
export { type CamFolder, readCamFolder, readImageCams } from "./src/methods/cam/cam_folder.ts";
export {
  camsWithBackground,
  computeRandomWalk,
  resolveWalkRadius,
  type RwInput,
  type RwResult,
  RwSchema,
} from "./src/methods/affinitynet/rw.ts";
export {
  type AffinityInput,
  type AffinityTrainResult,
  trainAffinity,
} from "./src/methods/affinitynet/train.ts";
export { type AffinityConfig, AffinityConfigSchema } from "./src/io/config.ts";
export { AFFINITYNET_STAGES } from "./src/methods/affinitynet/stages.ts";
export {
  PIPELINE_STAGES,
  type PipelineInput,
  type PipelineResult,
  PipelineSchema,
  runComparison,
  runPipeline,
} from "./src/workflows/pipeline.ts";
export { getMethod, METHOD_NAMES, type MethodName, METHODS } from "./src/workflows/registry.ts";
export type {
  Method,
  MethodOptions,
  ResultColumn,
  Stage,
  StageContext,
  StageRecord,
  StageResult,
} from "./src/methods/method.ts";
export { meanAveragePrecision } from "./src/eval/classification.ts";
export { readSafetensors, writeSafetensors } from "./src/io/safetensors.ts";

// Option and result types referenced by the exports above.
export type { BaseOptimizer, LrMultipliers } from "./src/optim/sgd.ts";
export type { AugmentOptions, ColorJitter } from "./src/data/augment.ts";
export type { BatchOptions } from "./src/data/stream.ts";
export type {
  EnsureSyntheticOptions,
  SynthOptions,
  SynthSize,
  SynthVariant,
  VariantSpec,
} from "./src/data/synthetic.ts";
export type { OpenDatasetOptions } from "./src/data/dataset.ts";
export type { DataWarning, SkippedItem } from "./src/data/base.ts";
export type { LabelImage } from "./src/data/png.ts";
export type {
  ActivationOptions,
  BatchNorm2dOptions,
  Conv2dLayerOptions,
  LinearOptions,
} from "./src/models/modules.ts";
export type {
  Conv2dOptions,
  ConvBlock,
  ConvOutOptions,
  ConvVariant,
  GradWeightOptions,
  Pair,
  WgradBlock,
} from "./src/ops/conv.ts";
export type { MatmulOptions, MatmulTuning, MatmulVariant } from "./src/ops/matmul.ts";
export type { MaxPoolOptions, MaxPoolResult, Size2 } from "./src/ops/pool.ts";
export type { ResizeOptions } from "./src/ops/resize.ts";
export type { PointwiseOptions } from "./src/ops/pointwise.ts";
export type { Buffer } from "./src/autograd/param.ts";
export type { OcrCallOptions, OcrGradMode, OcrNorm, OcrReferenceResult } from "./src/losses/ocr.ts";
export type { HostTensor, SafeTensors } from "./src/io/safetensors.ts";
export type { NamedTensor } from "./src/io/checkpoint.ts";
export type { TrainHooks, TrainInput } from "./src/train/train.ts";
export type { LoopLine, RunHooks, RunResult } from "./src/train/loop.ts";
export type {
  CamHooks,
  CamRunResult,
  LoadedCamModel,
  RunConfig,
} from "./src/methods/cam/extract.ts";
export type { ImageCamOptions } from "./src/cam/image.ts";
export {
  type CamRunInput,
  CamRunSchema,
  type EvaluateInput,
  EvaluateSchema,
} from "./src/methods/cam/options.ts";
export type { Fields, ParamValues } from "./src/gpu/kernel.ts";
export type { ElementChunkOptions, PlaneChunk, PlaneSpec, Sliceable } from "./src/gpu/split.ts";
export type { AffinityLossResult, PairCounts, PairLabels } from "./src/losses/affinity.ts";
export type { PairGrid } from "./src/ops/affinity.ts";
export type { AffinityLabelOptions } from "./src/methods/affinitynet/labels.ts";
export type { RandomWalkResult } from "./src/methods/affinitynet/random_walk.ts";
export type { AffinityHooks } from "./src/methods/affinitynet/train.ts";
export type { ImageCams } from "./src/methods/cam/cam_folder.ts";
export type { BatchNormTensors } from "./src/ops/batchnorm.ts";
export type { ActivationName, BmmOptions } from "./src/autograd/functions.ts";
export type {
  AnyOpUnit,
  DeviceArgs,
  HostValues,
  OpCost,
  RecordedOp,
  RefResult,
  RefValues,
  Tolerance,
  UnitTolerance,
} from "./src/ops/unit.ts";
export type { PipelineHooks } from "./src/workflows/pipeline.ts";
export type { ScoreOf } from "./src/workflows/registry.ts";
