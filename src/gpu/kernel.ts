/**
 * Kernel uniform parameters declared once, in TypeScript. A declaration lists a struct's fields
 * (name and type, in order); from it come both the WGSL `struct` text, which the shader loader
 * substitutes for a `{{struct:Name}}` marker in the shader file, and the packer that turns named
 * values into the u32 words of the uniform block. So the field order lives in one place.
 *
 * ```ts
 * const { ScaleParams } = declareParams("scale", {
 *   ScaleParams: { n: "u32", off: "i32", alpha: "f32" },
 * });
 * // shaders/scale.wgsl: `{{struct:ScaleParams}}` becomes
 * //   struct ScaleParams { n: u32, off: i32, alpha: f32, _p0: u32 }
 * gpu.dispatch({ ..., params: ScaleParams.pack({ n: 10, off: -1, alpha: 0.5 }) });
 * ```
 *
 * Layout: fields are 4-byte scalars (`u32`, `i32`, `f32`) or `vec4u` (16-byte aligned: padding
 * words are inserted before one that would be misaligned); the struct is padded to a multiple of
 * 16 bytes. Fields whose names start with `_` are explicit padding: always 0, never given.
 * Packing: u32 and i32 values are stored modulo 2^32 (so a negative i32 is its two's complement,
 * and a negative u32 wraps, as the Uint32Array store it replaces), f32 values as their bit
 * pattern, a `vec4u` from an array of 4 words. A missing or unknown field is an error naming the
 * struct, its shader and the field.
 *
 * All structs of one shader file are declared in a single {@link declareParams} call, so that
 * whichever module dispatches one of the file's kernels has registered every struct the file
 * needs (a module is compiled whole).
 * @module
 */

/** Types a uniform field may have. */
export type FieldType = "u32" | "i32" | "f32" | "vec4u";

/** Fields of a struct, in layout order (object key order). */
export type Fields = Readonly<Record<string, FieldType>>;

/** The values {@link ParamStruct.pack} takes: every non-padding field. */
export type ParamValues<F extends Fields> = {
  [K in keyof F as K extends `_${string}` ? never : K]: F[K] extends "vec4u" ? ArrayLike<number>
    : number;
};

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

const KIND_INT = 0;
const KIND_F32 = 1;
const KIND_VEC4 = 2;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One uniform struct: its WGSL text and its packer. */
export class ParamStruct<F extends Fields = Fields> {
  /** Size of the block in u32 words (a multiple of 4). */
  readonly words: number;
  /** The WGSL declaration `struct <name> { ... }`. */
  readonly wgsl: string;
  /** Names of the given (non-padding) fields, in order. */
  readonly names: readonly string[];
  readonly #offsets: Int32Array;
  readonly #kinds: Uint8Array;
  readonly #index: Map<string, number>;

  /** Lays out struct `name` of `shaders/<shader>.wgsl`; use {@link declareParams} instead. */
  constructor(readonly shader: string, readonly name: string, readonly fields: F) {
    if (!IDENT.test(name)) throw new Error(`${this.#what()}: bad struct name`);
    const lines: string[] = [];
    const names: string[] = [];
    const offsets: number[] = [];
    const kinds: number[] = [];
    const used = new Set(Object.keys(fields));
    let pads = 0;
    const pad = () => {
      let n: string;
      do n = `_p${pads++}`; while (used.has(n));
      used.add(n);
      lines.push(`  ${n}: u32,`);
    };
    let w = 0;
    for (const [field, type] of Object.entries(fields)) {
      if (!IDENT.test(field) || field.startsWith("__")) {
        throw new Error(`${this.#what()}: bad field name "${field}"`);
      }
      if (type === "vec4u") {
        while (w % 4) {
          pad();
          w++;
        }
      } else if (type !== "u32" && type !== "i32" && type !== "f32") {
        throw new Error(`${this.#what()}: field ${field} has unknown type "${type}"`);
      }
      lines.push(`  ${field}: ${type},`);
      if (!field.startsWith("_")) {
        names.push(field);
        offsets.push(w);
        kinds.push(type === "vec4u" ? KIND_VEC4 : type === "f32" ? KIND_F32 : KIND_INT);
      }
      w += type === "vec4u" ? 4 : 1;
    }
    while (w % 4) {
      pad();
      w++;
    }
    this.words = w;
    this.wgsl = `struct ${name} {\n${lines.join("\n")}\n}`;
    this.names = names;
    this.#offsets = Int32Array.from(offsets);
    this.#kinds = Uint8Array.from(kinds);
    this.#index = new Map(names.map((n, i) => [n, i]));
  }

  #what(): string {
    return `uniform struct ${this.name} (shaders/${this.shader}.wgsl)`;
  }

  /** The uniform words of `values`; every field must be given, and no other. */
  pack(values: ParamValues<F>): Uint32Array {
    return this.#pack(values as Record<string, unknown>, false);
  }

  /**
   * Like {@link pack}, but omitted fields are 0: for a struct shared by entry points that read
   * different subsets of its fields. Unknown fields are still an error.
   */
  packPartial(values: Partial<ParamValues<F>>): Uint32Array {
    return this.#pack(values as Record<string, unknown>, true);
  }

  #pack(v: Record<string, unknown>, partial: boolean): Uint32Array {
    const out = new Uint32Array(this.words);
    const names = this.names;
    const offsets = this.#offsets;
    const kinds = this.#kinds;
    let found = 0;
    for (let i = 0; i < names.length; i++) {
      const x = v[names[i]];
      if (x === undefined) {
        if (partial) continue;
        throw new Error(`${this.#what()}: field ${names[i]} is missing`);
      }
      found++;
      const o = offsets[i];
      const k = kinds[i];
      if (k === KIND_INT) {
        out[o] = x as number;
      } else if (k === KIND_F32) {
        F32[0] = x as number;
        out[o] = U32[0];
      } else {
        const a = x as ArrayLike<number>;
        if (a.length !== 4) {
          throw new Error(`${this.#what()}: field ${names[i]} needs 4 words, got ${a.length}`);
        }
        out[o] = a[0];
        out[o + 1] = a[1];
        out[o + 2] = a[2];
        out[o + 3] = a[3];
      }
    }
    let given = 0;
    for (const key in v) if (v[key] !== undefined) given++;
    if (given !== found) {
      const extra = Object.keys(v).filter((key) => v[key] !== undefined && !this.#index.has(key));
      throw new Error(`${this.#what()}: unknown field ${extra.join(", ")}`);
    }
    return out;
  }
}

/** Declared structs per shader file. */
const registry = new Map<string, Map<string, ParamStruct>>();

/**
 * Declares the uniform structs of one shader file (`shaders/<shader>.wgsl`), all of them in
 * this one call; returns a {@link ParamStruct} per struct. The shader writes `{{struct:Name}}`
 * where each declaration goes.
 */
export function declareParams<S extends Record<string, Fields>>(
  shader: string,
  structs: S,
): { [K in keyof S]: ParamStruct<S[K]> } {
  const made = new Map<string, ParamStruct>();
  const out: Record<string, ParamStruct> = {};
  for (const [name, fields] of Object.entries(structs)) {
    const s = new ParamStruct(shader, name, fields);
    made.set(name, s);
    out[name] = s;
  }
  const old = registry.get(shader);
  if (old) {
    // The same module loaded twice (e.g. from two URLs) declares the same text: fine.
    const same = old.size === made.size &&
      [...made].every(([n, s]) => old.get(n)?.wgsl === s.wgsl);
    if (!same) throw new Error(`uniform structs of shaders/${shader}.wgsl are declared twice`);
  } else {
    registry.set(shader, made);
  }
  return out as { [K in keyof S]: ParamStruct<S[K]> };
}

/** The structs declared for a shader file, if any. */
export function declaredParams(shader: string): ReadonlyMap<string, ParamStruct> | undefined {
  return registry.get(shader);
}

const MARKER = /\{\{struct:(\w+)\}\}/g;

/**
 * Replaces each `{{struct:Name}}` marker of a shader's source by the struct declared for that
 * shader. An undeclared marker, a repeated one, or a declared struct without a marker is an
 * error naming the shader and the struct.
 */
export function substituteStructs(shader: string, source: string): string {
  const decl = registry.get(shader);
  const seen = new Set<string>();
  const out = source.replace(MARKER, (_m, name: string) => {
    const s = decl?.get(name);
    if (!s) {
      throw new Error(
        `shaders/${shader}.wgsl: {{struct:${name}}} is not declared (declareParams("${shader}", ` +
          `...) in the module that dispatches it${decl ? "" : "; none is loaded"})`,
      );
    }
    if (seen.has(name)) throw new Error(`shaders/${shader}.wgsl: {{struct:${name}}} appears twice`);
    seen.add(name);
    return s.wgsl;
  });
  for (const name of decl?.keys() ?? []) {
    if (!seen.has(name)) {
      throw new Error(`shaders/${shader}.wgsl: declared struct ${name} has no {{struct:${name}}}`);
    }
  }
  return out;
}
