/**
 * Same-run references from Python: runs a script with the first interpreter that has the
 * modules it needs (`python3` on PATH, then Debian's `/usr/bin/python3`, where apt's
 * python3-numpy/python3-torch land when PATH holds another Python), and parses the JSON it
 * prints. A missing interpreter or module is a reason string, never a quoted old figure.
 * @module
 */

/** Interpreters tried, in order. */
export const PYTHONS = ["python3", "/usr/bin/python3"] as const;

/**
 * Runs `script` (source text) with `args` and thread-pinning `env`; returns its last stdout
 * line parsed as JSON, or `error`: why no interpreter could run it (with `hint`, e.g. the apt
 * package to install).
 */
export async function runPythonJson<T>(
  script: string,
  args: string[],
  opts: { env?: Record<string, string>; hint: string },
): Promise<{ value: T; python: string } | { error: string }> {
  const errors: string[] = [];
  for (const py of PYTHONS) {
    try {
      const out = await new Deno.Command(py, {
        args: ["-c", script, ...args],
        env: opts.env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
        errors.push(`${py}: ${err}`);
        continue;
      }
      const last = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
      return { value: JSON.parse(last) as T, python: py };
    } catch (e) {
      errors.push(`${py}: ${(e as Error).message}`);
    }
  }
  return { error: `${errors.join("; ")}; ${opts.hint}` };
}

/** Environment that pins BLAS/OpenMP pools to `threads` threads. */
export function threadEnv(threads: number): Record<string, string> {
  const t = String(threads);
  return { OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t };
}
