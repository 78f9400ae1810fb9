/**
 * The generic op benchmark: for each registered unit (src/registry/ops.ts) and each of its
 * benchmark shapes, the GPU forward and backward rates (GFLOP/s for compute-bound ops, GB/s
 * for memory-bound ones, from the unit's FLOP and byte counts) beside a reference measured in
 * the same run: the naive GPU kernel where the unit has one, else the f64 CPU reference.
 *
 * GPU timing: {@link timeDispatches} (one submit of several calls, one wait, the fixed cost
 * of a submit + wait subtracted), with as many calls as take about a quarter of a second.
 * A backward call records whatever forward work the op's backward needs (e.g. the indices of
 * a max pool), so its rate counts the backward's work only and understates such ops a little.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { timeDispatches } from "../ops/matmul.ts";
import {
  type AnyOpUnit,
  type DeviceArgs,
  disposeAll,
  type HostValues,
  type OpCost,
  type RecordedOp,
  uniformValues,
  uploadArgs,
} from "../ops/unit.ts";
import { type BenchRow, timeMedian } from "./table.ts";

/** Options of {@link benchOps}. */
export interface BenchOpsOptions {
  /** The first benchmark shape of each unit only. */
  quick?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** Milliseconds per call of a GPU recording, about 250 ms of calls in one submit. */
async function gpuMs(gpu: GpuContext, record: () => void, maxReps = 64): Promise<number> {
  const once = await timeDispatches(gpu, record, 1);
  const reps = Math.max(1, Math.min(maxReps, Math.round(250 / Math.max(once, 1e-3))));
  return reps === 1 ? once : await timeDispatches(gpu, record, reps);
}

/** Milliseconds per call of a CPU function (the median of a few runs, about 250 ms). */
async function cpuMs(fn: () => void): Promise<number> {
  const t0 = performance.now();
  fn();
  const once = performance.now() - t0;
  const reps = Math.max(1, Math.min(5, Math.round(250 / Math.max(once, 1e-3))));
  return reps === 1 ? once : await timeMedian(fn, reps, 0);
}

/** Rate of `cost` in `ms`: GFLOP/s or GB/s. */
function rate(unit: AnyOpUnit, cost: OpCost, ms: number): number {
  return (unit.bound === "compute" ? cost.flops : cost.bytes) / ms / 1e6;
}

/** Runs the benchmark shapes of `units`; rows of section "ops". */
export async function benchOps(
  gpu: GpuContext,
  units: readonly AnyOpUnit[],
  opts: BenchOpsOptions = {},
): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  for (const unit of units) {
    const shapes = opts.quick ? unit.benchShapes.slice(0, 1) : unit.benchShapes;
    for (const c of shapes) {
      const p = c.params;
      const host = unit.makeInputs(p, 1);
      const args = uploadArgs(gpu, host, unit.inputShapes(p));
      const cost = unit.cost(p);
      const unitName = unit.bound === "compute" ? "GFLOP/s" : "GB/s";
      const row = async (
        what: "forward" | "backward",
        op: (o: RecordedOp<unknown>) => (() => void) | null,
        cpu: () => void,
        cost: OpCost,
      ) => {
        const ms = await gpuMs(gpu, op(unit.gpu)!);
        const naive = unit.naive ? op(unit.naive) : null;
        const refMs = naive ? await gpuMs(gpu, naive, 4) : await cpuMs(cpu);
        log(`${unit.name} ${c.name} ${what}: ${ms.toFixed(3)} ms (reference ${refMs.toFixed(3)})`);
        rows.push({
          section: "ops",
          name: `${unit.name} ${what} ${c.name}`,
          value: rate(unit, cost, ms),
          unit: unitName,
          reference: rate(unit, cost, refMs),
          referenceName: naive ? unit.naive!.name : "f64 CPU reference",
          note: `${ms.toFixed(3)} ms/call (${unit.gpu.name})`,
        });
      };
      await row(
        "forward",
        (o) => () => disposeAll(o.forward(gpu, p, args)),
        () => void unit.refForward(p, host),
        cost.forward,
      );
      if (unit.gpu.backward && unit.refBackward && cost.backward) {
        const dArgs = gradientArgs(gpu, unit, p, args);
        await row(
          "backward",
          (o) => o.backward ? () => disposeAll(o.backward!(gpu, p, args, dArgs)) : null,
          () => void unit.refBackward!(p, host, dArgs.host),
          cost.backward,
        );
        disposeAll(dArgs.tensors);
      }
      disposeAll(args.tensors);
    }
  }
  return rows;
}

/** Random upstream gradients (flat) for a unit's gradient outputs at the given inputs. */
function gradientArgs(gpu: GpuContext, unit: AnyOpUnit, p: unknown, args: DeviceArgs): DeviceArgs {
  const out = unit.gpu.forward(gpu, p, args);
  const host: HostValues = {};
  const shapes: Record<string, number[]> = {};
  unit.gradOutputs.forEach((k, i) => {
    host[k] = uniformValues(out[k].size, 7 + i);
    shapes[k] = [out[k].size];
  });
  disposeAll(out);
  return uploadArgs(gpu, host, shapes);
}
