/**
 * `report.html`: one self-contained page (no external resources) with a summary table,
 * per-class IoU bars, the OC breakdown, the background-threshold curve (inline SVG) and a grid
 * of examples (image, ground truth, CAM heat-map overlay, prediction / pseudo mask) as inline
 * base64 PNGs encoded with imagescript.
 * @module
 */
import { Buffer } from "node:buffer";
import { Image } from "npm:imagescript@1.3.1";
import { VOC_PALETTE } from "../../data/png.ts";
import { writeJsonAtomic, writeTextAtomic } from "../../io/atomic.ts";
import { join } from "node:path";
import type { Metrics } from "../../eval/metrics.ts";

/** One example row of the report. */
export interface ReportExample {
  /** Image id. */
  id: string;
  /** Image width. */
  width: number;
  /** Image height. */
  height: number;
  /** RGB pixels, HWC u8. */
  rgb: Uint8Array;
  /** Ground truth (0..C, 255 = ignore) or null. */
  gt?: Uint8Array | null;
  /** Prediction / pseudo mask (0..C) or null. */
  pred?: Uint8Array | null;
  /** Heat map H×W in [0, 1] (e.g. the max over tagged normalised CAMs) or null. */
  cam?: Float32Array | null;
}

/** Options of {@link buildReportHtml}. */
export interface ReportOptions {
  /** Page title (default "ocr-wsss evaluation"). */
  title?: string;
  /** Longest side of the example thumbnails in pixels (default 160). */
  thumb?: number;
  /** Label colours, RGB triples indexed by label (default the VOC palette). */
  palette?: Uint8Array;
}

const ESC: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]);
}

function pct(x: number | null, digits = 1): string {
  return x === null ? "n/a" : `${(100 * x).toFixed(digits)}%`;
}

function checkExample(e: ReportExample): void {
  const n = e.width * e.height;
  const bad = (what: string, len: number, want: number) => {
    throw new RangeError(`report example ${e.id}: ${what} has ${len} values, expected ${want}`);
  };
  if (!(Number.isInteger(e.width) && Number.isInteger(e.height) && n > 0)) {
    throw new RangeError(`report example ${e.id}: bad size ${e.width}x${e.height}`);
  }
  if (e.rgb.length !== 3 * n) bad("rgb", e.rgb.length, 3 * n);
  if (e.gt && e.gt.length !== n) bad("ground truth", e.gt.length, n);
  if (e.pred && e.pred.length !== n) bad("prediction", e.pred.length, n);
  if (e.cam && e.cam.length !== n) bad("CAM heat map", e.cam.length, n);
}

/** Jet-like colour map for t in [0, 1]. */
function heat(t: number): [number, number, number] {
  const c = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))];
}

/**
 * A thumbnail PNG data URL: `pixel(i)` gives the RGB of source pixel i; sampled by nearest
 * neighbour so that label boundaries stay crisp.
 */
async function thumbUrl(
  w: number,
  h: number,
  maxSide: number,
  pixel: (i: number) => [number, number, number],
): Promise<string> {
  const s = Math.min(maxSide / Math.max(w, h), 4);
  const tw = Math.max(1, Math.round(w * s));
  const th = Math.max(1, Math.round(h * s));
  const img = new Image(tw, th);
  const bm = img.bitmap;
  for (let y = 0; y < th; y++) {
    const sy = Math.min(h - 1, Math.floor((y + 0.5) * h / th));
    for (let x = 0; x < tw; x++) {
      const sx = Math.min(w - 1, Math.floor((x + 0.5) * w / tw));
      const [r, g, b] = pixel(sy * w + sx);
      const o = 4 * (y * tw + x);
      bm[o] = r;
      bm[o + 1] = g;
      bm[o + 2] = b;
      bm[o + 3] = 255;
    }
  }
  const png = await img.encode();
  return `data:image/png;base64,${Buffer.from(png).toString("base64")}`;
}

function labelColour(pal: Uint8Array, v: number): [number, number, number] {
  return [pal[3 * v], pal[3 * v + 1], pal[3 * v + 2]];
}

async function exampleCells(e: ReportExample, maxSide: number, pal: Uint8Array) {
  checkExample(e);
  const { width: w, height: h, rgb } = e;
  const px = (i: number): [number, number, number] => [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]];
  const cells: { label: string; url: string | null }[] = [];
  cells.push({ label: "image", url: await thumbUrl(w, h, maxSide, px) });
  const gt = e.gt;
  cells.push({
    label: "ground truth",
    url: gt ? await thumbUrl(w, h, maxSide, (i) => labelColour(pal, gt[i])) : null,
  });
  const cam = e.cam;
  cells.push({
    label: "CAM overlay",
    url: cam
      ? await thumbUrl(w, h, maxSide, (i) => {
        const t = Math.min(1, Math.max(0, cam[i]));
        const hc = heat(t);
        const p = px(i);
        const a = 0.3 + 0.5 * t; // weak activations let the image show through
        return [0, 1, 2].map((k) => Math.round((1 - a) * p[k] + a * hc[k])) as [
          number,
          number,
          number,
        ];
      })
      : null,
  });
  const pred = e.pred;
  cells.push({
    label: "prediction",
    url: pred ? await thumbUrl(w, h, maxSide, (i) => labelColour(pal, pred[i])) : null,
  });
  return cells;
}

function summaryTable(m: Metrics): string {
  const rows: [string, string][] = [
    ["source", m.source],
    ["split", m.split],
    ["images", `${m.n_images} (${m.n_gt_images} with ground truth)`],
    ["mIoU", pct(m.miou)],
    ["pixel accuracy", pct(m.pixel_acc)],
    ["mean class accuracy", pct(m.mean_acc)],
    [
      m.oc_kind === "cam" ? "OC-error rate (unrestricted CAM)" : "OC-error rate (predicted masks)",
      `${pct(m.oc_rate, 2)} (${m.oc_pixels} / ${m.oc_denominator} px)`,
    ],
  ];
  if (m.tau !== null) rows.push(["activation ratio tau", String(m.tau)]);
  if (m.bg_threshold !== null) {
    rows.push([
      m.sweep ? "best background threshold" : "background threshold",
      String(m.bg_threshold),
    ]);
  }
  return `<table class="summary">${
    rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("")
  }</table>`;
}

function iouBars(m: Metrics, pal: Uint8Array): string {
  const names = m.class_names;
  const rowH = 20;
  const labelW = 130;
  const barW = 420;
  const height = names.length * rowH + 24;
  const parts: string[] = [];
  names.forEach((name, i) => {
    const v = m.per_class[name];
    const y = 18 + i * rowH;
    const [r, g, b] = labelColour(pal, i);
    parts.push(
      `<text x="${labelW - 6}" y="${y + 13}" text-anchor="end">${escapeHtml(name)}</text>`,
      `<rect x="${labelW}" y="${y + 2}" width="${barW}" height="${rowH - 6}" class="track"/>`,
    );
    if (v !== null) {
      parts.push(
        `<rect x="${labelW}" y="${y + 2}" width="${(barW * v).toFixed(1)}" height="${
          rowH - 6
        }" fill="rgb(${r},${g},${b})" stroke="#333" stroke-width="0.5"/>`,
        `<text x="${labelW + barW + 6}" y="${y + 13}">${(100 * v).toFixed(1)}</text>`,
      );
    } else {
      parts.push(`<text x="${labelW + barW + 6}" y="${y + 13}" class="muted">absent</text>`);
    }
  });
  if (m.miou !== null) {
    const x = labelW + barW * m.miou;
    parts.push(
      `<line x1="${x}" y1="12" x2="${x}" y2="${height - 4}" class="mean"/>`,
      `<text x="${x}" y="10" text-anchor="middle" class="mean-label">mIoU ${
        (100 * m.miou).toFixed(1)
      }</text>`,
    );
  }
  return `<svg class="bars" width="${labelW + barW + 60}" height="${height}" viewBox="0 0 ${
    labelW + barW + 60
  } ${height}" role="img" aria-label="per-class IoU">${parts.join("")}</svg>`;
}

function ocTable(m: Metrics): string {
  if (m.oc_pairs.length === 0) return `<p class="muted">No OC pixels.</p>`;
  const rows = m.oc_pairs.map((p) =>
    `<tr><td>${escapeHtml(p.true)}</td><td>${
      escapeHtml(p.pred)
    }</td><td class="num">${p.count}</td>` +
    `<td class="num">${m.oc_pixels > 0 ? pct(p.count / m.oc_pixels) : ""}</td></tr>`
  );
  return `<table class="oc"><thead><tr><th>true class</th><th>OC class (predicted)</th>` +
    `<th>pixels</th><th>share of OC</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

/** The threshold curve (mIoU against background threshold) as inline SVG. */
function sweepSvg(m: Metrics): string {
  const pts = (m.sweep ?? []).filter((p) => p.miou !== null) as { t: number; miou: number }[];
  if (pts.length < 2) {
    return `<p class="muted">${
      m.bg_threshold === null
        ? "No threshold sweep (mask evaluation)."
        : `Single background threshold ${m.bg_threshold}; run with a sweep for the curve.`
    }</p>`;
  }
  const W = 560, H = 300, L = 56, R = 16, T = 16, B = 44;
  const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
  let lo = Math.min(...pts.map((p) => p.miou)), hi = Math.max(...pts.map((p) => p.miou));
  const pad = Math.max(0.01, (hi - lo) * 0.1);
  lo = Math.max(0, lo - pad);
  hi = Math.min(1, hi + pad);
  const X = (t: number) => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
  const Y = (v: number) => T + (H - T - B) * (1 - (v - lo) / (hi - lo || 1));
  const parts: string[] = [
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" class="axis"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" class="axis"/>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    parts.push(
      `<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" class="grid"/>`,
      `<text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${(100 * v).toFixed(1)}</text>`,
    );
  }
  const step = Math.ceil(pts.length / 10);
  let lastX = -Infinity;
  pts.forEach((p, i) => {
    const last = i === pts.length - 1;
    if ((i % step === 0 || last) && X(p.t) - lastX >= 36) {
      parts.push(`<text x="${X(p.t)}" y="${H - B + 16}" text-anchor="middle">${p.t}</text>`);
      lastX = X(p.t);
    }
  });
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">background threshold</text>`,
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${
      (T + H - B) / 2
    })">mIoU (%)</text>`,
    `<polyline class="curve" points="${
      pts.map((p) => `${X(p.t).toFixed(1)},${Y(p.miou).toFixed(1)}`).join(" ")
    }"/>`,
  );
  for (const p of pts) {
    const best = p.t === m.bg_threshold;
    parts.push(
      `<circle cx="${X(p.t)}" cy="${Y(p.miou)}" r="${best ? 5 : 3}" class="${
        best ? "best" : "pt"
      }"><title>t=${p.t}: ${(100 * p.miou).toFixed(2)}</title></circle>`,
    );
    if (best) {
      parts.push(
        `<text x="${X(p.t)}" y="${Y(p.miou) - 10}" text-anchor="middle" class="best-label">best ${
          (100 * p.miou).toFixed(1)
        } @ ${p.t}</text>`,
      );
    }
  }
  return `<svg class="curve" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" ` +
    `aria-label="mIoU against background threshold">${parts.join("")}</svg>`;
}

function legend(m: Metrics, pal: Uint8Array): string {
  const items = m.class_names.map((n, i) => {
    const [r, g, b] = labelColour(pal, i);
    return `<span class="key"><i style="background:rgb(${r},${g},${b})"></i>${
      escapeHtml(n)
    }</span>`;
  });
  const [r, g, b] = labelColour(pal, 255);
  items.push(`<span class="key"><i style="background:rgb(${r},${g},${b})"></i>ignore</span>`);
  return `<div class="legend">${items.join("")}</div>`;
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:3px 10px;border:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary th{background:#f4f4f4;font-weight:600}
svg text{font:12px system-ui,sans-serif;fill:#222}
svg .track{fill:#f0f0f0}svg .muted,.muted{fill:#999;color:#888}
svg .mean{stroke:#c00;stroke-dasharray:4 3}svg .mean-label{fill:#c00}
svg .axis{stroke:#444}svg .grid{stroke:#e4e4e4}
svg polyline.curve{fill:none;stroke:#1565c0;stroke-width:2}
svg .pt{fill:#1565c0}svg .best{fill:#c00}svg .best-label{fill:#c00;font-weight:600}
.grid4{display:grid;grid-template-columns:repeat(4,auto);gap:6px 10px;justify-content:start}
.ex-id{grid-column:1/5;font-weight:600;margin-top:8px}
figure{margin:0}figcaption{font-size:11px;color:#666}
figure img{display:block;image-rendering:pixelated;border:1px solid #ccc}
.empty{display:flex;align-items:center;justify-content:center;color:#aaa;border:1px dashed #ccc}
.legend{margin:6px 0 10px}.key{display:inline-block;margin:0 10px 4px 0;font-size:12px}
.key i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px;border:1px solid #888}
`;

/** Builds the report page (all images inline). */
export async function buildReportHtml(
  m: Metrics,
  examples: readonly ReportExample[],
  opts: ReportOptions = {},
): Promise<string> {
  const pal = opts.palette ?? VOC_PALETTE;
  const thumb = opts.thumb ?? 160;
  const title = opts.title ?? "ocr-wsss evaluation";
  const exHtml: string[] = [];
  for (const e of examples) {
    const cells = await exampleCells(e, thumb, pal);
    exHtml.push(`<div class="ex-id">${escapeHtml(e.id)} (${e.width}x${e.height})</div>`);
    for (const c of cells) {
      exHtml.push(
        c.url
          ? `<figure><img src="${c.url}" alt="${escapeHtml(`${e.id} ${c.label}`)}"/>` +
            `<figcaption>${escapeHtml(c.label)}</figcaption></figure>`
          : `<figure><div class="empty" style="width:${thumb}px;height:${
            Math.round(thumb / 2)
          }px">no ${escapeHtml(c.label)}</div><figcaption>${
            escapeHtml(c.label)
          }</figcaption></figure>`,
      );
    }
  }
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>${STYLE}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<section id="summary"><h2>Summary</h2>${summaryTable(m)}</section>
<section id="per-class"><h2>Per-class IoU (%)</h2>${iouBars(m, pal)}</section>
<section id="oc-breakdown"><h2>OC breakdown</h2><p>${
    m.oc_kind === "cam"
      ? `Active CAM pixels (max over all classes &ge; tau &times; the largest tagged-class CAM value) whose argmax class is not among the image's tags, by ground-truth class.`
      : `Pixels predicted as a foreground class that is not among the image's tags, by ground-truth class.`
  }</p>${ocTable(m)}</section>
<section id="threshold-curve"><h2>Background threshold</h2>${sweepSvg(m)}</section>
<section id="examples"><h2>Examples</h2>${legend(m, pal)}<div class="grid4">${
    exHtml.join("\n")
  }</div></section>
</body></html>
`;
}

/** Writes `metrics.json` atomically (temp file + fsync + rename). */
export function writeMetrics(path: string, m: Metrics): Promise<void> {
  return writeJsonAtomic(path, m);
}

/** Writes `report.html` atomically. */
export async function writeReport(
  path: string,
  m: Metrics,
  examples: readonly ReportExample[],
  opts: ReportOptions = {},
): Promise<void> {
  await writeTextAtomic(path, await buildReportHtml(m, examples, opts));
}

/** Writes `metrics.json` and `report.html` into `dir` (each atomically). */
export async function writeEvalOutputs(
  dir: string,
  m: Metrics,
  examples: readonly ReportExample[],
  opts: ReportOptions = {},
): Promise<{ metricsPath: string; reportPath: string }> {
  const metricsPath = join(dir, "metrics.json");
  const reportPath = join(dir, "report.html");
  await writeMetrics(metricsPath, m);
  await writeReport(reportPath, m, examples, opts);
  return { metricsPath, reportPath };
}
