// fleetmesh console, a node's twin in the Node view: GET /api/v1/twins/{peer}.
//
// The serving node answers for itself, and for its region's members while it leads the
// region; for any other node it asks that node's region master over the network
// (`source: master`). A 409 (no master known) names the region, which the panel says
// plainly. The twin is read when the node is picked and again
// shortly after the stream carries one of that node's changes; nothing is polled.
// Uses the helpers of app.js and drift.js (loaded around this file, before anything runs).
'use strict';

// Lines drawn at most per list (files, ports, services, package versions, changes).
const TWIN_LIST = 100;
const TWIN_CHANGES = 20;
// A change of the node is in its twin within about a second: read it again after this.
const TWIN_FOLLOW_MS = 1500;

const T = {
  peer: null,     // the node shown
  answer: null,   // { status, body } of the last read
  readAt: 0,
  loading: false,
  again: false,
  timer: null,
  shown: null,
};

function twinFor(peer) {
  if (T.peer === peer) return;
  T.peer = peer;
  T.answer = null;
  T.shown = null;
  clearTimeout(T.timer);
  T.timer = null;
  $('#twin-status').textContent = 'reading the twin…';
  $('#twin-version').textContent = '';
  $('#twin-sections').replaceChildren();
  readTwin().catch(report);
}

// A change of `peer` went by on the stream: its twin moves a moment later.
function twinAfterChange(peer) {
  if (peer !== T.peer || T.timer) return;
  T.timer = setTimeout(() => { T.timer = null; readTwin().catch(report); }, TWIN_FOLLOW_MS);
}

async function readTwin() {
  if (!T.peer) return;
  if (T.loading) { T.again = true; return; }
  T.loading = true;
  const peer = T.peer;
  try {
    const r = await fetch(`/api/v1/twins/${encodeURIComponent(peer)}`, { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) { showLogin(); return; }
    const body = await r.json().catch(() => ({}));
    if (peer !== T.peer) return;
    T.answer = { status: r.status, body };
    T.readAt = Date.now();
  } finally {
    T.loading = false;
    if (T.again) { T.again = false; readTwin().catch(report); }
  }
  schedule();
}

function renderTwin(peer) {
  twinFor(peer);
  if (!T.answer || T.shown === T.answer) return;
  T.shown = T.answer;
  const { status, body } = T.answer;
  const sections = $('#twin-sections');
  const note = $('#twin-status');
  $('#twin-version').textContent = '';
  if (status === 409 && body.region) {
    const master = body.master ? ` (${nameOf(body.master)})` : '';
    note.dataset.state = 'held';
    note.textContent = `Held by the master of region ${body.region}${master}: its twin is read on that node's console.`;
    sections.replaceChildren();
    return;
  }
  if (status !== 200) {
    note.dataset.state = 'error';
    note.textContent = status === 404 ? 'This node is not known here.' : `No twin: ${body.error || status}`;
    sections.replaceChildren();
    return;
  }
  note.dataset.state = 'ok';
  const local = peer === S.me.peer_id;
  const from = local
    ? `Read from ${S.me.name} (this node) `
    : body.source === 'master'
      ? `Read from the master of region ${body.identity && body.identity.value ? body.identity.value.region : '?'}, through ${S.me.name} `
      : `Read from ${S.me.name}, its region's master `;
  note.replaceChildren(
    from,
    since('span', T.readAt, '{} ago'),
    ...(body.received_ms ? ['; received from the node ', since('span', body.received_ms, '{} ago')] : []),
    // Drift is judged by the region's master: elsewhere the score is not known.
    body.desired ? ` · drift score ${body.drift_score}` : ' · no drift score here (judged by its region\'s master, where a desired state applies)',
    ` · ${body.status || 'unknown'}${body.connectivity ? `, ${body.connectivity}` : ''}`);
  $('#twin-version').textContent = `version ${body.version}`;
  sections.replaceChildren(
    identitySection(body.identity), hostSection(body.host), softwareSection(body.software, local, peer),
    packagesSection(body.packages), observedSection(body.observed), policySection(body.policy),
    healthSection(body.health), changesSection(body.changes));
}

const unknown = (v) => (v === null || v === undefined || v === '' ? 'unknown' : String(v));

function section(name, s, ...kids) {
  const box = el('div', { class: 'twin-section', 'data-section': name });
  const title = el('h4', { text: `${name} ` });
  if (s && s.updated_ms) title.append(since('span', s.updated_ms, 'updated {} ago', { class: 'note' }));
  box.append(title, ...kids);
  return box;
}

// A definition list of [term, value] pairs; a value may be an element.
function facts(pairs) {
  const dl = el('dl');
  for (const [k, v] of pairs) {
    const dd = el('dd', { 'data-fact': k });
    dd.append(v instanceof Node ? v : unknown(v));
    if (!(v instanceof Node) && unknown(v) === 'unknown') dd.classList.add('unknown');
    dl.append(el('dt', { text: k }), dd);
  }
  return dl;
}

// A digest, shortened, with the full value in its title and a copy button.
function digest(d) {
  if (!d) return el('span', { class: 'unknown', text: 'unknown' });
  return el('span', {}, el('code', { title: d, 'data-full': d, text: shortDigests(d) }), ' ',
    el('button', { class: 'copy', 'data-copy': d, title: 'copy the full value', text: 'copy' }));
}

function bytes(n) {
  if (typeof n !== 'number') return null;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function capped(items, max, line) {
  const ul = el('ul', { class: 'twin-list' });
  for (const x of items.slice(0, max)) ul.append(line(x));
  if (items.length > max) ul.append(el('li', { class: 'note', text: `${items.length - max} more not shown` }));
  return ul;
}

function identitySection(s) {
  const v = (s && s.value) || {};
  return section('identity', s, facts([['name', v.name], ['region', v.region], ['role', v.role],
    ['peer id', v.peer], ['incarnation', v.incarnation]]));
}

function hostSection(s) {
  const v = (s && s.value) || {};
  return section('host', s, facts([['hostname', v.hostname], ['os', v.os], ['kernel', v.kernel],
    ['cpus', v.cpus], ['memory', bytes(v.memory_bytes)], ['vendor', v.vendor],
    ['product', v.product], ['serial', v.serial]]));
}

function softwareSection(s, local, peer) {
  const v = (s && s.value) || {};
  const pairs = [['fleetmesh', v.version], ['executable sha256', digest(v.exe_sha256)],
    ['SBOM sha256', digest(v.sbom_sha256)], ['SBOM components', v.sbom_components]];
  // Only a node serves its own SBOM.
  if (local) pairs.push(['SBOM', el('a', { href: `/api/v1/twins/${encodeURIComponent(peer)}/sbom`, 'data-testid': 'sbom', text: 'CycloneDX JSON' })]);
  return section('software', s, facts(pairs));
}

function packagesSection(s) {
  const v = (s && s.value) || {};
  const versions = Object.entries(v.versions || {});
  const kids = [facts([['source', v.source], ['installed', v.count], ['digest', digest(v.digest)]])];
  if (versions.length) kids.push(capped(versions, TWIN_LIST, ([n, ver]) => el('li', { text: `${n} ${ver}` })));
  return section('packages', s, ...kids);
}

function fileFact(f) {
  if (f && typeof f === 'object' && f.present) return digest(f.present);
  return el('span', { class: f === 'unknown' ? 'unknown' : '', text: String(f) });
}

function observedSection(s) {
  const v = (s && s.value) || {};
  const files = Object.entries(v.files || {});
  const services = Object.entries(v.services || {});
  const ports = v.ports;
  return section('observed', s,
    el('h5', { text: `files (${files.length})` }),
    files.length ? capped(files, TWIN_LIST, ([path, f]) => el('li', { 'data-path': path }, `${path}: `, fileFact(f)))
      : el('p', { class: 'note', text: 'no file named by the desired state' }),
    el('h5', { text: 'ports' }),
    el('p', { 'data-fact': 'ports', text: !ports ? 'not read yet' : ports.length ? ports.slice(0, TWIN_LIST).join(', ') + (ports.length > TWIN_LIST ? ` and ${ports.length - TWIN_LIST} more` : '') : 'none listening' }),
    el('h5', { text: `services (${services.length})` }),
    services.length ? capped(services, TWIN_LIST, ([n, st]) => el('li', { text: `${n}: ${st}` }))
      : el('p', { class: 'note', text: 'no service probe' }));
}

function policySection(s) {
  const v = (s && s.value) || {};
  return section('policy', s, facts([['version', v.version]]));
}

function healthSection(s) {
  const v = (s && s.value) || {};
  return section('health', s, facts([['state', v.state], ['why', (v.reasons || []).join('; ') || 'nothing wrong'],
    ['connectivity', v.connectivity], ['backlog', v.backlog]]));
}

function changesSection(s) {
  const list = ((s && s.value) || []).slice().sort((a, b) => b.seq - a.seq);
  return section('changes', s, list.length
    ? capped(list, TWIN_CHANGES, (c) => el('li', { class: `sev-${c.severity}` },
      el('time', { text: clock(c.at_ms) }), `${c.change} ${c.kind} ${c.subject} (${c.severity}, #${c.seq})`))
    : el('p', { class: 'note', text: 'none' }));
}
