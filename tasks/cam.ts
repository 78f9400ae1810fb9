/** `deno task cam`: not built yet. */
console.error("deno task cam: not implemented yet");
Deno.exit(1);
