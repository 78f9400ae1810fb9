/**
 * mod.ts must be importable from a URL by a script with no deno.json of its own: serve the
 * repository over HTTP on 127.0.0.1 and run a separate `deno run --no-config` that imports it
 * and runs a GPU op through it.
 */
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertEquals } from "./util.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".wgsl": "text/plain",
  ".json": "application/json",
};

Deno.test("mod.ts imports from an http URL and runs a GPU op", async () => {
  const ac = new AbortController();
  const requested: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      requested.push(path);
      if (path.includes("..")) return new Response("bad path", { status: 400 });
      try {
        const body = await Deno.readFile(join(ROOT, path));
        return new Response(body, {
          headers: { "content-type": TYPES[extname(path)] ?? "application/octet-stream" },
        });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/use.ts`;
    await Deno.writeTextFile(
      script,
      `import * as ocr from "${base}/mod.ts";
const gpu = await ocr.createGpu();
const x = ocr.Tensor.fromArray(gpu, [1, -2, 3, -4], [4]);
const y = ocr.pointwise(gpu, "relu", [x]);
console.log(JSON.stringify(Array.from(await y.read())));
gpu.destroy();
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", `--reload=${base}`, script],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout).trim();
    const stderr = new TextDecoder().decode(out.stderr);
    if (!out.success) throw new Error(`child deno failed (${out.code}):\n${stderr}`);
    assertEquals(stdout.split("\n").at(-1), "[1,0,3,0]");
    assertEquals(requested.includes("/shaders/elementwise.wgsl"), true, "shader fetched over HTTP");
  } finally {
    ac.abort();
    await server.finished;
    await Deno.remove(dir, { recursive: true });
  }
});
