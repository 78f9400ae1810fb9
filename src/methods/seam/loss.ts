/**
 * SEAM's training loss (the official train_SEAM.py), recorded on the gradient tape from the
 * pieces of src/losses/seam.ts. Per step, for images img1 [N, 3, H, W] and their tags:
 *
 * 1. img2 = bilinear resize of img1 by `scaleFactor` (0.3, align_corners); the shared-weight
 *    network runs on both (two forwards on one tape: each parameter's gradient is the sum of
 *    both branches').
 * 2. Per branch i, with the maps upsampled to the branch's input size: `label_i` = GAP of the
 *    class maps, `loss_cls_i` = multilabel soft-margin of its foreground part;
 *    `loss_rvmin_i` = adaptive min-pooling of the PCM maps (per image the h·w/4 smallest
 *    values of max over tagged foreground channels, relu'd, summed / (k·N)).
 * 3. Branch 1's class and PCM maps are max-normalised, then resized by the scale factor to
 *    branch 2's size; branch 2's are max-normalised. The tag mask (background always 1) is
 *    applied inside the element kernels.
 * 4. `loss_er` = mean |cam1 - cam2| over foreground channels; `loss_ecr` = for each direction
 *    the mean of the top 20% (of C+1 · h · w per image) of |max_onehot(cam_j, detached) -
 *    cam_rv_i|, summed over both directions.
 * 5. loss = (cls1 + cls2)/2 + (rvmin1 + rvmin2)/2 + er + ecr, and with OCR + λ·(ocr1 + ocr2)/2
 *    (OCR on the foreground channels of each branch's class maps at the map grid, where the CAM
 *    classifier applies it).
 *
 * Each loss is a 1-element tensor; the step seeds their weights into one backward.
 * @module
 */
import type { GpuContext } from "../../gpu/context.ts";
import { Tensor } from "../../gpu/tensor.ts";
import type { OcrConfig } from "../../io/config.ts";
import type { Tape } from "../../autograd/tape.ts";
import {
  dropBackground,
  ecrElems,
  erElems,
  fgMax,
  globalAvgPool,
  maxNorm,
  resizeBilinear,
  topkSum,
} from "../../autograd/functions.ts";
import {
  multilabelSoftMarginLoss,
  multilabelSoftMarginLossBackward,
  multilabelSoftMarginLossRef,
} from "../../losses/multilabel.ts";
import { ecrTargetRef, fgMaxRef, maxNormRef, topkSumRef } from "../../losses/seam.ts";
import { globalAvgPoolRef } from "../../ops/pool.ts";
import { resizeBilinearRef, resizeGeometry } from "../../ops/resize.ts";
import { ocrLoss } from "../../losses/ocr.ts";
import type { SeamNet, SeamOutputs } from "./model.ts";

/** SEAM's loss knobs. */
export interface SeamLossOptions {
  /** Size of the second branch's images relative to the first's (SEAM: 0.3). */
  scaleFactor: number;
  /** Fraction of each image's C+1 · h · w ECR values averaged (SEAM: 0.2). */
  ecrTopk: number;
}

/** What one step records. */
export interface SeamStepInputs extends SeamLossOptions {
  /** Images [N, 3, H, W] (normalised). */
  x: Tensor;
  /** Foreground tags [N, C]. */
  tags: Tensor;
  /** OCR's co-occurrence prior [C, C], or null without OCR (or before its start). */
  prior: Tensor | null;
  /** OCR's knobs. */
  ocr: OcrConfig;
  /** Dropout seed of the step (the branches use 2·seed and 2·seed + 1, mod 2³²). */
  dropoutSeed: number;
  /**
   * Branches whose outputs are copied off the tape before the losses (tests: the gradient of
   * one branch alone). Default none.
   */
  detach?: [boolean, boolean];
}

/** The step's losses (1-element tensors, owned by the caller). */
export interface SeamLosses {
  cls1: Tensor;
  cls2: Tensor;
  rvmin1: Tensor;
  rvmin2: Tensor;
  er: Tensor;
  ecr1: Tensor;
  ecr2: Tensor;
  /** λ/2-weighted OCR losses of the branches (null without OCR). */
  ocr1: Tensor | null;
  ocr2: Tensor | null;
  /** OC pixels of the two branches (null without OCR). */
  ocPixels1: Tensor | null;
  ocPixels2: Tensor | null;
}

/** The weight of each loss in the total (the seeds of the backward). */
export const SEAM_LOSS_WEIGHTS = {
  cls1: 0.5,
  cls2: 0.5,
  rvmin1: 0.5,
  rvmin2: 0.5,
  er: 1,
  ecr1: 1,
  ecr2: 1,
} as const;

/** What {@link recordSeamLosses} returns. */
export interface SeamStepRecord {
  /** The losses. */
  losses: SeamLosses;
  /** The seeds of the step's backward ([tensor, its gradient] pairs). */
  seeds: [Tensor, Tensor][];
  /** Frees what the seeds and the forward left (call after the backward). */
  release(): void;
  /** Map grid of branch 1 [N, C+1, h, w]. */
  camShape: readonly number[];
  /** Both branches' maps at their input sizes (valid until {@link release}). */
  outputs: [SeamOutputs, SeamOutputs];
}

function copyOf(t: Tensor): Tensor {
  const c = Tensor.empty(t.gpu, t.shape);
  t.gpu.encoder().copyBufferToBuffer(t.buffer, 0, c.buffer, 0, Math.max(4, t.bytes));
  return c;
}

/** The total loss from the losses' values (host side, for logging). */
export function seamTotal(v: Record<keyof typeof SEAM_LOSS_WEIGHTS, number>, ocr = 0): number {
  let t = ocr;
  for (const [k, w] of Object.entries(SEAM_LOSS_WEIGHTS)) {
    t += w * v[k as keyof typeof SEAM_LOSS_WEIGHTS];
  }
  return t;
}

/** Checks SEAM's loss knobs. */
export function checkSeamLossOptions(o: SeamLossOptions): void {
  if (!(o.scaleFactor > 0 && o.scaleFactor < 1)) {
    throw new RangeError(`seam: scaleFactor must be in (0, 1), got ${o.scaleFactor}`);
  }
  if (!(o.ecrTopk > 0 && o.ecrTopk <= 1)) {
    throw new RangeError(`seam: ecrTopk must be in (0, 1], got ${o.ecrTopk}`);
  }
}

/**
 * Records both branches' forwards and SEAM's losses on `tape` (module doc); the caller runs
 * `tape.backward(r.seeds)`, then `r.release()`.
 */
export function recordSeamLosses(
  gpu: GpuContext,
  model: SeamNet,
  tape: Tape,
  s: SeamStepInputs,
): SeamStepRecord {
  checkSeamLossOptions(s);
  const N = s.x.shape[0];
  const C = s.tags.shape[1];
  if (s.tags.shape.length !== 2 || s.tags.shape[0] !== N || C !== model.options.numClasses) {
    throw new RangeError(
      `seam: tags [${s.tags.shape}] do not match ${N} images of ${model.options.numClasses} classes`,
    );
  }
  const sf = s.scaleFactor;
  const x2 = resizeBilinear(null, s.x, { scaleFactor: sf, alignCorners: true });
  const owned: Tensor[] = [x2];
  const seeds: [Tensor, Tensor][] = [];
  const constant = (v: number) => {
    const t = Tensor.fromArray(gpu, Float32Array.of(v), [1]);
    owned.push(t);
    return t;
  };

  const branch = (img: Tensor, i: 0 | 1) => {
    const maps = model.forwardMaps(img, tape, { dropoutSeed: (2 * s.dropoutSeed + i) >>> 0 });
    const size = [img.shape[2], img.shape[3]] as const;
    let out: SeamOutputs = {
      cam: resizeBilinear(tape, maps.cam, { size, alignCorners: true }),
      camRv: resizeBilinear(tape, maps.camRv, { size, alignCorners: true }),
    };
    maps.camRv.dispose();
    let grid = maps.cam;
    if (s.detach?.[i]) {
      const taped = out;
      out = { cam: copyOf(taped.cam), camRv: copyOf(taped.camRv) };
      taped.cam.dispose();
      taped.camRv.dispose();
      grid = copyOf(maps.cam);
      maps.cam.dispose();
    }
    owned.push(out.cam, out.camRv, grid);
    return { ...out, grid };
  };
  const b1 = branch(s.x, 0);
  const b2 = branch(x2, 1);

  // Classification and adaptive min-pooling, per branch.
  const cls = (b: { cam: Tensor }) => {
    const label = globalAvgPool(tape, b.cam);
    const logits = dropBackground(tape, label);
    label.dispose();
    owned.push(logits);
    seeds.push([logits, multilabelSoftMarginLossBackward(gpu, logits, s.tags, 0.5)]);
    return multilabelSoftMarginLoss(gpu, logits, s.tags);
  };
  const rvmin = (b: { camRv: Tensor }, wt: number) => {
    const m = fgMax(tape, b.camRv, s.tags);
    const hw = m.shape[1] * m.shape[2];
    const k = Math.floor(hw / 4);
    const loss = topkSum(tape, m, { k, smallest: true, relu: true, scale: 1 / (k * N) });
    m.dispose();
    seeds.push([loss, constant(wt)]);
    return loss;
  };
  const cls1 = cls(b1);
  const cls2 = cls(b2);
  const rvmin1 = rvmin(b1, SEAM_LOSS_WEIGHTS.rvmin1);
  const rvmin2 = rvmin(b2, SEAM_LOSS_WEIGHTS.rvmin2);

  // Equivariant regularisation and equivariant cross regularisation.
  const norm = (t: Tensor, down: boolean) => {
    const y = maxNorm(tape, t);
    if (!down) return y;
    const r = resizeBilinear(tape, y, { scaleFactor: sf, alignCorners: true });
    y.dispose();
    return r;
  };
  const cam1 = norm(b1.cam, true);
  const rv1 = norm(b1.camRv, true);
  const cam2 = norm(b2.cam, false);
  const rv2 = norm(b2.camRv, false);
  owned.push(cam1, rv1, cam2, rv2);
  if (cam1.shape[2] !== cam2.shape[2] || cam1.shape[3] !== cam2.shape[3]) {
    throw new RangeError(
      `seam: branch 1 resized to [${cam1.shape}] does not match branch 2 [${cam2.shape}]`,
    );
  }
  const ev = erElems(tape, cam1, cam2, s.tags);
  const er = topkSum(tape, ev, { k: ev.size / N, scale: 1 / ev.size });
  ev.dispose();
  seeds.push([er, constant(SEAM_LOSS_WEIGHTS.er)]);
  const [, C1, hs, ws] = cam2.shape;
  const k = Math.max(1, Math.floor(C1 * hs * ws * s.ecrTopk));
  const ecr = (target: Tensor, y: Tensor, wt: number) => {
    const v = ecrElems(tape, target, y, s.tags);
    const loss = topkSum(tape, v, { k, scale: 1 / (k * N) });
    v.dispose();
    seeds.push([loss, constant(wt)]);
    return loss;
  };
  const ecr1 = ecr(cam2, rv1, SEAM_LOSS_WEIGHTS.ecr1);
  const ecr2 = ecr(cam1, rv2, SEAM_LOSS_WEIGHTS.ecr2);

  // OCR on each branch's foreground class maps at the map grid.
  let ocr1: Tensor | null = null, ocr2: Tensor | null = null;
  let ocPixels1: Tensor | null = null, ocPixels2: Tensor | null = null;
  if (s.prior) {
    const o = { ...s.ocr, lambda: s.ocr.lambda / 2 };
    const one = (b: { grid: Tensor }) => {
      const z = dropBackground(tape, b.grid);
      owned.push(z);
      const r = ocrLoss(gpu, z, s.tags, s.prior!, o);
      seeds.push([z, r.grad]);
      return r;
    };
    const r1 = one(b1);
    const r2 = one(b2);
    [ocr1, ocPixels1, ocr2, ocPixels2] = [r1.loss, r1.ocPixels, r2.loss, r2.ocPixels];
  }
  const camShape = [N, C + 1, b1.grid.shape[2], b1.grid.shape[3]];
  return {
    losses: { cls1, cls2, rvmin1, rvmin2, er, ecr1, ecr2, ocr1, ocr2, ocPixels1, ocPixels2 },
    seeds,
    camShape,
    outputs: [{ cam: b1.cam, camRv: b1.camRv }, { cam: b2.cam, camRv: b2.camRv }],
    release: () => {
      for (const t of owned) t.dispose();
    },
  };
}

/** A map on the host for {@link seamLossRef}: values and shape [N, C+1, h, w]. */
export interface HostMap {
  data: ArrayLike<number>;
  shape: readonly number[];
}

/**
 * f64 reference of SEAM's losses (without OCR) from the two branches' maps at their input
 * sizes, composed from the pieces' references as the official train_SEAM.py writes them.
 */
export function seamLossRef(
  b1: { cam: HostMap; camRv: HostMap },
  b2: { cam: HostMap; camRv: HostMap },
  tags: ArrayLike<number>,
  o: SeamLossOptions,
): Record<keyof typeof SEAM_LOSS_WEIGHTS, number> {
  const [N, C1] = b1.cam.shape;
  const C = C1 - 1;
  const cls = (m: HostMap) => {
    const gap = globalAvgPoolRef(m.data, m.shape);
    const logits = Array.from({ length: N * C }, (_, i) => gap[Math.floor(i / C) * C1 + 1 + i % C]);
    return multilabelSoftMarginLossRef(logits, tags).loss;
  };
  const rvmin = (m: HostMap) => {
    const HW = m.shape[2] * m.shape[3];
    const { m: fg } = fgMaxRef(m.data, tags, N, C1, HW);
    const k = Math.floor(HW / 4);
    return topkSumRef(fg, N, { k, smallest: true, relu: true, scale: 1 / (k * N) });
  };
  const norm = (m: HostMap, down: boolean): HostMap => {
    const HW = m.shape[2] * m.shape[3];
    const y = maxNormRef(m.data, N * C1, HW);
    if (!down) return { data: y, shape: m.shape };
    const opts = { scaleFactor: o.scaleFactor, alignCorners: true };
    const r = resizeBilinearRef(y, m.shape, opts);
    const g = resizeGeometry(m.shape[2], m.shape[3], opts);
    return { data: r, shape: [N, C1, g.outH, g.outW] };
  };
  const cam1 = norm(b1.cam, true), rv1 = norm(b1.camRv, true);
  const cam2 = norm(b2.cam, false), rv2 = norm(b2.camRv, false);
  const HW = cam2.shape[2] * cam2.shape[3];
  const tag = (n: number, c: number) => (c === 0 ? 1 : tags[n * C + c - 1]);
  let er = 0;
  for (let n = 0; n < N; n++) {
    for (let c = 1; c < C1; c++) {
      for (let i = 0; i < HW; i++) {
        const e = (n * C1 + c) * HW + i;
        er += Math.abs(tag(n, c) * (cam1.data[e] - cam2.data[e]));
      }
    }
  }
  er /= N * C * HW;
  const k = Math.max(1, Math.floor(C1 * HW * o.ecrTopk));
  const ecr = (target: HostMap, y: HostMap) => {
    const T = ecrTargetRef(target.data, tags, N, C1, HW);
    const v = T.map((t, e) => {
      const n = Math.floor(e / (C1 * HW));
      const c = Math.floor(e / HW) % C1;
      return Math.abs(t - tag(n, c) * y.data[e]);
    });
    return topkSumRef(v, N, { k, scale: 1 / (k * N) });
  };
  return {
    cls1: cls(b1.cam),
    cls2: cls(b2.cam),
    rvmin1: rvmin(b1.camRv),
    rvmin2: rvmin(b2.camRv),
    er,
    ecr1: ecr(cam2, rv1),
    ecr2: ecr(cam1, rv2),
  };
}
