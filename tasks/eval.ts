/** `deno task eval`: not built yet. */
console.error("deno task eval: not implemented yet");
Deno.exit(1);
