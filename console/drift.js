// fleetmesh console, Drift view: where nodes differ from their desired state.
//
// The records come from GET /api/v1/drift of the node serving the page (all of them for
// the region it leads, the most severe ones of every other region as its master
// published them) and each node's drift score from GET /api/v1/twins. Nothing is polled:
// the page reads them again when the stream says drift changed (a census whose drift
// differs from what is shown, a `drift` alert, a new master), and, for the page's own
// region when its node does not lead it, shortly after a change of a region peer (that
// region's summary is not pushed to a member, see `driftAfterChange`).
// Uses the helpers of app.js (loaded after this file, before anything runs).
'use strict';

// Records drawn at most; the rest are counted.
const DRIFT_SHOWN = 200;
// Resolved records drawn at most.
const DRIFT_RESOLVED_SHOWN = 20;
// Two reads at least this far apart, however fast the stream says drift changed.
const DRIFT_SPACING_MS = 1000;
// After a change of this node or a region peer, read again this long after it (the master
// judges within about a second, then publishes its summary), and twice more in case the
// summary came late.
const DRIFT_FOLLOW_MS = [1500, 4000, 10000];
const WEIGHT = { low: 1, medium: 3, high: 10, critical: 10, info: 0 };
const SEV_ORDER = { critical: 0, high: 1, medium: 2, low: 3, info: 4 };

const D = {
  data: null,          // GET /api/v1/drift
  readAt: 0,           // page clock of that answer
  rows: new Map(),     // peer -> row of GET /api/v1/twins (own region)
  rowsNote: '',
  stale: true,         // something changed since the last read
  loading: false,
  again: false,
  timer: null,
  lastRead: 0,
  follow: null,        // timers after a region peer's change
  shown: null,         // the answer the tables were drawn from
  counts: new Map(),   // region -> counts, as last heard (census or read)
};

const recordKey = (r) => [r.node, r.subject, r.desired, r.actual, r.severity].join('\u0001');
const sameCounts = (a, b) => !!a && !!b && ['low', 'medium', 'high', 'nodes'].every((k) => (a[k] || 0) === (b[k] || 0));

// The stream said something about drift: read again (now if the view is open, else
// when it opens).
function driftWanted() {
  D.stale = true;
  if (view().name !== 'drift' || D.timer) return;
  const wait = Math.max(0, D.lastRead + DRIFT_SPACING_MS - Date.now());
  D.timer = setTimeout(() => { D.timer = null; readDrift().catch(report); }, wait);
}

// A region's summary pushed by the stream (`census`): drift changed when its counts
// differ from those shown or it names a record the page does not show. A summary
// without drift (a region seen by a member, or an older master) says nothing about it.
function driftFromCensus(c) {
  const d = c.drift;
  if (!d) return;
  const before = D.counts.get(c.region);
  D.counts.set(c.region, d.counts);
  if (!sameCounts(before, d.counts)) updateDriftBadge();
  const data = D.data;
  const shown = data && data.regions.find((r) => r.region === c.region);
  if (!shown || !sameCounts(shown.counts, d.counts)) { driftWanted(); return; }
  const keys = new Set(data.records.filter((r) => r.region === c.region).map(recordKey));
  if ((d.worst || []).some((r) => !keys.has(recordKey(r)))) driftWanted();
}

// A change of this node or a region peer. When this node leads its region, the census
// it pushes with each heartbeat carries the region's drift and says enough; a member
// gets its master's summary but the stream does not pass it on, so the page reads again
// a moment after the change instead (one-shot, never on a timer of its own).
function driftAfterChange(s) {
  if (s.kind === 'metric' || D.follow) return;
  const own = D.data && D.data.regions.find((r) => r.region === S.me.region);
  if (own && own.source === 'local') return;
  const step = (i) => {
    D.follow = setTimeout(() => {
      driftWanted();
      if (i + 1 < DRIFT_FOLLOW_MS.length) step(i + 1); else D.follow = null;
    }, DRIFT_FOLLOW_MS[i] - (i ? DRIFT_FOLLOW_MS[i - 1] : 0));
  };
  step(0);
}

async function readDrift() {
  if (D.loading) { D.again = true; return; }
  D.loading = true;
  D.stale = false;
  D.lastRead = Date.now();
  try {
    const [data, rows] = await Promise.all([api('/api/v1/drift'), readScores()]);
    D.data = data;
    D.readAt = Date.now();
    D.rows = rows;
    for (const r of data.regions) if (r.counts) D.counts.set(r.region, r.counts);
    updateDriftBadge();
  } finally {
    D.loading = false;
    if (D.again) { D.again = false; driftWanted(); }
  }
  schedule();
}

// Drift scores are known where the twin is held: this node's own region, when it leads
// it (and the node itself). One page of at most 1,000 rows; beyond, the rest go
// unscored and the page says so.
async function readScores() {
  const answer = await api(`/api/v1/twins?region=${encodeURIComponent(S.me.region)}&limit=1000`);
  const rows = new Map();
  for (const r of answer.rows || []) rows.set(r.peer, r);
  D.rowsNote = answer.next ? `drift scores read for the first ${rows.size} of ${answer.total} nodes of ${S.me.region}` : '';
  return rows;
}

function updateDriftBadge() {
  let n = 0;
  for (const c of D.counts.values()) n += (c.low || 0) + (c.medium || 0) + (c.high || 0);
  const badge = $('#drift-count');
  const text = n ? String(n) : '';
  if (badge.textContent !== text) badge.textContent = text;
}

// ---- drawing ----

// A digest (64 hex) shortened to its first 12 characters; the full text is in the
// title and behind a copy button.
const HEX64 = /[0-9a-f]{64}/g;
function shortDigests(text) {
  return String(text).replace(HEX64, (h) => `${h.slice(0, 12)}…`);
}
function digestCell(text, attrs = {}) {
  const full = String(text == null ? '' : text);
  const kids = [el('code', { title: full, 'data-full': full, text: shortDigests(full) })];
  if (full.match(HEX64)) kids.push(' ', el('button', { class: 'copy', 'data-copy': full, title: 'copy the full value', text: 'copy' }));
  return el('td', attrs, ...kids);
}

// Text that moves with the clock: `fmt` with `{}` for the time since `at` (Unix ms).
function since(tag, at, fmt, attrs = {}) {
  return el(tag, Object.assign({ 'data-at': at, 'data-fmt': fmt, title: clock(at), text: fmt.replace('{}', ago(Date.now() - at)) }, attrs));
}

function sevMeter(c, max) {
  const bar = el('span', { class: 'sevbar', title: `${c.high || 0} high · ${c.medium || 0} medium · ${c.low || 0} low` });
  for (const s of ['high', 'medium', 'low']) {
    const n = c[s] || 0;
    if (n) bar.append(el('b', { class: `bar-${s}`, style: `width: ${(n / Math.max(1, max)) * 100}%` }));
  }
  return bar;
}

function fromText(r) {
  if (r.source === 'local') return null;
  if (r.source === 'master') return `its master's summary, {} old`;
  return null;
}

function renderDrift() {
  if (D.stale && !D.loading && !D.timer) driftWanted();
  const data = D.data;
  if (!data) return;
  if (D.shown !== data) {
    D.shown = data;
    drawDrift(data);
  }
}

function drawDrift(data) {
  const readAt = D.readAt;
  const none = data.regions.filter((r) => r.source === 'none').map((r) => r.region);
  $('#drift-from').replaceChildren(
    `Read from ${data.node ? data.node.name : S.me.name} `,
    since('span', readAt, '{} ago', { 'data-testid': 'drift-read' }),
    ' (GET /api/v1/drift). A region this node leads is judged here; the others come from their masters\' summaries, which list their most severe records.',
    none.length ? ` No drift heard yet from: ${none.join(', ')}.` : '');

  // Per region: the counts its source gives.
  const total = (c) => (c ? (c.low || 0) + (c.medium || 0) + (c.high || 0) : 0);
  const maxRegion = Math.max(1, ...data.regions.map((r) => total(r.counts)));
  $('#drift-regions tbody').replaceChildren(...data.regions.map((r) => {
    const c = r.counts || {};
    const from = r.source === 'local' ? el('td', { text: 'this node (its master)' })
      : r.source === 'master' ? since('td', readAt - (r.age_ms || 0), fromText(r))
        : el('td', { text: 'nothing heard yet' });
    return el('tr', { 'data-region': r.region, 'data-source': r.source, 'data-high': c.high || 0, 'data-medium': c.medium || 0, 'data-low': c.low || 0 },
      el('td', { text: r.region }), el('td', {}, r.counts ? sevMeter(c, maxRegion) : '—'),
      el('td', { class: 'sev-high', text: r.counts ? c.high : '—' }),
      el('td', { class: 'sev-medium', text: r.counts ? c.medium : '—' }),
      el('td', { class: 'sev-low', text: r.counts ? c.low : '—' }),
      el('td', { text: r.counts ? c.nodes : '—' }), from);
  }));

  // Per role: counted from the records listed (a region's master lists its most severe).
  const roles = new Map();
  for (const r of data.records) {
    const c = roles.get(r.role) || { low: 0, medium: 0, high: 0, nodes: new Set() };
    const k = r.severity === 'critical' ? 'high' : r.severity;
    if (k in c) c[k] += 1;
    c.nodes.add(r.node);
    roles.set(r.role, c);
  }
  const maxRole = Math.max(1, ...[...roles.values()].map(total));
  $('#drift-roles tbody').replaceChildren(...[...roles.entries()].sort().map(([role, c]) =>
    el('tr', { 'data-role': role },
      el('td', { text: role }), el('td', {}, sevMeter(c, maxRole)),
      el('td', { class: 'sev-high', text: c.high }), el('td', { class: 'sev-medium', text: c.medium }),
      el('td', { class: 'sev-low', text: c.low }), el('td', { text: c.nodes.size }))));
  const unpublished = data.regions.reduce((n, r) => n + (r.omitted || 0), 0);
  $('#drift-roles-note').textContent = unpublished
    ? `Counted from the ${data.records.length} records listed; ${unpublished} less severe records were not published by their masters.`
    : (data.records.length ? '' : 'No drift.');

  // The records, most severe first, then the oldest.
  const records = data.records.slice().sort((a, b) =>
    (SEV_ORDER[a.severity] - SEV_ORDER[b.severity]) || a.first_seen_ms - b.first_seen_ms);
  const computed = new Map();
  for (const r of records) computed.set(r.node, (computed.get(r.node) || 0) + (WEIGHT[r.severity] || 0));
  $('#drift-records tbody').replaceChildren(...records.slice(0, DRIFT_SHOWN).map((r) => {
    const row = D.rows.get(r.node);
    const score = row && row.drift_score != null
      ? el('td', { text: row.drift_score, title: 'the drift score of the twin this node holds' })
      : el('td', { text: `≈${computed.get(r.node)}`, title: 'summed from the records listed here (the twin is held by the master of its region)' });
    return el('tr', { 'data-node': r.name, 'data-subject': r.subject, 'data-severity': r.severity },
      el('td', { class: `sev-${r.severity}`, text: r.severity }),
      el('td', {}, el('a', { href: `#node/${encodeURIComponent(r.node)}`, text: r.name })),
      el('td', { text: r.role }), el('td', { text: r.region }), score,
      el('td', { text: r.subject }), digestCell(r.desired), digestCell(r.actual, { class: 'actual' }),
      since('td', r.first_seen_ms, 'for {}'), el('td', { class: 'rule', text: r.rule }));
  }));
  const notes = [];
  if (records.length > DRIFT_SHOWN) notes.push(`${records.length - DRIFT_SHOWN} more records not drawn here.`);
  for (const r of data.regions) {
    if (r.omitted) notes.push(`${r.region}: ${r.omitted} less severe records not published by its master.`);
  }
  if (D.rowsNote) notes.push(`${D.rowsNote}.`);
  $('#drift-omitted').textContent = notes.join(' ');

  // Resolved records are kept by the master that judged them: those of a region this
  // node leads.
  const resolved = (data.resolved || []).slice().sort((a, b) => (b.resolved_ms || 0) - (a.resolved_ms || 0));
  if (!resolved.length) {
    $('#drift-resolved tbody').replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'note', text: 'none known here' })));
    return;
  }
  $('#drift-resolved tbody').replaceChildren(...resolved.slice(0, DRIFT_RESOLVED_SHOWN).map((r) =>
    el('tr', { 'data-node': r.name, 'data-subject': r.subject },
      el('td', { text: r.name }), el('td', { text: r.subject }), digestCell(r.actual),
      r.resolved_ms ? since('td', r.resolved_ms, '{} ago') : el('td', { text: '—' }))));
}

// Copy buttons (drift records and twins): the full value to the clipboard, or, where
// the clipboard is refused, shown in full and selected.
document.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-copy]');
  if (!b) return;
  const text = b.dataset.copy;
  const done = () => { b.textContent = 'copied'; };
  const fallback = () => {
    const code = b.parentNode.querySelector('code');
    if (!code) return;
    code.textContent = text;
    getSelection().selectAllChildren(code);
  };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
  else fallback();
});
