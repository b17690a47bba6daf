// fleetstream pages: log in, then draw each page from the JSON API with the JWT. The API decides what a caller
// may see; a page shows a refusal (403, 404) as it comes, and never works around it.
"use strict";

const TOKEN_KEY = "fleetstream.token";
const ME_KEY = "fleetstream.me";
const PAGE_PERMISSION = {
  fleet: "dashboard:fleet", owner: "dashboard:owner", technician: "dashboard:technician",
  executive: "dashboard:executive", admin: "users:manage", vehicles: "vehicles:read", dyno: "dyno:read",
  alerts: "alerts:read",
};
const PAGE_TITLE = {
  fleet: "Fleet", owner: "My vehicles", technician: "My work", executive: "Executive", admin: "Admin",
  vehicles: "Vehicles", vehicle: "Vehicle", channel: "Channel", dyno: "Dyno runs", alerts: "Alerts",
};
const HOME = { fleet_manager: "fleet", owner: "owner", technician: "technician", executive: "executive",
  admin: "admin", support: "vehicles" };
const BAND_COLOR = { excellent: "#16a34a", good: "#65a30d", fair: "#d97706", poor: "#ea580c", critical: "#dc2626" };
const SEVERITY_COLOR = { critical: "#dc2626", warning: "#d97706", info: "#2563eb" };

class Refused extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

// --- DOM helpers (textContent only: API strings are never parsed as HTML) --------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const card = (title, ...children) => h("section", { class: "card" }, h("h2", {}, title), ...children);
const chartBox = (id) => h("div", { id, class: "chart-box" });
const tiles = (items) => h("div", { class: "tiles" }, items.map(([name, value, id]) =>
  h("div", { class: "tile", id }, h("div", { class: "name" }, name), h("div", { class: "value" }, value ?? "–"))));

function table(columns, rows, attrs = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.name)));
  const body = h("tbody", {}, rows.map((r) => h("tr", { "data-key": attrs.key ? r[attrs.key] : null },
    columns.map((c) => h("td", { class: c.num ? "num" : null }, c.render ? c.render(r) : fmt(r[c.key]))))));
  const t = h("table", { id: attrs.id }, h("thead", {}, head), body);
  return rows.length ? h("div", { class: "scroll" }, t) : h("p", { class: "muted", id: attrs.id }, attrs.empty || "none");
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(2);
  return String(v);
}

function toMs(ts) {
  if (typeof ts === "number") return ts;
  const s = String(ts).replace(" ", "T");
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : s + "Z");
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = ms / 1000;
  if (s < 90) return `${s.toFixed(0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const sev = (s) => h("span", { class: `sev ${s}` }, s);
const band = (b) => h("span", { class: `band-${b}` }, b || "unknown");
const vehicleLink = (id) => h("a", { href: `/ui/vehicle?${new URLSearchParams({ id, ...pageRange() })}` }, id);

// --- session and API ------------------------------------------------------------------------------------------

const token = () => sessionStorage.getItem(TOKEN_KEY);
const me = () => JSON.parse(sessionStorage.getItem(ME_KEY) || "null");

function toLogin() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ME_KEY);
  location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}`, ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, method: options.method || "POST", body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { toLogin(); throw new Refused(401, "not signed in"); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Refused(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return options.raw ? response : response.json();
}

// The page's date range: `from`/`to` (YYYY-MM-DD) in the page URL, passed to the API as UTC days.
function range() {
  const p = new URLSearchParams(location.search);
  return { from: p.get("from") || "", to: p.get("to") || "" };
}

// The page range as page-URL parameters, to carry it to the next page of a drill-down.
function pageRange() {
  const r = range();
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v));
}

function q(extra = {}) {
  const r = range();
  const p = new URLSearchParams();
  if (r.from) p.set("from", `${r.from}T00:00:00Z`);
  if (r.to) p.set("to", new Date(Date.parse(`${r.to}T00:00:00Z`) + 86400000).toISOString());
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== null) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

function rangeForm() {
  const r = range();
  const today = new Date().toISOString().slice(0, 10);
  return h("form", { class: "range", id: "range-form", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams(location.search);
    for (const k of ["from", "to"]) { const v = e.target.elements[k].value; if (v) p.set(k, v); else p.delete(k); }
    location.search = p.toString();
  } },
  h("label", {}, "From", h("input", { type: "date", name: "from", value: r.from, max: today })),
  h("label", {}, "To (inclusive)", h("input", { type: "date", name: "to", value: r.to, max: today })),
  h("button", { type: "submit" }, "Apply"),
  h("span", { class: "muted small" }, r.from || r.to ? "" : "last 7 days"));
}

// --- live updates: server-sent events read with fetch, so the token stays in a header ---------------------------

async function subscribe(path, onEvent, indicator) {
  for (;;) {
    try {
      const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" } });
      if (response.status === 401) { toLogin(); return; }
      if (!response.ok) return;
      if (indicator) { indicator.classList.add("on"); indicator.title = "live"; }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
    } catch (_) { /* the stream broke: reconnect below */ }
    if (indicator) { indicator.classList.remove("on"); indicator.title = "reconnecting"; }
    await new Promise((r) => setTimeout(r, 3000));
  }
}

const liveBadge = (id) => h("span", { class: "live", id, title: "connecting" });

// --- alerts table with acknowledge, updated live ---------------------------------------------------------------

function alertTable(rows, { canAck, onAck, id = "alerts-table" }) {
  const tbody = h("tbody");
  const rowsById = new Map();
  const ackCell = (a) => {
    if (a.acked_at) return h("span", { class: "acked" }, `acknowledged ${fmt(a.acked_at)}${a.acked_by ? " by " + a.acked_by : ""}`);
    if (a.resolved_at) return h("span", { class: "muted" }, "resolved");
    if (!canAck) return h("span", { class: "muted" }, "open");
    return h("button", { class: "small ack", type: "button", onclick: async (e) => {
      e.target.disabled = true;
      try {
        const body = await api(`/api/v1/alerts/${encodeURIComponent(a.alert_id)}/acknowledge`, { json: { note: "" } });
        const cell = e.target.parentElement;
        cell.replaceChildren(h("span", { class: "acked" }, `acknowledged ${new Date(body.acknowledged_ms).toISOString().slice(0, 19).replace("T", " ")} by you`));
        cell.parentElement.dataset.acked = "1";
        if (onAck) onAck(a, body);
      } catch (err) { e.target.disabled = false; e.target.title = err.message; showRefused(err); }
    } }, "Acknowledge");
  };
  const render = (a) => h("tr", { "data-alert": a.alert_id, "data-acked": a.acked_at ? "1" : null },
    h("td", {}, sev(a.severity)), h("td", {}, vehicleLink(a.vehicle_id)), h("td", {}, a.channel),
    h("td", {}, a.message || a.rule_id), h("td", {}, fmt(a.started_at)),
    h("td", { class: "num" }, `${fmt(a.max_value)} / ${fmt(a.threshold)}`),
    h("td", { class: "state" }, ackCell(a)));
  const upsert = (list, fresh) => {
    for (const a of [...list].reverse()) {
      const tr = render(a);
      tr.dataset.row = [a.severity, a.resolved_at, a.acked_at || "", a.max_value].join("|"); // what a change shows
      const old = rowsById.get(a.alert_id);
      if (old && old.dataset.row === tr.dataset.row) continue; // a reconnected stream repeats what is shown
      if (fresh) tr.classList.add("new");
      if (old) {
        if (old.dataset.acked && !a.acked_at) continue; // acknowledged here, not yet in the store: keep it
        old.replaceWith(tr);
      } else tbody.prepend(tr);
      rowsById.set(a.alert_id, tr);
    }
    empty.hidden = rowsById.size > 0;
  };
  const empty = h("p", { class: "muted" }, "no alerts in this range");
  const t = h("div", { class: "scroll" }, h("table", { id }, h("thead", {}, h("tr", {},
    ["severity", "vehicle", "channel", "alert", "started", "value / threshold", "state"].map((c) => h("th", {}, c)))), tbody), empty);
  upsert(rows, false);
  return { element: t, upsert };
}

// --- reports ---------------------------------------------------------------------------------------------------

function reportPanel() {
  const out = h("ul", { id: "report-links" });
  const form = h("form", { class: "report", id: "report-form", onsubmit: async (e) => {
    e.preventDefault();
    const button = e.target.querySelector("button");
    button.disabled = true;
    const r = range();
    const spec = { kind: e.target.elements.kind.value, format: e.target.elements.format.value };
    const params = new URLSearchParams(q().slice(1));
    if (params.get("from")) spec.from = params.get("from");
    if (params.get("to")) spec.to = params.get("to");
    try {
      const report = await api("/api/v1/reports/generate", { json: spec });
      const file = await api(report.download, { raw: true });
      const name = `${spec.kind}-${report.report_id.slice(0, 8)}.${spec.format}`;
      const link = h("a", { href: URL.createObjectURL(await file.blob()), download: name, class: "report-link" }, name);
      out.prepend(h("li", {}, link, h("span", { class: "muted small" }, ` ${fmt(report.rows)} rows${r.from ? "" : ", last 7 days"}`)));
      link.click();
    } catch (err) { showRefused(err); } finally { button.disabled = false; }
  } },
  h("label", {}, "Report", h("select", { name: "kind" }, ["fleet_health", "alerts", "data_quality", "dyno_runs"].map((k) => h("option", { value: k }, k.replace("_", " "))))),
  h("label", {}, "Format", h("select", { name: "format" }, ["csv", "xlsx", "pdf"].map((f) => h("option", { value: f }, f.toUpperCase())))),
  h("button", { type: "submit", id: "report-generate" }, "Generate and download"));
  return card("Reports (date range above)", form, out);
}

// --- pages -----------------------------------------------------------------------------------------------------

async function fleetPage(c) {
  const [dash, positions] = await Promise.all([api(`/api/v1/dashboards/fleet${q()}`), api(`/api/v1/positions${q()}`)]);
  const s = dash.fleet_summary;
  c.append(rangeForm(), tiles([
    ["vehicles", fmt(s.total_vehicles), "tile-vehicles"], ["active (last hour)", fmt(s.active_vehicles)],
    ["average health", s.average_health_score === null ? "–" : s.average_health_score.toFixed(2), "tile-health"],
    ["open alerts", fmt(s.open_alerts), "tile-open"], ["critical alerts", fmt(s.critical_alerts)],
    ["time to acknowledge", fmtDuration(dash.alert_stats.mean_time_to_ack_ms)],
    ["samples stored", fmt(dash.data_quality.samples_stored)]]));
  const bandOf = new Map(dash.vehicle_health.map((v) => [v.vehicle_id, v.band]));
  const alerts = alertTable(dash.recent_alerts, { canAck: false, id: "recent-alerts" });
  c.append(h("div", { class: "grid" },
    card("Health distribution", chartBox("chart-health")), card("Alerts by severity", chartBox("chart-severity")),
    card("Last known positions", chartBox("chart-positions"), h("p", { class: "muted small" },
      `${positions.length} vehicles with a GPS fix in the range; colour = health band`)),
    card("Average health by day", chartBox("chart-trend")),
    card("Top DTCs", table([{ name: "code", key: "component" }, { name: "description", key: "description" },
      { name: "vehicles", key: "affected_vehicles", num: true }, { name: "occurrences", key: "occurrences", num: true }],
    dash.top_issues, { id: "top-dtcs" })),
    card("Data quality", h("p", {}, `${fmt(dash.data_quality.samples_stored)} samples stored`),
      table([{ name: "dead-letter reason", key: "code" }, { name: "samples", key: "n", num: true }],
        Object.entries(dash.data_quality.dead_lettered).map(([code, n]) => ({ code, n })), { empty: "no dead letters" }))),
  card(h("span", {}, liveBadge("live-alerts"), "Recent alerts"), alerts.element), reportPanel(),
  h("p", { class: "muted small" }, "Not in the data: ", dash.unavailable.join(", ")));
  charts.barChart(document.getElementById("chart-health"), Object.entries(dash.health_distribution).map(
    ([label, value]) => ({ label, value, color: BAND_COLOR[label] })), { showZero: true, yLabel: "vehicles" });
  charts.barChart(document.getElementById("chart-severity"), dash.alerts_by_severity.map(
    (r) => ({ label: r.severity, value: r.alerts, color: SEVERITY_COLOR[r.severity] })), { yLabel: "alerts", empty: "no alerts in this range" });
  charts.scatterChart(document.getElementById("chart-positions"), positions.map((p) => ({ x: p.longitude, y: p.latitude,
    label: `${p.vehicle_id} (${bandOf.get(p.vehicle_id) || "no score"})`, color: BAND_COLOR[bandOf.get(p.vehicle_id)] || "#6b7280" })),
  { xLabel: "longitude °", yLabel: "latitude °", empty: "no GPS fix in this range" });
  charts.lineChart(document.getElementById("chart-trend"), [{ name: "mean health",
    points: dash.health_trend.map((d) => [toMs(d.day), d.mean_health]) }], { xTime: true, yLabel: "health (0–100)" });
  subscribe(`/api/v1/live/alerts${q()}`, (_n, rows) => alerts.upsert(rows.slice(0, 50), true), document.getElementById("live-alerts"));
}

async function ownerPage(c) {
  const dash = await api(`/api/v1/dashboards/owner/${encodeURIComponent(me().user_id)}${q()}`);
  c.append(rangeForm(), tiles([["my vehicles", dash.vehicles.length, "tile-vehicles"],
    ["active alerts", dash.vehicles.reduce((n, v) => n + v.active_alerts.length, 0)],
    ["DTCs in range", dash.vehicles.reduce((n, v) => n + v.dtcs.length, 0)]]),
  h("div", { class: "grid" }, card("Health of my vehicles", chartBox("chart-owner-health"))));
  for (const v of dash.vehicles) {
    c.append(card(h("span", {}, vehicleLink(v.vehicle_id), " · health ", v.health_score === null ? "–" : fmt(v.health_score), " ", band(v.band)),
      h("p", { class: "muted small" }, `fleet ${v.fleet_id}, last seen ${fmt(v.last_seen)}`),
      h("h2", {}, "Active alerts"), alertTable(v.active_alerts, { canAck: false, id: `alerts-${v.vehicle_id}` }).element,
      h("h2", {}, "DTC history"), table([{ name: "code", key: "dtc_id" }, { name: "status", key: "status" },
        { name: "last seen", key: "last_seen" }], v.dtcs, { empty: "no DTCs in this range" })));
  }
  charts.barChart(document.getElementById("chart-owner-health"), dash.vehicles.filter((v) => v.health_score !== null).map(
    (v) => ({ label: v.vehicle_id, value: v.health_score, color: BAND_COLOR[v.band] })), { yLabel: "health (0–100)", empty: "no health score in this range" });
}

async function technicianPage(c) {
  const dash = await api(`/api/v1/dashboards/technician/${encodeURIComponent(me().user_id)}${q()}`);
  const alerts = alertTable(dash.pending, { canAck: me().permissions.includes("alerts:acknowledge"), id: "pending" });
  c.append(rangeForm(), tiles([["assigned vehicles", dash.assigned_vehicles.length, "tile-vehicles"],
    ["open issues", dash.pending.length, "tile-open"], ["acknowledged by me", dash.acknowledged_by_me]]),
  card("Assigned vehicles", h("ul", {}, dash.assigned_vehicles.map((v) => h("li", {}, vehicleLink(v))))),
  card("Open issues of my vehicles", alerts.element));
}

async function executivePage(c) {
  const dash = await api(`/api/v1/dashboards/executive${q()}`);
  const a = dash.alerts;
  c.append(rangeForm(), tiles([
    ["average health", dash.average_health_score === null ? "–" : dash.average_health_score.toFixed(2), "tile-health"],
    ["fleet uptime", dash.fleet_uptime_pct === null ? "–" : `${dash.fleet_uptime_pct.toFixed(1)} %`, "tile-uptime"],
    ["alerts", fmt(a.alerts)], ["acknowledged", fmt(a.acknowledged)], ["time to acknowledge", fmtDuration(a.mean_time_to_ack_ms)],
    ["resolution time", fmtDuration(a.mean_resolution_ms)]]),
  h("div", { class: "grid" }, card("Average health by day", chartBox("chart-trend")),
    card("Health distribution", chartBox("chart-health"))), reportPanel(),
  h("p", { class: "muted small" }, "Not in the data: ", dash.unavailable.join(", ")));
  charts.lineChart(document.getElementById("chart-trend"), [{ name: "mean health",
    points: dash.health_trend.map((d) => [toMs(d.day), d.mean_health]) }], { xTime: true, yLabel: "health (0–100)" });
  charts.barChart(document.getElementById("chart-health"), Object.entries(dash.health_distribution).map(
    ([label, value]) => ({ label, value, color: BAND_COLOR[label] })), { showZero: true, yLabel: "vehicles" });
}

async function adminPage(c) {
  const [users, audit] = await Promise.all([api("/api/v1/users"), api(`/api/v1/audit/logs${q({ limit: 200 })}`)]);
  c.append(rangeForm(), card("Users of my organisation", table([
    { name: "username", key: "username" }, { name: "role", key: "role" },
    { name: "vehicles", render: (u) => u.vehicle_ids.join(", ") || "–" },
    { name: "state", render: (u) => (u.disabled ? "disabled" : "enabled") }, { name: "API keys", render: (u) => String(u.api_keys.length) }],
  users, { id: "users-table" }), h("p", { class: "muted small" }, "Add, disable or reset users with `fleetstream users ...`.")),
  card("Audit log (newest first)", table([{ name: "time", key: "ts" }, { name: "user", key: "user_id" },
    { name: "role", key: "role" }, { name: "method", key: "method" }, { name: "path", key: "path" },
    { name: "status", key: "status", num: true }, { name: "ms", key: "duration_ms", num: true }], audit, { id: "audit-table", empty: "no requests in this range" })));
}

async function vehiclesPage(c) {
  const vehicles = await api("/api/v1/vehicles");
  c.append(card(`${vehicles.length} vehicles`, table([{ name: "vehicle", render: (v) => vehicleLink(v.vehicle_id) },
    { name: "fleet", key: "fleet_id" }, { name: "first seen", key: "first_seen" }, { name: "last seen", key: "last_seen" }],
  vehicles, { id: "vehicles-table" })));
}

async function vehiclePage(c) {
  const id = new URLSearchParams(location.search).get("id") || "";
  document.getElementById("title").textContent = `Vehicle ${id}`;
  const v = await api(`/api/v1/vehicles/${encodeURIComponent(id)}${q()}`);
  const latest = new Map();
  const rows = v.channels.map((ch) => ({ ...ch, vehicle: id }));
  c.append(rangeForm(), card(h("span", {}, liveBadge("live-latest"), `Channels (${rows.length})`), table([
    { name: "channel", render: (r) => h("a", { href: `/ui/channel?${new URLSearchParams({ vehicle: id, channel: r.channel, ...pageRange() })}` }, r.channel) },
    { name: "unit", key: "unit" }, { name: "samples", key: "samples", num: true }, { name: "min", key: "min", num: true },
    { name: "mean", key: "mean", num: true }, { name: "max", key: "max", num: true },
    { name: "latest (live)", num: true, render: (r) => { const el = h("span", { class: "latest", "data-channel": r.channel }, "–"); latest.set(r.channel, el); return el; } },
    { name: "at", render: (r) => { const el = h("span", { class: "latest-at muted small" }, ""); latest.set(r.channel + "\u0000at", el); return el; } }],
  rows, { id: "channels-table", empty: "no samples in this range" })));
  subscribe(`/api/v1/live/vehicles/${encodeURIComponent(id)}/latest${q()}`, (_n, values) => {
    for (const r of values) {
      const el = latest.get(r.channel);
      if (el) { el.textContent = `${fmt(r.value)} ${r.unit || ""}`; el.parentElement.parentElement.classList.add("new"); }
      const at = latest.get(r.channel + "\u0000at");
      if (at) at.textContent = fmt(r.at);
    }
  }, document.getElementById("live-latest"));
}

async function channelPage(c) {
  const p = new URLSearchParams(location.search);
  const vehicle = p.get("vehicle") || "", channel = p.get("channel") || "", kind = p.get("kind") || "tumbling";
  const title = document.getElementById("title");
  title.replaceChildren(vehicleLink(vehicle), ` · ${channel}`);
  const data = await api(`/api/v1/vehicles/${encodeURIComponent(vehicle)}/channels/${encodeURIComponent(channel)}/windows${q({ kind })}`);
  const w = data.windows;
  c.append(rangeForm(), card(`${kind} windows: ${w.length}`, h("p", {}, ["tumbling", "hopping"].map((k) =>
    h("a", { href: `?${new URLSearchParams({ ...Object.fromEntries(p), kind: k })}`, class: k === kind ? "current" : null }, k, " "))),
  chartBox("chart-windows")), card("Windows", table([{ name: "start", key: "window_start" }, { name: "count", key: "count", num: true },
    { name: "min", key: "min", num: true }, { name: "mean", key: "mean", num: true }, { name: "p95", key: "p95", num: true },
    { name: "max", key: "max", num: true }, { name: "last", key: "last", num: true }], w.slice(-500).reverse(), { empty: "no windows in this range" })));
  const series = (name, key, color, dashed) => ({ name, color, dashed, points: w.map((r) => [toMs(r.window_start), r[key]]) });
  charts.lineChart(document.getElementById("chart-windows"), [series("max", "max", "#dc2626", true), series("p95", "p95", "#d97706"),
    series("mean", "mean", "#2563eb"), series("min", "min", "#16a34a", true)], { xTime: true, yLabel: channel, height: 320 });
}

// Pair each point of a channel with the engine speed nearest in time (both curves are sampled per bucket).
function againstRpm(curves, channel) {
  const rpm = curves.engine_speed || [], ys = curves[channel] || [];
  if (!rpm.length) return null;
  let j = 0;
  return ys.map((p) => {
    while (j + 1 < rpm.length && Math.abs(rpm[j + 1].t_ms - p.t_ms) <= Math.abs(rpm[j].t_ms - p.t_ms)) j++;
    return [rpm[j].value, p.value];
  }).sort((a, b) => a[0] - b[0]);
}

function againstTime(curves, channel) {
  const ys = curves[channel] || [];
  const t0 = ys.length ? ys[0].t_ms : 0;
  return ys.map((p) => [(p.t_ms - t0) / 1000, p.value]);
}

async function dynoPage(c) {
  const p = new URLSearchParams(location.search);
  const wanted = (p.get("runs") || "").split(",").filter(Boolean);
  if (!wanted.length) return dynoList(c);
  const runs = await Promise.all(wanted.map(async (r) => {
    const [run, channels] = await Promise.all([api(`/api/v1/dyno/runs/${encodeURIComponent(r)}?points=400`),
      api(`/api/v1/dyno/runs/${encodeURIComponent(r)}/channels`)]);
    // units as stored: a chart never calls a value hp unless the run recorded it in hp
    run.units = Object.fromEntries(channels.map((ch) => [ch.channel, ch.units.join(" / ") || "unit unknown"]));
    return run;
  }));
  document.getElementById("title").textContent = runs.length > 1 ? `Dyno runs compared (${runs.length})` : `Dyno run ${runs[0].run_id}`;
  const byRpm = runs.every((r) => (r.curves.engine_speed || []).length);
  const x = byRpm ? (r, ch) => againstRpm(r.curves, ch) : (r, ch) => againstTime(r.curves, ch);
  const xLabel = byRpm ? "engine speed (rpm)" : "time since start (s) — no engine speed recorded";
  const colors = charts.PALETTE;
  const unit = (r, ch) => r.units[ch] || "not recorded";
  const withUnit = (ch) => (r, v) => (v === null || v === undefined ? "–" : `${fmt(v)} ${unit(r, ch)}`);
  const rows = [["station", "station"], ["started", "started"], ["duration (s)", "duration_s"], ["samples", "samples"],
    ["peak power", "peak_hp", withUnit("power")], ["peak torque", "peak_torque_ftlb", withUnit("torque")],
    ["max engine speed", "max_rpm", withUnit("engine_speed")], ["mean AFR", "mean_afr", withUnit("afr")]];
  c.append(h("p", {}, h("a", { href: "/ui/dyno" }, "← all runs")), h("div", { class: "grid" },
    card("Power and torque", chartBox("chart-power")), card("Air/fuel ratio across the pull", chartBox("chart-afr"))),
  card("Side by side", table([{ name: "", key: "name" }, ...runs.map((r, i) => ({ name: r.run_id, key: `r${i}`, num: true }))],
    rows.map(([name, key, show]) => Object.fromEntries([["name", name],
      ...runs.map((r, i) => [`r${i}`, show ? show(r, r[key]) : r[key]])])), { id: "runs-side-by-side" })));
  const label = (r) => (runs.length > 1 ? `${r.run_id.slice(0, 12)} ` : "");
  charts.lineChart(document.getElementById("chart-power"), runs.flatMap((r, i) => [
    { name: `${label(r)}power (${unit(r, "power")})`, color: colors[(2 * i) % colors.length], points: x(r, "power") || [] },
    { name: `${label(r)}torque (${unit(r, "torque")})`, color: colors[(2 * i + 1) % colors.length], dashed: true, points: x(r, "torque") || [] }]),
  { xLabel, yLabel: "power / torque", height: 340 });
  charts.lineChart(document.getElementById("chart-afr"), runs.map((r, i) => ({ name: `${label(r)}AFR${unit(r, "afr") === "AFR" ? "" : ` (${unit(r, "afr")})`}`, color: colors[(2 * i) % colors.length],
    points: x(r, "afr") || [] })), { xLabel, yLabel: "air/fuel", height: 340, empty: "no AFR channel in this run" });
}

async function dynoList(c) {
  const runs = await api(`/api/v1/dyno/runs${q()}`);
  const compare = h("button", { type: "button", id: "compare", onclick: () => {
    const ids = [...document.querySelectorAll("input.run:checked")].map((i) => i.value);
    if (ids.length) location.assign(`/ui/dyno?runs=${ids.map(encodeURIComponent).join(",")}`);
  } }, "Compare selected");
  c.append(rangeForm(), card(`${runs.length} runs`, table([
    { name: "", render: (r) => h("input", { type: "checkbox", class: "run", value: r.run_id }) },
    { name: "run", render: (r) => h("a", { href: `/ui/dyno?runs=${encodeURIComponent(r.run_id)}` }, r.run_id) },
    { name: "station", key: "station" }, { name: "started", key: "started" }, { name: "s", key: "duration_s", num: true },
    { name: "peak hp", key: "peak_hp", num: true }, { name: "peak ft-lb", key: "peak_torque_ftlb", num: true },
    { name: "max rpm", key: "max_rpm", num: true }, { name: "mean AFR", key: "mean_afr", num: true }], runs, { id: "runs-table", empty: "no dyno runs in this range" }),
  compare));
}

async function alertsPage(c) {
  const [rows, stats] = await Promise.all([api(`/api/v1/alerts/board${q()}`),
    me().permissions.includes("metrics:read") ? api(`/api/v1/metrics/alert-stats${q({ refresh: "true" })}`) : null]);
  const statTiles = (s) => tiles([["alerts", fmt(s.alerts)], ["acknowledged by people", fmt(s.acknowledged_by_people), "tile-acked"],
    ["unacknowledged", fmt(s.unacknowledged)], ["time to acknowledge", fmtDuration(s.mean_time_to_ack_ms), "tile-tta"],
    ["resolution time", fmtDuration(s.mean_resolution_ms)]]);
  let shown = stats ? statTiles(stats.total) : h("div");
  // The KPI counts an acknowledgement once it went through Kafka and the sink: refresh until it shows.
  const followKpi = async (before) => {
    for (let i = 0; i < 60; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const s = await api(`/api/v1/metrics/alert-stats${q({ refresh: "true" })}`);
      if (s.total.acknowledged_by_people !== before) { const next = statTiles(s.total); shown.replaceWith(next); shown = next; return; }
    }
  };
  const table_ = alertTable(rows, { canAck: me().permissions.includes("alerts:acknowledge"), id: "alerts-table",
    onAck: () => { if (stats) followKpi(Number(shown.querySelector("#tile-acked .value").textContent.replace(/,/g, ""))); } });
  c.append(rangeForm(), shown, card(h("span", {}, liveBadge("live-alerts"), `Alerts (live)`), table_.element));
  subscribe(`/api/v1/live/alerts${q()}`, (_n, list) => table_.upsert(list, true), document.getElementById("live-alerts"));
}

const PAGES = { fleet: fleetPage, owner: ownerPage, technician: technicianPage, executive: executivePage, admin: adminPage,
  vehicles: vehiclesPage, vehicle: vehiclePage, channel: channelPage, dyno: dynoPage, alerts: alertsPage };

// --- shell -----------------------------------------------------------------------------------------------------

function showRefused(err) {
  const box = document.getElementById("refused");
  if (!box) return;
  box.hidden = false;
  box.dataset.status = err.status || "error";
  box.textContent = err.status === 403 ? `Refused: your role may not open this (${err.detail}).`
    : err.status === 404 ? `Not found or not yours: ${err.detail}.`
      : `Could not load: ${err.message}`;
}

function navigation(user, page) {
  const nav = document.getElementById("nav");
  for (const [name, permission] of Object.entries(PAGE_PERMISSION)) {
    if (!user.permissions.includes(permission)) continue;
    if (name === "owner" && user.role !== "owner") continue; // the owner page is about the caller's own vehicles
    if (name === "technician" && user.role !== "technician") continue;
    nav.append(h("a", { href: `/ui/${name}`, class: name === page ? "current" : null, "data-page": name }, PAGE_TITLE[name]));
  }
  document.getElementById("whoami").textContent = `${user.username} · ${user.role.replace("_", " ")} · ${user.org_id}`;
  document.getElementById("logout").addEventListener("click", () => { sessionStorage.clear(); location.assign("/ui/login"); });
}

async function showPage(page) {
  if (!token()) return toLogin();
  let user = me();
  if (!user) {
    user = await api("/api/v1/users/me");
    sessionStorage.setItem(ME_KEY, JSON.stringify(user));
  }
  navigation(user, page);
  document.getElementById("title").textContent = PAGE_TITLE[page];
  const content = document.getElementById("content");
  try {
    await PAGES[page](content);
    document.body.dataset.state = "ready";
  } catch (err) {
    if (err instanceof Refused && err.status === 401) return;
    showRefused(err);
    document.body.dataset.state = "refused";
  }
  performance.mark("charts-drawn"); // bench dashboard: navigation start → this mark
}

async function login(e) {
  e.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const body = { username: e.target.elements.username.value, password: e.target.elements.password.value };
  const response = await fetch("/api/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    error.textContent = typeof detail === "string" ? detail : "check the username and password";
    return;
  }
  const session = await response.json();
  sessionStorage.setItem(TOKEN_KEY, session.access_token);
  sessionStorage.removeItem(ME_KEY);
  const user = await api("/api/v1/users/me");
  sessionStorage.setItem(ME_KEY, JSON.stringify(user));
  const next = new URLSearchParams(location.search).get("next");
  location.assign(next && next.startsWith("/ui/") && !next.startsWith("/ui/login") ? next : `/ui/${HOME[user.role] || "vehicles"}`);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "login") document.getElementById("login-form").addEventListener("submit", login);
  else showPage(page);
});
