// fleetmesh console: reads the node's REST API once, then follows its event stream
// (GET /api/v1/events). No request leaves the node that serves the page, and nothing is
// polled: a one-second clock only re-renders relative times ("12 s ago"). The Drift view
// (drift.js) and the twin panel of the Node view (twin.js) read their endpoints again
// when the stream says what they show changed. The fleet graph's authority badges are
// read from GET /api/v1/fleet/trust at load and again when a region appears or its master
// changes, or a region heard from has no authority known yet (at most once per
// TRUST_EVERY_MS).
'use strict';

const STATES = ['live', 'delayed', 'edge_cached', 'autonomous', 'disconnected', 'returning', 'replaying'];
const KEPT_EVENTS = 500;
const KEPT_TIMELINE = 500;
const HOUR_MS = 3600 * 1000;
// A foreign region not heard from for this long is drawn as stale.
const STALE_MS = 10000;
// Beyond this many nodes the graph collapses regions into counts by default.
const COLLAPSE_AT = 300;
// The trust endpoint is read again at most this often.
const TRUST_EVERY_MS = 2000;

const S = {
  me: null,            // GET /api/v1/node
  regions: new Map(),  // region -> census summary, with seenAt (page clock)
  alerts: new Map(),   // key -> alert entry (with its episode's id and state)
  silences: [],        // GET /api/v1/silences
  events: [],          // newest first
  timeline: [],        // this node's spikes and decisions, newest first
  peers: new Map(),    // peer -> its spikes heard since the page opened, newest first
  peerMetrics: new Map(), // another node -> metric -> [[t, v]]: asked of it, then gossip
  metricsOf: null,     // the node whose metrics were last asked (once per opening)
  learnedShown: new Set(), // ids of the learned patterns in the events, once each
  metrics: new Map(),  // metric -> [[t, v]]
  stream: null,
  streamState: 'connecting',
  lastEventAt: 0,
  selected: null,      // peer shown in the node view
  collapsed: null,     // null: automatic
  since: new Map(),    // peer -> [state, first seen in that state (page clock)]
  names: new Map(),    // peer -> name
  drawn: new Map(),    // region -> its drawn group, reused while its summary is the same
  authority: null,     // region -> {state, reason, own}, from GET /api/v1/fleet/trust
  trustReadAt: 0,      // when it was last read (page clock)
  trustTimer: null,    // a read waiting for its turn
};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    // Styles through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    if (k === 'text') e.textContent = v; else if (k === 'style') e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) e.setAttribute(k, v);
  return e;
};

function ago(ms) {
  if (ms < 0 || !isFinite(ms)) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}
const clock = (unix) => new Date(unix).toLocaleTimeString();

async function api(path, init) {
  const r = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, init));
  if (r.status === 401) { showLogin(); throw new Error('401'); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}
const list = (x, key) => Array.isArray(x) ? x : (x && x[key]) || [];

// ---- state updates ----

function takeCensus(region, receivedUnix) {
  const seenAt = Date.now() - (region.age_ms || 0);
  region.seenAt = receivedUnix === undefined ? seenAt : Date.now();
  S.regions.set(region.region, region);
  for (const m of region.members || []) {
    if (m.name) S.names.set(m.peer, m.name);
    const state = stateOf(m);
    const prev = S.since.get(m.peer);
    // "For how long" comes from the node's own account of its connectivity where the
    // state shown is that connectivity; else from when this page saw the state change.
    const reported = m.connectivity === state ? m.connectivity_since_unix_ms : null;
    if (!prev || prev[0] !== state || (reported && prev[1] !== reported)) {
      S.since.set(m.peer, [state, reported || Date.now()]);
    }
  }
}

function stateOf(m) {
  if (m.status === 'dead' || m.status === 'suspect') return m.status;
  if (m.replay) return 'replaying';
  return m.connectivity || (m.status === 'alive' ? 'live' : 'unknown');
}

function pushEvent(kind, text, at) {
  S.events.unshift({ kind, text, at: at || Date.now() });
  if (S.events.length > KEPT_EVENTS) S.events.length = KEPT_EVENTS;
}

function nameOf(peer) {
  return S.names.get(peer) || (peer ? peer.slice(-8) : '?');
}

// A metric spike into `metrics` (metric -> [[t, v]]): the last hour, at most `cap` points
// a series.
function takeMetric(metrics, s, cap) {
  const v = s.fields && s.fields.value && s.fields.value.after;
  if (typeof v !== 'number') return;
  const series = metrics.get(s.subject) || [];
  series.push([s.at_unix_ms, v]);
  const from = Date.now() - HOUR_MS;
  while (series.length && (series[0][0] < from || series.length > cap)) series.shift();
  metrics.set(s.subject, series);
}

// A region peer's series are bounded tighter: a page may hear a large region.
const PEER_POINTS = 720;

function takeSpike(s) {
  if (s.kind === 'metric') {
    takeMetric(S.metrics, s, Infinity);
    return;
  }
  S.timeline.unshift(spikeLine(s));
  if (S.timeline.length > KEPT_TIMELINE) S.timeline.length = KEPT_TIMELINE;
}

function takePeerSpike(s) {
  if (s.kind === 'metric') {
    if (!S.peerMetrics.has(s.origin)) S.peerMetrics.set(s.origin, new Map());
    takeMetric(S.peerMetrics.get(s.origin), s, PEER_POINTS);
    return;
  }
  const list = S.peers.get(s.origin) || [];
  list.unshift(spikeLine(s));
  if (list.length > KEPT_TIMELINE) list.length = KEPT_TIMELINE;
  S.peers.set(s.origin, list);
}

function spikeLine(s) {
  return { at: s.at_unix_ms, kind: 'spike', text: `${s.change} ${s.kind} ${s.subject} (${s.severity}, #${s.seq})` };
}

// What a learned pattern approves, by whom, and how it came: "user deploy (added) on
// web, approved by alice, committed in eu".
function learnedLine(d) {
  const p = d.pattern || {};
  const roles = (p.roles || []).join(', ') || 'any role';
  const by = String(d.by || '?').replace(/^operator /, '');
  const how = d.via === 'gossip' ? `published by the master of ${d.region} (term ${d.term})` : `committed in ${d.region}`;
  return `${p.kind} ${p.subject} (${p.change}) on ${roles}, approved by ${by}, ${how}`;
}

// A work item that changed owner: "audit of w3 moved from w1 to w2", "probe ssh moved
// from w1 to w2".
function assignmentLine(d) {
  const what = d.work === 'audit' ? `audit of ${nameOf(d.of)}` : `${d.work}${d.of ? ` ${d.of}` : ''}`;
  return `${what} moved from ${nameOf(d.from)} to ${nameOf(d.to)}`;
}

// A learned pattern into the events, once.
function takeLearned(d, at) {
  if (d.id && S.learnedShown.has(d.id)) return;
  if (d.id) S.learnedShown.add(d.id);
  pushEvent('learned', learnedLine(d), at);
}

function takeDecision(d) {
  // Approved metric moves are the bulk of decisions and say little: violations stay.
  if (d.kind === 'metric' && d.decision === 'approved') return;
  const settled = d.settled ? ` → ${d.settled.decision} by ${d.settled.rule}` : '';
  S.timeline.unshift({
    at: d.at_unix_ms, kind: 'decision',
    text: `${d.decision} ${d.kind} ${d.subject} by rule ${d.rule}${settled}: ${d.reason}`,
  });
  if (S.timeline.length > KEPT_TIMELINE) S.timeline.length = KEPT_TIMELINE;
}

// ---- loading and the stream ----

async function load() {
  S.me = await api('/api/v1/node');
  const census = await api('/api/v1/census');
  S.regions.clear();
  for (const r of census.regions) { takeCensus(r); driftFromCensus(r); }
  await loadAlerts();
  S.timeline = [];
  S.metrics.clear();
  const [spikes, decisions, metrics, patterns] = await Promise.all([
    api('/api/v1/spikes?limit=300'),
    api('/api/v1/decisions?limit=300'),
    api('/api/v1/spikes?kind=metric&limit=10000'),
    api('/api/v1/patterns'),
  ]);
  // The patterns learned before the page opened, oldest first (the events list is newest
  // first), as the stream would have told them.
  const learned = list(patterns, 'learned')
    .slice()
    .sort((a, b) => a.received_at_unix_ms - b.received_at_unix_ms);
  for (const l of learned.slice(-50)) {
    const a = l.approval || {};
    takeLearned({ id: l.id, pattern: a.pattern, by: a.by, via: l.via, region: a.region, term: a.term },
      l.received_at_unix_ms);
  }
  for (const s of list(spikes, 'spikes')) takeSpike(s);
  for (const d of list(decisions, 'decisions')) takeDecision(d);
  for (const s of list(metrics, 'spikes')) takeSpike(s);
  S.timeline.sort((a, b) => b.at - a.at);
  if (!S.selected) S.selected = S.me.peer_id;
  // What the stream may have missed: read again when shown.
  driftWanted();
  if (T.peer) readTwin().catch(report);
  trustWanted();
  render();
}

// Reads the regions' authority again, at most once per TRUST_EVERY_MS: a wish made
// meanwhile waits for the next turn (one read for all of them).
function trustWanted() {
  if (S.trustTimer) return;
  const wait = Math.max(0, S.trustReadAt + TRUST_EVERY_MS - Date.now());
  S.trustTimer = setTimeout(() => {
    S.trustTimer = null;
    S.trustReadAt = Date.now();
    api('/api/v1/fleet/trust').then((t) => {
      S.authority = new Map(Object.entries((t && t.authority) || {}));
      schedule();
    }).catch(report);
  }, wait);
}

// The badge of a region's authority: [state, text, title].
function authorityOf(region) {
  const a = S.authority && S.authority.get(region);
  if (!S.authority) return ['unknown', 'authority: reading…', ''];
  const state = a ? a.state : 'unverified';
  const text = {
    chartered: 'chartered',
    founding: a && a.own ? 'founding' : 'founding (trusted on first use)',
    refused: `refused: ${a && a.reason}`,
  }[state] || 'unverified';
  const lately = a && a.reason && state !== 'refused' && state !== 'unverified' ? ` · refused lately: ${a.reason}` : '';
  const title = a && a.own
    ? "this region's own consensus; other regions believe it by this root of its voters"
    : state === 'founding' ? "its master's proof verified against its founding voters, trusted on first use"
      : state === 'chartered' ? "its master's proof verified against voters chartered with the fleet admin key"
        : state === 'refused' ? "its master's proof was refused: its summaries, approvals and emergencies are not believed"
          : 'no proof of its master verified here yet';
  return [state, `${a && a.own ? 'own region · ' : ''}${text}${lately}`, title];
}

async function loadAlerts() {
  const [alerts, silences] = await Promise.all([
    api('/api/v1/alerts?limit=1000'),
    api('/api/v1/silences'),
  ]);
  S.alerts.clear();
  for (const a of list(alerts, 'alerts')) S.alerts.set(a.key, a);
  S.silences = Array.isArray(silences) ? silences : [];
}

// ---- operator actions (the token or session is needed beyond loopback) ----

function operator() {
  const name = $('#operator').value.trim();
  if (name) localStorage.setItem('fleetmesh.operator', name);
  return name || 'console';
}

async function act(what, path, method, body) {
  const out = $('#action-result');
  try {
    const r = await fetch(path, {
      method, credentials: 'same-origin', cache: 'no-store',
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) { showLogin(); return; }
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error || `${r.status}`);
    out.dataset.outcome = 'ok';
    out.textContent = `${what}: done`;
    // A silence or an ack changes states the stream may not carry: read them again.
    await loadAlerts();
    schedule();
  } catch (e) {
    out.dataset.outcome = 'error';
    out.textContent = `${what}: ${e.message}`;
  }
}

function silenceFor(a) {
  const now = Date.now();
  const matchers = [['alertname', a.action], ['node', a.host]];
  if (a.subject) matchers.push(['subject', a.subject]);
  return {
    matchers: matchers.map(([name, value]) => ({ name, value, isRegex: false, isEqual: true })),
    startsAt: new Date(now).toISOString(),
    endsAt: new Date(now + Number($('#silence-for').value)).toISOString(),
    createdBy: operator(),
    comment: `from the console of ${S.me ? S.me.name : 'a node'}`,
  };
}

$('#alerts').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-act]');
  if (!b) return;
  const a = S.alerts.get(b.closest('tr').dataset.alert);
  if (!a || !a.id) return;
  const id = encodeURIComponent(a.id);
  if (b.dataset.act === 'ack') act('acknowledge', `/api/v1/alerts/${id}/ack`, 'POST', { by: operator(), comment: '' });
  if (b.dataset.act === 'resolve') act('resolve', `/api/v1/alerts/${id}/resolve`, 'POST', { by: operator() });
  if (b.dataset.act === 'silence') act('silence', '/api/v1/silences', 'POST', silenceFor(a));
});

$('#silences').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-expire]');
  if (b) act('expire', `/api/v1/silences/${encodeURIComponent(b.dataset.expire)}`, 'DELETE');
});

function connect() {
  if (S.stream) S.stream.close();
  const es = new EventSource('/api/v1/events');
  S.stream = es;
  let broken = false;
  es.onopen = () => {
    setStream('live');
    // After a break (or a restart of the node) what was missed is reloaded.
    if (broken) load().catch(report);
  };
  es.onerror = () => { broken = true; setStream('reconnecting'); };
  const on = (type, f) => es.addEventListener(type, (e) => {
    S.lastEventAt = Date.now();
    try { f(JSON.parse(e.data)); } catch (err) { report(err); }
    schedule();
  });
  on('census', (d) => {
    const before = S.regions.get(d.region);
    takeCensus(d, d.received_unix_ms);
    driftFromCensus(d);
    // A new region or master: its authority may have changed. A region heard from
    // whose authority is not known yet is read again too (until it is).
    const a = S.authority && S.authority.get(d.region);
    if (!before || before.master !== d.master || before.term !== d.term || (d.master && (!a || a.state === 'unverified'))) {
      trustWanted();
    }
    if (before && before.master !== d.master) {
      pushEvent('failover', `region ${d.region}: master ${d.master ? nameOf(d.master) : 'none'} (term ${d.term})`, d.at_unix_ms);
    }
  });
  on('node', (d) => {
    // A status change seen here: applied at once, before the next census (a new summary
    // object, so that its region is drawn again).
    for (const [k, r] of S.regions) {
      if ((r.members || []).some((m) => m.peer === d.peer)) {
        S.regions.set(k, Object.assign({}, r, { members: r.members.map((m) => m.peer === d.peer ? Object.assign({}, m, { status: d.to }) : m) }));
      }
    }
    pushEvent('node', `${nameOf(d.peer)}: ${d.from} → ${d.to}`, d.at_unix_ms);
  });
  on('region', (d) => {
    // Another master: the region's drift is judged elsewhere now.
    driftWanted();
    trustWanted();
    pushEvent('region', d.master ? `master of ${S.me ? S.me.region : 'the region'}: ${nameOf(d.master)} (term ${d.term})${d.leading ? ', this node' : ''}` : 'no master known for this region', d.at_unix_ms);
  });
  on('alert', (d) => {
    S.alerts.set(d.key, d);
    if (d.action === 'drift') driftWanted();
  });
  on('fleet', (d) => {
    const e = d.event || {};
    const fp = e.fingerprint || {};
    pushEvent('fleet', `${d.source === 'emergency' ? 'EMERGENCY' : 'fleet event'} ${e.verdict || ''} in ${d.region}: ${fp.kind || ''} ${fp.subject || ''} on ${Object.keys(e.origins || {}).length} servers`, d.at_unix_ms);
  });
  on('spike', (d) => {
    takeSpike(d);
    if (d.kind !== 'metric') { driftAfterChange(d); twinAfterChange(S.me.peer_id); }
  });
  on('peer_spike', (d) => {
    takePeerSpike(d);
    if (d.kind !== 'metric') { driftAfterChange(d); twinAfterChange(d.origin); }
  });
  on('decision', (d) => takeDecision(d));
  on('learned', (d) => takeLearned(d, d.at_unix_ms));
  on('assignment', (d) => pushEvent('assignment', assignmentLine(d), d.at_unix_ms));
  on('resync', () => { load().catch(report); });
}

function setStream(state) {
  S.streamState = state;
  const s = $('#stream');
  s.dataset.state = state;
  s.textContent = `stream: ${state}`;
}

function report(err) {
  if (String(err && err.message) !== '401') console.warn('console:', err);
}

// ---- login ----

function showLogin() {
  $('#login').hidden = false;
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/api/v1/session', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: $('#token').value }),
  });
  if (r.status === 204) {
    $('#login').hidden = true;
    $('#token').value = '';
    start();
  } else {
    $('#login-error').textContent = (await r.json().catch(() => ({}))).error || `refused (${r.status})`;
  }
});

// ---- rendering ----

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function view() {
  const h = location.hash.replace(/^#/, '') || 'fleet';
  const [name, arg] = h.split('/');
  return { name, arg };
}

function render() {
  if (!S.me) return;
  const v = view();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === v.name);
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== `view-${v.name}`;
  renderHeader();
  $('#alert-count').textContent = S.alerts.size || '';
  if (v.name === 'fleet') renderGraph();
  else if (v.name === 'spectrum') renderSpectrum();
  else if (v.name === 'alerts') renderAlerts();
  else if (v.name === 'drift') renderDrift();
  else if (v.name === 'events') renderEvents();
  else if (v.name === 'node') renderNode(v.arg ? decodeURIComponent(v.arg) : S.selected);
  refreshAgo();
}

// Relative times drawn once with `data-at` (Unix ms) and `data-fmt` move with the clock;
// each is written only when its text changes.
function refreshAgo() {
  const shown = document.querySelector('.view:not([hidden])');
  if (!shown) return;
  const now = Date.now();
  for (const e of shown.querySelectorAll('[data-at]')) {
    const text = e.dataset.fmt.replace('{}', ago(now - Number(e.dataset.at)));
    if (e.textContent !== text) e.textContent = text;
  }
}

function ownLine() {
  const r = S.regions.get(S.me.region);
  return r && (r.members || []).find((m) => m.peer === S.me.peer_id);
}

function renderHeader() {
  const own = ownLine();
  const state = own ? stateOf(own) : 'unknown';
  const since = S.since.get(S.me.peer_id);
  const r = S.regions.get(S.me.region);
  const master = r && r.master ? `master ${nameOf(r.master)} (term ${r.term})` : 'no master known';
  const served = $('#served');
  served.replaceChildren(
    el('span', { text: `served by ${S.me.name} (${S.me.region}, ${S.me.role}) · ` }),
    el('span', { class: `state`, 'data-testid': 'own-state', style: `background: var(--${state in STYLE ? state : 'unknown'})`, text: state }),
    el('span', { class: state === 'live' ? '' : 'stale', text: state === 'live' ? ` · ${master}` : ` for ${ago(Date.now() - (since ? since[1] : Date.now()))} · ${master} · what it shows may be stale` }),
  );
}

const STYLE = Object.fromEntries(STATES.concat(['dead', 'suspect', 'unknown']).map((s) => [s, true]));

function legend() {
  const l = $('#legend');
  if (l.childElementCount) return;
  for (const s of STATES.concat(['dead', 'suspect'])) {
    l.append(el('span', {}, el('i', { style: `background: var(--${s})` }), s.replace('_', '-')));
  }
}

function renderGraph() {
  legend();
  const regions = [...S.regions.values()].sort((a, b) =>
    (a.region === S.me.region ? -1 : b.region === S.me.region ? 1 : a.region.localeCompare(b.region)));
  const total = regions.reduce((n, r) => n + countAll(r), 0);
  const collapsed = S.collapsed === null ? total > COLLAPSE_AT : S.collapsed;
  $('#collapse').checked = collapsed;
  const masters = regions.filter((r) => r.master).length;
  $('#fleet-summary').textContent = `${regions.length} regions · ${total} nodes · ${masters} masters`;
  // One box per region, each with a drawing of its own: a region that changes is drawn
  // again alone, and the browser lays out only its box. A region whose summary did not
  // change keeps its drawing; only its title (how long ago it was heard from) moves with
  // the clock.
  const parts = [];
  for (const r of regions) {
    const kept = S.drawn.get(r.region);
    if (kept && kept.summary === r && kept.collapsed === collapsed) {
      // Touched only when they change: each write makes the browser lay the text out again.
      const title = regionTitle(r);
      if (kept.title.textContent !== title) kept.title.textContent = title;
      const stale = r.region !== S.me.region && Date.now() - r.seenAt > STALE_MS;
      if (kept.box.classList.contains('stale') !== stale) kept.box.classList.toggle('stale', stale);
      setBadge(kept.badge, r.region);
      parts.push(kept.box);
    } else {
      const box = drawRegion(r, collapsed);
      // In place: moving every box would make the browser lay them all out again.
      if (kept && kept.box.parentNode) kept.box.replaceWith(box);
      S.drawn.set(r.region, { summary: r, collapsed, box, title: box.querySelector('.region-title'), badge: box.querySelector('.authority') });
      parts.push(box);
    }
  }
  const graph = $('#graph');
  const same = parts.length === graph.childNodes.length && parts.every((p, i) => graph.childNodes[i] === p);
  if (!same) graph.replaceChildren(...parts);
}

// Writes a region's authority badge, only where it changed.
function setBadge(badge, region) {
  const [state, text, title] = authorityOf(region);
  if (badge.textContent === text && badge.dataset.authority === state) return;
  badge.textContent = text;
  badge.dataset.authority = state;
  badge.title = title;
}

function regionTitle(r) {
  const who = r.master ? `master ${nameOf(r.master)} · term ${r.term}` : 'NO MASTER';
  const where = r.region === S.me.region ? 'this region' : `${ago(Date.now() - r.seenAt)} ago`;
  return `${r.region} · ${who} · ${where}`;
}

function countAll(r) {
  return Object.values(r.counts || {}).reduce((a, b) => a + b, 0) || (r.members || []).length;
}

function drawRegion(r, collapsed) {
  const own = r.region === S.me.region;
  const stale = !own && Date.now() - r.seenAt > STALE_MS;
  const headless = !r.master;
  const box = el('div', {
    class: `region${headless ? ' headless' : ''}${stale ? ' stale' : ''}`, 'data-region': r.region,
    'data-has-master': String(!headless), 'data-master': r.master ? nameOf(r.master) : '',
    'data-term': r.term,
  });
  box.append(el('div', { class: 'region-title', text: regionTitle(r) }));
  const badge = el('div', { class: 'authority', 'data-testid': 'authority' });
  setBadge(badge, r.region);
  box.append(badge);
  if (collapsed) {
    box.append(drawCounts(r));
    return box;
  }
  const members = r.members || [];
  const cell = 44;
  const cols = Math.max(3, Math.ceil(Math.sqrt(members.length * 1.6)));
  const w = cols * cell, h = Math.ceil(members.length / cols) * cell;
  const pic = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  members.forEach((m, i) => {
    const cx = cell / 2 + (i % cols) * cell;
    const cy = cell / 2 + Math.floor(i / cols) * cell;
    const state = stateOf(m);
    const master = m.peer === r.master;
    const n = svg('g', {
      class: `node ${m.status}${master ? ' master' : ''}`, 'data-node': m.name, 'data-peer': m.peer,
      'data-status': m.status, 'data-state': state,
    });
    n.append(svg('circle', { cx, cy: cy - 6, r: 11, fill: `var(--${state in STYLE ? state : 'unknown'})` }));
    const label = svg('text', { x: cx, y: cy + 16, 'text-anchor': 'middle' });
    label.textContent = (master ? '★ ' : '') + (m.name || m.peer.slice(-6)).slice(0, 8);
    n.append(label);
    const tip = svg('title');
    tip.textContent = `${m.name} (${m.role}) · ${m.status} · ${state} · backlog ${m.backlog} · seen ${ago(m.last_seen_ms)} ago`;
    n.append(tip);
    n.addEventListener('click', () => { location.hash = `#node/${encodeURIComponent(m.peer)}`; });
    pic.append(n);
  });
  box.append(pic);
  if (r.omitted) box.append(el('div', { class: 'omitted', text: `+ ${r.omitted} more (healthy) not listed` }));
  return box;
}

function drawCounts(r) {
  const c = r.counts || {};
  const total = countAll(r) || 1;
  const bar = el('div', { class: 'counts' });
  for (const [status, n] of Object.entries(c)) {
    const color = status === 'alive' ? 'live' : status === 'dead' ? 'dead' : status === 'suspect' ? 'suspect' : 'unknown';
    bar.append(el('span', { class: 'bar', 'data-status': status, 'data-count': n, style: `width: ${(n / total) * 100}%; background: var(--${color})` }));
  }
  const box = el('div', {}, bar);
  box.append(el('div', { class: 'count-text', text: Object.entries(c).map(([s, n]) => `${n} ${s}`).join(' · ') }));
  return box;
}

function allMembers() {
  const out = [];
  for (const r of S.regions.values()) for (const m of r.members || []) out.push([r, m]);
  return out.sort((a, b) => a[0].region.localeCompare(b[0].region) || a[1].name.localeCompare(b[1].name));
}

function meter(cls, fraction, text) {
  return el('span', {}, el('span', { class: `meter ${cls}` }, el('b', { style: `width: ${Math.round(Math.min(1, fraction) * 100)}%` })), ` ${text}`);
}

function renderSpectrum() {
  const rows = allMembers();
  const maxBacklog = Math.max(1, ...rows.map(([, m]) => m.backlog || 0));
  const body = $('#spectrum tbody');
  body.replaceChildren(...rows.map(([r, m]) => {
    const state = stateOf(m);
    const since = S.since.get(m.peer);
    const own = r.region === S.me.region;
    const seen = m.last_seen_ms + (own ? 0 : Date.now() - r.seenAt);
    const replay = m.replay ? meter('replay', m.replay[1] ? m.replay[0] / m.replay[1] : 1, `${m.replay[0]}/${m.replay[1]}`) : '';
    return el('tr', { 'data-node': m.name, 'data-state': state },
      el('td', {}, el('a', { href: `#node/${encodeURIComponent(m.peer)}`, text: m.name })),
      el('td', { text: r.region }), el('td', { text: m.role }), el('td', { text: m.status }),
      el('td', {}, el('span', { class: 'state', style: `background: var(--${state in STYLE ? state : 'unknown'})`, text: state }),
        ` for ${ago(Date.now() - (since ? since[1] : Date.now()))}`),
      el('td', {}, meter('backlog', (m.backlog || 0) / maxBacklog, String(m.backlog || 0))),
      el('td', {}, replay),
      el('td', { text: `${ago(seen)} ago` }));
  }));
}

const SEVERITY = { critical: 0, high: 1, medium: 2, low: 3, info: 4 };

function renderAlerts() {
  const groups = new Map();
  for (const a of S.alerts.values()) {
    const k = `${a.region} · ${a.action}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(a);
  }
  const rows = [];
  for (const [k, alerts] of [...groups.entries()].sort()) {
    alerts.sort((a, b) => (SEVERITY[a.severity] - SEVERITY[b.severity]) || b.last_unix_ms - a.last_unix_ms);
    rows.push(el('tr', { class: 'group' }, el('th', { colspan: 11, text: `${k} — ${alerts.length} alert${alerts.length > 1 ? 's' : ''}` })));
    for (const a of alerts) {
      const state = a.state || 'firing';
      const open = state === 'firing' || state === 'acknowledged';
      const actions = el('td', { class: 'actions' });
      if (a.id && state === 'firing') actions.append(el('button', { 'data-act': 'ack', text: 'ack' }));
      if (a.id && open) actions.append(el('button', { 'data-act': 'silence', text: 'silence' }));
      if (a.id && state !== 'resolved') actions.append(el('button', { 'data-act': 'resolve', text: 'resolve' }));
      rows.push(el('tr', { 'data-alert': a.key, 'data-host': a.host, 'data-state': state },
        el('td', { class: `sev-${a.severity}`, text: a.severity }),
        el('td', { class: `state-${state}`, text: stateText(a) }), el('td', { text: a.action }),
        el('td', { text: a.region }), el('td', { text: a.host }), el('td', { text: a.subject || '' }),
        el('td', { text: a.count }), el('td', { text: clock(a.first_unix_ms) }),
        el('td', { text: clock(a.last_unix_ms) }), el('td', { class: 'reason', text: a.reason }),
        actions));
    }
  }
  $('#alerts tbody').replaceChildren(...rows);
  const now = Date.now();
  $('#silences tbody').replaceChildren(...(S.silences || [])
    .slice().sort((x, y) => (x.status.state === 'expired') - (y.status.state === 'expired') || Date.parse(y.endsAt) - Date.parse(x.endsAt))
    .map((x) => el('tr', { 'data-silence': x.id, 'data-state': x.status.state },
      el('td', { text: x.status.state }),
      el('td', { text: x.matchers.map((m) => `${m.name}${m.isEqual ? '' : '!'}${m.isRegex ? '~' : '='}"${m.value}"`).join(', ') }),
      el('td', { text: x.status.state === 'expired' ? clock(Date.parse(x.endsAt)) : `${ago(Date.parse(x.endsAt) - now)} left` }),
      el('td', { text: x.createdBy }), el('td', { text: x.comment }),
      el('td', {}, x.status.state === 'expired' ? '' : el('button', { 'data-expire': x.id, text: 'expire' })))));
}

function stateText(a) {
  const s = a.status || {};
  if (a.state === 'acknowledged') return `acknowledged by ${s.by}`;
  if (a.state === 'silenced') return 'silenced';
  if (a.state === 'inhibited') return 'inhibited';
  return a.state || 'firing';
}

function renderEvents() {
  $('#events').replaceChildren(...S.events.map((e) =>
    el('li', { 'data-kind': e.kind }, el('time', { text: clock(e.at) }), `${e.kind}: ${e.text}`)));
}

function renderNode(peer) {
  let found = null;
  for (const [r, m] of allMembers()) if (m.peer === peer) found = [r, m];
  const local = peer === S.me.peer_id;
  $('#node-title').textContent = found ? `${found[1].name} (${found[0].region}, ${found[1].role})` : peer;
  const facts = $('#node-facts');
  facts.replaceChildren();
  const add = (k, v) => facts.append(el('dt', { text: k }), el('dd', { text: v }));
  add('peer id', peer);
  if (found) {
    const [r, m] = found;
    add('status', m.status);
    add('connectivity', stateOf(m));
    add('backlog', String(m.backlog || 0));
    add('master of its region', r.master === m.peer ? `yes, term ${r.term}` : 'no');
  }
  if (local) {
    add('version', S.me.version || '');
    add('incarnation', String(S.me.incarnation));
  }
  // This node's charts span the last hour, as do another node's: asked of that node when
  // its detail opens, then kept up by gossip (a region peer's metric spikes come here).
  if (!local && S.metricsOf !== peer) fetchMetrics(peer);
  const metrics = local ? S.metrics : S.peerMetrics.get(peer);
  $('#node-chart').hidden = !metrics;
  $('#node-remote').hidden = local;
  if (metrics) renderChart(metrics);
  renderTwin(peer);
  const lines = local ? S.timeline : (S.peers.get(peer) || []);
  $('#timeline').replaceChildren(...lines.slice(0, 200).map((t) =>
    el('li', { 'data-kind': t.kind }, el('time', { text: clock(t.at) }), t.text)));
}

// Another node's last hour, asked of it through this node (once each time its detail
// opens): its series replace what gossip brought before them.
async function fetchMetrics(peer) {
  S.metricsOf = peer;
  try {
    const got = await api(`/api/v1/twins/${encodeURIComponent(peer)}/metrics`);
    const metrics = S.peerMetrics.get(peer) || new Map();
    for (const { metric, points } of got.series || []) {
      const last = points.length ? points[points.length - 1][0] : 0;
      const later = (metrics.get(metric) || []).filter(([t]) => t > last);
      metrics.set(metric, points.map(([t, v]) => [t, v]).concat(later));
    }
    S.peerMetrics.set(peer, metrics);
    $('#metric-error').textContent = '';
  } catch (e) {
    $('#metric-error').textContent = `its metrics could not be asked: ${e.message}`;
  }
  schedule();
}

function renderChart(metrics) {
  const select = $('#metric');
  const names = [...metrics.keys()].sort();
  if (select.options.length !== names.length) {
    const keep = select.value;
    select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
    if (names.includes(keep)) select.value = keep;
    else if (names.includes('cpu.busy_pct')) select.value = 'cpu.busy_pct';
  }
  const series = metrics.get(select.value) || [];
  const chart = $('#chart');
  const w = Math.max(400, chart.clientWidth || 800), h = 180;
  chart.setAttribute('viewBox', `0 0 ${w} ${h}`);
  if (!series.length) { chart.replaceChildren(); $('#metric-now').textContent = 'no samples yet'; return; }
  // The last hour, or since the first sample when the node has run for less.
  const now = Date.now(), from = Math.max(now - HOUR_MS, series[0][0]);
  const range = Math.max(1000, now - from);
  const values = series.map((p) => p[1]);
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  // Send-on-delta: a value holds until the next one, so the line is drawn in steps.
  const pts = [];
  series.forEach(([t, v], i) => {
    const px = ((Math.max(t, from) - from) / range) * w;
    const py = h - 10 - ((v - lo) / span) * (h - 20);
    if (i) pts.push(`${px},${pts[pts.length - 1].split(',')[1]}`);
    pts.push(`${px},${py}`);
  });
  pts.push(`${w},${pts[pts.length - 1].split(',')[1]}`);
  const line = svg('polyline', { points: pts.join(' ') });
  const label = svg('text', { x: 6, y: 14 });
  label.textContent = `${select.value}: ${lo.toFixed(2)} – ${hi.toFixed(2)} over the last ${ago(range)}`;
  chart.replaceChildren(line, label);
  $('#metric-now').textContent = `now ${values[values.length - 1]}`;
}

// ---- start ----

function start() {
  load().then(connect).catch(report);
}

$('#operator').value = localStorage.getItem('fleetmesh.operator') || '';
// A node's detail opened again asks its metrics again.
window.addEventListener('hashchange', () => { S.metricsOf = null; render(); });
$('#collapse').addEventListener('change', (e) => { S.collapsed = e.target.checked; render(); });
$('#metric').addEventListener('change', render);
// Relative times ("12 s ago", "autonomous for 3 min") move with the clock.
setInterval(() => { if (S.me) render(); }, 1000);
start();
