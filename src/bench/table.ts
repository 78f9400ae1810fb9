/**
 * Benchmark rows and their printing. Every figure sits beside a reference measured in the
 * same run (a naive kernel, a CPU reference, or the same step without a feature), so ratios
 * hold on noisy machines.
 * @module
 */

/** One benchmark figure. */
export interface BenchRow {
  /** Section, e.g. "matmul", "conv", "train", "data", "ocr", "eval". */
  section: string;
  /** What was measured, e.g. "1024x1024x1024". */
  name: string;
  /** The figure. */
  value: number;
  /** Unit of `value` and `reference`, e.g. "GFLOP/s", "img/s", "ms". */
  unit: string;
  /** The reference figure measured in the same run, if any. */
  reference?: number;
  /** What the reference is, e.g. "naive kernel". */
  referenceName?: string;
  /** Free-form note (e.g. "target ≥ 40% of OpenBLAS"). */
  note?: string;
}

/** Formats a number with 3 significant digits (or fixed for large values). */
export function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

/** Renders rows as an aligned text table, with value/reference ratios. */
export function formatTable(rows: BenchRow[]): string {
  const head = ["section", "name", "value", "unit", "reference", "ratio", "note"];
  const body = rows.map((r) => [
    r.section,
    r.name,
    fmtNum(r.value),
    r.unit,
    r.reference === undefined ? "" : `${fmtNum(r.reference)} (${r.referenceName ?? "ref"})`,
    r.reference === undefined || r.reference === 0 ? "" : `${fmtNum(r.value / r.reference)}x`,
    r.note ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

/** Median wall time in ms of `fn` over `reps` runs after `warmup` runs. */
export async function timeMedian(
  fn: () => Promise<void> | void,
  reps = 5,
  warmup = 1,
): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
