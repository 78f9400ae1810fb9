/** `deno task ablate`: not built yet. */
console.error("deno task ablate: not implemented yet");
Deno.exit(1);
