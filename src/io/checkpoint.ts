/**
 * Checkpoints and weight loading: named GPU tensors ↔ safetensors files. A checkpoint holds
 * model parameters, buffers (batchnorm running stats) and optimizer state (prefixed
 * `optim.`), with `__metadata__` carrying step, config hash and data position (see
 * docs/data.md#checkpoints).
 * Written atomically (temp file + fsync + rename).
 * @module
 */
import type { NamedTensor } from "../gpu/tensor.ts";
import { type Mctformer, mctformerStateFromDeit } from "../models/vit.ts";
import {
  type HostTensor,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "./safetensors.ts";

export type { NamedTensor };

/** Reads named GPU tensors back and writes them (with metadata) to a safetensors file. */
export async function saveTensors(
  path: string,
  tensors: NamedTensor[],
  metadata: Record<string, string>,
): Promise<void> {
  const host: [string, HostTensor][] = [];
  const seen = new Set<string>();
  for (const { name, value } of tensors) {
    if (seen.has(name)) throw new Error(`saveTensors: duplicate tensor name "${name}"`);
    seen.add(name);
    host.push([name, { shape: [...value.shape], data: await value.read() }]);
  }
  await writeSafetensors(path, host, metadata);
}

/** Options of {@link loadTensors}. */
export interface LoadOptions {
  /** Names allowed to be absent from the file (they keep their current values). */
  allowMissing?: (name: string) => boolean;
  /** Names in the file that are ignored when no target has them (e.g. torchvision's fc.*). */
  ignoreUnexpected?: (name: string) => boolean;
}

/**
 * Loads a safetensors file into the given GPU tensors by name. Missing, unexpected or
 * mis-shaped tensors are one error listing all of them. Returns the file's metadata.
 */
export async function loadTensors(
  path: string,
  targets: NamedTensor[],
  opts: LoadOptions = {},
): Promise<Record<string, string>> {
  const st = await readSafetensors(path);
  const missing: string[] = [];
  const misShaped: string[] = [];
  const byName = new Map(targets.map((t) => [t.name, t.value]));
  for (const [name, value] of byName) {
    const h = st.tensors.get(name);
    if (!h) {
      if (!opts.allowMissing?.(name)) missing.push(name);
      continue;
    }
    const same = h.shape.length === value.shape.length &&
      h.shape.every((d, i) => d === value.shape[i]);
    // A [O, I] linear weight may stand for a [O, I, 1, 1] 1x1 conv.
    const count = h.data.length === value.size;
    const oneByOne = !same && count && value.shape.slice(2).every((d) => d === 1) &&
      h.shape.length === 2;
    if (!same && !oneByOne) misShaped.push(`${name}: file [${h.shape}], model [${value.shape}]`);
  }
  const unexpected = [...st.tensors.keys()].filter((n) =>
    !byName.has(n) && !opts.ignoreUnexpected?.(n)
  );
  throwMismatch(path, missing, unexpected, misShaped);
  for (const [name, value] of byName) {
    const h = st.tensors.get(name);
    if (h) value.write(h.data);
  }
  return st.metadata;
}

/** One error listing every missing, unexpected and mis-shaped tensor of a file, if any. */
function throwMismatch(
  path: string,
  missing: string[],
  unexpected: string[],
  misShaped: string[],
): void {
  if (missing.length || unexpected.length || misShaped.length) {
    const parts: string[] = [];
    if (missing.length) parts.push(`missing tensors (${missing.length}): ${missing.join(", ")}`);
    if (unexpected.length) {
      parts.push(`unexpected tensors (${unexpected.length}): ${unexpected.join(", ")}`);
    }
    if (misShaped.length) parts.push(`mis-shaped tensors: ${misShaped.join("; ")}`);
    throw new SafetensorsError(`${path}: does not match the model:\n  ${parts.join("\n  ")}`);
  }
}

/**
 * Loads DeiT / timm ViT weights (or an MCTformer-V2 checkpoint: a run's `optim.*` state is
 * ignored) by name into an MCTformer-V2 (`mctformerStateFromDeit`, src/models/vit.ts: the class
 * token and its position row replicated over the class tokens, the position grid resized
 * bicubically, DeiT's classifier and an unused final norm skipped; docs/mctformer.md converts
 * the weights). Anything missing, unexpected or mis-shaped is one {@link SafetensorsError}
 * listing all of them. Returns what was converted (one note per change, for a log line).
 */
export async function loadDeitWeights(model: Mctformer, path: string): Promise<string[]> {
  const st = await readSafetensors(path);
  // A run's checkpoint (last.safetensors) also holds its optimizer's state: not the model's.
  const tensors = new Map([...st.tensors].filter(([n]) => !n.startsWith("optim.")));
  const c = mctformerStateFromDeit(model.config, tensors);
  throwMismatch(path, c.missing, c.unexpected, c.misShaped);
  for (const { name, value } of model.stateTensors()) {
    const h = c.state.get(name);
    if (h) value.write(h.data instanceof Float32Array ? h.data : Float32Array.from(h.data));
  }
  return c.notes;
}

/**
 * Loads a CAM classifier's or a segmenter's weights by torchvision name from a safetensors file
 * (`deno task train --weights`). The classifier (`classifier.*`) or the segmentation head
 * (`head.*`) may be absent (a freshly converted ImageNet backbone) and
 * torchvision's `fc.*` and `*.num_batches_tracked` are ignored; anything else missing,
 * unexpected or mis-shaped is one error listing them.
 */
export async function loadTorchvisionWeights(
  model: { stateTensors(): NamedTensor[] },
  path: string,
): Promise<void> {
  await loadTensors(path, model.stateTensors(), {
    allowMissing: (n) => n.startsWith("classifier.") || n.startsWith("head."),
    ignoreUnexpected: (n) => n.startsWith("fc.") || n.endsWith(".num_batches_tracked"),
  });
}
