// OCR (Out-of-Candidate Rectification) loss, docs/ocr.md steps 1, 3, 4 and 5, forward and
// backward. src/losses/ocr.ts records, per call:
//   imgmax  one workgroup per image: imgMax[b] = max over candidate classes and pixels of
//           relu(z) (0 when the image has no candidate)
//   pixel   one invocation per pixel: OC test, IC/OC groups, l(p) into pix[] (-1 when the
//           pixel is not OC); with FLAG_WRITE_GRAD also the gradient, scaled by p.scale
//           (normaliser known on the CPU: "all")
//   finish  one workgroup: sums pix[] in a fixed order (no atomics, deterministic) and writes
//           stats = [loss, ocPixels, sum of l(p), normaliser, lambda / normaliser]
//   gradient  one invocation per pixel: the gradient scaled by stats[4] (normaliser "oc",
//             known only after finish)
// Every entry point sees the same bindings; z and grad are bound per chunk of whole images
// (binding-size limit) starting `p.off` elements before image `p.b0`.
// Groups are constants: gradients flow into z only through l(p).

// The uniform block, declared in src/losses/ocr.ts (field meanings there).
{{struct:OcrParams}}

const FLAG_BOTH: u32 = 1u; // gradient into IC members too (grad "both")
const FLAG_ACCUM: u32 = 2u; // add the gradient to grad[] instead of overwriting it
const FLAG_WRITE_GRAD: u32 = 4u; // `pixel` writes the gradient (norm "all")
const FLAG_NORM_OC: u32 = 8u; // normaliser = max(1, number of OC pixels)

const RWG: u32 = 64u; // invocations of the reduction workgroups (imgmax, finish): few barriers
const BIG: f32 = 3.0e38;

override WG: u32 = 64u; // invocations per workgroup of `pixel` and `grad`

@group(0) @binding(0) var<storage, read> z: array<f32>; // [B,C,H,W] class maps (chunk)
@group(0) @binding(1) var<storage, read> tags: array<f32>; // [B,C], > 0.5 = candidate
@group(0) @binding(2) var<storage, read> prior: array<f32>; // [C,C] co-occurrence A[o,k]
@group(0) @binding(3) var<storage, read_write> imgMax: array<f32>; // [B]
@group(0) @binding(4) var<storage, read_write> grad: array<f32>; // [B,C,H,W] (chunk)
@group(0) @binding(5) var<storage, read_write> pix: array<f32>; // [B*H*W]
@group(0) @binding(6) var<storage, read_write> stats: array<f32>; // [5]
@group(0) @binding(7) var<uniform> p: OcrParams;

var<workgroup> redF: array<f32, RWG>;
var<workgroup> redU: array<u32, RWG>;

fn isTag(b: u32, c: u32) -> bool {
  return tags[b * p.C + c] > 0.5;
}

fn hasBit(m: vec4u, c: u32) -> bool {
  return (m[c >> 5u] & (1u << (c & 31u))) != 0u;
}

// Class bit masks: 128 bits in a vec4u (C <= 128); vectors index cheaper than private arrays.
fn bit(c: u32) -> vec4u {
  let w = c >> 5u;
  let b = 1u << (c & 31u);
  return vec4u(
    select(0u, b, w == 0u),
    select(0u, b, w == 1u),
    select(0u, b, w == 2u),
    select(0u, b, w == 3u),
  );
}

// log(1 + x) for x >= 0, accurate for small x.
fn log1pPos(x: f32) -> f32 {
  if (x < 1e-4) {
    return x * (1.0 - 0.5 * x);
  }
  return log(1.0 + x);
}

fn softplus(s: f32) -> f32 {
  return max(s, 0.0) + log1pPos(exp(-abs(s)));
}

fn sigmoid(s: f32) -> f32 {
  if (s >= 0.0) {
    return 1.0 / (1.0 + exp(-s));
  }
  let e = exp(s);
  return e / (1.0 + e);
}

@compute @workgroup_size(RWG)
fn imgmax(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let bl = wid.x;
  let b = p.b0 + bl;
  var m = 0.0;
  for (var c = 0u; c < p.C; c++) {
    if (isTag(b, c)) {
      let base = p.off + (bl * p.C + c) * p.HW;
      for (var q = li; q < p.HW; q += RWG) {
        m = max(m, z[base + q]);
      }
    }
  }
  redF[li] = m;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      redF[li] = max(redF[li], redF[li + s]);
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    imgMax[b] = redF[0];
  }
}

// The OCR terms of pixel q of chunk image bl: returns l(p), or -1 when the pixel is not OC.
// With writeGrad, writes (or adds, FLAG_ACCUM) gradScale * d l(p) / d z[., q].
fn pixelTerms(bl: u32, q: u32, gradScale: f32, writeGrad: bool) -> f32 {
  let b = p.b0 + bl;
  let C = p.C;
  let HW = p.HW;
  let base = p.off + bl * C * HW + q; // index of z[b, 0, q]
  let accum = (p.flags & FLAG_ACCUM) != 0u;

  // Step 1: o = argmax over all classes (lowest index on ties); top candidate score.
  var o = 0u;
  var zo = z[base];
  var nTag = 0u;
  var zTop = -BIG;
  var tagM = vec4u();
  for (var c = 0u; c < C; c++) {
    let v = z[base + c * HW];
    if (v > zo) {
      o = c;
      zo = v;
    }
    if (isTag(b, c)) {
      nTag++;
      zTop = max(zTop, v);
      tagM |= bit(c);
    }
  }
  let isOc = nTag > 0u && !hasBit(tagM, o) && max(zo, 0.0) >= p.tauAct * imgMax[b];
  if (!isOc) {
    if (writeGrad && !accum) {
      for (var c = 0u; c < C; c++) {
        grad[base + c * HW] = 0.0;
      }
    }
    return -1.0;
  }

  // Steps 3-4: relevance r(k) = alpha A[o,k] + (1 - alpha) P[k] / max_{j in Y} P[j], where
  // the softmax ratio is exp((z_k - z_top) / T). IC = {r >= tauRel} plus the best r.
  var inM = vec4u();
  var outM = vec4u();
  var best = 0u;
  var rBest = -BIG;
  var minIn = BIG;
  for (var c = 0u; c < C; c++) {
    if (hasBit(tagM, c)) {
      let v = z[base + c * HW];
      let r = p.alpha * prior[o * C + c] + (1.0 - p.alpha) * exp((v - zTop) * p.invT);
      if (r > rBest) {
        rBest = r;
        best = c;
      }
      if (r >= p.tauRel) {
        inM |= bit(c);
        minIn = min(minIn, v);
      }
    }
  }
  inM |= bit(best);
  minIn = min(minIn, z[base + best * HW]);

  // OC group: non-candidates above min_IC z - m, and o. Sums for the two log-sum-exps with
  // their maxima subtracted (z_o is the largest OC-group score, min_IC z the smallest IC one).
  let thr = minIn - p.margin;
  var sIn = 0.0;
  var sOut = 0.0;
  for (var c = 0u; c < C; c++) {
    let v = z[base + c * HW];
    if (hasBit(inM, c)) {
      sIn += exp(minIn - v);
    } else if (!hasBit(tagM, c) && (v > thr || c == o)) {
      outM |= bit(c);
      sOut += exp(v - zo);
    }
  }
  // Step 5: l = softplus(LSE_out z + LSE_in(-z) + m).
  let s = (zo - minIn) + log(sOut) + log(sIn) + p.margin;
  let l = softplus(s);

  if (writeGrad) {
    let sg = gradScale * sigmoid(s);
    let gOut = sg / sOut;
    let gIn = select(0.0, -sg / sIn, (p.flags & FLAG_BOTH) != 0u);
    for (var c = 0u; c < C; c++) {
      let i = base + c * HW;
      var g = 0.0;
      let member = hasBit(inM, c) || hasBit(outM, c);
      if (hasBit(inM, c)) {
        g = gIn * exp(minIn - z[i]);
      } else if (hasBit(outM, c)) {
        g = gOut * exp(z[i] - zo);
      }
      if (!accum) {
        grad[i] = g;
      } else if (member) {
        grad[i] += g;
      }
    }
  }
  return l;
}

@compute @workgroup_size(WG)
fn pixel(@builtin(global_invocation_id) gid: vec3u) {
  let q = gid.x;
  if (q >= p.HW) {
    return;
  }
  let l = pixelTerms(gid.y, q, p.scale, (p.flags & FLAG_WRITE_GRAD) != 0u);
  pix[(p.b0 + gid.y) * p.HW + q] = l;
}

@compute @workgroup_size(WG)
fn gradient(@builtin(global_invocation_id) gid: vec3u) {
  let q = gid.x;
  if (q >= p.HW) {
    return;
  }
  _ = pixelTerms(gid.y, q, stats[4], true);
}

@compute @workgroup_size(RWG)
fn finish(@builtin(local_invocation_index) li: u32) {
  var sum = 0.0;
  var cnt = 0u;
  for (var i = li; i < p.nPix; i += RWG) {
    let v = pix[i];
    if (v >= 0.0) {
      sum += v;
      cnt++;
    }
  }
  redF[li] = sum;
  redU[li] = cnt;
  workgroupBarrier();
  for (var s = RWG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      redF[li] += redF[li + s];
      redU[li] += redU[li + s];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let n = f32(redU[0]);
    var norm = p.normAll;
    var scale = p.scale;
    if ((p.flags & FLAG_NORM_OC) != 0u) {
      norm = max(n, 1.0);
      scale = p.lambda / norm;
    }
    stats[0] = redF[0] * scale;
    stats[1] = n;
    stats[2] = redF[0];
    stats[3] = norm;
    stats[4] = scale;
  }
}
