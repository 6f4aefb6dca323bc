"""The one page the web server serves: HTML, CSS and script inline, nothing from outside.

Every string that came from the API or the source is put on the page with ``textContent``,
never as markup.  ``__NONCE__`` is replaced per answer by the nonce the
Content-Security-Policy allows, so no other script or style can run even if markup got in.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamer</title>
<link rel="icon" href="favicon.ico">
<style nonce="__NONCE__">
body { margin: 0; font: 14px system-ui, sans-serif; background: #111; color: #ddd; }
header { padding: 8px 12px; background: #222; display: flex; gap: 12px; align-items: baseline; }
header h1 { font-size: 16px; margin: 0; }
#alert { display: none; padding: 8px 12px; background: #a00; color: #fff; font-weight: bold; }
#alert.shown { display: block; }
main { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; }
#video { max-width: 100%; width: 960px; background: #000; display: block; }
section { min-width: 260px; flex: 1; }
h2 { font-size: 14px; margin: 12px 0 4px; color: #aaa; text-transform: uppercase; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: 2px 6px; text-align: left; border-bottom: 1px solid #333; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #f66; font-weight: bold; }
.ok { color: #6c6; }
.stale td { color: #888; text-decoration: line-through; }
#stale { color: #f66; font-weight: bold; text-transform: none; }
</style>
</head>
<body>
<header><h1 id="name">streamer</h1><span id="source"></span><span id="updated"></span></header>
<div id="alert" role="alert"></div>
<main>
<div><img id="video" alt="live video"></div>
<section>
<h2>Status</h2>
<table id="status"><tbody>
<tr><td>source</td><td id="source-state">-</td></tr>
<tr><td>API</td><td id="api-state">-</td></tr>
<tr><td>capture</td><td id="capture-fps" class="n">-</td></tr>
<tr><td>sent</td><td id="sent-per-s" class="n">-</td></tr>
<tr><td>results</td><td id="inference-fps" class="n">-</td></tr>
<tr><td>newest result</td><td id="result-age" class="n">-</td></tr>
<tr><td>uptime</td><td id="uptime" class="n">-</td></tr>
</tbody></table>
<h2>Counters</h2>
<table><tbody id="counters"></tbody></table>
<h2>Detections <span id="frame"></span> <span id="stale"></span></h2>
<table id="detections-table"><thead><tr><th>class</th><th>confidence</th></tr></thead>
<tbody id="detections"></tbody></table>
<h2>Per class</h2>
<table><tbody id="classes"></tbody></table>
</section>
</main>
<script nonce="__NONCE__">
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
let lastStatus = 0, connected = false, problems = [];
const STALE_AFTER_S = 3;  // as the preview's STALE band

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;  // text, never markup: class names come from outside
  if (cls) td.className = cls;
  row.appendChild(td);
}
function rows(body, pairs, numeric) {
  body.replaceChildren();
  for (const [a, b] of pairs) {
    const tr = document.createElement("tr");
    cell(tr, String(a));
    cell(tr, String(b), numeric ? "n" : "");
    body.appendChild(tr);
  }
}
function showAlert() {
  const all = connected ? problems : ["streamer is not reachable: retrying"].concat(problems);
  $("alert").textContent = all.join(" | ");
  $("alert").className = all.length ? "shown" : "";
}
function fmt(v, digits, unit) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits) + unit; }

function onStatus(s) {
  lastStatus = Date.now();
  connected = true;
  $("source").textContent = String(s.source);
  $("name").textContent = String(s.name);  // text, never markup: a name can come from outside
  document.title = String(s.name) + " - streamer";
  const src = String(s.source_state), api = String(s.api_state);
  $("source-state").textContent = src;
  $("source-state").className = src === "open" ? "ok" : "bad";
  $("api-state").textContent = api + (s.api_down_s !== null ? " for " + fmt(s.api_down_s, 0, " s") : "");
  $("api-state").className = api === "ok" ? "ok" : (api === "starting" ? "" : "bad");
  $("capture-fps").textContent = fmt(s.capture_fps, 1, " fps");
  $("sent-per-s").textContent = fmt(s.sent_per_s, 1, "/s");
  $("inference-fps").textContent = fmt(s.inference_fps, 1, "/s");
  $("result-age").textContent = fmt(s.last_result_age_s, 2, " s old");
  $("uptime").textContent = fmt(s.uptime_s, 0, " s");
  const c = s.counters || {};
  rows($("counters"), ["frames_read", "frames_dropped", "requests", "results", "published",
    "skipped_no_change", "skipped_budget", "api_transient_errors", "source_reconnects"]
    .map((k) => [k.replace(/_/g, " "), c[k] === undefined ? "-" : c[k]]), true);
  problems = [];
  if (src !== "open" && src !== "starting") problems.push("Source down: " + src);
  if (api === "down" || api === "failing") problems.push("API " + api);
  if (s.state !== "running") problems.push("streamer " + String(s.state));
  // The detections shown are the newest result's: in an outage say how old, and grey them out.
  const age = s.last_result_age_s;
  const stale = age !== null && age !== undefined && (age > STALE_AFTER_S || problems.length > 0);
  $("stale").textContent = stale ? "stale: " + fmt(age, age < 10 ? 1 : 0, " s") + " old" : "";
  $("detections-table").className = stale ? "stale" : "";
  showAlert();
}
function onDetections(d) {
  const preds = Array.isArray(d.predictions) ? d.predictions
    : Object.entries(d.predictions || {}).map(([k, v]) => ({class: k, confidence: v && v.confidence}));
  $("frame").textContent = "frame " + String(d.frame_id);
  rows($("detections"), preds.slice(0, 50).map((p) => [p["class"], fmt(p.confidence, 2, "")]), false);
  const counts = new Map();
  for (const p of preds) counts.set(String(p["class"]), (counts.get(String(p["class"])) || 0) + 1);
  rows($("classes"), [...counts.entries()].sort((a, b) => b[1] - a[1]), true);
}
function connect() {
  const events = new EventSource("api/events" + q);
  events.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  events.addEventListener("detections", (e) => onDetections(JSON.parse(e.data)));
  events.onopen = () => { connected = true; showAlert(); };
  events.onerror = () => { connected = false; showAlert(); };
}
function video() {
  $("video").src = "stream.mjpg" + q + (q ? "&" : "?") + "t=" + Date.now();
}
$("video").addEventListener("error", () => setTimeout(video, 2000));
setInterval(() => {
  const quiet = (Date.now() - lastStatus) / 1000;
  $("updated").textContent = lastStatus ? "updated " + quiet.toFixed(0) + " s ago" : "waiting for status";
  if (connected && lastStatus && quiet > 10) { connected = false; showAlert(); }
}, 1000);
connect();
video();
</script>
</body>
</html>
"""
