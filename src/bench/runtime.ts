/**
 * Runtime micro-benchmarks: the cost of one await of the queue, of one dispatch inside a
 * submit, and a compute-bound kernel (naive GEMM) to compare backends (GL llvmpipe vs Vulkan
 * lavapipe) on the same machine.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { declareParams } from "../gpu/kernel.ts";
import { Tensor } from "../gpu/tensor.ts";
import { type BenchRow, timeMedian } from "./table.ts";

const { ProbeParams } = declareParams("bench-probe", {
  ProbeParams: { n: "u32", k: "u32", a: "f32", b: "f32" },
});

const PROBE = `
{{struct:ProbeParams}}
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> p: ProbeParams;
@compute @workgroup_size(8, 8)
fn gemm(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.n || g.y >= p.n) { return; }
  var s = 0.0;
  for (var i = 0u; i < p.k; i++) { s += A[g.y * p.k + i] * B[i * p.n + g.x]; }
  C[g.y * p.n + g.x] = s;
}
@compute @workgroup_size(64)
fn touch(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.n) { C[g.x] = C[g.x] * p.a + p.b; }
}
`;

/** Await cost, per-dispatch cost and naive-GEMM GFLOP/s on this adapter. */
export async function benchRuntime(gpu: GpuContext, n = 384): Promise<BenchRow[]> {
  gpu.addShader("bench-probe", PROBE);
  const a = Tensor.fromArray(gpu, new Float32Array(n * n).fill(0.5), [n, n]);
  const b = Tensor.fromArray(gpu, new Float32Array(n * n).fill(0.25), [n, n]);
  const c = Tensor.zeros(gpu, [n, n]);
  await gpu.sync();
  const awaitMs = await timeMedian(() => gpu.sync(), 9, 2);
  const dispatches = 200;
  const touch = () => {
    for (let i = 0; i < dispatches; i++) {
      gpu.dispatch({
        shader: "bench-probe",
        entry: "touch",
        inputs: [a, b],
        outputs: [c],
        params: ProbeParams.pack({ n: 64, k: 0, a: 1, b: 0 }),
        workgroups: [1],
      });
    }
    return gpu.sync();
  };
  const perDispatchUs = ((await timeMedian(touch, 5, 1)) - awaitMs) / dispatches * 1000;
  const reps = 3;
  const gemm = () => {
    for (let i = 0; i < reps; i++) {
      gpu.dispatch({
        shader: "bench-probe",
        entry: "gemm",
        inputs: [a, b],
        outputs: [c],
        params: ProbeParams.pack({ n, k: n, a: 0, b: 0 }),
        workgroups: [Math.ceil(n / 8), Math.ceil(n / 8)],
      });
    }
    return gpu.sync();
  };
  const gemmMs = await timeMedian(gemm, 3, 1);
  [a, b, c].forEach((t) => t.dispose());
  const gflops = (2 * n ** 3 * reps) / (gemmMs / 1000) / 1e9;
  return [
    { section: "runtime", name: "await queue (sync)", value: awaitMs, unit: "ms" },
    { section: "runtime", name: "per dispatch in one submit", value: perDispatchUs, unit: "us" },
    { section: "runtime", name: `naive GEMM ${n}^3`, value: gflops, unit: "GFLOP/s" },
  ];
}
