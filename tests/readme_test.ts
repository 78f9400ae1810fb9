/**
 * The README's code examples run as written: the library example and the worked example of
 * adding an op. Each code block is extracted, the placeholder URL replaced by this checkout's
 * mod.ts, and run (type-checked) in a separate `deno run --no-config`.
 */
import { assertEquals } from "./util.ts";

Deno.test("the README example runs as written", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## Using it from another Deno script"));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code || !code.includes("https://<host>/<path>/mod.ts")) {
    throw new Error("README example block not found");
  }
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/example.ts`;
    await Deno.writeTextFile(
      script,
      code.replace("https://<host>/<path>/mod.ts", new URL("../mod.ts", import.meta.url).href),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", script],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`example failed:\n${stdout}\n${new TextDecoder().decode(out.stderr)}`);
    }
    assertEquals(/OCR loss \S+ OC pixels \d+/.test(stdout), true, stdout);
    assertEquals(/pseudo-mask mIoU 0\.\d+ OC-error rate [01]/.test(stdout), true, stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the README's worked example of adding an op runs as written", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("### Adding an op"));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code || !code.includes("https://<host>/<path>/mod.ts")) {
    throw new Error("README: the example block of 'Adding an op' was not found");
  }
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/add_op.ts`;
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
    assertEquals(stdout.trim().split("\n").pop(), "softplus: 2 cases checked, 1 split");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
