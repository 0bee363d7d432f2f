"""The operator page's HTML, CSS and script (one self-contained document; no files to install, no CDN)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>defectdet station</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#111418;color:#e6e6e6}
 header{display:flex;gap:1.5em;align-items:baseline;padding:.6em 1em;background:#1b2027;flex-wrap:wrap}
 header h1{font-size:18px;margin:0} header span{color:#9aa4b0} header a{color:#f2c94c}
 main{display:grid;grid-template-columns:minmax(0,3fr) minmax(260px,1fr);gap:1em;padding:1em}
 .tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:.6em;margin-bottom:.8em}
 .tile{background:#1b2027;border-radius:6px;padding:.5em .8em} .tile b{display:block;font-size:30px}
 .ok b{color:#4cc86a} .ng b{color:#ef5350} .yield b{color:#f2c94c}
 #stream{display:block;width:100%;height:52vh;object-fit:contain;background:#000;border-radius:6px}
 table{border-collapse:collapse;width:100%;margin-bottom:1em}
 td,th{padding:2px 6px;text-align:left;border-bottom:1px solid #2a313a}
 h2{font-size:14px;margin:.6em 0 .3em;color:#9aa4b0;text-transform:uppercase;letter-spacing:.05em}
 #ng{display:grid;grid-template-columns:repeat(6,1fr);gap:.5em} #ng figure{margin:0}
 #ng img{width:100%;border-radius:4px}
 #ng figcaption{font-size:12px;color:#9aa4b0} .last-NG{color:#ef5350} .last-OK{color:#4cc86a}
 #alarm{display:none;background:#b71c1c;color:#fff;font-weight:bold;padding:.6em 1em;font-size:16px}
</style></head><body>
<header><h1>defectdet station</h1><span>model <code id="model">-</code></span>
<span>source <code id="source">-</code></span>
<span>last <b id="last">-</b></span><span>ready <b id="ready">-</b></span><!--review--></header>
<div id="alarm" role="alert"></div>
<main><section>
 <div class="tiles"><div class="tile"><span>frames</span><b id="frames">0</b></div>
  <div class="tile ok"><span>OK</span><b id="ok">0</b></div>
  <div class="tile ng"><span>NG</span><b id="ng-count">0</b></div>
  <div class="tile yield"><span>yield</span><b id="yield">-</b></div></div>
 <img id="stream" alt="live annotated stream">
 <h2>last NG parts</h2><div id="ng"></div>
</section><aside>
 <h2>health</h2><table id="health"></table>
 <h2>NG frames per class</h2><table id="classes"></table>
 <h2>thresholds in force</h2><table id="thresholds"></table>
</aside></main>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
document.getElementById("stream").src = "stream.mjpg" + q;
const $ = id => document.getElementById(id);
if ($("review-link")) $("review-link").href = "review" + q;
function rows(el, pairs) {
  el.replaceChildren(...pairs.map(([k, v]) => { const tr = document.createElement("tr");
    for (const x of [k, v]) { const td = document.createElement("td"); td.textContent = x; tr.append(td); }
    return tr; }));
}
const fmt = v => v === null || v === undefined ? "-" : String(v);
let shown = "";
async function tick() {
  let s;
  try { s = await (await fetch("api/state" + q, {cache: "no-store"})).json(); }
  catch (e) { $("last").textContent = "offline"; return; }
  $("frames").textContent = s.frames; $("ok").textContent = s.ok; $("ng-count").textContent = s.ng;
  $("yield").textContent = s.yield === null ? "-" : (100 * s.yield).toFixed(1) + " %";
  $("model").textContent = s.model; $("source").textContent = s.source;
  $("last").textContent = s.last.result
    ? s.last.result + (s.last.class ? " " + s.last.class + " " + s.last.confidence.toFixed(2) : "") : "-";
  $("last").className = "last-" + (s.last.result || "");
  const h = s.health, sf = s.safety;
  $("ready").textContent = sf.ready ? "yes" : "NO";
  const alarm = sf.halted ? "INSPECTION STOPPED: " + sf.halt_reason + ". " : "";
  $("alarm").textContent = sf.alarm ? alarm + sf.missed_rejects +
    " MISSED REJECT(S): NG parts may be in the OK bin (" +
    sf.alarm_reason + ")" : "";
  $("alarm").style.display = sf.alarm ? "block" : "none";
  const links = Object.entries(sf.plc_links).map(([k, v]) => k + " " + (v ? "up" : "DOWN")).join(", ") || "-";
  rows($("health"), [["ready", sf.ready ? "yes" : "no"], ["missed rejects", sf.missed_rejects],
    ["PLC link", links],
    ["frames/s", fmt(s.fps)], ["latency p50 / p99 ms", fmt(s.latency_p50_ms) + " / " + fmt(s.latency_p99_ms)],
    ["dropped frames", h.dropped], ["reconnects", h.reconnects], ["sink errors", h.sink_errors],
    ["detector errors", h.detector_errors], ["stream clients", h.stream_clients]]);
  rows($("classes"), Object.entries(s.per_class).sort((a, b) => b[1] - a[1]));
  rows($("thresholds"), [["default conf", fmt(s.conf)], ...Object.entries(s.thresholds)]);
  const ids = s.ng_parts.map(p => p.id).join(",");
  if (ids !== shown) {
    shown = ids;
    $("ng").replaceChildren(...s.ng_parts.map(p => { const f = document.createElement("figure");
      const img = document.createElement("img"); img.src = "ng/" + p.id + ".jpg" + q;
      img.alt = "NG part " + p.id;
      const c = document.createElement("figcaption");
      c.textContent = new Date(p.ts * 1000).toLocaleTimeString() + " #" + p.frame + " " + p.class + " "
        + p.confidence.toFixed(2);
      f.append(img, c); return f; }));
  }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""

# Put in place of ``<!--review-->`` when the page serves the review view (review.enabled: /review).
REVIEW_LINK = '<a id="review-link" href="review">review queue</a>'
