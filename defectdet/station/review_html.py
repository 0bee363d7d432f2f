"""The review view's HTML (served at ``/review`` by :mod:`.review_page`): no external files, no cookies.

The token is typed once (or taken from ``?token=``), kept in the tab's sessionStorage and sent in
an ``X-Defectdet-Token`` header. Drag on the picture to draw a box round a missed defect.
"""

REVIEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>defectdet review</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:8px 12px;background:#222;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
main{display:flex;gap:12px;padding:12px}
#list{width:300px;max-height:85vh;overflow:auto}
.item{padding:6px;margin-bottom:4px;background:#222;cursor:pointer;border-left:4px solid #555;font-size:13px}
.item.sel{background:#335}.item.ng{border-color:#e33}.item.near_miss{border-color:#e93}
.item.audit{border-color:#39e}
.done{opacity:.55}#view{flex:1}canvas{max-width:100%;border:1px solid #444;cursor:crosshair}
button{padding:8px 14px;margin:4px;font-size:15px}.boxes div{margin:3px 0}#msg{color:#fc6}
input,select{font-size:14px}a{color:#9cf}
</style></head><body>
<header><b>defectdet review</b><a href="/">line</a>
<label>token <input id="token" type="password" size="18"></label>
<label>who <input id="who" size="10" value="operator"></label>
<label><input id="pending" type="checkbox" checked> to do only</label>
<span id="count"></span><span id="msg"></span></header>
<main><div id="list"></div><div id="view"><div id="info">pick an item</div>
<canvas id="cv"></canvas><div class="boxes" id="boxes"></div>
<div><button id="defect">Defect confirmed</button><button id="ok">No defect (false reject)</button>
<button id="skip">Skip</button></div>
<div>Drag on the picture to draw a missed defect; pick or type its class.</div></div></main>
<script>
const q = new URLSearchParams(location.search);
const tok = document.getElementById('token'), who = document.getElementById('who');
tok.value = q.get('token') || sessionStorage.getItem('defectdet-token') || '';
who.value = localStorage.getItem('defectdet-who') || 'operator';
tok.onchange = () => sessionStorage.setItem('defectdet-token', tok.value);
who.onchange = () => localStorage.setItem('defectdet-who', who.value);
let items = [], names = [], cur = null, boxes = [], img = new Image(), drag = null;
const cv = document.getElementById('cv'), ctx = cv.getContext('2d');
const msg = t => document.getElementById('msg').textContent = t;
window.addEventListener('unhandledrejection', e => msg('error: ' + e.reason));
const withToken = u => !tok.value ? u :
  u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(tok.value);
function headers(json) {
  const h = {};
  if (tok.value) { h['X-Defectdet-Token'] = tok.value; h['Authorization'] = 'Bearer ' + tok.value; }
  if (json) h['Content-Type'] = 'application/json'; return h;
}
async function load() {
  const r = await fetch('/api/review/items', {headers: headers(false)});
  if (!r.ok) { msg('items: HTTP ' + r.status); return; }
  const d = await r.json(); items = d.items; names = d.names; render();
}
function render() {
  const only = document.getElementById('pending').checked, list = document.getElementById('list');
  list.innerHTML = '';
  const shown = items.filter(i => !only || !i.review);
  document.getElementById('count').textContent = shown.length + ' item(s)';
  for (const it of shown) {
    const d = document.createElement('div');
    d.className = 'item ' + it.kind + (it.review ? ' done' : '') + (cur && cur.id === it.id ? ' sel' : '');
    d.id = 'item-' + it.id;
    d.textContent = it.kind + ' #' + it.frame + ' ' + it.ts.slice(11, 19) + ' ' +
      it.detections.map(x => x.class_name + ' ' + x.confidence.toFixed(2)).join(', ') +
      (it.review ? ' [' + it.review.verdict + ']' : '');
    d.onclick = () => pick(it); list.appendChild(d);
  }
}
function pick(it) {
  cur = it; msg('');
  const src = it.review && it.review.verdict === 'defect' ? it.review.boxes :
    it.detections.map(x => ({class: x.class_name, xyxy: x.xyxy, origin: 'model',
      keep: it.defects.some(y => y.xyxy.join() === x.xyxy.join())}));
  boxes = src.map(b => Object.assign({keep: true}, b));
  document.getElementById('info').textContent = it.kind + ' frame ' + it.frame + ' ' + it.ts + ' model ' +
    it.model + ' run ' + it.run_id;
  img = new Image();
  img.onload = () => { cv.width = img.naturalWidth; cv.height = img.naturalHeight; draw(); };
  img.src = withToken('/review/img/' + encodeURIComponent(it.id)); render(); listBoxes();
}
function draw() {
  ctx.drawImage(img, 0, 0); ctx.lineWidth = Math.max(2, cv.width / 400); ctx.font = '16px sans-serif';
  for (const b of boxes.concat(drag ? [drag] : [])) {
    ctx.strokeStyle = !b.keep ? '#888' : b.origin === 'drawn' ? '#3cf' : '#f33';
    const [x1, y1, x2, y2] = b.xyxy; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = ctx.strokeStyle; ctx.fillText(b.class || '?', x1, Math.max(14, y1 - 4));
  }
}
function listBoxes() {
  const el = document.getElementById('boxes'); el.innerHTML = '';
  boxes.forEach((b, i) => {
    const row = document.createElement('div');
    const keep = document.createElement('input'); keep.type = 'checkbox'; keep.checked = b.keep;
    keep.onchange = () => { b.keep = keep.checked; draw(); };
    const cls = document.createElement('input'); cls.setAttribute('list', 'names'); cls.value = b.class || '';
    cls.className = 'cls'; cls.onchange = () => { b.class = cls.value.trim(); draw(); };
    row.append(keep, ' ' + b.origin + ' box ' + i + ' class ', cls); el.appendChild(row);
  });
  const dl = document.createElement('datalist'); dl.id = 'names';
  for (const n of names) { const o = document.createElement('option'); o.value = n; dl.appendChild(o); }
  el.appendChild(dl);
}
function at(e) {
  const r = cv.getBoundingClientRect();
  return [(e.clientX - r.left) * cv.width / r.width, (e.clientY - r.top) * cv.height / r.height];
}
cv.onmousedown = e => { if (!cur) return; const p = at(e); drag = {start: p, xyxy: [p[0], p[1], p[0], p[1]],
  origin: 'drawn', keep: true, class: names[0] || ''}; };
cv.onmousemove = e => { if (!drag) return; const p = at(e), s = drag.start;
  drag.xyxy = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])];
  draw(); };
cv.onmouseup = () => { if (!drag) return; const [x1, y1, x2, y2] = drag.xyxy;
  if (x2 - x1 >= 2 && y2 - y1 >= 2) { delete drag.start; boxes.push(drag); }
  drag = null; draw(); listBoxes(); };
async function send(verdict) {
  if (!cur) return;
  const kept = verdict === 'defect' ? boxes.filter(b => b.keep).map(b => ({class: b.class, xyxy: b.xyxy,
    origin: b.origin})) : [];
  const r = await fetch('/api/review/' + encodeURIComponent(cur.id), {method: 'POST', headers: headers(true),
    body: JSON.stringify({verdict: verdict, boxes: kept, who: who.value})});
  if (!r.ok) { msg('not saved: HTTP ' + r.status + ' ' + (await r.text())); return; }
  cur.review = (await r.json()).logged;
  const next = items.find(i => !i.review); render(); if (next) pick(next);
  msg('saved: ' + verdict);
}
document.getElementById('defect').onclick = () => send('defect');
document.getElementById('ok').onclick = () => send('ok');
document.getElementById('skip').onclick = () => send('skip');
document.getElementById('pending').onchange = render;
load(); setInterval(() => { if (!drag) load(); }, 5000);
</script></body></html>
"""
