/**
 * Op-specific checks of the Vision Transformer ops (the generic checks of their units run in
 * ops_test.ts): bad shapes name the op; an attention block softmax(Q·Kᵀ/√d)·V composed on the
 * tape from permute0213, bmm and softmaxRows against a plain f64 composition and its finite
 * differences; linear accumulating into an existing parameter gradient; GELU over a wide
 * range; patchify + linear against the strided convolution (timm's PatchEmbed); addBroadcast's
 * batch-summed gradient.
 */
import { Tensor } from "../src/gpu/tensor.ts";
import { Tape } from "../src/autograd/tape.ts";
import type { Param } from "../src/autograd/param.ts";
import * as F from "../src/autograd/functions.ts";
import { linear, linearBackwardRef, linearRef } from "../src/ops/linear.ts";
import { layerNormForward } from "../src/ops/layernorm.ts";
import { SOFTMAX_ROWS_MAX, softmaxRows } from "../src/ops/rows.ts";
import { concatTokens, patchify, sliceTokens, tokensToMap } from "../src/ops/tokens.ts";
import { conv2d, conv2dRef } from "../src/ops/conv.ts";
import { pointwise, pointwiseRef } from "../src/ops/pointwise.ts";
import { assertClose, randArray, testGpu } from "./util.ts";

function throwsNaming(f: () => unknown, op: string, what: string): void {
  try {
    f();
  } catch (e) {
    const m = (e as Error).message;
    if (!m.startsWith(`${op}:`)) throw new Error(`${what}: message does not name ${op}: ${m}`);
    return;
  }
  throw new Error(`${what}: no error`);
}

Deno.test("vit ops: bad shapes give errors naming the op", async () => {
  const gpu = await testGpu();
  const t = (...shape: number[]) => Tensor.zeros(gpu, shape);
  throwsNaming(() => linear(gpu, t(2, 5), t(3, 4), null), "linear", "inner size");
  throwsNaming(() => linear(gpu, t(2, 4), t(3, 4), t(4)), "linear", "bias size");
  throwsNaming(() => layerNormForward(gpu, t(2, 4), t(5), t(4)), "layerNorm", "weight size");
  throwsNaming(() => softmaxRows(gpu, t(1, SOFTMAX_ROWS_MAX + 1)), "softmaxRows", "long rows");
  throwsNaming(() => patchify(gpu, t(1, 3, 10, 12), 4), "patchify", "not a multiple");
  throwsNaming(() => concatTokens(gpu, t(2, 3, 4), t(2, 3, 5)), "concatTokens", "channels");
  throwsNaming(() => sliceTokens(gpu, t(2, 3, 4), 2, 2), "sliceTokens", "past the end");
  throwsNaming(() => tokensToMap(gpu, t(1, 6, 4), 2, 2), "tokensToMap", "h·w");
  throwsNaming(() => F.bmm(null, t(2, 3, 4), t(2, 5, 6)), "matmul", "bmm inner size");
  throwsNaming(() => F.addBroadcast(null, t(2, 3, 4), t(1, 2, 4)), "addBroadcast", "broadcast");
});

/** f64 attention: per (b, h), softmax(q·kᵀ·scale)·v with q, k, v [B, T, H, Dh] → [B, T, H, Dh]. */
function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  [B, T, H, Dh]: number[],
): Float64Array {
  const at = (b: number, t: number, h: number, d: number) => ((b * T + t) * H + h) * Dh + d;
  const out = new Float64Array(B * T * H * Dh);
  const scale = 1 / Math.sqrt(Dh);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const s = new Float64Array(T);
        for (let j = 0; j < T; j++) {
          for (let d = 0; d < Dh; d++) s[j] += q[at(b, i, h, d)] * k[at(b, j, h, d)] * scale;
        }
        const m = Math.max(...s);
        let z = 0;
        for (let j = 0; j < T; j++) z += s[j] = Math.exp(s[j] - m);
        for (let j = 0; j < T; j++) {
          for (let d = 0; d < Dh; d++) out[at(b, i, h, d)] += (s[j] / z) * v[at(b, j, h, d)];
        }
      }
    }
  }
  return out;
}

Deno.test("vit ops: attention from permute0213 + bmm + softmaxRows on the tape vs f64 and finite differences", async () => {
  const gpu = await testGpu();
  const shape = [2, 7, 3, 5];
  const [B, T, H, Dh] = shape;
  const n = B * T * H * Dh;
  const host = { q: randArray(n, 1), k: randArray(n, 2), v: randArray(n, 3) };
  const dy = randArray(n, 4);
  const tape = new Tape(gpu);
  const leaf = (x: Float32Array) => tape.watch(Tensor.fromArray(gpu, x, shape));
  const q = leaf(host.q), k = leaf(host.k), v = leaf(host.v);
  // Heads split, attention per (b, h) on 4-D operands, heads merged through a tape reshape.
  const hq = F.permute0213(tape, q), hk = F.permute0213(tape, k), hv = F.permute0213(tape, v);
  const s = F.bmm(tape, hq, hk, { transB: true, alpha: 1 / Math.sqrt(Dh) });
  const a = F.softmaxRows(tape, s);
  const o = F.bmm(tape, a, hv);
  const m = F.permute0213(tape, o);
  const y = F.reshape(tape, m, [B, T, H * Dh]);
  const yv = await y.read();
  const want = attentionRef(host.q, host.k, host.v, shape);
  assertClose(yv, want, { rtol: 1e-4, atol: 1e-5 }, "attention forward");
  const grads = tape.backward([[y, Tensor.fromArray(gpu, dy, [B, T, H * Dh])]], [q, k, v]);
  const loss = (x: Record<string, ArrayLike<number>>) => {
    const r = attentionRef(x.q, x.k, x.v, shape);
    let l = 0;
    for (let i = 0; i < n; i++) l += r[i] * dy[i];
    return l;
  };
  const names = ["q", "k", "v"] as const;
  for (const [i, name] of names.entries()) {
    const g = await grads[i]!.read();
    for (let r = 0; r < 2; r++) {
      const dir = randArray(n, 10 + 3 * i + r);
      const eps = 1e-5;
      const shifted = (sgn: number) =>
        loss({ ...host, [name]: Float64Array.from(host[name], (x, j) => x + sgn * eps * dir[j]) });
      const fd = (shifted(1) - shifted(-1)) / (2 * eps);
      let dot = 0, scale = 0;
      for (let j = 0; j < n; j++) {
        dot += g[j] * dir[j];
        scale += Math.abs(g[j] * dir[j]);
      }
      if (!(Math.abs(dot - fd) <= 1e-4 * scale + 1e-8)) {
        throw new Error(`d${name} along direction ${r}: <g, v> ${dot} vs finite difference ${fd}`);
      }
    }
  }
  for (const t of [...grads, q, k, v, hq, hk, hv, s, a, o, m, y]) t?.dispose();
});

Deno.test("vit ops: linear adds its weight and bias gradients into existing ones", async () => {
  const gpu = await testGpu();
  const [M, N, K] = [6, 5, 9];
  const hx = randArray(M * K, 1), hw = randArray(N * K, 2), hb = randArray(N, 3);
  const dy = randArray(M * N, 4);
  const gw0 = randArray(N * K, 5), gb0 = randArray(N, 6);
  const param = (name: string, v: Float32Array, g: Float32Array, shape: number[]): Param => ({
    name,
    value: Tensor.fromArray(gpu, v, shape),
    grad: Tensor.fromArray(gpu, g, shape),
    group: "head",
    decay: true,
  });
  const w = param("w", hw, gw0, [N, K]);
  const b = param("b", hb, gb0, [N]);
  const tape = new Tape(gpu, [w, b]);
  const x = tape.watch(Tensor.fromArray(gpu, hx, [2, 3, K]));
  const y = F.linear(tape, x, w.value, b.value);
  assertClose(await y.read(), linearRef(hx, hw, hb, M, N, K), { rtol: 1e-5, atol: 1e-5 }, "y");
  const [dx] = tape.backward([[y, Tensor.fromArray(gpu, dy, [2, 3, N])]], [x]);
  const ref = linearBackwardRef(hx, hw, dy, M, N, K);
  assertClose(await dx!.read(), ref.x, { rtol: 1e-5, atol: 1e-5 }, "dx");
  const tol = { rtol: 1e-5, atol: 1e-5 };
  assertClose(await w.grad.read(), ref.w.map((g, i) => g + gw0[i]), tol, "dw accumulated");
  assertClose(await b.grad.read(), ref.b.map((g, i) => g + gb0[i]), tol, "db accumulated");
  for (const t of [dx!, x, y, w.value, w.grad, b.value, b.grad]) t.dispose();
});

Deno.test("vit ops: GELU and its derivative over [-8, 8] against the f64 erf", async () => {
  const gpu = await testGpu();
  const n = 4001;
  const x = Float32Array.from({ length: n }, (_, i) => -8 + (16 * i) / (n - 1));
  const ones = new Float32Array(n).fill(1);
  const tx = Tensor.fromArray(gpu, x, [n]);
  const td = Tensor.fromArray(gpu, ones, [n]);
  const y = await pointwise(gpu, "gelu", [tx]).read();
  const d = await pointwise(gpu, "gelu_bwd", [tx, td]).read();
  assertClose(y, pointwiseRef("gelu", [x]), { rtol: 1e-6, atol: 2e-7 }, "gelu");
  assertClose(d, pointwiseRef("gelu_bwd", [x, ones]), { rtol: 1e-6, atol: 2e-7 }, "gelu'");
  tx.dispose();
  td.dispose();
});

Deno.test("vit ops: linear(patchify(x)) equals the stride-p convolution (PatchEmbed)", async () => {
  const gpu = await testGpu();
  const [B, C, H, W, p, D] = [2, 3, 8, 12, 4, 5];
  const hx = randArray(B * C * H * W, 1), hw = randArray(D * C * p * p, 2), hb = randArray(D, 3);
  const x = Tensor.fromArray(gpu, hx, [B, C, H, W]);
  const w = Tensor.fromArray(gpu, hw, [D, C, p, p]);
  const b = Tensor.fromArray(gpu, hb, [D]);
  const tokens = patchify(gpu, x, p);
  const y = linear(gpu, tokens, w.reshape([D, C * p * p]), b);
  const map = tokensToMap(gpu, y, H / p, W / p);
  const conv = conv2d(gpu, x, w, b, { stride: p });
  const want = conv2dRef(hx, [B, C, H, W], hw, [D, C, p, p], hb, { stride: p });
  assertClose(await map.read(), want, { rtol: 1e-5, atol: 1e-5 }, "patch embed");
  assertClose(await map.read(), await conv.read(), { rtol: 1e-5, atol: 1e-5 }, "vs conv2d");
  for (const t of [x, w, b, tokens, y, map, conv]) t.dispose();
});

Deno.test("vit ops: addBroadcast gives p the batch sum of the gradient", async () => {
  const gpu = await testGpu();
  const [B, T, D] = [3, 4, 5];
  const hx = randArray(B * T * D, 1), hp = randArray(T * D, 2), dy = randArray(B * T * D, 3);
  const tape = new Tape(gpu);
  const x = tape.watch(Tensor.fromArray(gpu, hx, [B, T, D]));
  const p = tape.watch(Tensor.fromArray(gpu, hp, [1, T, D]));
  const y = F.addBroadcast(tape, x, p);
  assertClose(await y.read(), hx.map((v, i) => v + hp[i % (T * D)]), { atol: 1e-6 }, "y");
  const [dx, dp] = tape.backward([[y, Tensor.fromArray(gpu, dy, [B, T, D])]], [x, p]);
  assertClose(await dx!.read(), dy, { atol: 0, rtol: 0 }, "dx");
  const want = new Float64Array(T * D);
  for (let i = 0; i < dy.length; i++) want[i % (T * D)] += dy[i];
  assertClose(await dp!.read(), want, { atol: 1e-6 }, "dp");
  for (const t of [x, p, y, dx!, dp!]) t.dispose();
});
