// pirec console: state arrives over a WebSocket (pushed by pirec-web, docs/HTTP.md); commands go
// out as POSTs with the X-Pirec header. No libraries, nothing from the network but this server.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { previews: {}, status: null, prev: null, prevAt: 0, rates: {}, session: null, eventsKey: '', ws: null,
                retry: 500, connected: false, remux: [], remuxWatch: {} };

// The token, when the address carried one, is now a cookie (pirec-web set it): drop it from the
// address bar so it does not end up in bookmarks or screenshots.
if (location.search.includes('token=')) history.replaceState(null, '', location.pathname);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function say(text, ok) {
  const m = $('message');
  m.textContent = text || '';
  m.style.color = ok ? 'var(--ok)' : '';
}

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method === 'POST') {
    opts.headers['X-Pirec'] = '1';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  let j = null;
  try { j = await r.json(); } catch (e) { j = { reply: 'error', message: 'HTTP ' + r.status }; }
  if (!r.ok) throw new Error(j.message || 'HTTP ' + r.status);
  return j;
}

const fmtBytes = (b) => {
  if (b === undefined || b === null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + ' ' + u[i];
};
const fmtDur = (s) => {
  if (!isFinite(s)) return '—';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${s.toFixed(1)} s`;
};
const fmtTime = (ns) => new Date(Number(BigInt(ns) / 1000000n)).toLocaleTimeString();
const ms = (ns) => (ns / 1e6).toFixed(1) + ' ms';

// Rates from the difference between two pushes, per counter path ("cam0.frames_written").
function rate(key, value, now) {
  const r = state.rates[key];
  state.rates[key] = { value, at: now, per: r ? r.per : undefined };
  if (r && now > r.at && value >= r.value) state.rates[key].per = (value - r.value) / ((now - r.at) / 1000);
  return state.rates[key].per;
}

function dropsOf(c) {
  const parts = Object.entries(c).filter(([k, v]) => k.startsWith('drops_') && typeof v === 'number');
  return `${c.drops || 0}` + (parts.length ? ' (' + parts.map(([k, v]) => `${k.slice(6)} ${v}`).join(', ') + ')' : '');
}

function rows(dl, pairs) {
  for (const [k, v] of pairs) if (v !== undefined && v !== null && v !== '') dl.append(el('dt', {}, k), el('dd', {}, String(v)));
}

function perS(x) { return x === undefined ? '' : ` (${x.toFixed(1)}/s)`; }

function flatTile(name, m, dl, now) {
  const c = m.counters || {};
  if ('frames_written' in c) {
    rows(dl, [['frames', c.frames_written + perS(rate(name + '.frames', c.frames_written, now))],
              ['captured', c.frames_captured], ['drops', dropsOf(c)], ['device', c.device],
              ['encoder', c.encoder], ['capture p99', c.capture_p99_ns !== undefined ? ms(c.capture_p99_ns) : null],
              ['format', c.format ? `${c.format.width}x${c.format.height} ${c.format.fps} ${c.format.codec}` : null]]);
  } else if ('notes' in c) {
    rows(dl, [['notes', c.notes], ['drops', c.drops]]);
  }
  for (const [k, v] of Object.entries(c)) {
    if (v && typeof v === 'object' && 'samples' in v) {
      const lost = (v.lost || 0) + (v.dropped || 0);
      rows(dl, [[k, `${v.written} written${perS(rate(name + '.' + k, v.written, now))}, ${lost} lost/dropped` +
                    (v.playing ? '' : ', not playing')],
                [k + ' clock', v.offset_ns !== undefined ? `offset ${ms(v.offset_ns)}, drift ${(v.drift_ppb / 1000).toFixed(1)} ppm` : null]]);
    }
  }
  if ('bytes_written' in c) rows(dl, [['written', fmtBytes(c.bytes_written)]]);
}

function tile(name, m, now) {
  const rec = m.recorder_state || m.state;
  const cls = m.not_recording ? 'warn' : rec === 'recording' ? 'ok' : m.state === 'running' ? '' : 'bad';
  const dl = el('dl');
  flatTile(name, m, dl, now);
  const lag = m.looplag || {};
  rows(dl, [['crashes', m.crashes || null], ['loop lag', lag.max_ns !== undefined ? 'max ' + ms(lag.max_ns) : null],
            ['worst stall', lag.worst_stall ? `${ms(lag.worst_stall.busy_ns)} in ${lag.worst_stall.op}` : null]]);
  const t = el('div', { class: 'tile', 'data-module': name },
               el('h3', {}, name, el('span', { class: 'badge ' + cls }, rec), el('small', {}, m.kind)), dl);
  const err = (m.counters && m.counters.last_error) || m.last_error || m.not_recording;
  if (err) t.append(el('div', { class: 'err' }, String(err)));
  if (m.kind === 'camera' || m.kind === 'eyetracker') { // the eye tracker's: its scene video with the gaze
    const p = state.previews[name];
    const img = el('img', { alt: `${name} preview`, src: p && p.src ? p.src : '' });
    t.append(el('div', { class: 'preview' }, img, el('div', { class: 'err' }, p && p.error ? p.error : '')));
  }
  return t;
}

function totalBytes(st) {
  let sum = 0;
  for (const m of Object.values(st.modules || {})) {
    const c = m.counters || {};
    if (typeof c.bytes_written === 'number') sum += c.bytes_written;
    for (const v of Object.values(c)) if (v && typeof v.bytes_written === 'number') sum += v.bytes_written;
  }
  return sum;
}

function renderStatus(msg) {
  const st = msg.status, now = Date.now();
  state.status = st;
  const rec = st.state === 'recording';
  $('state').textContent = st.state + (st.trial ? ` · trial ${st.trial}` : '');
  $('state').className = 'badge ' + (rec ? 'ok' : '');
  $('session').textContent = st.session_dir ? st.session_dir.split('/').pop() + ` · ${fmtDur(st.elapsed_ns / 1e9)}` : 'no session';
  const tiles = $('tiles');
  tiles.replaceChildren(...Object.entries(st.modules || {}).map(([n, m]) => tile(n, m, now)));
  const bps = rec ? rate('total.bytes', totalBytes(st), now) : undefined;
  const left = bps ? msg.disk.free / bps : Infinity;
  $('disk').textContent = `disk free ${fmtBytes(msg.disk.free)} of ${fmtBytes(msg.disk.total)}` +
                          (rec && bps ? ` · ${fmtDur(left)} left at ${fmtBytes(bps)}/s` : '');
  $('disk').className = msg.disk.total && msg.disk.free / msg.disk.total < 0.05 ? 'badge bad' : '';
  const lag = st.looplag || {};
  $('host').textContent = `controller pid ${st.pid} · version ${st.version} · loop lag max ${ms(lag.max_ns || 0)}` +
                          (lag.worst_stall ? ` · worst stall ${ms(lag.worst_stall.busy_ns)} in ${lag.worst_stall.op}` : '') +
                          ` · errors ${st.errors || 0} · config ${st.config || '(built-in)'}`;
  $('start').disabled = rec;
  $('stop').disabled = !rec;
  $('note').disabled = !rec;
  renderRemux(st.remux);
  if (st.session_dir !== state.session) {
    state.session = st.session_dir;
    $('notes').replaceChildren();
    if (!st.session_dir) loadSessions();
  }
  const key = `${st.session_dir}|${st.trial}|${st.notes}|${st.errors}|${Math.floor(now / 10000)}`;
  if (st.session_dir && key !== state.eventsKey) {
    state.eventsKey = key;
    loadEvents(st.session_dir);
  }
}

// RFC 4180 rows (quotes, commas and newlines inside quotes).
function parseCsv(text) {
  const out = [];
  let row = [], f = '', q = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (q) {
      if (ch === '"' && text[i + 1] === '"') { f += '"'; i++; } else if (ch === '"') q = false; else f += ch;
    } else if (ch === '"') q = true;
    else if (ch === ',') { row.push(f); f = ''; }
    else if (ch === '\n') { row.push(f); out.push(row); row = []; f = ''; }
    else if (ch !== '\r') f += ch;
  }
  if (f || row.length) { row.push(f); out.push(row); }
  return out;
}

async function loadCsv(dir, file) {
  const r = await fetch(`/files/${encodeURIComponent(dir.split('/').pop())}/${file}`, { credentials: 'same-origin' });
  if (!r.ok) return [];
  const rows = parseCsv(await r.text());
  const head = rows.shift() || [];
  return rows.map((r) => Object.fromEntries(head.map((h, i) => [h, r[i]])));
}

async function loadEvents(dir) {
  const evs = await loadCsv(dir, 'events.csv');
  $('events').replaceChildren(...evs.slice(-300).reverse().map((e) =>
    el('li', {}, el('time', {}, e.wall_ns ? fmtTime(e.wall_ns) : ''), `${e.event} `, [e.module, e.detail].filter((x) => x).join(': '))));
  const notes = await loadCsv(dir, 'notes.csv');
  $('notes').replaceChildren(...notes.reverse().map((n) =>
    el('li', {}, el('time', {}, fmtTime(n.wall_ns)), `trial ${n.trial}: `, n.text)));
}

async function loadSessions() {
  try {
    const j = await api('GET', '/api/sessions');
    $('sessions').replaceChildren(...j.sessions.slice(0, 50).map((s) =>
      el('details', { 'data-session': s.name }, el('summary', {}, `${s.name} — ${fmtBytes(s.bytes)}, remux: ${s.remux}`),
         el('div', { class: 'remux' },
            el('button', { type: 'button', title: 'Run pirec-remux on this session (in the background, at low priority)' }, 'Remux'),
            el('progress', { max: 1, value: 0, hidden: '' }), el('span', { class: 'result' })),
         el('ul', {}, ...s.files.map((f) => el('li', {},
           el('a', { href: `/files/${encodeURIComponent(s.name)}/${f.path}`, download: '' }, f.path),
           ` ${fmtBytes(f.bytes)}`))))));
    for (const d of $('sessions').querySelectorAll('[data-session]'))
      d.querySelector('.remux button').addEventListener('click', () => remux(d.dataset.session));
    renderRemux(state.remux);
  } catch (e) {
    $('sessions').textContent = 'cannot list sessions: ' + e.message;
  }
}

// The remux button: the controller runs pirec-remux (pirec-web never writes a session); its
// progress and verdict come with every status push, under "remux".
async function remux(name) {
  const r = await command('remux', { session: name });
  if (r) state.remuxWatch[name] = true;
}

function renderRemux(list) {
  state.remux = list || [];
  const seen = {};
  for (const r of state.remux) {
    if (seen[r.session]) continue; // running ones come first, then the newest verdicts
    seen[r.session] = true;
    const box = document.querySelector(`#sessions [data-session="${CSS.escape(r.session)}"] .remux`);
    const ended = r.state === 'done' || r.state === 'failed';
    if (ended && state.remuxWatch[r.session]) {
      delete state.remuxWatch[r.session];
      loadSessions(); // its new files, and "remux: done"
    }
    if (!box) continue;
    const bar = box.querySelector('progress');
    bar.hidden = ended;
    bar.value = r.total_bytes ? r.done_bytes / r.total_bytes : 0;
    box.querySelector('button').disabled = !ended;
    box.querySelector('.result').textContent = ended ? `${r.state}: ${r.message || ''}`
      : `${r.state} ${r.total_bytes ? Math.floor((100 * r.done_bytes) / r.total_bytes) : 0}%`;
    box.querySelector('.result').className = 'result ' + (r.state === 'failed' ? 'bad' : ended ? 'ok' : '');
  }
}

async function command(cmd, body) {
  try {
    const r = await api('POST', '/api/' + cmd, body);
    const warn = r.not_recording ? ' — not recording: ' + Object.entries(r.not_recording).map(([k, v]) => `${k} (${v})`).join(', ') : '';
    say((r.reply === 'trial' ? `trial ${r.trial}` : r.trial ? `${r.reply}, trial ${r.trial}` : r.reply) + warn, !warn);
    return r;
  } catch (e) {
    say(`${cmd}: ${e.message}`);
    return null;
  }
}

async function start(ev) {
  if (ev) ev.preventDefault();
  const label = $('label').value.trim();
  const r = await command('start', label ? { label } : {});
  const who = [['participant', $('participant').value.trim()], ['condition', $('condition').value.trim()]]
    .filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`).join('; ');
  if (r && who) await command('note', { text: who });
}

async function sendNote(ev) {
  ev.preventDefault();
  const text = $('note').value;
  if (!text.trim()) return;
  const r = await command('note', { text });
  if (r) {
    $('note').value = '';
    $('notes').prepend(el('li', {}, el('time', {}, fmtTime(r.wall_ns)), text));
  }
}

// Previews only while the page is visible: pirec-web asks the cameras only while someone watches.
function watch() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ watch: !document.hidden }));
}
document.addEventListener('visibilitychange', watch);

function showPreview(msg) {
  const p = (state.previews[msg.module] = msg.reply === 'preview'
    ? { src: `data:${msg.type === 'preview' ? 'image/jpeg' : msg.type};base64,${msg.jpeg}` }
    : { error: 'no preview: ' + msg.message });
  const tile = document.querySelector(`[data-module="${CSS.escape(msg.module)}"] .preview`);
  if (!tile) return;
  if (p.src) tile.querySelector('img').src = p.src;
  tile.querySelector('.err').textContent = p.error || '';
}

function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/', 'pirec');
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 500;
    watch();
  };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === 'status' || msg.type === 'controller') {
      $('conn').textContent = msg.connected ? 'connected' : 'controller not running';
      $('conn').className = 'badge ' + (msg.connected ? 'ok' : 'bad');
    }
    if (msg.type === 'status') renderStatus(msg);
    if (msg.type === 'preview') showPreview(msg);
  };
  ws.onclose = () => {
    $('conn').textContent = 'console disconnected, retrying…';
    $('conn').className = 'badge bad';
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 5000);
  };
}

$('startform').addEventListener('submit', start);
$('stop').addEventListener('click', async () => { await command('stop'); loadSessions(); });
$('trial').addEventListener('click', () => command('trial', $('label').value.trim() ? { label: $('label').value.trim() } : {}));
$('reload').addEventListener('click', () => command('reload'));
$('noteform').addEventListener('submit', sendNote);
$('refresh').addEventListener('click', loadSessions);
document.addEventListener('keydown', (e) => {
  if (!e.altKey) return;
  const keys = { s: () => start(), x: () => $('stop').click(), t: () => $('trial').click(),
                 r: () => $('reload').click(), n: () => $('note').focus() };
  const f = keys[e.key.toLowerCase()];
  if (f) { e.preventDefault(); f(); }
});
$('logout').addEventListener('click', async () => { await api('POST', '/api/logout').catch(() => {}); location.reload(); });
$('loginform').addEventListener('submit', login);

// Password login ([web] password_hash, docs/HTTP.md): the page asks first whether this browser
// must log in; the session cookie pirec-web sets then carries every request and the WebSocket.
async function login(ev) {
  ev.preventDefault();
  try {
    await api('POST', '/api/login', { password: $('password').value });
    $('password').value = '';
    begin();
  } catch (e) {
    $('loginmsg').textContent = e.message;
  }
}

async function begin() {
  const a = await api('GET', '/api/auth').catch(() => ({ needed: false, authorized: true }));
  const ask = a.needed && !a.authorized && a.password;
  $('loginform').hidden = !ask;
  document.querySelector('main').hidden = ask;
  $('logout').hidden = !(a.password && a.authorized);
  if (ask) {
    $('password').focus();
    return;
  }
  if (a.needed && !a.authorized) { // the token only: it comes in the address pirec-web --url prints
    $('conn').textContent = 'not authorized: open the address that `pirec-web --url` prints';
    return;
  }
  connect();
  loadSessions();
}
begin();
