// The admin console: a small single-page app over the REST API (/api, see /api/openapi.json).
// No build step. Every value from the server is put in the page with textContent, never as HTML.
/* global document, window, fetch, setTimeout, setInterval, URLSearchParams, uPlot */
'use strict';

const REFRESH_MS = 2000;
const pageEl = document.getElementById('page');
let current = { name: '', refresh: async () => {} };
let me = { role: 'read' };

/** Builds an element: h('td', { className: 'uid' }, 'text', childNode, ...). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof window.Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function time(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}

function dur(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
}

function ago(ms) {
  if (!ms) return '–';
  return `${dur(Math.max(0, Date.now() - ms))} ago`;
}

const badge = (text, kind) => h('span', { className: `badge ${kind || text}` }, text);

async function getJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.className = 'show';
  setTimeout(() => (el.className = ''), 3500);
}

/** POSTs an action and reports its outcome; the server audits it with the caller's name. */
async function act(path, label) {
  try {
    const res = await fetch(path, { method: 'POST' });
    const body = await res.json().catch(() => ({}));
    toast(res.ok ? `${label}: done` : `${label}: ${body.error || `HTTP ${res.status}`}`);
  } catch (err) {
    toast(`${label}: ${err.message}`);
  }
  await tick();
}

function actionButton(text, path, label, danger) {
  return h(
    'button',
    {
      className: danger ? 'danger' : '',
      disabled: me.role === 'read',
      title: me.role === 'read' ? 'needs role operator or admin' : '',
      dataset: { action: text.toLowerCase() },
      onclick: (e) => {
        e.preventDefault();
        void act(path, label);
      },
    },
    text,
  );
}

function table(headers, rows, empty) {
  if (rows.length === 0) return h('p', { className: 'muted' }, empty);
  return h(
    'table',
    {},
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((t) => h('th', {}, t)),
      ),
    ),
    h('tbody', {}, rows),
  );
}

function replace(el, ...children) {
  el.replaceChildren(...children.flat());
}

const uidPath = (uid) => encodeURIComponent(uid);

// ----- pages -----

/** The last `n` characters of a UID, the whole one in the title, and a button that copies it. */
function shortUid(uid, href) {
  const short = uid.length > 14 ? `…${uid.slice(-12)}` : uid;
  const text = href ? h('a', { href, title: uid }, short) : h('span', { title: uid }, short);
  return h(
    'span',
    { className: 'short-uid' },
    text,
    h(
      'button',
      {
        className: 'copy',
        title: `copy ${uid}`,
        dataset: { copy: uid },
        onclick: (e) => {
          e.preventDefault();
          void copyText(uid);
        },
      },
      'copy',
    ),
  );
}

async function copyText(text) {
  try {
    await window.navigator.clipboard.writeText(text);
    toast('copied');
  } catch {
    window.prompt('copy', text);
  }
}

function pct(p) {
  return p === undefined || p === null ? '' : `${(p * 100).toFixed(p >= 0.995 || p < 0.005 ? 0 : 1)}%`;
}

/** Identifying values, or the mask the server sent for users without the PHI permission. */
function phiValue(s, key) {
  const v = s.identity && s.identity[key];
  if (!v) return h('span', { className: 'muted' }, '–');
  return h('span', { className: s.identity.masked ? 'masked' : 'phi' }, v);
}

/** Per model: the top finding with its probability, and a badge when a finding is Present. */
function findingsCell(s) {
  const outcome = new Map(s.models.map((m) => [m.model.split('@')[0], m]));
  if (!s.findings.length && !s.models.length) return '–';
  const shown = new Set();
  const lines = s.findings.map((f) => {
    shown.add(f.model);
    const m = outcome.get(f.model);
    const top = f.top || {};
    return h(
      'div',
      { className: 'finding', dataset: { model: f.model } },
      h('span', { className: 'model', title: `${f.model}@${f.version}` }, f.model),
      h('span', { className: 'muted' }, `@${f.version}${m ? ` (${m.provider})` : ''}`),
      ': ',
      h('b', {}, top.meaning || '–'),
      top.probability !== undefined ? ` ${pct(top.probability)}` : '',
      top.presence
        ? badge(
            top.presence,
            f.positive ? 'positive' : top.presence === 'Present' ? 'present-normal' : 'absent',
          )
        : null,
      f.positive && !(top.presence === 'Present' && f.positive) ? badge('positive') : null,
    );
  });
  for (const m of s.models)
    if (!shown.has(m.model.split('@')[0])) lines.push(h('div', {}, `${m.model} (${m.provider})`));
  return lines;
}

const SORTABLE = {
  Received: 'received',
  'Calling AE': 'callingAe',
  Modality: 'modality',
  Description: 'description',
  Accession: 'accession',
  'Inst / series': 'instances',
  State: 'state',
  Findings: 'finding',
};

function studiesPage() {
  const params = { sort: 'received', dir: 'desc', offset: 0, limit: 50 };
  const select = (id, label, onchange) =>
    h('select', { id, onchange, title: label }, h('option', { value: '' }, label));
  const reset = () => {
    params.offset = 0;
    void tick();
  };
  const state = select('state-filter', 'all states', reset);
  for (const s of ['receiving', 'queued', 'inferring', 'delivering', 'done', 'no-model', 'failed'])
    state.append(h('option', { value: s }, s));
  const modality = select('modality-filter', 'all modalities', reset);
  const ae = select('ae-filter', 'all AEs', reset);
  const model = select('model-filter', 'all models', reset);
  const positive = h('input', { type: 'checkbox', id: 'positive-filter', onchange: reset });
  const search = h('input', {
    id: 'search',
    type: 'search',
    placeholder: 'search UID, AE, description, model, finding',
    oninput: reset,
  });
  const pager = h('span', { id: 'pager', className: 'muted' });
  const prev = h(
    'button',
    { id: 'prev', onclick: () => ((params.offset = Math.max(0, params.offset - params.limit)), void tick()) },
    '‹ prev',
  );
  const next = h(
    'button',
    { id: 'next', onclick: () => ((params.offset += params.limit), void tick()) },
    'next ›',
  );
  const list = h('div', { id: 'studies' });
  replace(
    pageEl,
    h('h2', {}, 'Studies'),
    h(
      'div',
      { className: 'controls' },
      state,
      modality,
      ae,
      model,
      h('label', { className: 'check' }, positive, ' has a positive finding'),
      search,
      prev,
      pager,
      next,
    ),
    list,
  );
  /** Keeps a filter's options in step with the values present, keeping the selection. */
  const fill = (el, values, label) => {
    const want = ['', ...values];
    const have = [...el.options].map((o) => o.value);
    if (want.join('\n') === have.join('\n')) return;
    const keep = el.value;
    replace(
      el,
      want.map((v) => h('option', { value: v }, v === '' ? label : v || 'STOW-RS')),
    );
    el.value = want.includes(keep) ? keep : '';
  };
  return async () => {
    const q = new URLSearchParams({
      sort: params.sort,
      dir: params.dir,
      offset: String(params.offset),
      limit: String(params.limit),
    });
    if (state.value) q.set('state', state.value);
    if (modality.value) q.set('modality', modality.value);
    if (ae.value) q.set('ae', ae.value === 'STOW-RS' ? '' : ae.value);
    if (model.value) q.set('model', model.value);
    if (positive.checked) q.set('positive', 'true');
    if (search.value.trim()) q.set('q', search.value.trim());
    const w = await getJson(`/api/worklist?${q}`);
    fill(modality, w.facets.modalities, 'all modalities');
    fill(
      ae,
      w.facets.callingAes.map((a) => a || 'STOW-RS'),
      'all AEs',
    );
    fill(model, w.facets.models, 'all models');
    pager.textContent = w.total ? `${w.offset + 1}–${w.offset + w.rows.length} of ${w.total}` : '0 studies';
    prev.disabled = w.offset === 0;
    next.disabled = w.offset + w.rows.length >= w.total;
    const headers = [
      ...Object.keys(SORTABLE).slice(0, 5),
      'Study',
      ...Object.keys(SORTABLE).slice(5),
      'Time per stage',
      '',
    ];
    const head = headers.map((t) => {
      const key = SORTABLE[t];
      if (!key) return h('th', {}, t);
      const active = params.sort === key;
      return h(
        'th',
        {
          className: `sortable${active ? ' sorted' : ''}`,
          dataset: { sort: key },
          onclick: () => {
            params.dir = active && params.dir === 'desc' ? 'asc' : 'desc';
            params.sort = key;
            params.offset = 0;
            void tick();
          },
        },
        t,
        active ? (params.dir === 'desc' ? ' ▾' : ' ▴') : '',
      );
    });
    const rows = w.rows.map((s) =>
      h(
        'tr',
        { dataset: { study: s.studyUid } },
        h('td', {}, time(s.firstReceivedAt)),
        h('td', {}, s.callingAe || 'STOW-RS'),
        h('td', {}, s.modalities.join(', ') || '–'),
        h('td', { className: 'desc' }, s.description || h('span', { className: 'muted' }, '–')),
        h('td', { className: 'accession' }, phiValue(s, 'accessionNumber')),
        h('td', {}, shortUid(s.studyUid, `#/study/${uidPath(s.studyUid)}`)),
        h('td', {}, `${s.instanceCount} / ${s.seriesCount}`),
        h(
          'td',
          {},
          badge(s.state),
          s.failure || s.detail ? h('div', { className: 'muted small' }, s.failure || s.detail) : null,
          s.completion && s.completion.incomplete
            ? h('div', { className: 'muted small' }, `incomplete: ${s.completion.missing} missing`)
            : null,
          (s.waitingFor || []).map((why) => h('div', { className: 'no-worker small' }, why)),
        ),
        h('td', { className: 'findings' }, findingsCell(s)),
        h(
          'td',
          { className: 'stages' },
          h('span', {}, `recv ${dur(s.stages.receiving)}`),
          h('span', {}, `wait ${dur(s.stages.waiting)}`),
          h('span', {}, `infer ${dur(s.stages.inference)}`),
          h('span', {}, `deliver ${dur(s.stages.delivery)}`),
          h('span', {}, `total ${dur(s.stages.total)}`),
        ),
        h(
          'td',
          { className: 'actions' },
          actionButton('Reprocess', `/api/studies/${uidPath(s.studyUid)}/reprocess`, 'reprocess'),
          s.state === 'failed'
            ? actionButton('Retry', `/api/studies/${uidPath(s.studyUid)}/retry`, 'retry')
            : null,
          s.state !== 'done' && s.state !== 'failed'
            ? actionButton('Cancel', `/api/studies/${uidPath(s.studyUid)}/cancel`, 'cancel', true)
            : null,
        ),
      ),
    );
    replace(
      list,
      rows.length
        ? h('table', { className: 'worklist' }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows))
        : h('p', { className: 'muted' }, 'No studies match.'),
    );
  };
}

function describeEvent(e) {
  switch (e.type) {
    case 'received':
      return `received ${e.instances} instance(s), ${e.bytes} bytes, from ${e.callingAe || 'STOW-RS'} (${e.address})`;
    case 'routed':
      return e.jobs.length
        ? `routed (run ${e.run}) to ${e.jobs.map((j) => `${j.model}@${j.version} → ${j.destinations.join(', ')}`).join('; ')}`
        : `routed (run ${e.run}): ${e.detail || 'no model'}`;
    case 'inferred':
      return `inferred by ${e.model}@${e.version} on ${e.provider} in ${e.inferenceMs} ms over ${e.instances} image(s); SR ${e.srUid}`;
    case 'delivered':
      return `delivered ${e.srUid} to ${e.destination} (attempt ${e.attempt})`;
    case 'failed':
      return `failed in ${e.stage}: ${e.reason}`;
    case 'action':
      return `${e.actor} (${e.role}) ${e.action} → ${e.result}${e.detail ? `: ${e.detail}` : ''}`;
    default:
      return e.type;
  }
}

function jobRows(jobs) {
  return jobs.map((j) =>
    h(
      'tr',
      { dataset: { job: j.id } },
      h('td', {}, j.queue),
      h('td', { className: 'mono' }, j.id),
      h('td', {}, j.detail),
      h('td', {}, badge(j.state)),
      h('td', {}, j.attemptsMade),
      h('td', {}, j.failedReason || '', j.blocked ? h('span', { className: 'no-worker' }, j.blocked) : null),
      h('td', {}, time(j.createdAt)),
      h(
        'td',
        {},
        j.state === 'failed'
          ? actionButton(
              'Retry',
              `/api/queues/${encodeURIComponent(j.queue)}/jobs/${encodeURIComponent(j.id)}/retry`,
              'retry job',
            )
          : null,
        j.state !== 'active' && j.state !== 'completed'
          ? actionButton(
              'Cancel',
              `/api/queues/${encodeURIComponent(j.queue)}/jobs/${encodeURIComponent(j.id)}/cancel`,
              'cancel job',
              true,
            )
          : null,
      ),
    ),
  );
}

function studyPage(uid) {
  const body = h('div', { id: 'study' });
  replace(
    pageEl,
    h('p', {}, h('a', { href: '#/studies' }, '← studies')),
    h('h2', {}, 'Study ', h('span', { className: 'mono' }, uid)),
    body,
  );
  return async () => {
    const s = await getJson(`/api/studies/${uidPath(uid)}`);
    replace(
      body,
      h(
        'div',
        { className: 'controls' },
        badge(s.state),
        h('span', {}, `${s.instanceCount} instance(s) from ${s.callingAe || 'STOW-RS'}, run ${s.run}`),
        actionButton('Reprocess', `/api/studies/${uidPath(uid)}/reprocess`, 'reprocess'),
        actionButton('Cancel', `/api/studies/${uidPath(uid)}/cancel`, 'cancel', true),
        h('a', { href: `/api/audit?studyUid=${uidPath(uid)}&format=csv` }, 'export CSV'),
        h('a', { href: `/api/audit?studyUid=${uidPath(uid)}&format=json` }, 'JSON'),
      ),
      h(
        'p',
        { className: 'stages' },
        ['receiving', 'waiting', 'inference', 'delivery', 'total'].map((k) =>
          h('span', {}, `${k}: ${dur(s.stages[k])}`),
        ),
      ),
      h(
        'p',
        { id: 'study-identity' },
        `${(s.modalities || []).join(', ') || 'no modality'} · ${s.description || 'no description'} · accession `,
        phiValue(s, 'accessionNumber'),
        ' · patient ID ',
        phiValue(s, 'patientId'),
        ' · patient ',
        phiValue(s, 'patientName'),
      ),
      s.detail ? h('p', { id: 'study-detail' }, s.detail) : [],
      (s.waitingFor || []).length
        ? h(
            'p',
            { id: 'study-waiting', className: 'no-worker' },
            `waiting: ${s.waitingFor.join('; ')}. The job waits in its model's queue (no attempt used) until a worker with the model is up.`,
          )
        : [],
      s.completion ? h('p', { id: 'study-completion' }, describeCompletion(s.completion)) : [],
      s.reports && s.reports.length
        ? h(
            'ul',
            { id: 'study-reports' },
            s.reports.map((r) =>
              h(
                'li',
                {},
                `current report of ${r.model}: `,
                h('span', { className: 'mono' }, r.sopInstanceUid),
                ` (run ${r.run})`,
                r.supersedes ? [' supersedes ', h('span', { className: 'mono' }, r.supersedes)] : [],
              ),
            ),
          )
        : [],
      h('h2', {}, 'Findings'),
      findingsTables(s.findings ?? []),
      h('h2', {}, 'Series'),
      seriesTable(uid, s.instances ?? []),
      h('h2', {}, 'Routing'),
      routingTable(s.series ?? []),
      h('h2', {}, 'Models'),
      modelTable(s.models ?? {}),
      h('h2', {}, 'Timeline'),
      s.events.length
        ? h(
            'ol',
            { className: 'timeline', id: 'timeline' },
            s.events.map((e) =>
              h(
                'li',
                { dataset: { type: e.type } },
                h('span', { className: 'muted' }, time(Date.parse(e.at))),
                ' ',
                describeEvent(e),
              ),
            ),
          )
        : h('p', { className: 'muted' }, 'No audit events yet.'),
      h('h2', {}, 'Jobs'),
      jobTable(s.jobs, 'No jobs kept.'),
    );
  };
}

/** Each model's current report as a table, as the SR states it. */
function findingsTables(findings) {
  if (!findings.length) return h('p', { className: 'muted' }, 'No report yet.');
  return findings.map((f) =>
    h(
      'div',
      { className: 'report', dataset: { model: f.model } },
      h(
        'h3',
        {},
        `${f.model}@${f.version} (run ${f.run}) `,
        f.positive ? badge('positive') : null,
        ' SR ',
        shortUid(f.srUid),
      ),
      table(
        ['Code', 'Finding', 'Probability', 'Presence', 'Other'],
        f.rows.map((r) =>
          h(
            'tr',
            {},
            h('td', { className: 'mono' }, r.code ? `${r.code.scheme} ${r.code.value}` : '–'),
            h('td', {}, r.meaning || '–'),
            h('td', {}, pct(r.probability) || '–'),
            h(
              'td',
              {},
              r.presence ? badge(r.presence, r.presence === 'Present' ? 'present' : 'absent') : '–',
            ),
            h(
              'td',
              { className: 'small' },
              r.volumeMl !== undefined ? `${r.volumeMl.toFixed(1)} mL` : '',
              (r.classes || []).map((c) => `${c.meaning} ${pct(c.probability)}`).join(' · '),
            ),
          ),
        ),
        'The report states no finding.',
      ),
    ),
  );
}

/** Series with their attributes and a thumbnail of up to four of their images. */
function seriesTable(uid, instances) {
  const bySeries = new Map();
  for (const i of instances) {
    if (!bySeries.has(i.seriesUid)) bySeries.set(i.seriesUid, []);
    bySeries.get(i.seriesUid).push(i);
  }
  const rows = [...bySeries].map(([seriesUid, list]) => {
    const first = list[0];
    return h(
      'tr',
      { dataset: { series: seriesUid } },
      h('td', {}, shortUid(seriesUid)),
      h('td', {}, first.modality || '–'),
      h('td', {}, first.seriesDescription || '–'),
      h('td', {}, first.bodyPartExamined || '–'),
      h('td', {}, String(list.length)),
      h(
        'td',
        {},
        first.rows
          ? `${first.columns}×${first.rows}${first.numberOfFrames > 1 ? `×${first.numberOfFrames}` : ''}`
          : '–',
      ),
      h(
        'td',
        { className: 'thumbs' },
        // Pixels may carry burned-in identifying data: previews only for users with the PHI permission.
        me.phi === false
          ? h('span', { className: 'muted small' }, 'previews need the PHI permission')
          : list.slice(0, 4).map((i) => {
              const img = h('img', {
                className: 'thumb',
                alt: `instance ${i.instanceNumber ?? ''}`,
                loading: 'lazy',
                src: `/api/studies/${uidPath(uid)}/instances/${uidPath(i.sopInstanceUid)}/thumbnail.png`,
                dataset: { sop: i.sopInstanceUid },
              });
              img.onerror = () => img.replaceWith(h('span', { className: 'muted small' }, 'no preview'));
              return img;
            }),
      ),
    );
  });
  return table(
    ['Series', 'Modality', 'Description', 'Body part', 'Instances', 'Size', 'Images'],
    rows,
    'No instances indexed.',
  );
}

/** How the latest run found the study complete: the MPPS evidence, or the quiet period (and what was missing). */
function describeCompletion(c) {
  const how =
    c.by === 'mpps'
      ? c.discontinued
        ? `closed by a discontinued procedure step (${c.discontinued})`
        : 'complete by the modality (MPPS): every announced instance arrived'
      : c.by === 'counts'
        ? "complete by the counts the images carry (every series whole, the rule's required series in)"
        : 'complete by the quiet period';
  const missing = c.incomplete
    ? ` — INCOMPLETE: ${c.missing} announced instance(s) missing` +
      (c.openSteps ? `, ${c.openSteps} procedure step(s) still in progress` : '')
    : '';
  return `Run ${c.run}: ${how}${missing}`;
}

/** Per series and model: ran or not, and why not (the routing records of the latest run). */
function routingTable(series) {
  const rows = [];
  for (const r of series) {
    const anatomy = r.bodyPart ? `${r.bodyPart} (${r.source})` : `none (${r.source})`;
    for (const [model, d] of Object.entries(r.models ?? {})) {
      rows.push(
        h(
          'tr',
          { dataset: { series: r.seriesUid, model } },
          h('td', { className: 'uid' }, r.seriesUid),
          h('td', {}, r.modality ?? ''),
          h('td', {}, anatomy),
          h('td', {}, model),
          h('td', {}, d.accepted ? badge('routed') : badge('not routed', 'not-routed')),
          h('td', { className: 'reasons' }, d.accepted ? (d.rules ?? []).join(', ') : d.reasons.join('; ')),
        ),
      );
    }
  }
  return table(
    ['Series', 'Modality', 'Body part (from)', 'Model', 'Decision', 'Why'],
    rows,
    'No routing decision yet.',
  );
}

/** Per model: images used and skipped, with why. */
function modelTable(models) {
  const rows = Object.entries(models).map(([model, o]) =>
    h(
      'tr',
      { dataset: { model } },
      h('td', {}, model),
      h('td', {}, String(o.run)),
      h('td', {}, String(o.images)),
      h('td', {}, String(o.skipped)),
      h('td', { className: 'reasons' }, o.reasons.join('; ')),
    ),
  );
  return table(['Model', 'Run', 'Images used', 'Skipped', 'Why skipped'], rows, 'No model has run.');
}

/** A page that is one table of what `url` answers, a row per item. */
function tablePage({ id, title, url, headers, row, empty }) {
  const body = h('div', { id });
  replace(pageEl, h('h2', {}, title), body);
  return async () => {
    const items = await getJson(url);
    replace(body, table(headers, items.map(row), empty));
  };
}

/** Jobs as a table, with their actions. */
function jobTable(jobs, empty) {
  return table(
    ['Queue', 'Job', 'What', 'State', 'Attempts', 'Reason', 'Created', 'Actions'],
    jobRows(jobs),
    empty,
  );
}

function workersPage() {
  return tablePage({
    id: 'workers',
    title: 'Inference workers',
    url: '/api/workers',
    headers: [
      'Worker',
      'Host',
      'GPU',
      'Provider per model',
      'Models',
      'Concurrency',
      'Jobs',
      'Images',
      'Jobs/min',
      'Last heartbeat',
      '',
    ],
    row: (w) =>
      h(
        'tr',
        {},
        h('td', { className: 'mono' }, w.workerId),
        h('td', {}, `${w.host} (pid ${w.pid})`),
        h('td', {}, w.gpu || 'none'),
        h(
          'td',
          {},
          Object.entries(w.providers).map(([m, p]) => h('div', {}, `${m}: ${p}`)),
        ),
        h('td', {}, w.models.join(', ')),
        h('td', {}, w.concurrency),
        h('td', {}, w.jobsProcessed),
        h('td', {}, w.imagesProcessed),
        h('td', {}, w.jobsPerMinute),
        // The server measures the age on Redis's clock; the browser's clock may be off.
        h(
          'td',
          {},
          typeof w.heartbeatAgeMs === 'number' ? `${dur(w.heartbeatAgeMs)} ago` : ago(w.lastHeartbeat),
        ),
        h('td', {}, badge(w.alive ? 'ok' : 'dead')),
      ),
    empty: 'No worker has sent a heartbeat.',
  });
}

function destinationsPage() {
  return tablePage({
    id: 'destinations',
    title: 'Destinations',
    url: '/api/destinations',
    headers: [
      'Destination',
      'Kind',
      'Health',
      'Breaker',
      'Backlog',
      'Failed jobs',
      'Last success',
      'Last error',
    ],
    row: (d) =>
      h(
        'tr',
        {},
        h('td', {}, d.name, d.isDefault ? h('span', { className: 'muted' }, ' (default)') : null),
        h('td', {}, d.kind),
        h('td', {}, badge(d.health)),
        h('td', {}, d.status?.breaker || '–'),
        h('td', {}, d.backlog),
        h('td', {}, d.failedJobs),
        h('td', {}, ago(d.status?.lastSuccessAt)),
        h('td', {}, d.status?.lastError ? `${ago(d.status.lastErrorAt)}: ${d.status.lastError}` : '–'),
      ),
    empty: 'No destinations.',
  });
}

function associationsPage() {
  return tablePage({
    id: 'associations',
    title: 'Recent associations',
    url: '/api/associations?limit=100',
    headers: ['Started', 'Calling AE', 'Called AE', 'Address', 'Stored', 'Failed', 'Duration', 'Result'],
    row: (a) =>
      h(
        'tr',
        {},
        h('td', {}, time(a.startedAt)),
        h('td', {}, a.callingAe),
        h('td', {}, a.calledAe),
        h('td', {}, a.address),
        h('td', {}, a.stored),
        h('td', {}, a.failed),
        h('td', {}, dur(a.durationMs)),
        h('td', {}, badge(a.result), a.reason ? h('div', { className: 'muted' }, a.reason) : null),
      ),
    empty: 'No associations recorded yet.',
  });
}

function queuesPage() {
  const body = h('div', { id: 'queues' });
  const failed = h('div', { id: 'failed-jobs' });
  replace(pageEl, h('h2', {}, 'Queues'), body, h('h2', {}, 'Failed jobs'), failed);
  return async () => {
    const queues = await getJson('/api/queues');
    const states = ['waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed'];
    replace(
      body,
      table(
        ['Queue', ...states, 'State', ''],
        queues.map((q) =>
          h(
            'tr',
            { dataset: { queue: q.name } },
            h('td', {}, q.name),
            states.map((s) => h('td', {}, q.counts[s] ?? 0)),
            h('td', {}, badge(q.paused ? 'paused' : 'active')),
            h(
              'td',
              {},
              q.paused
                ? actionButton(
                    'Resume',
                    `/api/queues/${encodeURIComponent(q.name)}/resume`,
                    `resume ${q.name}`,
                  )
                : actionButton(
                    'Pause',
                    `/api/queues/${encodeURIComponent(q.name)}/pause`,
                    `pause ${q.name}`,
                    true,
                  ),
            ),
          ),
        ),
        'No queues.',
      ),
    );
    const jobs = (
      await Promise.all(
        queues.map((q) => getJson(`/api/queues/${encodeURIComponent(q.name)}/jobs?state=failed&limit=50`)),
      )
    ).flat();
    replace(failed, jobTable(jobs, 'No failed jobs.'));
  };
}

function auditPage() {
  const from = h('input', { type: 'date', id: 'audit-from' });
  const to = h('input', { type: 'date', id: 'audit-to' });
  const body = h('div', { id: 'audit' });
  const link = (format) => {
    const p = new URLSearchParams({ format });
    if (from.value) p.set('from', `${from.value}T00:00:00Z`);
    if (to.value) p.set('to', `${to.value}T23:59:59.999Z`);
    return `/api/audit?${p}`;
  };
  const csv = h('a', { href: link('csv') }, 'export CSV');
  const json = h('a', { href: link('json') }, 'export JSON');
  const update = () => {
    csv.href = link('csv');
    json.href = link('json');
    void tick();
  };
  from.onchange = update;
  to.onchange = update;
  replace(
    pageEl,
    h('h2', {}, 'Audit trail'),
    h('div', { className: 'controls' }, 'from', from, 'to', to, csv, json),
    body,
  );
  return async () => {
    const records = await getJson(link('json') + '&limit=200');
    replace(
      body,
      table(
        ['When', 'Type', 'Study', 'What'],
        records
          .slice()
          .reverse()
          .map((e) =>
            h(
              'tr',
              {},
              h('td', {}, time(Date.parse(e.at))),
              h('td', {}, e.type),
              h('td', { className: 'uid' }, e.studyUid || ''),
              h('td', {}, describeEvent(e)),
            ),
          ),
        'No audit records in range.',
      ),
    );
  };
}

/** Seconds as the console shows a turnaround: '–' without samples. */
function secs(s) {
  return s === null || s === undefined ? '–' : dur(Math.round(s * 1000));
}

function turnaroundPage() {
  const lanes = h('div', { id: 'turnaround-lanes' });
  const models = h('div', { id: 'turnaround-models' });
  const slos = h('div', { id: 'turnaround-slos' });
  replace(
    pageEl,
    h('h2', {}, 'Turnaround: receive → SR delivered, last hour'),
    lanes,
    h('h2', {}, 'By priority and model'),
    models,
    h('h2', {}, 'Rule SLOs'),
    slos,
  );
  return async () => {
    const t = await getJson('/api/turnaround');
    const q = (r) => [h('td', {}, r.count), h('td', {}, secs(r.p50)), h('td', {}, secs(r.p95))];
    replace(
      lanes,
      table(
        ['Priority', 'SRs', 'p50', 'p95'],
        t.lanes.map((r) => h('tr', { dataset: { lane: r.lane } }, h('td', {}, badge(r.lane)), q(r))),
        'No report delivered in the last hour.',
      ),
    );
    replace(
      models,
      table(
        ['Priority', 'Model', 'SRs', 'p50', 'p95'],
        t.models.map((r) => h('tr', {}, h('td', {}, badge(r.lane)), h('td', {}, r.model), q(r))),
        'No report delivered in the last hour.',
      ),
    );
    replace(
      slos,
      table(
        ['Rule', 'Target p95', 'SRs', 'p50', 'p95', 'Status'],
        t.slos.map((r) =>
          h(
            'tr',
            { dataset: { rule: r.rule } },
            h('td', {}, r.rule),
            h('td', {}, secs(r.targetP95Seconds)),
            q(r),
            h('td', {}, badge(r.breached ? 'breached' : 'met', r.breached ? 'failed' : 'done')),
          ),
        ),
        'No rule sets an SLO (routing.rules[].slo.p95Seconds).',
      ),
    );
  };
}

// ----- trends: charts drawn by uPlot (/vendor, from node_modules) -----

const PALETTE = ['#0969da', '#cf222e', '#1f883d', '#b7791f', '#8250df', '#bf3989', '#1b7c83', '#6e7781'];
/** How often a chart's data is re-read, per range (the day has 10-minute points). */
const TRENDS_REFRESH_MS = { hour: 5000, day: 60000 };
const charts = new Map();

/** The charts: each a title, a y-axis label and the series it draws from GET /api/trends. */
const CHARTS = [
  {
    id: 'ingest',
    title: 'Received per minute',
    unit: '/min',
    series: (t) => [
      { label: 'studies', values: t.studiesPerMinute },
      { label: 'instances', values: t.instancesPerMinute },
    ],
  },
  {
    id: 'latency-priority',
    title: 'Receive → report latency by priority (s)',
    unit: 's',
    sparse: true,
    series: (t) =>
      t.latency.lanes.flatMap((l, i) => [
        { label: `${l.lane} p50`, values: l.p50, color: i },
        { label: `${l.lane} p95`, values: l.p95, color: i, dash: true },
      ]),
  },
  {
    id: 'latency-model',
    title: 'Receive → report latency by model (s)',
    unit: 's',
    sparse: true,
    series: (t) =>
      t.latency.models.flatMap((m, i) => [
        { label: `${m.model} p50`, values: m.p50, color: i },
        { label: `${m.model} p95`, values: m.p95, color: i, dash: true },
      ]),
  },
  {
    id: 'queues',
    title: 'Queue depths (jobs waiting, delayed or running)',
    unit: 'jobs',
    sparse: true,
    series: (t) => t.queues.map((q) => ({ label: q.queue, values: q.jobs })),
  },
  {
    id: 'failures-stage',
    title: 'Failures by stage',
    unit: 'jobs',
    series: (t) => t.failuresByStage.map((f) => ({ label: f.stage, values: f.count })),
  },
  {
    id: 'failures-ae',
    title: 'Failures by calling AE',
    unit: 'jobs',
    series: (t) => t.failuresByAe.map((f) => ({ label: f.callingAe || '(unknown)', values: f.count })),
  },
  {
    id: 'positive-rate',
    title: 'Positive-finding rate per model (drift)',
    unit: '%',
    sparse: true,
    series: (t) =>
      t.positiveRate.map((m) => ({
        label: m.model,
        values: m.rate.map((r) => (r === null ? null : Math.round(r * 1000) / 10)),
      })),
  },
];

function chartWidth(el) {
  return Math.max(280, Math.floor(el.clientWidth) - 2);
}

/** Draws or updates one chart; a change in the set of series makes a new plot. */
function drawChart(def, t, el) {
  const series = def.series(t);
  const shape = series.map((s) => s.label).join('\u0000');
  const data = [t.t, ...series.map((s) => s.values)];
  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== 0).length, 0);
  el.dataset.series = String(series.length);
  el.dataset.points = String(points);
  const holder = el.querySelector('.plot');
  const old = charts.get(def.id);
  if (old && old.shape === shape && old.range === t.range) {
    old.plot.setData(data);
    return;
  }
  if (old) old.plot.destroy();
  holder.replaceChildren();
  if (series.length === 0) {
    holder.append(h('p', { className: 'empty' }, 'No data in this range yet.'));
    charts.delete(def.id);
    return;
  }
  const opts = {
    width: chartWidth(holder),
    height: 220,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{}, { label: def.unit, size: 56 }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[(s.color ?? i) % PALETTE.length],
        width: 2,
        dash: s.dash ? [6, 4] : undefined,
        spanGaps: Boolean(def.sparse),
        points: {
          show: Boolean(def.sparse),
          size: 7,
          fill: PALETTE[(s.color ?? i) % PALETTE.length],
        },
      })),
    ],
  };
  charts.set(def.id, { plot: new uPlot(opts, data, holder), shape, range: t.range });
}

function trendsPage() {
  let range = window.sessionStorage.getItem('trends-range') || 'hour';
  let lastRead = 0;
  for (const c of charts.values()) c.plot.destroy();
  charts.clear();
  const buttons = ['hour', 'day'].map((r) =>
    h(
      'button',
      {
        className: r === range ? 'range active' : 'range',
        dataset: { range: r },
        onclick: () => {
          range = r;
          window.sessionStorage.setItem('trends-range', r);
          for (const b of buttons) b.classList.toggle('active', b.dataset.range === r);
          lastRead = 0;
          void tick();
        },
      },
      r === 'hour' ? 'Last hour' : 'Last day',
    ),
  );
  const boxes = CHARTS.map((def) =>
    h(
      'section',
      { className: 'chart', id: `chart-${def.id}` },
      h('h3', {}, def.title),
      h('div', { className: 'plot' }),
    ),
  );
  replace(
    pageEl,
    h('h2', {}, 'Trends'),
    h('div', { className: 'range-picker' }, buttons),
    h('div', { className: 'charts' }, boxes),
  );
  return async () => {
    if (Date.now() - lastRead < TRENDS_REFRESH_MS[range]) return;
    const t = await getJson(`/api/trends?range=${range}`);
    lastRead = Date.now();
    if (!document.body.contains(boxes[0])) return; // the page changed while reading
    for (const [i, def] of CHARTS.entries()) drawChart(def, t, boxes[i]);
    document.getElementById('page').dataset.trendsRange = t.range;
  };
}

window.addEventListener('resize', () => {
  for (const [id, c] of charts) {
    const holder = document.querySelector(`#chart-${id} .plot`);
    if (holder) c.plot.setSize({ width: chartWidth(holder), height: 220 });
  }
});

// ----- shell -----

/** A banner on every page while a rule's SLO is missed. */
async function refreshSloAlerts() {
  const t = await getJson('/api/turnaround');
  const el = document.getElementById('slo-alerts');
  const breached = t.slos.filter((s) => s.breached);
  el.hidden = breached.length === 0;
  replace(
    el,
    breached.map((s) =>
      h(
        'div',
        { className: 'slo-alert', dataset: { rule: s.rule } },
        `SLO missed: rule ${s.rule}: p95 ${secs(s.p95)} over the last hour (${s.count} SRs), target ${secs(s.targetP95Seconds)} `,
        h('a', { href: '#/turnaround' }, 'details'),
      ),
    ),
  );
}

async function refreshSummary() {
  const o = await getJson('/api/overview');
  const el = document.getElementById('summary');
  const card = (label, value, id) => h('div', { className: 'card', id }, h('b', {}, value), label);
  const missing = (o.models || []).filter((m) => m.problem);
  replace(
    el,
    missing.map((m) =>
      h(
        'div',
        { className: 'card no-worker', id: `card-model-${m.model}` },
        h('b', {}, m.pending),
        m.problem,
      ),
    ),
    card('workers alive', `${o.workersAlive}/${o.workersKnown}`, 'card-workers'),
    Object.entries(o.studies).map(([state, n]) => card(state, n, `card-${state}`)),
    o.queues.map((q) =>
      card(
        `${q.name}${q.paused ? ' (paused)' : ''}`,
        (q.counts.waiting || 0) +
          (q.counts.prioritized || 0) +
          (q.counts.delayed || 0) +
          (q.counts.active || 0),
        `card-q-${q.name}`,
      ),
    ),
  );
}

let ticking = false;
async function tick() {
  if (ticking) return;
  ticking = true;
  const live = document.getElementById('live');
  try {
    await Promise.all([current.refresh(), refreshSummary(), refreshSloAlerts()]);
    live.className = 'dot on';
    document.getElementById('updated').textContent =
      `live · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  } catch (err) {
    live.className = 'dot off';
    document.getElementById('updated').textContent = `update failed: ${err.message}`;
  } finally {
    ticking = false;
  }
}

function route() {
  const hash = window.location.hash.replace(/^#\/?/, '') || 'studies';
  const [name, ...rest] = hash.split('/');
  const pages = {
    studies: studiesPage,
    workers: workersPage,
    destinations: destinationsPage,
    associations: associationsPage,
    queues: queuesPage,
    audit: auditPage,
    turnaround: turnaroundPage,
    trends: trendsPage,
  };
  let refresh;
  if (name === 'study' && rest.length) refresh = studyPage(decodeURIComponent(rest.join('/')));
  else refresh = (pages[name] || studiesPage)();
  current = { name, refresh };
  for (const a of document.querySelectorAll('nav a[data-page]'))
    a.classList.toggle('active', a.dataset.page === (name === 'study' ? 'studies' : name));
  void tick();
}

async function start() {
  try {
    me = await getJson('/api/whoami');
    document.getElementById('whoami').textContent = `${me.name} (${me.role})`;
  } catch {
    document.getElementById('whoami').textContent = 'not signed in';
  }
  window.addEventListener('hashchange', route);
  route();
  setInterval(() => void tick(), REFRESH_MS);
}

void start();
