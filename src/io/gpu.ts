/**
 * `createGpu` for Deno programs (the tasks, the trainers, mod.ts): src/gpu/context.ts's
 * portable `createGpu` after pointing XDG_RUNTIME_DIR at the temp folder when it is unset, so
 * that Mesa's Vulkan WSI does not print "XDG_RUNTIME_DIR is invalid" once per instance on
 * headless machines (compute needs no display). The environment is the only Deno-specific
 * part; everything else is the core function's.
 * @module
 */
import { createGpu as createCoreGpu, type GpuContext, type GpuOptions } from "../gpu/context.ts";

/** Sets XDG_RUNTIME_DIR to $TMPDIR or /tmp when unset (no env permission: left alone). */
export function quietVulkanLoader(): void {
  try {
    if (!Deno.env.get("XDG_RUNTIME_DIR")) {
      Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("TMPDIR") ?? "/tmp");
    }
  } catch {
    // No env permission: the warning is harmless.
  }
}

/**
 * Acquires an adapter and device and preloads the shaders (src/gpu/context.ts's `createGpu`),
 * with the Vulkan loader quieted first ({@link quietVulkanLoader}).
 */
export function createGpu(opts: GpuOptions = {}): Promise<GpuContext> {
  quietVulkanLoader();
  return createCoreGpu(opts);
}
