// Shared helpers, appended by the shader loader (src/gpu/shaders.ts) to every module.
