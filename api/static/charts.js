// fleetstream's charts: small SVG line, scatter and bar charts drawn in the page, no library and no network.
// Each chart marks its <svg> with data-points (how many values it drew) so a test or a user can tell a chart
// with data from an empty one; an empty chart says "no data" instead of drawing empty axes.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Round tick steps (1, 2, 5 x 10^n) so axes read like a person drew them; `integer` for counts.
function ticks(lo, hi, count, integer) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toFixed(10)));
  return out;
}

// Time ticks on whole minutes, hours or days (UTC), whichever gives about `count` ticks.
const TIME_STEPS = [60e3, 300e3, 900e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3,
  7 * 86400e3, 30 * 86400e3];
function timeTicks(lo, hi, count) {
  const step = TIME_STEPS.find((s) => (hi - lo) / s <= count) || TIME_STEPS[TIME_STEPS.length - 1];
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return out;
}

// A tick label with as many decimals as the tick step needs (64.28, 64.30 rather than 64.3, 64.3).
function fmtTick(v, step) {
  if (!(step > 0) || step >= 1 || Math.abs(v) >= 1e4) return fmtNumber(v);
  return v.toFixed(Math.min(6, Math.ceil(-Math.log10(step) - 1e-9)));
}

function fmtNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(a >= 10 ? 1 : 2);
}

function fmtTime(ms, span) {
  const iso = new Date(ms).toISOString();
  if (span > 2 * 86400000) return iso.slice(5, 10);
  return iso.slice(11, 16) === "00:00" ? iso.slice(5, 10) : iso.slice(11, 16);
}

function extent(values, pad = 1) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === hi) { lo -= pad; hi += pad; }
  return [lo, hi];
}

function frame(container, opts) {
  const width = opts.width || container.clientWidth || 560;
  const height = opts.height || 260;
  const m = { left: 56, right: 16, top: 14 + 16 * (opts.legendRows || 0), bottom: 38 };
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, role: "img",
    "aria-label": opts.title || "chart", class: "chart" });
  container.replaceChildren(svg);
  return { svg, width, height, m, pw: width - m.left - m.right, ph: height - m.top - m.bottom };
}

function noData(container, opts) {
  const f = frame(container, opts);
  f.svg.setAttribute("data-points", "0");
  f.svg.appendChild(svgEl("text", { x: f.width / 2, y: f.height / 2, "text-anchor": "middle", class: "empty" },
    opts.empty || "no data in this range"));
  return f.svg;
}

function axes(f, xs, ys, opts) {
  const g = svgEl("g", { class: "axes" });
  const xCount = Math.max(2, Math.floor(f.pw / 90));
  const xTicks = opts.xTime ? timeTicks(xs[0], xs[1], xCount) : ticks(xs[0], xs[1], xCount);
  const yTicks = ticks(ys[0], ys[1], 5, opts.integer);
  const sx = (x) => f.m.left + ((x - xs[0]) / (xs[1] - xs[0])) * f.pw;
  const sy = (y) => f.m.top + f.ph - ((y - ys[0]) / (ys[1] - ys[0])) * f.ph;
  const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 0;
  const xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : 0;
  for (const t of yTicks) {
    g.appendChild(svgEl("line", { x1: f.m.left, x2: f.m.left + f.pw, y1: sy(t), y2: sy(t), class: "grid" }));
    g.appendChild(svgEl("text", { x: f.m.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fmtTick(t, yStep)));
  }
  for (const t of xTicks) {
    const label = opts.xTime ? fmtTime(t, xs[1] - xs[0]) : fmtTick(t, xStep);
    g.appendChild(svgEl("text", { x: sx(t), y: f.m.top + f.ph + 16, "text-anchor": "middle" }, label));
  }
  g.appendChild(svgEl("line", { x1: f.m.left, x2: f.m.left + f.pw, y1: f.m.top + f.ph, y2: f.m.top + f.ph,
    class: "axis" }));
  if (opts.xLabel) g.appendChild(svgEl("text", { x: f.m.left + f.pw / 2, y: f.height - 4, "text-anchor": "middle",
    class: "label" }, opts.xLabel));
  if (opts.yLabel) g.appendChild(svgEl("text", { x: 12, y: f.m.top + f.ph / 2, "text-anchor": "middle", class: "label",
    transform: `rotate(-90 12 ${f.m.top + f.ph / 2})` }, opts.yLabel));
  f.svg.appendChild(g);
  return { sx, sy };
}

// Legend rows above the plot (the frame reserved `legendRows` rows of 16 px).
function legendLayout(series, width) {
  const rows = [[]];
  let x = 0;
  for (const s of series) {
    const w = 24 + 6.5 * s.name.length;
    if (x + w > width - 70 && rows[rows.length - 1].length) { rows.push([]); x = 0; }
    rows[rows.length - 1].push({ s, x });
    x += w;
  }
  return rows;
}

function legend(f, series) {
  if (series.length < 2) return;
  const g = svgEl("g", { class: "legend" });
  legendLayout(series, f.width).forEach((row, r) => {
    for (const { s, x } of row) {
      const y = 4 + r * 16;
      g.appendChild(svgEl("rect", { x: f.m.left + x, y, width: 10, height: 10, fill: s.color }));
      g.appendChild(svgEl("text", { x: f.m.left + x + 14, y: y + 9 }, s.name));
    }
  });
  f.svg.appendChild(g);
}

// series: [{name, points: [[x, y], ...], color?, dashed?}]; opts: {xLabel, yLabel, xTime, title, height}
function lineChart(container, series, opts = {}) {
  series = series.map((s, i) => ({ ...s, color: s.color || PALETTE[i % PALETTE.length],
    points: s.points.filter((p) => p[0] != null && p[1] != null) })).filter((s) => s.points.length);
  const all = series.flatMap((s) => s.points);
  if (!all.length) return noData(container, opts);
  const legendRows = series.length > 1 ? legendLayout(series, opts.width || container.clientWidth || 560).length : 0;
  const f = frame(container, { ...opts, legendRows });
  const xs = extent(all.map((p) => p[0]), opts.xTime ? 43200000 : 1);
  const ys = opts.yZero ? [Math.min(0, extent(all.map((p) => p[1]))[0]), extent(all.map((p) => p[1]))[1]]
    : extent(all.map((p) => p[1]));
  const { sx, sy } = axes(f, xs, ys, opts);
  series.forEach((s) => {
    const pts = s.points;
    const color = s.color;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    const path = svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series",
      "data-series": s.name, "data-n": pts.length });
    if (s.dashed) path.setAttribute("stroke-dasharray", "6 4");
    path.appendChild(svgEl("title", {}, s.name));
    f.svg.appendChild(path);
    if (pts.length <= 60) {
      for (const p of pts) {
        const dot = svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color });
        dot.appendChild(svgEl("title", {}, `${s.name}: ${fmtNumber(p[1])}`));
        f.svg.appendChild(dot);
      }
    }
  });
  legend(f, series);
  f.svg.setAttribute("data-points", String(all.length));
  return f.svg;
}

// points: [{x, y, label, color?}] (longitude, latitude for positions)
function scatterChart(container, points, opts = {}) {
  const pts = points.filter((p) => p.x != null && p.y != null);
  if (!pts.length) return noData(container, opts);
  const f = frame(container, opts);
  const pad = (e) => { const d = (e[1] - e[0]) * 0.05; return [e[0] - d, e[1] + d]; };
  const { sx, sy } = axes(f, pad(extent(pts.map((p) => p.x))), pad(extent(pts.map((p) => p.y))), opts);
  for (const p of pts) {
    const dot = svgEl("circle", { cx: sx(p.x), cy: sy(p.y), r: 4, fill: p.color || PALETTE[0], class: "point",
      "fill-opacity": 0.75 });
    dot.appendChild(svgEl("title", {}, p.label || ""));
    f.svg.appendChild(dot);
  }
  f.svg.setAttribute("data-points", String(pts.length));
  return f.svg;
}

// items: [{label, value, color?}]
function barChart(container, items, opts = {}) {
  const total = items.reduce((a, it) => a + (it.value || 0), 0);
  if (!items.length || (!total && !opts.showZero)) return noData(container, opts);
  const f = frame(container, opts);
  const max = Math.max(1, ...items.map((it) => it.value || 0));
  const { sy } = axes(f, [0, 1], [0, max], { ...opts, xTime: false, integer: opts.integer !== false });
  f.svg.querySelectorAll(".axes text[text-anchor='middle']").forEach((t) => { if (!t.classList.contains("label")) t.remove(); });
  const slot = f.pw / items.length;
  items.forEach((it, i) => {
    const x = f.m.left + i * slot + slot * 0.15;
    const y = sy(it.value || 0);
    const bar = svgEl("rect", { x, y, width: slot * 0.7, height: f.m.top + f.ph - y,
      fill: it.color || PALETTE[i % PALETTE.length], class: "bar", "data-label": it.label, "data-value": it.value });
    bar.appendChild(svgEl("title", {}, `${it.label}: ${it.value}`));
    f.svg.appendChild(bar);
    f.svg.appendChild(svgEl("text", { x: x + slot * 0.35, y: f.m.top + f.ph + 16, "text-anchor": "middle" }, it.label));
    f.svg.appendChild(svgEl("text", { x: x + slot * 0.35, y: y - 4, "text-anchor": "middle", class: "value" },
      fmtNumber(it.value || 0)));
  });
  f.svg.setAttribute("data-points", String(items.length));
  return f.svg;
}

window.charts = { lineChart, scatterChart, barChart, PALETTE };
