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

/** Folders where the Vulkan loader finds driver manifests (ICDs). */
const VULKAN_ICD_DIRS = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];

/** The Vulkan driver manifests installed on this machine (file names), empty when unknown. */
export function vulkanDrivers(): string[] {
  const out: string[] = [];
  for (const dir of VULKAN_ICD_DIRS) {
    try {
      for (const e of Deno.readDirSync(dir)) if (e.name.endsWith(".json")) out.push(e.name);
    } catch {
      // Missing folder or no read permission: nothing found there.
    }
  }
  return out;
}

/**
 * Which WebGPU backend this process uses and how to choose another, for the adapter line of
 * the tasks. Deno takes DENO_WEBGPU_BACKEND when set, and otherwise prefers Vulkan whenever a
 * Vulkan driver is installed; on a CPU-only machine with Mesa's Vulkan drivers that means
 * lavapipe, whose adapter describes itself exactly like llvmpipe (GL), so the line says which.
 */
export function describeBackend(gpu: GpuContext): string {
  let env: string | undefined;
  try {
    env = Deno.env.get("DENO_WEBGPU_BACKEND");
  } catch {
    env = undefined;
  }
  const drivers = vulkanDrivers();
  const backend = env ?? (drivers.length ? "vulkan" : "gl");
  // Both Mesa CPU adapters report "llvmpipe (LLVM ...)": the backend tells them apart.
  const mesa = /llvmpipe|lavapipe/i.test(gpu.adapter.info.description);
  const name = mesa ? (backend === "vulkan" ? "lavapipe" : "llvmpipe") : "";
  const how = env ? "set by DENO_WEBGPU_BACKEND" : "Deno's default" +
    (drivers.length ? " with a Vulkan driver installed" : "");
  const choose = mesa && drivers.some((d) => d.startsWith("lvp_"))
    ? "; both Mesa CPU adapters are installed: DENO_WEBGPU_BACKEND=gl|vulkan picks one " +
      "(deno task bench --only roofline,kernels compares them)"
    : "";
  return `backend ${backend}${name ? ` (${name})` : ""}, ${how}${choose}`;
}
