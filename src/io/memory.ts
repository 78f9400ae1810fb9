/**
 * The process's peak resident memory, per stage: Linux keeps the high-water mark of the
 * resident set (VmHWM in /proc/self/status) and resets it when "5" is written to
 * /proc/self/clear_refs, so the pipeline can report each stage's own peak. On CPU adapters
 * (llvmpipe) GPU buffers are host memory, so this peak includes the GPU pool. Elsewhere (no
 * /proc, or a kernel that refuses the reset) the current RSS stands in, which says so by
 * `exact: false`.
 * @module
 */

/** A stage's memory reading. */
export interface PeakRss {
  /** Bytes. */
  bytes: number;
  /** True: the kernel's high-water mark since the last reset; false: the RSS at reading time. */
  exact: boolean;
}

let resettable: boolean | null = null;

/** Restarts the peak from the current resident set; false where the system cannot. */
export function resetPeakRss(): boolean {
  if (resettable === false) return false;
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    resettable = true;
  } catch {
    resettable = false;
  }
  return resettable;
}

/** The peak since the last {@link resetPeakRss} (or since the process started). */
export function peakRss(): PeakRss {
  if (resettable !== false) {
    try {
      const m = /VmHWM:\s+(\d+)\s*kB/.exec(Deno.readTextFileSync("/proc/self/status"));
      if (m) return { bytes: Number(m[1]) * 1024, exact: resettable === true };
    } catch {
      // No /proc: fall through.
    }
  }
  return { bytes: Deno.memoryUsage().rss, exact: false };
}
