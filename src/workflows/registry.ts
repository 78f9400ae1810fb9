/**
 * The WSSS methods the workflows know, by name (src/methods/method.ts says what a method is).
 * A new method is one entry here, its stages in src/methods/<name>/stages.ts.
 * @module
 */
import { ConfigError } from "../io/config.ts";
import type { Method } from "../methods/method.ts";
import { AFFINITYNET } from "../methods/affinitynet/stages.ts";
import { CAM_METHOD } from "../methods/cam/stages.ts";
import { MCTFORMER } from "../methods/mctformer/stages.ts";
import { SEAM } from "../methods/seam/stages.ts";

/** Every method by name. */
export const METHODS = {
  affinitynet: AFFINITYNET,
  cam: CAM_METHOD,
  mctformer: MCTFORMER,
  seam: SEAM,
} as const;

/** A method's name. */
export type MethodName = keyof typeof METHODS;

/** The method names, in the order of {@link METHODS}. */
export const METHOD_NAMES = Object.keys(METHODS) as MethodName[];

/** The method of a name; an unknown name is a ConfigError listing the known ones. */
export function getMethod(name: unknown): Method {
  if (typeof name === "string" && Object.hasOwn(METHODS, name)) {
    return METHODS[name as MethodName] as unknown as Method;
  }
  throw new ConfigError(
    `unknown method ${JSON.stringify(name)}; known methods: ${METHOD_NAMES.join(", ")}`,
  );
}

/** The score names of a method (its results.json numbers). */
export type ScoreOf<N extends MethodName> = (typeof METHODS)[N] extends Method<infer _O, infer K>
  ? K
  : never;
