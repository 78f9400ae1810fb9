/**
 * Kernel benchmarks: matmul and conv2d (forward, input gradient, weight gradient) at ResNet-50
 * layer shapes, each beside the naive one-output-per-invocation kernel measured in the same
 * run, plus numpy/OpenBLAS SGEMM (2 threads) as the machine's practical SGEMM peak and
 * PyTorch's CPU matmul and conv passes at the same shapes (./torch.ts) when a Python with
 * numpy/torch is available; with the roofline measured, every row prints its share of the
 * adapter's FMA peak.
 *
 * Timing: one submit of several repetitions and one wait (see `timeDispatches`), so the fixed
 * cost of a submit + wait (~11 ms on llvmpipe) is cancelled; the naive references of large
 * shapes run fewer repetitions.
 * @module
 */
import process from "node:process";
import type { GpuContext } from "../gpu/context.ts";
import { Tensor } from "../gpu/tensor.ts";
import {
  conv2d,
  conv2dGradInput,
  conv2dGradWeight,
  type Conv2dOptions,
  convOutSize,
} from "../ops/conv.ts";
import {
  isCpuAdapter,
  matmul,
  type MatmulVariant,
  timeDispatchesDetailed,
  tuneMatmul,
} from "../ops/matmul.ts";
import { peakShare, type Roofline } from "./roofline.ts";
import { runPythonJson, threadEnv } from "./python.ts";
import { torchLabel, torchReference } from "./torch.ts";
import type { BenchRow } from "./table.ts";

/** This process's CPU time (user + system, all threads) in ms. */
function cpuTimeMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

/** Options of {@link benchKernels}. */
export interface BenchKernelOptions {
  /** Fewer sizes and repetitions (a smoke run of a few seconds on llvmpipe). */
  quick?: boolean;
  /** Skip the numpy/OpenBLAS reference. */
  noBlas?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Skip the same-run PyTorch reference (./torch.ts). */
  noTorch?: boolean;
  /** The adapter's measured limits (./roofline.ts): rows then print their share of the peak. */
  roof?: Roofline;
}

/** A conv layer shape of the benchmark. */
export interface ConvShape {
  /** Row label. */
  name: string;
  /** Input shape [N, C, H, W]. */
  x: [number, number, number, number];
  /** Weight shape [O, C, KH, KW]. */
  w: [number, number, number, number];
  /** Geometry. */
  o: Conv2dOptions;
}

/** ResNet-50 layer shapes at batch 8 (the list). */
export const RESNET50_SHAPES: ConvShape[] = [
  { name: "3x3 64→64 @56²", x: [8, 64, 56, 56], w: [64, 64, 3, 3], o: { padding: 1 } },
  { name: "3x3 256→256 @14²", x: [8, 256, 14, 14], w: [256, 256, 3, 3], o: { padding: 1 } },
  { name: "1x1 1024→256 @14²", x: [8, 1024, 14, 14], w: [256, 1024, 1, 1], o: {} },
  {
    name: "7x7/2 3→64 @224² (stem)",
    x: [8, 3, 224, 224],
    w: [64, 3, 7, 7],
    o: { stride: 2, padding: 3 },
  },
];

const GF = (flops: number, ms: number) => flops / ms / 1e6;

/** A conv option as an [h, w] pair (`d` when unset). */
const pair = (v: Conv2dOptions["stride"], d: number): [number, number] =>
  v === undefined ? [d, d] : typeof v === "number" ? [v, v] : [v[0], v[1]];

/** Stride, padding and dilation of a shape as [h, w] pairs. */
function convGeometry(o: Conv2dOptions): [number, number][] {
  return [pair(o.stride, 1), pair(o.padding, 0), pair(o.dilation, 1)];
}

/** Repetitions for about 0.5 s (quick: 0.15 s) of work at 20 GFLOP/s, 1 to 32. */
const repsFor = (flops: number, quick: boolean) =>
  Math.max(1, Math.min(32, Math.round((quick ? 3e9 : 1e10) / flops)));

/**
 * Milliseconds of one call of `record` (one submit, one wait) minus the cost of an empty
 * submit + wait. For slow kernels whose pipeline is already compiled.
 */
async function timeOnce(gpu: GpuContext, record: () => void): Promise<number> {
  await gpu.sync();
  const t0 = performance.now();
  await gpu.sync();
  const t1 = performance.now();
  record();
  await gpu.sync();
  return Math.max(1e-3, performance.now() - t1 - (t1 - t0));
}

/** A measurement: wall-clock GFLOP/s and, on CPU adapters, CPU-time GFLOP/s. */
interface Rate {
  gf: number;
  cpuGf?: number;
}

/** Runs the benchmark and returns its rows (sections "matmul" and "conv"). */
export async function benchKernels(
  gpu: GpuContext,
  opts: BenchKernelOptions = {},
): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  const quick = opts.quick ?? false;
  const rows: BenchRow[] = [];
  const tuning = await tuneMatmul(gpu);
  const adapter = gpu.describe();
  const cores = isCpuAdapter(gpu) ? navigator.hardwareConcurrency || 1 : 0;
  log(`kernels on ${adapter}; matmul variant ${tuning.variant}`);
  const measure = async (record: () => void, flops: number, reps: number): Promise<Rate> => {
    const t = await timeDispatchesDetailed(gpu, record, reps, cpuTimeMs);
    return { gf: GF(flops, t.ms), cpuGf: cores ? GF(flops, t.cpuMs / cores) : undefined };
  };
  const cpuNote = (r: Rate) =>
    (opts.roof ? `; ${peakShare(r.gf, opts.roof)}` : "") +
    (r.cpuGf === undefined ? "" : `; CPU-time ${r.cpuGf.toFixed(1)} GFLOP/s over ${cores} cores`);

  // --- matmul -----------------------------------------------------------------------------
  const sizes = quick ? [256, 512] : [512, 1024, 2048];
  const best: Record<number, number> = {};
  await warmUp(gpu);
  for (const n of sizes) {
    const a = Tensor.zeros(gpu, [n, n]);
    const b = Tensor.zeros(gpu, [n, n]);
    const c = Tensor.empty(gpu, [n, n]);
    const flops = 2 * n ** 3;
    const run = (variant: MatmulVariant) => () => void matmul(gpu, a, b, { out: c, variant });
    // Slow kernels (the naive reference, the variant not chosen for this adapter) run once;
    // their pipelines do not depend on the size and were compiled on a small problem.
    const naive = GF(flops, await timeOnce(gpu, run("naive")));
    for (const variant of ["rb", "tiled"] as const) {
      const chosen = variant === tuning.variant;
      const r = chosen
        ? await measure(run(variant), flops, repsFor(flops, quick))
        : { gf: GF(flops, await timeOnce(gpu, run(variant))) };
      if (chosen) best[n] = r.gf;
      rows.push({
        section: "matmul",
        name: `${n}x${n}x${n} ${variant}${chosen ? " (chosen)" : ""}`,
        value: r.gf,
        unit: "GFLOP/s",
        reference: naive,
        referenceName: "naive kernel",
        note: (rows.length === 0 ? `adapter: ${adapter}` : "") + cpuNote(r) +
          (chosen && n === 1024 && opts.roof
            ? `; target ≥ 50% of FMA peak: ${r.gf >= 0.5 * opts.roof.fmaGflops ? "met" : "not met"}`
            : ""),
      });
      log(`matmul ${n} ${variant}: ${r.gf.toFixed(1)} GFLOP/s (naive ${naive.toFixed(2)})`);
    }
    for (const t of [a, b, c]) t.dispose();
  }
  if (!opts.noBlas) {
    const blas = await numpySgemm(quick ? [512] : [1024, 2048]);
    if (blas.error !== undefined) {
      rows.push({
        section: "matmul",
        name: "OpenBLAS reference",
        value: NaN,
        unit: "GFLOP/s",
        note: `not measured: ${blas.error}`,
      });
    }
    for (const [n, g] of Object.entries(blas.gflops)) {
      const ours = best[Number(n)];
      rows.push({
        section: "matmul",
        name: `${n}³ ${tuning.variant} vs OpenBLAS`,
        value: ours ?? NaN,
        unit: "GFLOP/s",
        reference: g,
        referenceName: "numpy/OpenBLAS, 2 threads",
        note: ours === undefined
          ? "size not run"
          : `target ≥ 40%: ${ours >= 0.4 * g ? "met" : "not met"} (${
            (100 * ours / g).toFixed(0)
          }%)`,
      });
      log(`OpenBLAS ${n}: ${g.toFixed(1)} GFLOP/s`);
    }
  }

  // --- conv -------------------------------------------------------------------------------
  const shapes = quick
    ? RESNET50_SHAPES.map((s) => ({ ...s, x: [1, ...s.x.slice(1)] as ConvShape["x"] }))
    : RESNET50_SHAPES;

  // --- PyTorch, same run: matmul at the same sizes, each conv pass at the same shapes ------
  const torch = opts.noTorch ? null : await torchReference({
    matmul: sizes,
    conv: shapes.map((s) => {
      const [stride, padding, dilation] = convGeometry(s.o);
      return { name: s.name, x: s.x, w: s.w, stride, padding, dilation };
    }),
  });
  const torchName = torch && "result" in torch ? torchLabel(torch.result) : "";
  if (torch && "error" in torch) {
    rows.push({
      section: "matmul",
      name: "PyTorch reference",
      value: NaN,
      unit: "GFLOP/s",
      note: torch.error,
    });
  } else if (torch) {
    for (const m of torch.result.matmul) {
      const ours = best[m.n];
      rows.push({
        section: "matmul",
        name: `${m.n}³ ${tuning.variant} vs PyTorch`,
        value: ours ?? NaN,
        unit: "GFLOP/s",
        reference: m.gflops,
        referenceName: torchName,
      });
    }
  }
  for (const s of shapes) {
    const [n, c, h, w] = s.x;
    const [o, , kh, kw] = s.w;
    const [st, pd, dl] = convGeometry(s.o);
    const oh = convOutSize(h, kh, st[0], pd[0], dl[0]);
    const ow = convOutSize(w, kw, st[1], pd[1], dl[1]);
    const flops = 2 * n * o * oh * ow * c * kh * kw;
    const reps = repsFor(flops, quick);
    const x = Tensor.zeros(gpu, s.x);
    const wt = Tensor.zeros(gpu, s.w);
    const dy = Tensor.zeros(gpu, [n, o, oh, ow]);
    const y = Tensor.empty(gpu, [n, o, oh, ow]);
    const dx = Tensor.empty(gpu, s.x);
    const dw = Tensor.empty(gpu, s.w);
    // The same GEMM as the forward pass: [O, C·KH·KW] x [C·KH·KW, N·OH·OW].
    const gm = Tensor.zeros(gpu, [o, c * kh * kw]);
    const gk = Tensor.zeros(gpu, [c * kh * kw, n * oh * ow]);
    const gc = Tensor.empty(gpu, [o, n * oh * ow]);
    const gemm = await measure(() => void matmul(gpu, gm, gk, { out: gc }), flops, reps);
    // The naive reference runs on one image (its rate does not depend on the batch).
    const x1 = Tensor.zeros(gpu, [1, c, h, w]);
    const dy1 = Tensor.zeros(gpu, [1, o, oh, ow]);
    const y1 = Tensor.empty(gpu, [1, o, oh, ow]);
    const dx1 = Tensor.empty(gpu, [1, c, h, w]);
    const passes = [
      [
        "forward",
        () => conv2d(gpu, x, wt, null, { ...s.o, out: y }),
        () => conv2d(gpu, x1, wt, null, { ...s.o, variant: "naive", out: y1 }),
      ],
      [
        "grad input",
        () => conv2dGradInput(gpu, dy, wt, s.x, { ...s.o, out: dx }),
        () => conv2dGradInput(gpu, dy1, wt, x1.shape, { ...s.o, variant: "naive", out: dx1 }),
      ],
      [
        "grad weight",
        () => conv2dGradWeight(gpu, x, dy, s.w, { ...s.o, out: dw }),
        () => conv2dGradWeight(gpu, x1, dy1, s.w, { ...s.o, variant: "naive", out: dw }),
      ],
    ] as const;
    const torchConv = torch && "result" in torch
      ? torch.result.conv.find((t) => t.name === s.name)
      : undefined;
    for (const [pass, run, runNaive] of passes) {
      const r = await measure(() => void run(), flops, reps);
      const pt = torchConv?.[pass];
      const naive = GF(flops / n, await timeOnce(gpu, () => void runNaive()));
      const ratio = r.gf / gemm.gf;
      rows.push({
        section: "conv",
        name: `${s.name} b${n} ${pass}`,
        value: r.gf,
        unit: "GFLOP/s",
        reference: naive,
        referenceName: "naive kernel, 1 image",
        note: `GEMM ${o}x${c * kh * kw}x${n * oh * ow} ${gemm.gf.toFixed(1)} GFLOP/s, ` +
          `conv/GEMM ${ratio.toFixed(2)} (target ≥ 0.5: ${ratio >= 0.5 ? "met" : "not met"})` +
          cpuNote(r) +
          (pt === undefined
            ? ""
            : `; ${torchName} ${pt.toFixed(1)} GFLOP/s (${(r.gf / pt).toFixed(2)}x)`),
      });
      log(
        `conv ${s.name} ${pass}: ${r.gf.toFixed(1)} GFLOP/s (naive ${naive.toFixed(2)}, ` +
          `GEMM ${gemm.gf.toFixed(1)})`,
      );
    }
    for (const t of [x, wt, dy, y, dx, dw, gm, gk, gc, x1, dy1, y1, dx1]) t.dispose();
  }
  return rows;
}

/** Compiles the naive and both matmul pipelines on tiny problems (size-independent). */
async function warmUp(gpu: GpuContext): Promise<void> {
  const t = [
    Tensor.zeros(gpu, [1, 1, 3, 3]),
    Tensor.zeros(gpu, [1, 1, 1, 1]),
    Tensor.empty(gpu, [1, 1, 3, 3]),
  ];
  const [x, w, y] = t;
  conv2d(gpu, x, w, null, { variant: "naive", out: y });
  conv2dGradInput(gpu, y, w, x.shape, { variant: "naive", out: x });
  conv2dGradWeight(gpu, x, y, w.shape, { variant: "naive", out: w });
  const m = [Tensor.zeros(gpu, [64, 64]), Tensor.zeros(gpu, [64, 64]), Tensor.empty(gpu, [64, 64])];
  for (const variant of ["naive", "rb", "tiled"] as const) {
    matmul(gpu, m[0], m[1], { out: m[2], variant });
  }
  await gpu.sync();
  for (const v of [...t, ...m]) v.dispose();
}

/** numpy SGEMM GFLOP/s per size with 2 OpenBLAS threads, or why it could not be measured. */
export async function numpySgemm(
  sizes: number[],
): Promise<{ gflops: Record<number, number>; error?: string }> {
  const script = [
    "import sys, time, json, numpy as np",
    "out = {}",
    "for n in map(int, sys.argv[1:]):",
    "    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)",
    "    a @ b",
    "    best = 1e9",
    "    for _ in range(5):",
    "        t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)",
    "    out[n] = 2 * n ** 3 / best / 1e9",
    "print(json.dumps(out))",
  ].join("\n");
  const r = await runPythonJson<Record<string, number>>(script, sizes.map(String), {
    env: threadEnv(2),
    hint: "on Debian: apt-get install python3-numpy",
  });
  if ("error" in r) return { gflops: {}, error: `no python3 with numpy (${r.error})` };
  return { gflops: Object.fromEntries(Object.entries(r.value).map(([n, g]) => [Number(n), g])) };
}
