// streamkeeper dashboard. Plain JavaScript, no build step: routes live
// after '#', so every view is a bookmarkable URL; everything reaches the
// screen through textContent / createElement (never as markup), so names
// and values are always text; charts are SVG drawn here.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const state = { config: null, page: null, view: null, cur: { n: '', k: '' }, events: null, eventsUrl: null, route: null };

// ---- small DOM helpers ---------------------------------------------------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else if (k === 'onclick') e.addEventListener('click', v);
    else if (k === 'onsubmit') e.addEventListener('submit', v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
// Replaces the children of `v`, skipping null/false (replaceChildren would show them as text).
function fill(v, ...kids) {
  v.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = String(v); else e.setAttribute(k, String(v));
  }
  return e;
}
function td(v, cls) { return el('td', { class: cls || null }, v === null || v === undefined ? '—' : v); }
function num(v) { return td(v === null || v === undefined ? 'n/a' : v.toLocaleString('en'), 'num'); }
function link(text, route, params) { return el('a', { href: hash(route, params) }, text); }
function hash(route, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return '#/' + route + (s ? '?' + s : '');
}
function ms(v) {
  if (v === null || v === undefined) return '—';
  if (v === 0) return '0';
  if (v < 1000) return v + ' ms';
  const s = v / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' m ' + Math.floor(s % 60) + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' m';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}
function bytes(v) {
  if (v === null || v === undefined) return 'n/a';
  if (v < 1024) return v + ' B';
  if (v < 1048576) return (v / 1024).toFixed(1) + ' KiB';
  return (v / 1048576).toFixed(1) + ' MiB';
}
function when(t) { return t ? new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—'; }
function idTime(id) { const m = /^(\d+)-/.exec(id || ''); return m ? when(Number(m[1])) : ''; }

// ---- API -----------------------------------------------------------------
async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + ' ' + r.statusText));
  return body;
}
async function act(action, body) {
  const r = await fetch('/api/actions/' + action, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': state.config.csrf },
    body: JSON.stringify(body),
  });
  let out = null;
  try { out = await r.json(); } catch (_) { out = null; }
  if (!r.ok) throw new Error((out && out.error) || (r.status + ' ' + r.statusText));
  return out;
}
function notice(text, error) {
  const n = document.getElementById('notice');
  n.textContent = text;
  n.className = error ? 'notice error' : 'notice';
  n.hidden = false;
}
function banner(text) {
  const b = document.getElementById('banner');
  b.textContent = text || '';
  b.hidden = !text;
  document.getElementById('live').className = text ? 'live off' : 'live on';
}

// A confirmation in a <dialog>: resolves true when confirmed.
function confirmAction(text, detail) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-detail').textContent = detail || '';
  document.getElementById('confirm-detail').hidden = !detail;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
  });
}
// A button that asks first, then runs the action and reloads the view.
function actionButton(label, question, detail, action, body, cls) {
  if (!state.config || !state.config.allow_actions) return null;
  return el('button', {
    class: cls || 'danger', 'data-action': action,
    onclick: async (ev) => {
      ev.preventDefault();
      const d = typeof detail === 'function' ? await detail() : detail;
      if (d === false) return;
      if (!(await confirmAction(question, d))) return;
      try {
        const out = await act(action, typeof body === 'function' ? body() : body);
        notice(label + ': done — ' + JSON.stringify(out));
      } catch (e) { notice(label + ' failed: ' + e.message, true); }
      render();
    },
  }, label);
}

// ---- charts ----------------------------------------------------------------
// A line chart of several series over time: series = [{name, points: [[t, v]]}].
function chart(series, unit) {
  const W = 720, H = 160, L = 48, B = 18;
  const s = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img' });
  const all = series.flatMap((x) => x.points);
  if (all.length < 2) {
    s.append(svg('text', { x: 10, y: 20, text: 'not enough history yet (one sample every 10 s)' }));
    return s;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const max = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => L + (W - L - 6) * (t1 === t0 ? 0 : (t - t0) / (t1 - t0));
  const y = (v) => H - B - (H - B - 8) * v / max;
  for (const f of [0, 0.5, 1]) {
    s.append(svg('line', { x1: L, x2: W - 6, y1: y(max * f), y2: y(max * f) }));
    s.append(svg('text', { x: 2, y: y(max * f) + 3, text: (unit === 'ms' ? ms(Math.round(max * f)) : Math.round(max * f).toLocaleString('en')) }));
  }
  s.append(svg('text', { x: L, y: H - 4, text: when(t0) }));
  s.append(svg('text', { x: W - 130, y: H - 4, text: when(t1) }));
  series.forEach((ser, i) => {
    if (ser.points.length < 1) return;
    s.append(svg('polyline', { class: 's' + (i % 4), points: ser.points.map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ') }));
  });
  return s;
}
function legend(series) {
  return el('div', { class: 'legend' }, series.map((ser, i) => el('span', { class: 's' + (i % 4) }, '— ' + ser.name)));
}
// Per (stream, group) outstanding from the history samples.

// ---- the stream on screen: addressed by its raw key, named for people ------
// `k` is the raw key in base64url (two names that display alike never mix);
// `n` (`s` in the URL) is only for showing. The API gets both: `key` wins.
function sp(extra) { return Object.assign({ s: state.cur.n, k: state.cur.k }, extra); }
function sqo(extra) { const o = Object.assign({ stream: state.cur.n }, extra); if (state.cur.k) o.key = state.cur.k; return o; }
function sq() { return new URLSearchParams(sqo({})).toString(); }
function qk(extra) { return state.cur.k ? Object.assign({ key: state.cur.k }, extra) : Object.assign({ stream: state.cur.n }, extra); }
function sb(extra) { const o = Object.assign({ stream: state.cur.n }, extra); if (state.cur.k) o.key = state.cur.k; return o; }
function streamLink(text, row, extra) { return link(text, 'stream', Object.assign({ s: row.name, k: row.key }, extra)); }

// ---- overview: summary, then one page of rows (filtered, sorted, paged on the server) ----
function healthClass(h) { return 'h-' + (h || 'ok'); }
function sparkline(values) {
  const s = svg('svg', { class: 'spark', viewBox: '0 0 90 22', role: 'img' });
  if (!values || values.length < 2) return s;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * 90 / (values.length - 1)).toFixed(1) + ',' + (21 - v * 20 / max).toFixed(1));
  s.append(svg('polyline', { points: pts.join(' ') }));
  s.append(svg('title', { text: 'outstanding, last ' + values.length + ' samples: ' + values.join(' ') }));
  return s;
}
function rate(v) { return v === null || v === undefined ? '—' : (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString('en')); }
const VIEW_KEYS = ['q', 'sort', 'dir', 'health', 'page', 'shards_of'];
function viewParams(p) {
  const o = {};
  for (const k of VIEW_KEYS) { const v = p.get(k); if (v) o[k] = v; }
  return o;
}
function go(params) { location.hash = hash('', params); }

// The rows of one stream: a <tbody> of its own, so a change replaces only it.
function streamBody(st, view) {
  const body = el('tbody', { 'data-key': st.key, 'data-stream': st.name });
  const n = Math.max(1, st.groups.length);
  const label = st.shards
    ? [st.name, ' ', link(st.shards + ' shards', '', Object.assign({}, view, { shards_of: st.key, page: null }))]
    : [st.shard_of ? el('span', { class: 'muted', title: 'a shard of ' + st.shard_of }, '↳ ') : null, streamLink(st.name, st)];
  const name = el('td', { class: 'name' + (st.shard_of ? ' shard' : ''), rowspan: n, title: st.name }, label);
  if (st.error) {
    const dl = st.dead_letters ? [' · ', streamLink(st.dead_letters + ' dead letter(s)', st, { tab: 'dlq' })] : [];
    body.append(el('tr', { class: 'first' }, name, el('td', { class: 'err', colspan: 12 }, st.error, dl)));
    return body;
  }
  const streamCells = [name, el('td', { class: 'num len hide-narrow', rowspan: n }, st.length.toLocaleString('en')),
    el('td', { class: 'num hide-narrow', rowspan: n }, bytes(st.memory_bytes)),
    el('td', { class: 'num hide-narrow', rowspan: n }, rate(st.rate_in)),
    el('td', { class: 'num' + (st.dead_letters ? ' h-bad' : ''), rowspan: n }, st.dead_letters && !st.shards ? streamLink(String(st.dead_letters), st, { tab: 'dlq' }) : String(st.dead_letters))];
  if (!st.groups.length) {
    body.append(el('tr', { class: 'first' }, streamCells, el('td', { class: 'muted', colspan: 8 }, '(no group)')));
    return body;
  }
  st.groups.forEach((g, i) => {
    const cells = [
      el('td', { class: 'name', title: g.name }, st.shards ? g.name : streamLink(g.name, st, { tab: 'groups' })),
      el('td', { class: 'num lag ' + healthClass(g.health) }, g.outstanding.toLocaleString('en')),
      el('td', { class: 'num tlag ' + healthClass(g.health), 'data-since': g.lag_since_ms || null }, ms(g.time_lag_ms)),
      el('td', { class: 'num hide-narrow' }, g.pending.toLocaleString('en')),
      el('td', { class: 'num hide-narrow' }, g.undelivered.toLocaleString('en')),
      el('td', { class: 'num hide-narrow' }, rate(g.rate_out)),
      el('td', { class: 'hide-narrow' }, sparkline(g.trend)),
      el('td', { class: 'num hide-narrow' }, String(g.consumers), g.dead_consumers ? el('span', { class: 'dead' }, ' (' + g.dead_consumers + ' dead)') : null),
    ];
    body.append(el('tr', { class: i === 0 ? 'first' : null, 'data-group': g.name }, i === 0 ? streamCells : [], cells));
  });
  return body;
}

function sortHead(label, key, view, cls) {
  const cur = view.sort || 'name';
  const desc = view.dir ? view.dir === 'desc' : cur !== 'name';
  const on = cur === key;
  const next = on ? (desc ? 'asc' : 'desc') : (key === 'name' ? 'asc' : 'desc');
  return el('th', { class: cls || null, 'aria-sort': on ? (desc ? 'descending' : 'ascending') : null },
    link(label + (on ? (desc ? ' ▼' : ' ▲') : ''), '', Object.assign({}, view, { sort: key, dir: next, page: null })));
}

function overviewTable(page, view) {
  const head = el('tr', {},
    sortHead('stream', 'name', view), sortHead('length', 'length', view, 'num hide-narrow'), el('th', { class: 'num hide-narrow' }, 'memory'),
    sortHead('in/s', 'rate', view, 'num hide-narrow'), sortHead('dead letters', 'dlq', view, 'num'), el('th', {}, 'group'),
    sortHead('lag', 'lag', view, 'num'), sortHead('lag (time)', 'time_lag', view, 'num'),
    el('th', { class: 'num hide-narrow' }, 'pending'), el('th', { class: 'num hide-narrow' }, 'undelivered'),
    el('th', { class: 'num hide-narrow' }, 'out/s'), el('th', { class: 'hide-narrow' }, 'trend'), el('th', { class: 'num hide-narrow' }, 'consumers'));
  return el('div', { class: 'scroll' }, el('table', { id: 'overview' }, el('thead', {}, head), page.streams.map((st) => streamBody(st, view))));
}

function summaryBlock(sum) {
  const card = (label, value, cls, id) => el('div', { class: 'card ' + (cls || ''), id }, el('div', { class: 'big' }, value), el('div', { class: 'muted' }, label));
  const byHealth = (c) => [c.bad ? el('span', { class: 'h-bad' }, c.bad + ' red') : null, c.warn ? el('span', { class: 'h-warn' }, ' ' + c.warn + ' amber') : null, ' ' + c.ok + ' ok', c.error ? el('span', { class: 'err' }, ' · ' + c.error + ' unreadable') : null];
  const streams = sum.streams.ok + sum.streams.warn + sum.streams.bad + sum.streams.error;
  const groups = sum.groups.ok + sum.groups.warn + sum.groups.bad;
  const worst = sum.worst.length ? el('div', { class: 'scroll' }, el('table', { id: 'worst' },
    el('thead', {}, el('tr', {}, el('th', {}, 'worst groups'), el('th', {}, ''), el('th', { class: 'num' }, 'lag'), el('th', { class: 'num' }, 'lag (time)'))),
    el('tbody', {}, sum.worst.map((w) => el('tr', {}, el('td', { class: 'name' }, link(w.stream, 'stream', { s: w.stream, k: w.key, tab: 'groups' })), td(w.group, 'name'),
      el('td', { class: 'num ' + healthClass(w.health) }, w.outstanding.toLocaleString('en')), el('td', { class: 'num ' + healthClass(w.health), 'data-since': w.lag_since_ms || null }, ms(w.time_lag_ms))))))) : null;
  return el('section', { id: 'summary' },
    el('div', { class: 'cards' },
      card('streams', [streams.toLocaleString('en'), el('div', { class: 'small' }, byHealth(sum.streams))], sum.streams.bad ? 'bad' : ''),
      card('groups', [groups.toLocaleString('en'), el('div', { class: 'small' }, byHealth(sum.groups))], sum.groups.bad ? 'bad' : ''),
      card('total lag (entries)', sum.total_lag.toLocaleString('en'), '', 'total-lag'),
      card('dead letters', sum.total_dead_letters.toLocaleString('en'), sum.total_dead_letters ? 'bad' : '', 'total-dlq')),
    worst);
}

function pager(page, view) {
  const at = (n) => link(String(n), '', Object.assign({}, view, { page: n }));
  return el('p', { class: 'bar', id: 'pager' },
    page.page > 1 ? link('← previous', '', Object.assign({}, view, { page: page.page - 1 })) : null,
    el('span', { class: 'muted' }, 'page ' + page.page + ' of ' + page.pages + ' · ' + page.matching.toLocaleString('en') + ' stream(s) match · ' + page.per + ' a page'),
    page.page > 2 ? at(1) : null,
    page.page < page.pages ? link('next →', '', Object.assign({}, view, { page: page.page + 1 })) : null,
    page.page < page.pages - 1 ? at(page.pages) : null);
}

// Draws what changes with the data (summary, table, pager) into `#ov-data`.
function drawOverview(box) {
  const page = state.page;
  if (!box || !page) return;
  const view = state.view || {};
  const c = state.config;
  const limits = [];
  if (c.max_lag !== null) limits.push('lag > ' + c.max_lag.toLocaleString('en') + ' entries');
  if (c.max_time_lag_ms !== null) limits.push('lag > ' + ms(c.max_time_lag_ms));
  fill(box, summaryBlock(page.summary),
    el('p', { class: 'muted', id: 'ov-info' }, (limits.length ? 'red when ' + limits.join(' or ') : 'no thresholds (serve --max-lag / --max-time-lag)') + ' · collected in ' + page.took_ms + ' ms'),
    page.streams.length ? overviewTable(page, view) : el('p', {}, view.q || view.health ? 'No stream matches.' : 'No streams yet.'),
    page.pages > 1 ? pager(page, view) : null);
}

async function viewOverview(v, p) {
  const view = viewParams(p);
  state.view = view;
  state.page = await api('/api/overview?' + new URLSearchParams(view));
  clock(state.page.at_ms);
  const q = el('input', { name: 'q', value: view.q || '', placeholder: 'stream or group name', size: 24, id: 'filter', type: 'search' });
  const health = el('select', { name: 'health', id: 'health' }, [['', 'any health'], ['bad', 'red'], ['warn', 'amber'], ['ok', 'ok'], ['error', 'unreadable']].map(([k, label]) => el('option', { value: k, selected: (view.health || '') === k }, label)));
  const sort = el('select', { name: 'sort', id: 'sort' }, [['name', 'name'], ['lag', 'lag'], ['time_lag', 'lag (time)'], ['dlq', 'dead letters'], ['rate', 'rate in'], ['length', 'length']].map(([k, label]) => el('option', { value: k, selected: (view.sort || 'name') === k }, 'sort by ' + label)));
  const form = el('form', { class: 'bar', id: 'view-form', onsubmit: (ev) => {
    ev.preventDefault();
    go(Object.assign({}, view, { q: q.value.trim(), health: health.value, sort: sort.value, dir: null, page: null }));
  } }, el('label', {}, 'Filter ', q), health, sort, el('button', { type: 'submit' }, 'Show'));
  health.addEventListener('change', () => form.requestSubmit());
  sort.addEventListener('change', () => form.requestSubmit());
  const title = view.shards_of && state.page.streams[0] ? ['Shards of ', state.page.streams[0].name, ' ', link('(all streams)', '', {})] : ['Streams'];
  const box = el('div', { id: 'ov-data' });
  drawOverview(box);
  fill(v, el('h1', {}, title), form, box);
}

// A `changes` event: only the rows in view that changed, as {row, changes}.
function applyChanges(d) {
  const page = state.page;
  if (!page) return;
  clock(d.at_ms);
  if (d.summary) page.summary = d.summary;
  page.at_ms = d.at_ms; page.took_ms = d.took_ms;
  const r = state.route || route();
  for (const ch of d.rows) {
    const i = page.streams.findIndex((x) => x.key === ch.row);
    if (i < 0) continue;
    Object.assign(page.streams[i], ch.changes);
    if (r.path !== '') continue;
    const old = document.querySelector('#overview tbody[data-key="' + CSS.escape(ch.row) + '"]');
    if (old) old.replaceWith(streamBody(page.streams[i], state.view || {}));
  }
  if (r.path === '') {
    if (d.summary) { const s = document.getElementById('summary'); if (s) s.replaceWith(summaryBlock(page.summary)); }
    const info = document.getElementById('ov-info');
    if (info) info.textContent = info.textContent.replace(/collected in \d+ ms/, 'collected in ' + page.took_ms + ' ms');
  } else if (d.rows.length) {
    render();
  }
  document.body.dataset.updated = String(Date.now());
}

function tabs(s, active) {
  const t = [['entries', 'Entries'], ['groups', 'Groups & consumers'], ['dlq', 'Dead letters'], ['janitor', 'Janitor'], ['charts', 'Charts']];
  return el('div', { class: 'tabs' }, t.map(([t2, label]) => el('a', { href: hash('stream', sp({ tab: t2 })), class: t2 === active ? 'active' : null }, label)));
}

async function viewStream(v, p) {
  const s = p.get('s') || '';
  state.cur = { n: s, k: p.get('k') || '' };
  const tab = p.get('tab') || 'entries';
  const views = { entries: tabEntries, groups: tabGroups, dlq: tabDlq, janitor: tabJanitor, charts: tabCharts };
  const body = el('div');
  fill(v, el('h1', {}, s), tabs(s, tab), body);
  await (views[tab] || tabEntries)(body, s, p);
}

async function tabEntries(v, s, p) {
  const before = p.get('before') || '', q = p.get('q') || '';
  const qs = new URLSearchParams(sqo({ count: '50' }));
  if (before) qs.set('before', before);
  if (q) qs.set('q', q);
  const page = await api('/api/stream?' + qs);
  const filter = el('input', { name: 'q', value: q, placeholder: 'field=value or text', size: 24 });
  const from = el('input', { name: 'before', value: before, placeholder: 'before ID, or 2024-05-01T10:00', size: 24 });
  const form = el('form', { class: 'bar', onsubmit: (ev) => {
    ev.preventDefault();
    let b = from.value.trim();
    if (b && !/^\d+(-\d+)?$/.test(b)) { const t = Date.parse(b); if (!isNaN(t)) b = String(t); }
    location.hash = hash('stream', sp({ q: filter.value.trim(), before: b }));
  } }, el('label', {}, 'Filter ', filter), el('label', {}, 'From ', from), el('button', { type: 'submit' }, 'Show'));
  const rows = page.entries.map((e) => el('tr', { 'data-id': e.id },
    el('td', { class: 'num' }, link(e.id, 'entry', sp({ id: e.id }))),
    el('td', { class: 'hide-narrow muted' }, idTime(e.id)),
    el('td', { class: 'name' }, e.fields.map(([k, val]) => el('div', {}, el('b', {}, k), ' = ', val)))));
  const info = page.filtered
    ? 'scanned ' + page.scanned.toLocaleString('en') + ' of ' + page.length.toLocaleString('en') + ' entries (cap ' + page.cap.toLocaleString('en') + '), ' + page.entries.length + ' match'
    : page.length.toLocaleString('en') + ' entries, newest first';
  fill(v, form, el('p', { class: 'muted', id: 'scan-info' }, info),
    el('div', { class: 'scroll' }, el('table', { id: 'entries' }, el('thead', {}, el('tr', {}, el('th', {}, 'id'), el('th', { class: 'hide-narrow' }, 'time'), el('th', {}, 'fields'))), el('tbody', {}, rows))),
    page.next_before ? el('p', {}, link('Older →', 'stream', sp({ q, before: page.next_before }))) : null);
}

async function viewEntry(v, p) {
  const s = p.get('s') || '', id = p.get('id'), fmt = p.get('as') || 'text';
  state.cur = { n: s, k: p.get('k') || '' };
  const e = await api('/api/entry?' + new URLSearchParams(sqo({ id })));
  let shown;
  const cut = (f) => f.truncated ? '\n… (' + f.bytes.toLocaleString('en') + ' bytes; the first ' + (f.hex.length / 2).toLocaleString('en') + ' shown)' : '';
  if (fmt === 'json') shown = e.wire === null ? 'This entry is ' + e.bytes.toLocaleString('en') + ' bytes: too large to show as JSON here (read it with streamkeeper dump).' : JSON.stringify(e.data !== null ? e.data : e.wire, null, 2);
  else if (fmt === 'hex') shown = e.fields.map((f) => f.name + ':\n' + (f.hex.match(/.{1,32}/g) || ['']).map((l) => l.replace(/(..)/g, '$1 ').trim()).join('\n') + cut(f)).join('\n\n');
  else shown = e.fields.map((f) => f.name + ' = ' + f.text + cut(f)).join('\n');
  const formats = el('div', { class: 'tabs' }, ['text', 'json', 'hex'].map((f) => el('a', { href: hash('entry', sp({ id, as: f })), class: f === fmt ? 'active' : null }, f.toUpperCase())));
  const groups = e.groups.map((g) => el('tr', {}, td(g.group, 'name'), td(g.state), td(g.consumer), td(g.idle_ms === null ? null : ms(g.idle_ms), 'num'), td(g.deliveries, 'num')));
  fill(v, el('h1', {}, link(s, 'stream', sp({})), ' / ', e.id), el('p', { class: 'muted' }, idTime(e.id)), formats, el('pre', { id: 'entry-body' }, shown),
    el('h2', {}, 'Per group'),
    el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'group'), el('th', {}, 'state'), el('th', {}, 'owner'), el('th', { class: 'num' }, 'idle'), el('th', { class: 'num' }, 'deliveries'))), el('tbody', {}, groups))));
}

async function tabGroups(v, s) {
  const g = await api('/api/groups?' + sq());
  const parts = [el('p', { class: 'muted' }, g.length.toLocaleString('en') + ' entries, last ' + (g.last_id || '—') + ' · a consumer idle over ' + ms(g.dead_after_ms) + ' while holding entries is flagged dead')];
  if (!g.groups.length) parts.push(el('p', {}, 'No consumer group.'));
  for (const gr of g.groups) {
    const reset = state.config.allow_actions ? (() => {
      const to = el('input', { placeholder: 'ID, 0 or a time', size: 18, name: 'to' });
      const target = () => { let t = to.value.trim(); if (t && !/^\d+(-\d+)?$/.test(t)) { const ms2 = Date.parse(t); if (!isNaN(ms2)) t = String(ms2); } return t; };
      const btn = actionButton('Reset group', 'Move the last-delivered ID of ' + gr.group + '?',
        async () => {
          try {
            const p = await act('group-reset', sb({ group: gr.group, gkey: gr.key, to: target(), dry_run: true }));
            return 'Preview: from ' + p.from + ' to ' + p.to + ': ' + p.redelivered + ' entries delivered again, ' + p.skipped + ' skipped.';
          } catch (e) { notice('Reset preview failed: ' + e.message, true); return false; }
        },
        'group-reset', () => sb({ group: gr.group, gkey: gr.key, to: target(), dry_run: false }));
      return el('div', { class: 'bar' }, el('label', {}, 'Reset to ', to), btn);
    })() : null;
    const consumers = gr.consumers.map((c) => el('tr', { 'data-consumer': c.name },
      td(c.name, 'name'), num(c.pending), td(ms(c.idle_ms), 'num'),
      td(c.dead ? el('span', { class: 'pill dead' }, 'dead') : 'ok'),
      el('td', {}, c.idle_ms >= g.removable_after_ms ? actionButton('Remove', 'Remove consumer ' + c.name + '?', 'Its ' + c.pending + ' pending entries go to the most recently active consumer of ' + gr.group + '.', 'consumer-remove', sb({ group: gr.group, gkey: gr.key, consumer: c.name })) : null)));
    parts.push(el('h2', {}, gr.group),
      el('dl', { class: 'kv' }, el('dt', {}, 'pending'), el('dd', {}, String(gr.pending)), el('dt', {}, 'undelivered'), el('dd', {}, String(gr.undelivered)),
        el('dt', {}, 'lag'), el('dd', {}, gr.outstanding + ' entries, ' + ms(gr.time_lag_ms)), el('dt', {}, 'last delivered'), el('dd', {}, gr.last_delivered)),
      reset,
      el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'consumer'), el('th', { class: 'num' }, 'pending'), el('th', { class: 'num' }, 'idle'), el('th', {}, 'state'), el('th', {}, ''))), el('tbody', {}, consumers))));
  }
  fill(v, ...parts);
}

async function tabDlq(v, s) {
  const d = await api('/api/dlq?' + sq());
  const selected = new Set();
  const rows = d.letters.map((l) => el('tr', { 'data-id': l.id },
    el('td', {}, state.config.allow_actions ? el('input', { type: 'checkbox', 'aria-label': 'select ' + l.id }) : null),
    td(l.id, 'num'), td(l.reason, 'name'), td(l.attempts, 'num'), td(l.group), td((l.origin || '') + ' ' + (l.origin_id || ''), 'name'),
    el('td', { class: 'name' }, l.fields.map(([k, val]) => el('div', {}, el('b', {}, k), ' = ', val))),
    el('td', {}, actionButton('Replay', 'Replay dead letter ' + l.id + ' into ' + s + '?', 'Only group ' + (l.group || '?') + ' processes it again.', 'dlq-replay', sb({ ids: [l.id] }), 'replay'))));
  rows.forEach((r) => {
    const cb = r.querySelector('input[type=checkbox]');
    if (cb) cb.addEventListener('change', () => { if (cb.checked) selected.add(r.dataset.id); else selected.delete(r.dataset.id); });
  });
  const bar = state.config.allow_actions && d.total ? el('div', { class: 'bar' },
    actionButton('Replay selected', 'Replay the selected dead letters into ' + s + '?', null, 'dlq-replay', () => sb({ ids: [...selected] }), 'replay'),
    actionButton('Replay all', 'Replay all ' + d.total + ' dead letters into ' + s + '?', null, 'dlq-replay', sb({ all: true })),
    actionButton('Purge', 'Delete all ' + d.total + ' dead letters of ' + s + '? This cannot be undone.', null, 'dlq-purge', sb({}))) : null;
  fill(v, el('p', { class: 'muted', id: 'dlq-total' }, d.total + ' dead letter(s)' + (d.total > d.letters.length ? ', oldest ' + d.letters.length + ' shown' : '')), bar,
    d.letters.length ? el('div', { class: 'scroll' }, el('table', { id: 'dlq' }, el('thead', {}, el('tr', {}, el('th', {}, ''), el('th', {}, 'id'), el('th', {}, 'reason'), el('th', { class: 'num' }, 'attempts'), el('th', {}, 'group'), el('th', {}, 'origin'), el('th', {}, 'fields'), el('th', {}, ''))), el('tbody', {}, rows))) : el('p', {}, 'The dead-letter queue is empty.'));
}

async function tabJanitor(v, s) {
  const j = await api('/api/janitor?' + sq());
  const rows = j.groups.map((g) => el('tr', { class: g.holds ? 'h-warn' : null }, td(g.group, 'name'), td(g.bound, 'num'), td(g.why), td(g.holds ? 'holds the trim point' : '')));
  fill(v, 
    el('p', { id: 'janitor-preview' }, j.trim_to ? 'Trim point ' + j.trim_to + ': a janitor run would remove ' + j.would_trim.toLocaleString('en') + ' entries that every group has finished.' : 'No group: the janitor does not ack-trim this stream.'),
    j.groups.length ? el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'group'), el('th', {}, 'needs from'), el('th', {}, 'because of'), el('th', {}, ''))), el('tbody', {}, rows))) : null,
    j.would_trim ? el('div', { class: 'bar' }, actionButton('Run janitor', 'Trim ' + j.would_trim + ' entries of ' + s + ' below ' + j.trim_to + '?', null, 'janitor', sb({}))) : null);
}

async function tabCharts(v, s) {
  const h = await api('/api/history?' + new URLSearchParams(qk({ points: '120' })));
  const pts = h.points || [];
  const groups = [...new Set(pts.flatMap((x) => Object.keys(x.g || {})))].sort();
  const series = (idx) => groups.map((g) => ({ name: g, points: pts.filter((x) => x.g && x.g[g]).map((x) => [x.t, x.g[g][idx] || 0]) }));
  const lag = series(0), tlag = series(1);
  const len = [{ name: 'length', points: pts.map((x) => [x.t, x.len]) }];
  fill(v, el('p', { class: 'muted' }, pts.length + ' point(s) over the whole history (at most ' + h.max_points + ', spread evenly) from the samples serve writes to {' + state.config.namespace + '}:history every ' + ms(h.every_ms) + ' (they survive a restart).'),
    el('h2', {}, 'Lag (entries)'), chart(lag), legend(lag),
    el('h2', {}, 'Lag (time)'), chart(tlag, 'ms'), legend(tlag),
    el('h2', {}, 'Length'), chart(len), legend(len));
}

// "in 3 s", or "overdue by 3 s" when the tick is late (never "in 0").
function dueText(x, now) {
  if (!x.next_due_ms) return '—';
  const late = x.overdue_ms !== undefined && x.overdue_ms !== null ? x.overdue_ms : Math.max(0, now - x.next_due_ms);
  if (late > 0) return el('span', { class: 'h-warn' }, when(x.next_due_ms) + ' (overdue by ' + ms(late) + ')');
  return when(x.next_due_ms) + ' (in ' + ms(x.next_due_ms - now) + ')';
}
async function viewSchedules(v) {
  const d = await api('/api/schedules');
  const now = Date.now();
  const rows = d.schedules.map((x) => el('tr', { 'data-schedule': x.name },
    td(x.name, 'name'), td(x.every_ms ? 'every ' + ms(x.every_ms) : x.cron ? 'cron ' + x.cron : '—'), td(x.target, 'name'),
    td(x.error ? el('span', { class: 'h-bad' }, x.error) : x.paused ? el('span', { class: 'pill h-warn' }, 'paused') : dueText(x, now)),
    td(x.last_fired_ms ? when(x.last_fired_ms) : 'never'), td(x.lateness_ms === null ? '—' : ms(x.lateness_ms), 'num'),
    el('td', {}, x.paused
      ? actionButton('Resume', 'Resume schedule ' + x.name + '?', 'Its next tick is computed from now.', 'schedule-resume', { name: x.name }, 'resume')
      : actionButton('Pause', 'Pause schedule ' + x.name + '?', null, 'schedule-pause', { name: x.name }))));
  fill(v, el('h1', {}, 'Schedules'), d.schedules.length
    ? el('div', { class: 'scroll' }, el('table', { id: 'schedules' }, el('thead', {}, el('tr', {}, el('th', {}, 'name'), el('th', {}, 'when'), el('th', {}, 'target'), el('th', {}, 'next due'), el('th', {}, 'last fired'), el('th', { class: 'num' }, 'lateness'), el('th', {}, ''))), el('tbody', {}, rows)))
    : el('p', {}, 'No schedules in namespace ' + state.config.namespace + '.'));
}


// ---- routing and live updates ------------------------------------------------
function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  return { path: path || '', params: new URLSearchParams(query || '') };
}
let rendering = 0;
async function render() {
  const r = route();
  state.route = r;
  const v = document.getElementById('view');
  const mine = ++rendering;
  try {
    const views = { '': viewOverview, stream: viewStream, entry: viewEntry, schedules: viewSchedules };
    const view = views[r.path] || viewOverview;
    const tmp = el('div');
    await view(tmp, r.params);
    if (mine === rendering) fill(v, ...tmp.childNodes);
  } catch (e) {
    if (mine === rendering) fill(v, el('p', { class: 'h-bad', id: 'error' }, e.message));
  }
  // Which route is on screen (tests and tools wait for it).
  if (mine === rendering) document.body.dataset.shown = location.hash || '#/';
  connect();
}

// The events of what is on screen: the overview's page, or one stream's row.
function eventsUrl() {
  const r = state.route || route();
  if (r.path === '') return '/api/events?' + new URLSearchParams(viewParams(r.params));
  const k = r.params.get('k');
  if (k) return '/api/events?' + new URLSearchParams({ key: k });
  return '/api/events?per=1';
}
function connect() {
  const url = eventsUrl();
  if (state.events && state.eventsUrl === url) return;
  if (state.events) state.events.close();
  const es = new EventSource(url);
  state.events = es;
  state.eventsUrl = url;
  es.addEventListener('page', (ev) => {
    banner('');
    const page = JSON.parse(ev.data);
    const r = state.route || route();
    if (r.path === '') {
      state.page = page;
      clock(page.at_ms);
      drawOverview(document.getElementById('ov-data'));
      document.body.dataset.updated = String(Date.now());
      return;
    }
    // Elsewhere: reload the view when its stream changed.
    const before = state.page && state.page.streams[0], after = page.streams[0];
    state.page = page;
    if (before && after && before.key === after.key && JSON.stringify(before) !== JSON.stringify(after)) render();
  });
  es.addEventListener('changes', (ev) => { banner(''); applyChanges(JSON.parse(ev.data)); });
  es.addEventListener('down', (ev) => banner(ev.data + ' — retrying…'));
  es.addEventListener('error', () => { if (es.readyState !== EventSource.OPEN) banner('Connection to the dashboard lost — retrying…'); });
}

// Time lags count up here between updates (the server sends a change only
// when something happened), on the server's clock.
function clock(serverMs) { if (serverMs) state.skew = serverMs - Date.now(); }
function tick() {
  const now = Date.now() + (state.skew || 0);
  for (const c of document.querySelectorAll('td[data-since]')) {
    const since = Number(c.dataset.since);
    if (since > 0) c.textContent = ms(Math.max(0, now - since));
  }
}

async function start() {
  try {
    state.config = await api('/api/config');
  } catch (e) {
    document.getElementById('view').replaceChildren(el('p', { class: 'h-bad', id: 'error' }, e.message));
    return;
  }
  document.getElementById('mode').textContent = (state.config.allow_actions ? 'actions allowed' : 'read-only') + ' · ' + state.config.redis;
  document.getElementById('footer').textContent = 'streamkeeper ' + state.config.version;
  setInterval(tick, 1000);
  window.addEventListener('hashchange', () => { document.getElementById('notice').hidden = true; render(); });
  await render();
  document.body.dataset.ready = '1';
}
document.addEventListener('DOMContentLoaded', start);
