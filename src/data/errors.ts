/**
 * The one error type of the data readers: it names the file and what is wrong with it, so a
 * bad dataset entry can be reported, or skipped and counted (`skipBad`).
 * @module
 */

/** A problem with one file of a dataset. `message` is `"<path>: <problem>"`. */
export class DataError extends Error {
  /** The file (or folder) at fault. */
  readonly path: string;
  /** What is wrong, without the path. */
  readonly problem: string;

  /** `path`: the offending file; `problem`: what is wrong with it. */
  constructor(path: string, problem: string, options?: { cause?: unknown }) {
    super(`${path}: ${problem}`, options);
    this.name = "DataError";
    this.path = path;
    this.problem = problem;
  }
}

/** Reads a whole file; a missing or unreadable file becomes a {@link DataError}. */
export async function readFileOr(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw fileError(path, what, e);
  }
}

/** Reads a text file; a missing or unreadable file becomes a {@link DataError}. */
export async function readTextOr(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw fileError(path, what, e);
  }
}

function fileError(path: string, what: string, e: unknown): DataError {
  if (e instanceof Deno.errors.NotFound) return new DataError(path, `${what} not found`);
  if (e instanceof Deno.errors.IsADirectory) {
    return new DataError(path, `${what} is a folder, expected a file`);
  }
  return new DataError(path, `cannot read ${what}: ${(e as Error).message}`, { cause: e });
}

/** Whether `path` exists and is a folder. */
export function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Whether `path` exists and is a file. */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
