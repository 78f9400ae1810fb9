/**
 * CLI helpers shared by the tasks: flag parsing with node:util parseArgs, numeric flag
 * conversion with errors naming the flag, and a uniform error exit.
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "./config.ts";

/** Parses `args` with the given options; unknown flags are an error naming them. */
export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: T,
  usage: string,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n${usage}`);
  }
}

/** Converts a numeric flag (undefined stays undefined); a non-number names the flag. */
export function numFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n)) {
    throw new ConfigError(`--${name}: expected a number, got "${v}"`);
  }
  return n;
}

/** Runs a task's main; known errors print one clear line (no stack) and exit 1. */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const err = e as Error;
    const known = ["ConfigError", "TrainError", "GpuError", "DataError", "SafetensorsError"];
    if (known.includes(err.name)) {
      console.error(`error: ${err.message}`);
    } else {
      console.error(err.stack ?? String(err));
    }
    Deno.exit(1);
  }
}
