"use strict";
// edgeloop dashboard: polls the REST API and draws with uPlot (vendored; no CDN, works offline).
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
let chart = null;
let chartKey = "";

const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const badge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;

async function get(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function renderFleet(devices) {
  const body = document.querySelector("#fleet-table tbody");
  body.innerHTML = devices.map((d) => `<tr data-device="${esc(d.device_id)}">
    <td>${esc(d.fleet)}</td><td>${esc(d.device_id)}</td><td>${badge(d.state)}</td><td>${esc(d.release ?? "–")}</td>
    <td>${esc(d.runtime ?? "–")}</td><td>${esc(d.precision ?? "–")}</td><td>${esc(d.accelerator)}</td>
    <td>${fmt(d.p50_ms, 3)}</td><td>${fmt(d.p99_ms, 3)}</td><td>${pct(d.top1)}</td>
    <td>${esc((d.last_seen || "").replace("T", " ").slice(0, 19))}</td></tr>`).join("");
}

function renderLatency(rows) {
  const el = document.getElementById("latency-chart");
  const keys = [...new Set(rows.map((r) => `${r.device_id} ${r.release_name}@${r.release_version}`))].sort();
  const times = [...new Set(rows.map((r) => Date.parse(r.sent_at) / 1000))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const data = [times];
  const series = [{}];
  keys.forEach((k, i) => {
    const p99 = new Array(times.length).fill(null);
    const p50 = new Array(times.length).fill(null);
    rows.filter((r) => `${r.device_id} ${r.release_name}@${r.release_version}` === k).forEach((r) => {
      const j = index.get(Date.parse(r.sent_at) / 1000);
      p99[j] = r.p99_ms;
      p50[j] = r.p50_ms;
    });
    const color = COLORS[i % COLORS.length];
    data.push(p99, p50);
    series.push({label: `${k} p99`, stroke: color, width: 2, spanGaps: true, points: {show: true}},
                {label: `${k} p50`, stroke: color, width: 1, dash: [5, 4], spanGaps: true, points: {show: true}});
  });
  el.dataset.points = String(rows.length);
  el.dataset.series = String(keys.length);
  const key = keys.join("|");
  if (!rows.length) { el.textContent = "no benchmark reports yet"; chart = null; chartKey = ""; return; }
  if (chart && key === chartKey) { chart.setData(data); return; }
  if (chart) chart.destroy();
  el.textContent = "";
  chartKey = key;
  chart = new uPlot({width: Math.max(600, el.clientWidth - 20), height: 320,
                     scales: {x: {time: true}}, axes: [{}, {label: "ms"}], series}, data, el);
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
  try {
    const [health, fleet, telemetry, rollouts, events] = await Promise.all([
      get("/api/v1/health"), get("/api/v1/fleet"), get("/api/v1/telemetry?limit=5000"),
      get("/api/v1/rollouts"), get("/api/v1/events?limit=50")]);
    const h = document.getElementById("health");
    h.textContent = health.broker_connected ? "broker connected" : "broker disconnected";
    h.className = "badge " + (health.broker_connected ? "online" : "offline");
    renderFleet(fleet);
    renderLatency(telemetry);
    renderAccuracy(telemetry);
    renderRollouts(rollouts);
    renderEvents(events);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (err) {
    document.getElementById("health").textContent = String(err);
  }
}

refresh();
setInterval(refresh, 2000);
