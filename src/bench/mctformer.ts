/**
 * MCTformer's benchmarks on random inputs (no data loading):
 *
 * - one DeiT-S attention (197 tokens: 1 class token + 14x14 patches, width 384, 6 heads, batch
 *   1; qkv linear, q·kᵀ, row softmax, ·v, proj) forward + backward (input and weight
 *   gradients) in GFLOP/s, beside the matmul kernel's GFLOP/s at the attention's largest GEMM
 *   (the qkv projection, 197 x 384 x 1152) in the same run;
 * - a `vit-tiny` MCTformer-V2 training step (128 px, batch 8: forward, both multilabel losses,
 *   backward, AdamW) in images/s, beside the `tiny` CAM classifier's step on the same crop and
 *   batch (SGD) in the same run.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import { Tape } from "../autograd/tape.ts";
import { disposeState, zeroGrads } from "../autograd/param.ts";
import { OcrConfigSchema } from "../io/config.ts";
import { AdamW } from "../optim/mod.ts";
import { matmul, timeDispatches, tuneMatmul } from "../ops/matmul.ts";
import { Rng } from "../rng.ts";
import { Attention, createMctformer, mctformerConfig } from "../models/vit.ts";
import { recordMctformerStep } from "../methods/mctformer/train.ts";
import { type BenchRow, timeMedian } from "./table.ts";
import { timeTrainStep } from "./train.ts";

const GF = (flops: number, ms: number) => flops / ms / 1e6;

/**
 * FLOPs of one attention's forward + backward over T tokens of width D with the input's
 * gradient: the linears (qkv D → 3D, proj D → D) 8·T·D² forward and twice that backward, the
 * two batched products 4·T²·D forward and twice that backward (the softmax's are left out).
 */
export function attentionFlops(T: number, D: number): number {
  return 3 * (8 * T * D * D + 4 * T * T * D);
}

/** Milliseconds of one attention forward + backward, [1, T, D] tokens, `heads` heads. */
async function timeAttention(
  gpu: GpuContext,
  T: number,
  D: number,
  heads: number,
  reps: number,
): Promise<number> {
  const rng = new Rng(3);
  const attn = new Attention(gpu, "bench.attn", D, heads, true, rng);
  const params = attn.params();
  const x = Tensor.fromArray(gpu, rng.normals(T * D), [1, T, D]);
  const dy = Tensor.fromArray(gpu, rng.normals(T * D), [1, T, D]);
  const record = () => {
    zeroGrads(params);
    const tape = new Tape(gpu, params);
    tape.watch(x);
    const y = attn.forward(x, tape);
    const [dx] = tape.backward([[y, dy.retain()]], [x]);
    y.dispose();
    dx?.dispose();
  };
  const ms = await timeDispatches(gpu, record, reps);
  x.dispose();
  dy.dispose();
  disposeState(params, []);
  return ms;
}

/** Median ms of one vit-tiny MCTformer-V2 step (128 px, batch B, AdamW), random inputs. */
async function timeMctformerStep(gpu: GpuContext, B: number, reps: number): Promise<number> {
  const C = 20, S = 128;
  const rng = new Rng(5);
  const model = createMctformer(gpu, { ...mctformerConfig("vit-tiny", C, S), seed: 1 });
  const params = model.params();
  const opt = new AdamW(gpu, { weightDecay: 0.05 });
  const x = Tensor.fromArray(gpu, rng.normals(B * 3 * S * S), [B, 3, S, S]);
  const t = new Float32Array(B * C);
  for (let b = 0; b < B; b++) t[b * C + rng.int(C)] = 1;
  const tags = Tensor.fromArray(gpu, t, [B, C]);
  const ocr = OcrConfigSchema.parse({});
  let step = 0;
  const ms = await timeMedian(
    async () => {
      const { losses } = recordMctformerStep(gpu, model, opt, params, {
        x,
        tags,
        lr: 1e-4,
        prior: null,
        ocr,
        seed: step++,
      });
      const [v] = await losses.cls.read();
      losses.cls.dispose();
      losses.patch.dispose();
      if (!Number.isFinite(v)) throw new Error(`MCTformer bench step gave loss ${v}`);
    },
    reps,
    1,
  );
  x.dispose();
  tags.dispose();
  opt.dispose();
  model.dispose();
  return ms;
}

/** The `mctformer` section: attention GFLOP/s beside the matmul's, a vit-tiny step's img/s. */
export async function benchMctformer(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<BenchRow[]> {
  await tuneMatmul(gpu);
  const quick = opts.quick ?? false;
  const [T, D, H] = [197, 384, 6];
  const flops = attentionFlops(T, D);
  const attnMs = await timeAttention(gpu, T, D, H, quick ? 2 : 5);
  const a = Tensor.zeros(gpu, [T, D]);
  const b = Tensor.zeros(gpu, [D, 3 * D]);
  const c = Tensor.empty(gpu, [T, 3 * D]);
  const mmMs = await timeDispatches(gpu, () => void matmul(gpu, a, b, { out: c }), quick ? 4 : 16);
  [a, b, c].forEach((t) => t.dispose());
  const B = 8, reps = quick ? 2 : 3;
  const cnn = (await timeTrainStep(gpu, { arch: "tiny", size: 128, batch: B, ocr: false }, reps))
    .ms;
  const vit = await timeMctformerStep(gpu, B, reps);
  return [
    {
      section: "mctformer",
      name: `attention fwd+bwd, ${T} tokens x ${D} wide, ${H} heads, batch 1`,
      value: GF(flops, attnMs),
      unit: "GFLOP/s",
      reference: GF(2 * T * D * 3 * D, mmMs),
      referenceName: `matmul ${T}x${D}x${3 * D} (the qkv GEMM)`,
      note: `${attnMs.toFixed(1)} ms for ${(flops / 1e9).toFixed(2)} GFLOP ` +
        "(softmax and data movement not counted)",
    },
    {
      section: "mctformer",
      name: `MCTformer-V2 vit-tiny step, 128px batch ${B} (AdamW)`,
      value: (B * 1000) / vit,
      unit: "img/s",
      reference: (B * 1000) / cnn,
      referenceName: "CAM classifier step (tiny OS16, same crop and batch, SGD)",
      note: `${vit.toFixed(0)} ms/step against ${cnn.toFixed(0)} ms`,
    },
  ];
}
