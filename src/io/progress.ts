/**
 * Progress output for long work: a one-line bar redrawn in place on a TTY, plain log lines
 * otherwise (CI, pipes), plus time formatting.
 * @module
 */

/** Formats seconds as e.g. "1m05s" or "42s". */
export function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  const r = Math.round(s - m * 60);
  if (m < 60) return `${m}m${String(r).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** A progress reporter over `total` units. */
export class Progress {
  readonly #tty: boolean;
  readonly #start = performance.now();
  #lastPlain = -Infinity;
  #drawn = false;

  /**
   * @param label what is progressing (e.g. "train")
   * @param total number of units
   * @param opts `plainEverySec`: at most one plain line per this many seconds;
   *   `write`: sink for plain lines (default console.log); `tty`: force the mode.
   */
  constructor(
    readonly label: string,
    readonly total: number,
    readonly opts: { plainEverySec?: number; write?: (s: string) => void; tty?: boolean } = {},
  ) {
    this.#tty = opts.tty ?? (Deno.stdout.isTerminal() && !Deno.env.get("CI"));
  }

  /** Seconds since creation. */
  get elapsed(): number {
    return (performance.now() - this.#start) / 1000;
  }

  /** Reports `done` units finished, with extra `key value` fields. */
  update(done: number, fields: Record<string, string> = {}, force = false): void {
    const el = this.elapsed;
    const eta = done > 0 ? (el / done) * (this.total - done) : NaN;
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join("  ");
    if (this.#tty) {
      const w = 24;
      const fill = Math.round((done / Math.max(1, this.total)) * w);
      const bar = "#".repeat(fill) + "-".repeat(w - fill);
      const line = `${this.label} [${bar}] ${done}/${this.total}  ${extra}  ETA ${
        fmtDuration(eta)
      }`;
      Deno.stdout.writeSync(new TextEncoder().encode(`\r\x1b[2K${line}`));
      this.#drawn = true;
      return;
    }
    const every = this.opts.plainEverySec ?? 5;
    if (!force && el - this.#lastPlain < every && done < this.total) return;
    this.#lastPlain = el;
    (this.opts.write ?? console.log)(
      `${this.label} ${done}/${this.total}  ${extra}  elapsed ${fmtDuration(el)}  ETA ${
        fmtDuration(eta)
      }`,
    );
  }

  /** Ends the bar line (TTY) so later output starts on a fresh line. */
  done(): void {
    if (this.#tty && this.#drawn) Deno.stdout.writeSync(new TextEncoder().encode("\n"));
    this.#drawn = false;
  }
}
