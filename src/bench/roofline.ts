/**
 * The adapter's own limits, measured from WGSL: peak f32 multiply-add throughput (a kernel that
 * keeps independent fma chains in registers and touches memory once) and memory bandwidth (a
 * vec4 copy of a buffer far larger than any cache). Every kernel row of the bench prints its
 * share of these, so a figure says how far from this adapter's limit it is, not just from a
 * naive kernel.
 *
 * Why several variants: on CPU adapters (llvmpipe, lavapipe) each invocation is one SIMD lane,
 * and too many live accumulators spill registers while too few leave the FMA pipes waiting on
 * latency; on GPUs the occupancy decides. The peak is the best variant, and the rows name it.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { timeDispatches } from "../ops/matmul.ts";
import type { BenchRow } from "./table.ts";

const { RooflineParams } = declareParams("bench-roofline", {
  RooflineParams: { n: "u32", iters: "u32", a: "f32", b: "f32" },
});

/** Timed rounds per case (the best counts). */
const ROUNDS = (quick: boolean) => quick ? 1 : 3;

/**
 * Independent vec4 fma chains per invocation tried for the FMA peak. On llvmpipe the rate
 * keeps rising to about 32 chains (each loop iteration has a fixed cost of its own), far past
 * the point where the accumulators fit in registers.
 */
export const FMA_CHAINS = [1, 4, 16, 32, 64] as const;

/** The probe shader: `fma{CHAINS}` entry points and the vec4 `copy`. */
export function rooflineShader(): string {
  const fmaEntry = (k: number) => {
    const acc = Array.from({ length: k }, (_, i) => i);
    return `
@compute @workgroup_size(64)
fn fma${k}(@builtin(global_invocation_id) g: vec3u) {
  let seed = f32(g.x & 7u) * 1e-3;
${
      acc.map((i) =>
        `  var a${i} = vec4f(seed + ${i}.0, seed + ${i}.25, seed + ${i}.5, seed + ${i}.75);`
      )
        .join("\n")
    }
  let m = vec4f(p.a);
  let c = vec4f(p.b);
  for (var it = 0u; it < p.iters; it++) {
${acc.map((i) => `    a${i} = fma(a${i}, m, c);`).join("\n")}
  }
  let s = ${acc.map((i) => `a${i}`).join(" + ")};
  if (g.x < p.n) { out[g.x] = s; }
}`;
  };
  return `
{{struct:RooflineParams}}
@group(0) @binding(0) var<storage, read> src: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4f>;
@group(0) @binding(2) var<uniform> p: RooflineParams;
${FMA_CHAINS.map(fmaEntry).join("\n")}
@compute @workgroup_size(1)
fn loop_budget() {
  // Counts the iterations a loop asked for p.iters runs: fewer means the adapter cuts loops.
  var c = 0u;
  for (var it = 0u; it < p.iters; it++) { c += 1u; }
  out[0] = vec4f(f32(c), 0.0, 0.0, 0.0);
}
@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // p.iters vec4s per invocation, p.n / p.iters apart (adjacent invocations stay adjacent).
  let i = g.x + g.y * nwg.x * 64u;
  let stride = p.n / p.iters;
  if (i >= stride) { return; }
  for (var j = 0u; j < p.iters; j++) { out[i + j * stride] = src[i + j * stride]; }
}
`;
}

const registered = new WeakSet<GpuContext>();

/** Adds the probe shader to a context once (the timed loops record it many times). */
function registerShader(gpu: GpuContext): void {
  if (registered.has(gpu)) return;
  gpu.addShader("bench-roofline", rooflineShader());
  registered.add(gpu);
}

/**
 * Records the fma probe: `chains` vec4 chains per invocation, `iters` steps of `a·x + b` each,
 * over `n` invocations (a multiple of 64); invocation i writes the sum of its chains to `out[i]`.
 */
export function recordFma(
  gpu: GpuContext,
  chains: number,
  n: number,
  iters: number,
  coef: { a: number; b: number },
  src: Tensor,
  out: Tensor,
): void {
  registerShader(gpu);
  gpu.dispatch({
    name: `roofline.fma${chains}`,
    shader: "bench-roofline",
    entry: `fma${chains}`,
    inputs: [src],
    outputs: [out],
    params: RooflineParams.pack({ n, iters, ...coef }),
    workgroups: [n / 64],
  });
}

/** Records the copy probe: `vec4s` vec4 values of `src` into `out`, `per` per invocation. */
export function recordCopy(
  gpu: GpuContext,
  vec4s: number,
  per: number,
  src: Tensor,
  out: Tensor,
): void {
  registerShader(gpu);
  gpu.dispatch1d(
    {
      name: `roofline.copy${per}`,
      shader: "bench-roofline",
      entry: "copy",
      inputs: [src],
      outputs: [out],
      params: RooflineParams.pack({ n: vec4s, iters: per, a: 0, b: 0 }),
    },
    Math.ceil(vec4s / per),
    64,
  );
}

/** Loop iterations {@link measureLoopBudget} asks for: far past llvmpipe's budget. */
export const LOOP_PROBE = 1 << 20;

/**
 * How many iterations one loop of one invocation runs when asked for {@link LOOP_PROBE}:
 * LOOP_PROBE on adapters without a limit; 65,535 on Mesa's llvmpipe, which gives every
 * invocation that many loop iterations in all (every loop together) and then silently exits
 * the loops, so a kernel whose invocations loop longer computes wrong values there. One
 * readback.
 */
export async function measureLoopBudget(gpu: GpuContext): Promise<number> {
  registerShader(gpu);
  const src = Tensor.zeros(gpu, [4]);
  const out = Tensor.zeros(gpu, [4]);
  gpu.dispatch({
    name: "roofline.loop_budget",
    shader: "bench-roofline",
    entry: "loop_budget",
    inputs: [src],
    outputs: [out],
    params: RooflineParams.pack({ n: 1, iters: LOOP_PROBE, a: 0, b: 0 }),
    workgroups: [1],
  });
  const [count] = await out.read();
  src.dispose();
  out.dispose();
  return count;
}

/** The adapter's measured limits. */
export interface Roofline {
  /** Peak f32 multiply-add throughput, GFLOP/s (an fma counts 2 flops). */
  fmaGflops: number;
  /** The fma variant that reached it (vec4 chains per invocation). */
  fmaChains: number;
  /** Copy bandwidth, GB/s (bytes read + bytes written). */
  copyGBs: number;
}

/** Share of the FMA peak, as a note fragment (`"23% of FMA peak"`). */
export function peakShare(gflops: number, roof: Roofline | undefined): string {
  return roof ? `${(100 * gflops / roof.fmaGflops).toFixed(0)}% of FMA peak` : "";
}

/**
 * Measures the FMA peak and copy bandwidth, each the best of {@link ROUNDS} timed rounds.
 * `quick` shortens the runs (a smoke figure, a few tenths of a second); the full run takes a
 * few seconds on llvmpipe.
 */
export async function measureRoofline(
  gpu: GpuContext,
  opts: { quick?: boolean } = {},
): Promise<{ roof: Roofline; rows: BenchRow[] }> {
  const quick = opts.quick ?? false;
  // Enough invocations to fill every core's SIMD lanes (and a GPU's SMs): 64k.
  const n = 1 << 16;
  const copyWords = (quick ? 1 : 4) << 20; // vec4s: 64 MiB (quick 16 MiB) per buffer
  const src = Tensor.zeros(gpu, [copyWords * 4]);
  const out = Tensor.empty(gpu, [Math.max(copyWords, n) * 4]);
  const rows: BenchRow[] = [];
  let best = { gf: 0, chains: 1 };
  for (const k of FMA_CHAINS) {
    // iters * chains is fixed so every variant does the same flops.
    const iters = Math.max(1, Math.round((quick ? 256 : 4096) / k));
    const flops = 2 * 4 * k * iters * n;
    // a·x + b with a just below 1 keeps the chains finite however long they run.
    const record = () => recordFma(gpu, k, n, iters, { a: 0.999, b: 1e-3 }, src, out);
    // A peak is the best of several rounds: a shared machine only ever slows a round down.
    let ms = Infinity;
    for (let round = 0; round < ROUNDS(quick); round++) {
      ms = Math.min(ms, await timeDispatches(gpu, record, quick ? 1 : 4));
    }
    const gf = flops / ms / 1e6;
    if (gf > best.gf) best = { gf, chains: k };
    rows.push({
      section: "roofline",
      name: `fma, ${k} vec4 chain${k > 1 ? "s" : ""}/invocation`,
      value: gf,
      unit: "GFLOP/s",
      note: `${n} invocations x ${iters} iterations`,
    });
  }
  const bytes = 2 * copyWords * 16;
  let copyGBs = 0;
  for (const per of [1, 4, 16]) {
    const copy = () => recordCopy(gpu, copyWords, per, src, out);
    let ms = Infinity;
    for (let round = 0; round < ROUNDS(quick); round++) {
      ms = Math.min(ms, await timeDispatches(gpu, copy, quick ? 2 : 4));
    }
    const gbs = bytes / ms / 1e6;
    copyGBs = Math.max(copyGBs, gbs);
    rows.push({
      section: "roofline",
      name: `copy ${(copyWords * 16) >> 20} MiB, ${per} vec4/invocation`,
      value: gbs,
      unit: "GB/s",
      note: "bytes read + bytes written",
    });
  }
  src.dispose();
  out.dispose();
  rows.push({
    section: "roofline",
    name: "FMA peak (best variant)",
    value: best.gf,
    unit: "GFLOP/s",
    note: `${best.chains} vec4 chain${best.chains > 1 ? "s" : ""}/invocation`,
  });
  const budget = await measureLoopBudget(gpu);
  rows.push({
    section: "roofline",
    name: "loop iterations one invocation may run",
    value: budget,
    unit: "iterations",
    note: budget < LOOP_PROBE
      ? "the adapter cuts longer loops silently (all loops of an invocation together)"
      : `no limit met (${LOOP_PROBE} ran)`,
  });
  rows.push({
    section: "roofline",
    name: "copy bandwidth (best variant)",
    value: copyGBs,
    unit: "GB/s",
    note: `ridge point ${(best.gf / copyGBs).toFixed(1)} flop/byte`,
  });
  return { roof: { fmaGflops: best.gf, fmaChains: best.chains, copyGBs }, rows };
}
