// streamkeeper dashboard. Plain JavaScript, no build step: routes live
// after '#', so every view is a bookmarkable URL; everything reaches the
// screen through textContent / createElement (never as markup), so names
// and values are always text; charts are SVG drawn here.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const state = { config: null, overview: null, history: null, events: null, route: null };

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
function sparkline(values) {
  const s = svg('svg', { class: 'spark', viewBox: '0 0 90 22', role: 'img' });
  if (values.length < 2) return s;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * 90 / (values.length - 1)).toFixed(1) + ',' + (21 - v * 20 / max).toFixed(1));
  s.append(svg('polyline', { points: pts.join(' ') }));
  s.append(svg('title', { text: 'outstanding, last ' + values.length + ' samples: ' + values.join(' ') }));
  return s;
}
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
function groupSeries(stream, group, idx) {
  const samples = (state.history && state.history.samples) || [];
  const pts = [];
  for (const smp of samples) {
    const st = smp.s[stream];
    if (st && st.g && st.g[group]) pts.push([smp.t, st.g[group][idx] || 0]);
  }
  return pts;
}
// Entries per second in (added) and out (read by a group) from the last two samples.
function rates(stream) {
  const samples = (state.history && state.history.samples) || [];
  if (samples.length < 2) return null;
  const a = samples[samples.length - 2], b = samples[samples.length - 1];
  const sa = a.s[stream], sb = b.s[stream];
  if (!sa || !sb || sa.added === null || sb.added === null || sa.added === undefined) return null;
  return Math.max(0, (sb.added - sa.added) / ((b.t - a.t) / 1000));
}
// Entries per second a group read, from the last two samples.
function groupRate(stream, group) {
  const samples = (state.history && state.history.samples) || [];
  if (samples.length < 2) return null;
  const a = samples[samples.length - 2], b = samples[samples.length - 1];
  const ga = a.s[stream] && a.s[stream].g[group], gb = b.s[stream] && b.s[stream].g[group];
  if (!ga || !gb || ga[2] === null || gb[2] === null || ga[2] === undefined) return null;
  return Math.max(0, (gb[2] - ga[2]) / ((b.t - a.t) / 1000));
}
async function loadHistory() {
  try { state.history = await api('/api/history?count=60'); } catch (_) { /* history is optional */ }
}

// ---- views -----------------------------------------------------------------
function healthClass(h) { return 'h-' + (h || 'ok'); }

function overviewTable(o) {
  const head = el('tr', {},
    el('th', {}, 'stream'), el('th', { class: 'num' }, 'length'), el('th', { class: 'num hide-narrow' }, 'memory'),
    el('th', { class: 'num hide-narrow' }, 'in/s'), el('th', { class: 'num' }, 'dead letters'), el('th', {}, 'group'),
    el('th', { class: 'num' }, 'pending'), el('th', { class: 'num' }, 'undelivered'), el('th', { class: 'num' }, 'lag'),
    el('th', { class: 'num' }, 'lag (time)'), el('th', { class: 'num hide-narrow' }, 'out/s'), el('th', { class: 'hide-narrow' }, 'trend'), el('th', { class: 'num hide-narrow' }, 'consumers'));
  const body = el('tbody');
  for (const st of o.streams) {
    // A sharded stream: one row summed over its shards (no page of its
    // own: its shards have theirs), then the shards, marked as such.
    const label = st.shards
      ? [st.name, el('span', { class: 'badge', title: 'summed over its shards, listed below' }, ' ' + st.shards + ' shards')]
      : [st.shard_of ? el('span', { class: 'muted', title: 'a shard of ' + st.shard_of }, '↳ ') : null, link(st.name, 'stream', { s: st.name })];
    const name = el('td', { class: 'name' + (st.shard_of ? ' shard' : ''), rowspan: Math.max(1, st.groups.length) }, label);
    if (st.error) {
      body.append(el('tr', { class: 'first', 'data-stream': st.name }, name, el('td', { class: 'err', colspan: 12 }, st.error)));
      continue;
    }
    const r = rates(st.name);
    const streamCells = [name, el('td', { class: 'num len' }, st.length.toLocaleString('en')),
      el('td', { class: 'num hide-narrow' }, bytes(st.memory_bytes)),
      el('td', { class: 'num hide-narrow' }, r === null ? '—' : r.toFixed(1)),
      el('td', { class: 'num' + (st.dead_letters ? ' h-bad' : '') }, st.dead_letters && !st.shards ? link(String(st.dead_letters), 'stream', { s: st.name, tab: 'dlq' }) : String(st.dead_letters))];
    streamCells.slice(1).forEach((c) => c.setAttribute('rowspan', Math.max(1, st.groups.length)));
    if (!st.groups.length) {
      body.append(el('tr', { class: 'first', 'data-stream': st.name }, streamCells, el('td', { class: 'muted', colspan: 8 }, '(no group)')));
      continue;
    }
    st.groups.forEach((g, i) => {
      const cells = [
        el('td', { class: 'name' }, st.shards ? g.name : link(g.name, 'stream', { s: st.name, tab: 'groups' })),
        num(g.pending), num(g.undelivered),
        el('td', { class: 'num ' + healthClass(g.health) }, g.outstanding.toLocaleString('en')),
        el('td', { class: 'num ' + healthClass(g.health) }, ms(g.time_lag_ms)),
        el('td', { class: 'num hide-narrow' }, (() => { const r = groupRate(st.name, g.name); return r === null ? '—' : r.toFixed(1); })()),
        el('td', { class: 'hide-narrow' }, sparkline(groupSeries(st.name, g.name, 0).map((p) => p[1]))),
        el('td', { class: 'num hide-narrow' }, String(g.consumers), g.dead_consumers ? el('span', { class: 'dead' }, ' (' + g.dead_consumers + ' dead)') : null),
      ];
      body.append(el('tr', { class: i === 0 ? 'first' : null, 'data-stream': st.name, 'data-group': g.name }, i === 0 ? streamCells : [], cells));
    });
  }
  return el('div', { class: 'scroll' }, el('table', { id: 'overview' }, el('thead', {}, head), body));
}

async function viewOverview(v) {
  const o = state.overview || await api('/api/overview');
  state.overview = o;
  const c = state.config;
  const limits = [];
  if (c.max_lag !== null) limits.push('lag > ' + c.max_lag.toLocaleString('en') + ' entries');
  if (c.max_time_lag_ms !== null) limits.push('lag > ' + ms(c.max_time_lag_ms));
  fill(v, 
    el('h1', {}, 'Streams'),
    el('p', { class: 'muted' }, o.streams.length + ' stream(s) · ' + (limits.length ? 'red when ' + limits.join(' or ') : 'no thresholds (serve --max-lag / --max-time-lag)') + ' · collected in ' + o.took_ms + ' ms'),
    o.streams.length ? overviewTable(o) : el('p', {}, 'No streams yet.'));
}

function tabs(s, active) {
  const t = [['entries', 'Entries'], ['groups', 'Groups & consumers'], ['dlq', 'Dead letters'], ['janitor', 'Janitor'], ['charts', 'Charts']];
  return el('div', { class: 'tabs' }, t.map(([k, label]) => el('a', { href: hash('stream', { s, tab: k }), class: k === active ? 'active' : null }, label)));
}

async function viewStream(v, p) {
  const s = p.get('s');
  const tab = p.get('tab') || 'entries';
  const views = { entries: tabEntries, groups: tabGroups, dlq: tabDlq, janitor: tabJanitor, charts: tabCharts };
  const body = el('div');
  fill(v, el('h1', {}, s), tabs(s, tab), body);
  await (views[tab] || tabEntries)(body, s, p);
}

async function tabEntries(v, s, p) {
  const before = p.get('before') || '', q = p.get('q') || '';
  const qs = new URLSearchParams({ stream: s, count: '50' });
  if (before) qs.set('before', before);
  if (q) qs.set('q', q);
  const page = await api('/api/stream?' + qs);
  const filter = el('input', { name: 'q', value: q, placeholder: 'field=value or text', size: 24 });
  const from = el('input', { name: 'before', value: before, placeholder: 'before ID, or 2024-05-01T10:00', size: 24 });
  const form = el('form', { class: 'bar', onsubmit: (ev) => {
    ev.preventDefault();
    let b = from.value.trim();
    if (b && !/^\d+(-\d+)?$/.test(b)) { const t = Date.parse(b); if (!isNaN(t)) b = String(t); }
    location.hash = hash('stream', { s, q: filter.value.trim(), before: b });
  } }, el('label', {}, 'Filter ', filter), el('label', {}, 'From ', from), el('button', { type: 'submit' }, 'Show'));
  const rows = page.entries.map((e) => el('tr', { 'data-id': e.id },
    el('td', { class: 'num' }, link(e.id, 'entry', { s, id: e.id })),
    el('td', { class: 'hide-narrow muted' }, idTime(e.id)),
    el('td', { class: 'name' }, e.fields.map(([k, val]) => el('div', {}, el('b', {}, k), ' = ', val)))));
  const info = page.filtered
    ? 'scanned ' + page.scanned.toLocaleString('en') + ' of ' + page.length.toLocaleString('en') + ' entries (cap ' + page.cap.toLocaleString('en') + '), ' + page.entries.length + ' match'
    : page.length.toLocaleString('en') + ' entries, newest first';
  fill(v, form, el('p', { class: 'muted', id: 'scan-info' }, info),
    el('div', { class: 'scroll' }, el('table', { id: 'entries' }, el('thead', {}, el('tr', {}, el('th', {}, 'id'), el('th', { class: 'hide-narrow' }, 'time'), el('th', {}, 'fields'))), el('tbody', {}, rows))),
    page.next_before ? el('p', {}, link('Older →', 'stream', { s, q, before: page.next_before })) : null);
}

async function viewEntry(v, p) {
  const s = p.get('s'), id = p.get('id'), fmt = p.get('as') || 'text';
  const e = await api('/api/entry?' + new URLSearchParams({ stream: s, id }));
  let shown;
  if (fmt === 'json') shown = JSON.stringify(e.data !== null ? e.data : e.wire, null, 2);
  else if (fmt === 'hex') shown = e.fields.map((f) => f.name + ':\n' + (f.hex.match(/.{1,32}/g) || ['']).map((l) => l.replace(/(..)/g, '$1 ').trim()).join('\n')).join('\n\n');
  else shown = e.fields.map((f) => f.name + ' = ' + f.text).join('\n');
  const formats = el('div', { class: 'tabs' }, ['text', 'json', 'hex'].map((f) => el('a', { href: hash('entry', { s, id, as: f }), class: f === fmt ? 'active' : null }, f.toUpperCase())));
  const groups = e.groups.map((g) => el('tr', {}, td(g.group, 'name'), td(g.state), td(g.consumer), td(g.idle_ms === null ? null : ms(g.idle_ms), 'num'), td(g.deliveries, 'num')));
  fill(v, el('h1', {}, link(s, 'stream', { s }), ' / ', e.id), el('p', { class: 'muted' }, idTime(e.id)), formats, el('pre', { id: 'entry-body' }, shown),
    el('h2', {}, 'Per group'),
    el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'group'), el('th', {}, 'state'), el('th', {}, 'owner'), el('th', { class: 'num' }, 'idle'), el('th', { class: 'num' }, 'deliveries'))), el('tbody', {}, groups))));
}

async function tabGroups(v, s) {
  const g = await api('/api/groups?stream=' + encodeURIComponent(s));
  const parts = [el('p', { class: 'muted' }, g.length.toLocaleString('en') + ' entries, last ' + (g.last_id || '—') + ' · a consumer idle over ' + ms(g.dead_after_ms) + ' while holding entries is flagged dead')];
  if (!g.groups.length) parts.push(el('p', {}, 'No consumer group.'));
  for (const gr of g.groups) {
    const reset = state.config.allow_actions ? (() => {
      const to = el('input', { placeholder: 'ID, 0 or a time', size: 18, name: 'to' });
      const target = () => { let t = to.value.trim(); if (t && !/^\d+(-\d+)?$/.test(t)) { const ms2 = Date.parse(t); if (!isNaN(ms2)) t = String(ms2); } return t; };
      const btn = actionButton('Reset group', 'Move the last-delivered ID of ' + gr.group + '?',
        async () => {
          try {
            const p = await act('group-reset', { stream: s, group: gr.group, to: target(), dry_run: true });
            return 'Preview: from ' + p.from + ' to ' + p.to + ': ' + p.redelivered + ' entries delivered again, ' + p.skipped + ' skipped.';
          } catch (e) { notice('Reset preview failed: ' + e.message, true); return false; }
        },
        'group-reset', () => ({ stream: s, group: gr.group, to: target(), dry_run: false }));
      return el('div', { class: 'bar' }, el('label', {}, 'Reset to ', to), btn);
    })() : null;
    const consumers = gr.consumers.map((c) => el('tr', { 'data-consumer': c.name },
      td(c.name, 'name'), num(c.pending), td(ms(c.idle_ms), 'num'),
      td(c.dead ? el('span', { class: 'pill dead' }, 'dead') : 'ok'),
      el('td', {}, c.idle_ms >= g.removable_after_ms ? actionButton('Remove', 'Remove consumer ' + c.name + '?', 'Its ' + c.pending + ' pending entries go to the most recently active consumer of ' + gr.group + '.', 'consumer-remove', { stream: s, group: gr.group, consumer: c.name }) : null)));
    parts.push(el('h2', {}, gr.group),
      el('dl', { class: 'kv' }, el('dt', {}, 'pending'), el('dd', {}, String(gr.pending)), el('dt', {}, 'undelivered'), el('dd', {}, String(gr.undelivered)),
        el('dt', {}, 'lag'), el('dd', {}, gr.outstanding + ' entries, ' + ms(gr.time_lag_ms)), el('dt', {}, 'last delivered'), el('dd', {}, gr.last_delivered)),
      reset,
      el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'consumer'), el('th', { class: 'num' }, 'pending'), el('th', { class: 'num' }, 'idle'), el('th', {}, 'state'), el('th', {}, ''))), el('tbody', {}, consumers))));
  }
  fill(v, ...parts);
}

async function tabDlq(v, s) {
  const d = await api('/api/dlq?stream=' + encodeURIComponent(s));
  const selected = new Set();
  const rows = d.letters.map((l) => el('tr', { 'data-id': l.id },
    el('td', {}, state.config.allow_actions ? el('input', { type: 'checkbox', 'aria-label': 'select ' + l.id }) : null),
    td(l.id, 'num'), td(l.reason, 'name'), td(l.attempts, 'num'), td(l.group), td((l.origin || '') + ' ' + (l.origin_id || ''), 'name'),
    el('td', { class: 'name' }, l.fields.map(([k, val]) => el('div', {}, el('b', {}, k), ' = ', val))),
    el('td', {}, actionButton('Replay', 'Replay dead letter ' + l.id + ' into ' + s + '?', 'Only group ' + (l.group || '?') + ' processes it again.', 'dlq-replay', { stream: s, ids: [l.id] }, 'replay'))));
  rows.forEach((r) => {
    const cb = r.querySelector('input[type=checkbox]');
    if (cb) cb.addEventListener('change', () => { if (cb.checked) selected.add(r.dataset.id); else selected.delete(r.dataset.id); });
  });
  const bar = state.config.allow_actions && d.total ? el('div', { class: 'bar' },
    actionButton('Replay selected', 'Replay the selected dead letters into ' + s + '?', null, 'dlq-replay', () => ({ stream: s, ids: [...selected] }), 'replay'),
    actionButton('Replay all', 'Replay all ' + d.total + ' dead letters into ' + s + '?', null, 'dlq-replay', { stream: s, all: true }),
    actionButton('Purge', 'Delete all ' + d.total + ' dead letters of ' + s + '? This cannot be undone.', null, 'dlq-purge', { stream: s })) : null;
  fill(v, el('p', { class: 'muted', id: 'dlq-total' }, d.total + ' dead letter(s)' + (d.total > d.letters.length ? ', oldest ' + d.letters.length + ' shown' : '')), bar,
    d.letters.length ? el('div', { class: 'scroll' }, el('table', { id: 'dlq' }, el('thead', {}, el('tr', {}, el('th', {}, ''), el('th', {}, 'id'), el('th', {}, 'reason'), el('th', { class: 'num' }, 'attempts'), el('th', {}, 'group'), el('th', {}, 'origin'), el('th', {}, 'fields'), el('th', {}, ''))), el('tbody', {}, rows))) : el('p', {}, 'The dead-letter queue is empty.'));
}

async function tabJanitor(v, s) {
  const j = await api('/api/janitor?stream=' + encodeURIComponent(s));
  const rows = j.groups.map((g) => el('tr', { class: g.holds ? 'h-warn' : null }, td(g.group, 'name'), td(g.bound, 'num'), td(g.why), td(g.holds ? 'holds the trim point' : '')));
  fill(v, 
    el('p', { id: 'janitor-preview' }, j.trim_to ? 'Trim point ' + j.trim_to + ': a janitor run would remove ' + j.would_trim.toLocaleString('en') + ' entries that every group has finished.' : 'No group: the janitor does not ack-trim this stream.'),
    j.groups.length ? el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'group'), el('th', {}, 'needs from'), el('th', {}, 'because of'), el('th', {}, ''))), el('tbody', {}, rows))) : null,
    j.would_trim ? el('div', { class: 'bar' }, actionButton('Run janitor', 'Trim ' + j.would_trim + ' entries of ' + s + ' below ' + j.trim_to + '?', null, 'janitor', { stream: s })) : null);
}

async function tabCharts(v, s) {
  await loadHistory();
  const o = state.overview || await api('/api/overview');
  const st = o.streams.find((x) => x.name === s);
  const groups = st ? st.groups.map((g) => g.name) : [];
  const lag = groups.map((g) => ({ name: g, points: groupSeries(s, g, 0) }));
  const tlag = groups.map((g) => ({ name: g, points: groupSeries(s, g, 1) }));
  const len = [{ name: 'length', points: ((state.history && state.history.samples) || []).filter((x) => x.s[s]).map((x) => [x.t, x.s[s].len]) }];
  fill(v, el('p', { class: 'muted' }, 'From the samples serve writes to {' + state.config.namespace + '}:history every 10 s (they survive a restart).'),
    el('h2', {}, 'Lag (entries)'), chart(lag), legend(lag),
    el('h2', {}, 'Lag (time)'), chart(tlag, 'ms'), legend(tlag),
    el('h2', {}, 'Length'), chart(len), legend(len));
}

async function viewSchedules(v) {
  const d = await api('/api/schedules');
  const now = Date.now();
  const rows = d.schedules.map((x) => el('tr', { 'data-schedule': x.name },
    td(x.name, 'name'), td(x.every_ms !== null ? 'every ' + ms(x.every_ms) : 'cron ' + x.cron), td(x.target, 'name'),
    td(x.paused ? el('span', { class: 'pill h-warn' }, 'paused') : (x.next_due_ms ? when(x.next_due_ms) + ' (in ' + ms(Math.max(0, x.next_due_ms - now)) + ')' : '—')),
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
}

function connect() {
  const es = new EventSource('/api/events');
  state.events = es;
  es.addEventListener('overview', (ev) => {
    banner('');
    const before = state.overview;
    state.overview = JSON.parse(ev.data);
    const r = state.route || route();
    if (r.path === '') { render(); return; }
    // Elsewhere: reload the view when its stream changed.
    const s = r.params.get('s');
    if (!s || !before) return;
    const a = before.streams.find((x) => x.name === s), b = state.overview.streams.find((x) => x.name === s);
    if (JSON.stringify(a) !== JSON.stringify(b)) render();
  });
  es.addEventListener('down', (ev) => banner(ev.data + ' — retrying…'));
  es.addEventListener('error', () => { if (es.readyState !== EventSource.OPEN) banner('Connection to the dashboard lost — retrying…'); });
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
  await loadHistory();
  setInterval(async () => { await loadHistory(); if ((state.route || route()).path === '' && state.overview) render(); }, 10000);
  window.addEventListener('hashchange', () => { document.getElementById('notice').hidden = true; render(); });
  await render();
  connect();
  document.body.dataset.ready = '1';
}
document.addEventListener('DOMContentLoaded', start);
