import { join } from "node:path";
import { cooccurrence, CooccurrenceCounts } from "../src/losses/cooccurrence.ts";
import { cooccurrenceCachePath, loadOrComputeCooccurrence } from "../src/train/cooccurrence.ts";
import { assertClose, assertEquals, assertRejects, assertThrows } from "./util.ts";

// n(0)=3, n(1)=3, n(2)=2, n(3)=0; n(0,1)=2, n(0,2)=1, n(1,2)=2 (the repeated 0 counts once).
const LISTS = [[0, 1], [0, 0], [1, 2], [0, 1, 2], []];
const EXPECTED = [
  [1, 2 / 3, 1 / 3, 0],
  [2 / 3, 1, 2 / 3, 0],
  [1 / 2, 1, 1, 0],
  [0, 0, 0, 1], // never tagged: identity row
].flat();

Deno.test("cooccurrence: hand-computed example", () => {
  const a = cooccurrence(LISTS, 4);
  assertClose(a, EXPECTED, { rtol: 1e-7, atol: 0 }, "A");
  const c = new CooccurrenceCounts(4);
  for (const t of LISTS) c.add(t);
  assertEquals(c.images, 5);
  assertEquals([...c.counts], [3, 2, 1, 0, 2, 3, 2, 0, 1, 2, 2, 0, 0, 0, 0, 0]);
});

Deno.test("cooccurrence: bad tags and class counts are named", () => {
  assertThrows(() => cooccurrence([[0], [1, 4]], 4), RangeError, "image 1 has tag 4");
  assertThrows(() => cooccurrence([[-1]], 4), RangeError, "tag -1");
  assertThrows(() => cooccurrence([[0.5]], 4), RangeError, "tag 0.5");
  assertThrows(() => cooccurrence([], 0), RangeError, "numClasses");
});

Deno.test("cooccurrence: cache round trip, keyed, atomic, rebuilt when corrupt", async () => {
  const dir = await Deno.makeTempDir();
  try {
    let calls = 0;
    const lists = () => {
      calls++;
      return Promise.resolve(LISTS);
    };
    const a1 = await loadOrComputeCooccurrence(dir, "list-hash-1", lists, 4);
    assertEquals(calls, 1);
    assertClose(a1, EXPECTED, { rtol: 1e-7, atol: 0 }, "computed");
    const never = (): number[][] => {
      throw new Error("cache miss");
    };
    const a2 = await loadOrComputeCooccurrence(dir, "list-hash-1", never, 4);
    assertEquals([...a2], [...a1], "loaded from the cache");
    // Only the cache file is left (no temp files).
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    const path = await cooccurrenceCachePath(dir, "list-hash-1", 4);
    assertEquals(names, [path.split("/").pop()]);
    // Another key (or class count) is a miss.
    await assertRejects(() => loadOrComputeCooccurrence(dir, "list-hash-2", never, 4));
    await assertRejects(() => loadOrComputeCooccurrence(dir, "list-hash-1", never, 5));
    const a3 = await loadOrComputeCooccurrence(dir, "list-hash-2", () => [[0, 3]], 4);
    assertEquals([...a3.slice(0, 4)], [1, 0, 0, 1]);
    // A corrupt or foreign file is rebuilt.
    await Deno.writeTextFile(path, "{ not json");
    const a4 = await loadOrComputeCooccurrence(dir, "list-hash-1", lists, 4);
    assertEquals(calls, 2);
    assertEquals([...a4], [...a1]);
    const file = JSON.parse(await Deno.readTextFile(path));
    assertEquals(file.key, "list-hash-1");
    await Deno.writeTextFile(path, JSON.stringify({ ...file, key: "other", counts: [] }));
    await loadOrComputeCooccurrence(dir, "list-hash-1", lists, 4);
    assertEquals(calls, 3, "a file of another key is rebuilt");
    // A cache file that cannot be read (a folder in its place) or written (a file where its
    // folder should be) is an error naming the cache file.
    const blocked = await cooccurrenceCachePath(dir, "blocked", 4);
    await Deno.mkdir(blocked);
    await assertRejects(
      () => loadOrComputeCooccurrence(dir, "blocked", lists, 4),
      Error,
      `co-occurrence cache ${blocked}: cannot read it`,
    );
    await Deno.writeTextFile(join(dir, "plain"), "");
    const under = await cooccurrenceCachePath(join(dir, "plain", "sub"), "k", 4);
    await assertRejects(
      () => loadOrComputeCooccurrence(join(dir, "plain", "sub"), "k", lists, 4),
      Error,
      `co-occurrence cache ${under}: cannot`,
    );
    // The cache folder is created when missing.
    const sub = join(dir, "a", "b");
    await loadOrComputeCooccurrence(sub, "k", () => LISTS, 4);
    assertEquals([...Deno.readDirSync(sub)].length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
