/** `deno task train`: not built yet. */
console.error("deno task train: not implemented yet");
Deno.exit(1);
