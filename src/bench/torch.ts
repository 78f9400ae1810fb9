/**
 * The same-run PyTorch reference: `torch_ref.py` (beside this file) trains the bench's `tiny`
 * and `resnet50` steps on random data and times matmul and the conv passes at the bench's
 * shapes, on this machine's CPU threads, in the same run as our kernels. Where no Python has
 * torch, the rows say so instead of quoting old figures.
 * @module
 */
import { runPythonJson, threadEnv } from "./python.ts";

/** What the reference is asked to run (shapes in the bench's own terms). */
export interface TorchRequest {
  /** Training steps: model, input side, batch, timed repetitions. */
  train?: { arch: string; size: number; batch: number; reps?: number }[];
  /** Square matmul sizes. */
  matmul?: number[];
  /** Conv shapes: input [N, C, H, W], weight [O, C, KH, KW], and [h, w] geometry pairs. */
  conv?: {
    name: string;
    x: number[];
    w: number[];
    stride: [number, number];
    padding: [number, number];
    dilation: [number, number];
  }[];
}

/** The reference's figures. */
export interface TorchResult {
  /** torch.__version__. */
  torch: string;
  /** Intra-op threads it ran with. */
  threads: number;
  /** Median ms and images/s per training case, in request order. */
  train: { arch: string; size: number; batch: number; ms: number; img_s: number }[];
  /** Best-of ms and GFLOP/s per matmul size. */
  matmul: { n: number; ms: number; gflops: number }[];
  /** GFLOP/s of each conv pass per shape. */
  conv: { name: string; forward: number; "grad input": number; "grad weight": number }[];
}

/** How a reference row names PyTorch: version, CPU, threads. */
export function torchLabel(r: TorchResult): string {
  return `PyTorch ${r.torch} CPU, ${r.threads} threads`;
}

/** Threads the reference uses: the machine's cores (what llvmpipe runs on). */
export function torchThreads(): number {
  return navigator.hardwareConcurrency || 1;
}

/** Runs the reference, or says why it could not (no Python with torch). */
export async function torchReference(
  req: TorchRequest,
): Promise<{ result: TorchResult } | { error: string }> {
  let script: string;
  try {
    script = await (await fetch(new URL("./torch_ref.py", import.meta.url))).text();
  } catch (e) {
    return { error: `torch_ref.py could not be read: ${(e as Error).message}` };
  }
  const threads = torchThreads();
  const r = await runPythonJson<TorchResult>(script, [JSON.stringify({ threads, ...req })], {
    env: threadEnv(threads),
    hint: "on Debian: apt-get install python3-torch python3-torchvision",
  });
  if ("error" in r) return { error: `PyTorch not measured (${r.error})` };
  return { result: r.value };
}
