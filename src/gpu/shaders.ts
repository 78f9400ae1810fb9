/**
 * Shader sources: one WGSL file per op family in `shaders/`, loaded relative to this module's
 * URL so it works from `file:` and `http(s):` imports alike. Every module is compiled from its
 * file with the `{{struct:Name}}` markers replaced by the uniform structs declared in
 * TypeScript (./kernel.ts) and the shared helpers of `shaders/prelude.wgsl` appended
 * ({@link composeShader}).
 * @module
 */
import { substituteStructs } from "./kernel.ts";

/** Every shader file (without `.wgsl`) that `createGpu` preloads. Add new families here. */
export const SHADER_NAMES = [
  "eval",
  "elementwise",
  "matmul",
  "conv2d",
  "batchnorm",
  "pool",
  "resize",
  "channel",
  "loss",
  "optim",
  "ocr",
  "cam",
  "affinity",
  "crf",
  "crf_exact",
  "crf_gauss",
  "lattice",
  "seg_loss",
  "dropout",
  "pcm",
  "seam",
  "layernorm",
  "rows",
  "tokens",
] as const;

/** The shared helpers' file (without `.wgsl`), part of every module. */
export const PRELUDE = "prelude";

/** The URL of a shader file. */
export function shaderUrl(name: string): URL {
  return new URL(`../../shaders/${name}.wgsl`, import.meta.url);
}

/** Fetches one shader's source text, with an error naming the URL on failure. */
export async function loadShaderSource(name: string): Promise<string> {
  const url = shaderUrl(name);
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`cannot load shader ${url.href}: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`cannot load shader ${url.href}: HTTP ${res.status}`);
  return await res.text();
}

/**
 * Replaces `{{KEY}}` placeholders in a WGSL template. Every placeholder must be given and
 * every given key must occur, so a typo is an error rather than a silently wrong kernel.
 */
export function expandTemplate(source: string, defines: Record<string, string | number>): string {
  for (const key of Object.keys(defines)) {
    if (!source.includes(`{{${key}}}`)) throw new Error(`template has no placeholder {{${key}}}`);
  }
  const out = source.replace(/\{\{(\w+)\}\}/g, (_m, key: string) => {
    if (!(key in defines)) throw new Error(`template placeholder {{${key}}} has no value`);
    return String(defines[key]);
  });
  return out;
}

/**
 * The WGSL of a module: a shader's source with its `{{struct:Name}}` markers substituted
 * (./kernel.ts), followed by the prelude (appended, so the shader's own line numbers in
 * compiler messages stay close to the file's; WGSL declarations may come in any order).
 */
export function composeShader(name: string, source: string, prelude: string): string {
  return `${substituteStructs(name, source)}\n${prelude}`;
}
