/** `deno task bench`: not built yet. */
console.error("deno task bench: not implemented yet");
Deno.exit(1);
