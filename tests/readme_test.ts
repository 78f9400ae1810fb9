/**
 * The README's code examples run as written: the library example and the worked example of
 * adding an op. Each code block is extracted, the placeholder URL replaced by this checkout's
 * mod.ts, and run (type-checked) in a separate `deno run --no-config`.
 */
import { assertEquals } from "./util.ts";

/**
 * Runs the first ts code block after `heading` in the README, with the placeholder URL
 * replaced by this checkout's mod.ts, type-checked, in a separate `deno run --no-config`;
 * returns its standard output (throws with both streams when it fails).
 */
async function runReadmeBlock(heading: string): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const at = readme.indexOf(heading);
  const code = at < 0 ? undefined : /```ts\n([\s\S]*?)```/.exec(readme.slice(at))?.[1];
  if (!code || !code.includes("https://<host>/<path>/mod.ts")) {
    throw new Error(`README: the example block under "${heading}" was not found`);
  }
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/example.ts`;
    const mod = new URL("../mod.ts", import.meta.url).href;
    await Deno.writeTextFile(script, code.replaceAll("https://<host>/<path>/mod.ts", mod));
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", "--check", script],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`example failed:\n${stdout}\n${new TextDecoder().decode(out.stderr)}`);
    }
    return stdout;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the README example runs as written", async () => {
  const stdout = await runReadmeBlock("## Using it from another Deno script");
  assertEquals(/OCR loss \S+ OC pixels \d+/.test(stdout), true, stdout);
  assertEquals(/pseudo-mask mIoU 0\.\d+ OC-error rate [01]/.test(stdout), true, stdout);
});

Deno.test("the README's worked example of adding an op runs as written", async () => {
  const stdout = await runReadmeBlock("### Adding an op");
  assertEquals(stdout.trim().split("\n").pop(), "softplus: 2 cases checked, 1 split");
});
