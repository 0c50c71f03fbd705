"use strict";
// edgeloop dashboard: polls the REST API and draws with uPlot (vendored; no CDN, works offline).
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
// one uPlot per chart element, re-created only when its series change
const charts = new Map();

const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const badge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;

// The API token: asked for once (or taken from a "#token=..." link, which never reaches the server), kept in
// sessionStorage (this tab only, gone when it closes), sent as "Authorization: Bearer" on every API call.
const TOKEN_KEY = "edgeloop-api-token";
let needToken = false;

class TokenNeeded extends Error {}

function takeTokenFromLink() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);  // out of the address bar and history
}

function askForToken(refused) {
  needToken = true;
  document.body.dataset.auth = refused ? "refused" : "required";
  document.getElementById("login").hidden = false;
  document.getElementById("login-note").textContent = refused
    ? "that token was refused; paste the one serve was given (--api-token-file)"
    : "this server needs its API token (serve --api-token-file); it is kept for this tab only";
  document.getElementById("health").textContent = "token needed";
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  if (!input.value.trim()) return;
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  document.getElementById("login").hidden = true;
  needToken = false;
  refresh();
});

async function get(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? {Authorization: `Bearer ${token}`} : {};
  const r = await fetch(path, {cache: "no-store", headers});
  if (r.status === 401) {
    if (token) sessionStorage.removeItem(TOKEN_KEY);
    askForToken(Boolean(token));
    throw new TokenNeeded(`${path}: HTTP 401`);
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// the drift flag of a device (its input drift): red "DRIFT score" when flagged, "ok score" when scored, "–" without
function driftCell(drift) {
  if (!drift) return `<td class="drift" data-drift="none">–</td>`;
  const cls = drift.drifted ? "drifted" : "ok";
  const title = `input drift ${fmt(drift.score, 3)} / threshold ${fmt(drift.threshold, 2)} over ${drift.n_images} images`;
  return `<td class="drift" data-drift="${cls}" title="${esc(title)}"><span class="badge ${cls}">` +
    `${drift.drifted ? "DRIFT" : "ok"} ${fmt(drift.score, 2)}</span></td>`;
}

// the label drift of a device: the predicted-class mix against the reference; a figure, never a flag
function labelDriftCell(drift) {
  const label = drift ? drift.label_drift : null;
  if (label === null || label === undefined) return `<td class="label-drift" data-label-drift="none">–</td>`;
  const title = "the class mix moved (a camera on one scene sees one class): informational, it never flags";
  return `<td class="label-drift" data-label-drift="${fmt(label, 2)}" title="${esc(title)}">${fmt(label, 2)}</td>`;
}

// the latest re-calibration: its state, and old -> new (top-1 on a labelled set, else agreement with FP32)
function calibrationCell(c) {
  if (!c) return `<td class="calibration" data-calibration="none">–</td>`;
  const figures = c.before !== null && c.after !== null ? ` ${pct(c.before)} → ${pct(c.after)}` : "";
  const title = `${c.action} ${c.evaluation} ${c.release} at ${c.at}${c.error ? ": " + c.error : ""}`;
  return `<td class="calibration" data-calibration="${esc(c.state)}" title="${esc(title)}">${badge(c.state)}${figures}</td>`;
}

const GATE = {int8_verification_failed: "refused", int8_requantized: "requantized", int8_unverified: "unverified"};

function gateCell(g) {
  if (!g) return `<td class="gate" data-gate="none">–</td>`;
  return `<td class="gate" data-gate="${esc(g.code)}" title="${esc(g.message)}">` +
    `<span class="badge ${esc(g.level)}">${esc(GATE[g.code] || g.code)}</span></td>`;
}

// what a device should run and cannot (DeviceStatus.warnings: e.g. TensorRT that does not load on a Jetson), and
// the fix: a badge beside its state, the messages in its tooltip
function warningsBadge(warnings) {
  if (!warnings || !warnings.length) return "";
  const label = warnings.length === 1 ? "1 warning" : `${warnings.length} warnings`;
  return ` <span class="badge warning" data-warnings="${warnings.length}" title="${esc(warnings.join("\n"))}">` +
    `${label}</span>`;
}

function renderFleet(devices) {
  const body = document.querySelector("#fleet-table tbody");
  body.innerHTML = devices.map((d) => `<tr data-device="${esc(d.device_id)}">
    <td>${esc(d.fleet)}</td><td>${esc(d.device_id)}</td><td>${badge(d.state)}${warningsBadge(d.warnings)}</td><td>${esc(d.release ?? "–")}</td>
    <td>${esc(d.runtime ?? "–")}</td><td>${esc(d.precision ?? "–")}</td><td>${esc(d.accelerator)}</td>
    <td>${fmt(d.p50_ms, 3)}</td><td>${fmt(d.p99_ms, 3)}</td><td>${pct(d.top1)}</td>
    <td>${fmt(d.served_p50_ms, 2)}</td><td>${fmt(d.served_p99_ms, 2)}</td><td>${fmt(d.served_throughput_ips, 1)}</td>
    ${driftCell(d.drift)}${labelDriftCell(d.drift)}${calibrationCell(d.calibration)}${gateCell(d.int8_gate)}
    <td>${esc((d.last_seen || "").replace("T", " ").slice(0, 19))}</td></tr>`).join("");
}

// rows: time-stamped points; keyOf: the series a row belongs to; lines: [[suffix, column, dashed], ...]
function drawChart(id, rows, keyOf, lines, unit, empty, extra = []) {
  const el = document.getElementById(id);
  const keys = [...new Set(rows.map(keyOf))].sort();
  const times = [...new Set(rows.map((r) => Date.parse(r.sent_at) / 1000))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const data = [times];
  const series = [{}];
  keys.forEach((k, i) => {
    const cols = lines.map(() => new Array(times.length).fill(null));
    rows.filter((r) => keyOf(r) === k).forEach((r) => {
      const j = index.get(Date.parse(r.sent_at) / 1000);
      lines.forEach(([, column], c) => { cols[c][j] = r[column]; });
    });
    const color = COLORS[i % COLORS.length];
    lines.forEach(([suffix, , dashed], c) => {
      data.push(cols[c]);
      series.push({label: `${k} ${suffix}`.trim(), stroke: color, width: dashed ? 1 : 2, dash: dashed ? [5, 4] : undefined,
                   spanGaps: true, points: {show: true}});
    });
  });
  extra.forEach(([label, value, color]) => {
    data.push(new Array(times.length).fill(value));
    series.push({label, stroke: color, width: 1, dash: [2, 3], points: {show: false}});
  });
  el.dataset.points = String(rows.length);
  el.dataset.series = String(keys.length);
  const key = keys.join("|") + "#" + extra.map((e) => e.join(",")).join("|");
  const old = charts.get(id);
  if (!rows.length) { el.textContent = empty; if (old) old.chart.destroy(); charts.delete(id); return; }
  if (old && old.key === key) { old.chart.setData(data); return; }
  if (old) old.chart.destroy();
  el.textContent = "";
  const chart = new uPlot({width: Math.max(600, el.clientWidth - 20), height: 320,
                           scales: {x: {time: true}}, axes: [{}, {label: unit}], series}, data, el);
  charts.set(id, {chart, key});
}

function renderLatency(rows) {
  drawChart("latency-chart", rows, (r) => `${r.device_id} ${r.release_name}@${r.release_version}`,
            [["p99", "p99_ms", false], ["p50", "p50_ms", true]], "ms", "no benchmark reports yet");
}

function renderLive(rows) {
  drawChart("live-chart", rows, (r) => r.device_id, [["p99", "p99_ms", false], ["p50", "p50_ms", true]], "ms",
            "no served telemetry yet (agents with [inference] report every telemetry_interval_s)");
  const scored = rows.filter((r) => r.drift_score !== null);
  const thresholds = [...new Set(scored.map((r) => r.drift_threshold))];
  drawChart("drift-chart", scored, (r) => r.device_id, [["input", "drift_score", false]], "input drift",
            "no drift scores yet (a release with a drift reference, and a full window of served images)",
            thresholds.length === 1 ? [["threshold", thresholds[0], "#c0392b"]] : []);
  const labelled = rows.filter((r) => r.drift && r.drift.label_drift !== null && r.drift.label_drift !== undefined)
    .map((r) => ({...r, label_drift: r.drift.label_drift}));
  drawChart("label-drift-chart", labelled, (r) => r.device_id, [["label", "label_drift", true]], "label drift",
            "no label drift yet (devices report it beside the input drift)");
}

function renderAccuracy(rows) {
  const by = new Map();
  for (const r of rows) {
    const k = `${r.release_name}@${r.release_version}`;
    const last = by.get(k) || new Map();
    last.set(r.device_id, r);  // latest report per device and release
    by.set(k, last);
  }
  const body = document.querySelector("#accuracy-table tbody");
  body.innerHTML = [...by.entries()].map(([k, devs]) => {
    const top1 = [...devs.values()].map((r) => r.top1).filter((v) => v !== null);
    const p99 = [...devs.values()].map((r) => r.p99_ms);
    const mean = (a) => (a.length ? a.reduce((x, y) => x + y, 0) / a.length : null);
    return `<tr data-release="${esc(k)}"><td>${esc(k)}</td><td>${devs.size}</td><td>${pct(mean(top1))}</td>
      <td>${pct(top1.length ? Math.min(...top1) : null)}</td><td>${pct(top1.length ? Math.max(...top1) : null)}</td>
      <td>${fmt(mean(p99), 3)}</td></tr>`;
  }).join("");
}

function calibrationNote(r) {
  if (r.error) return r.error;
  if (r.state === "kept") return `kept: edgeloop recalibrate promote ${r.device_id} --calibration ${r.id}`;
  if (r.state === "rejected") return "not better: the running engine stays";
  if (r.promoted_by) return `promoted by ${r.promoted_by}`;
  return r.action === "promote" ? `swaps in ${r.calibration_id}` : "";
}

function renderCalibrations(rows) {
  const body = document.querySelector("#calibration-table tbody");
  body.innerHTML = rows.map((r) => {
    const o = r.outcome || {};
    return `<tr data-recalibration="${esc(r.id)}" data-state="${esc(r.state)}">
      <td>${esc((r.created_at || "").replace("T", " ").slice(0, 19))}</td><td>${esc(r.device_id)}</td>
      <td>${esc(r.action)}</td><td>${badge(r.state)}</td><td>${esc(r.promote ?? "–")}</td><td>${esc(o.evaluation ?? "–")}</td>
      <td>${pct(o.before)}</td><td>${pct(o.after)}</td><td>${o.n_images ?? "–"}</td><td>${o.n_eval ?? "–"}</td>
      <td>${esc(o.form ?? "–")}</td><td>${fmt(o.calibration_s, 2)}</td><td>${fmt(o.build_s, 2)}</td>
      <td class="note">${esc(calibrationNote(r))}</td></tr>`;
  }).join("");
}

function renderRollouts(rollouts) {
  const el = document.getElementById("rollouts");
  if (!rollouts.length) { el.textContent = "no rollouts yet"; return; }
  el.innerHTML = rollouts.slice().reverse().map((r) => {
    const waves = (r.waves || []).map((w) => {
      const devs = (r.devices || []).filter((d) => d.wave === w.wave)
        .map((d) => `<div>${esc(d.device_id)} ${badge(d.state)} ${d.top1 !== null ? pct(d.top1) : ""}
                     ${d.p99_ms !== null ? fmt(d.p99_ms, 3) + " ms" : ""}</div>`).join("");
      return `<div class="wave" data-wave="${w.wave}"><b>wave ${w.wave + 1}</b> ${badge(w.state)}${devs}</div>`;
    }).join("");
    return `<div class="rollout" data-rollout="${esc(r.id)}"><b>${esc(r.release_name)}@${esc(r.release_version)}</b>
      → ${esc(r.fleet)} ${badge(r.state)} <small>${esc(r.id)}</small>
      ${r.reason ? `<div class="reason">${esc(r.reason)}</div>` : ""}<div>${waves}</div></div>`;
  }).join("");
}

function renderEvents(events) {
  document.getElementById("events").innerHTML = events.slice(0, 50).map((e) =>
    `<li>${esc((e.sent_at || "").slice(11, 19))} ${esc(e.device_id)} ${badge(e.level)} <b>${esc(e.code)}</b> ${esc(e.message)}</li>`).join("");
}

async function refresh() {
  if (needToken) return;  // wait for the form rather than polling with a missing token
  try {
    const [health, fleet, telemetry, live, rollouts, events, calibrations] = await Promise.all([
      get("/api/v1/health"), get("/api/v1/fleet"), get("/api/v1/telemetry?limit=5000"),
      get("/api/v1/telemetry/live?limit=5000"), get("/api/v1/rollouts"), get("/api/v1/events?limit=50"),
      get("/api/v1/recalibrations?limit=50")]);
    const h = document.getElementById("health");
    h.textContent = health.broker_connected ? "broker connected" : "broker disconnected";
    h.className = "badge " + (health.broker_connected ? "online" : "offline");
    renderFleet(fleet);
    renderLatency(telemetry);
    renderLive(live);
    renderAccuracy(telemetry);
    renderRollouts(rollouts);
    renderEvents(events);
    renderCalibrations(calibrations);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
    document.body.dataset.auth = sessionStorage.getItem(TOKEN_KEY) ? "token" : "open";
  } catch (err) {
    if (!(err instanceof TokenNeeded)) document.getElementById("health").textContent = String(err);
  }
}

takeTokenFromLink();
refresh();
setInterval(refresh, 2000);
