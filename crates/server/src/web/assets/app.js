// Hearth console: a single-page app over the REST API (/api/v1), the same JSON the CLI uses.
// Hash routes (#/jobs, #/jobs/12, ...). No framework: pages render HTML strings built with
// esc() for every value, and live updates come from one EventSource (/api/v1/events).
'use strict';

const S = {
  me: null,          // the logged-in user, or null
  jobs: new Map(),   // id -> job, what the jobs page shows
  es: null,          // the EventSource of job and session events
  esAll: false,      // whether it streams everyone's jobs
  cleanup: null,     // stops the current page's streams and timers
  gen: 0,            // bumped by every page drawn: a page overtaken while loading stands down
  onJobs: null,      // the current page's handler of job events
  onSessions: null,  // the current page's handler of session events
  flash: null,       // a message for the next admin page drawn: { msg, error, conflict }
  quotaUser: null,   // the user the quota form last edited
};
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'lost'];
const STATES = ['queued', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'lost'];

// ---- helpers ----

const $ = (sel, root) => (root || document).querySelector(sel);
function esc(v) {
  return String(v == null ? '' : v).replace(/[&<>"']/g, c =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function cookie(name) {
  const m = document.cookie.split(';').map(s => s.trim()).find(s => s.startsWith(name + '='));
  return m ? m.slice(name.length + 1) : '';
}
function mib(n) {
  if (n == null) return '';
  return n >= 1024 ? (n / 1024).toFixed(n % 1024 ? 1 : 0) + ' GiB' : n + ' MiB';
}
function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  if (n < 1024 ** 3) return (n / 1024 / 1024).toFixed(1) + ' MiB';
  return (n / 1024 ** 3).toFixed(2) + ' GiB';
}
function dur(ms) {
  if (ms == null || ms < 0) return '';
  // Start-up phases are often under a second or a few: those keep their tenths.
  if (ms < 10000) return (ms / 1000).toFixed(1) + 's';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}
function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleString();
}
function cores(n) { return n === 1 ? '1 core' : n + ' cores'; }
function badge(state) {
  return `<span class="state state-${esc(state)}">${esc(state)}</span>`;
}
function toast(msg, error) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = 'toast' + (error ? ' error' : '');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, error ? 8000 : 4000);
}
// Widths set through the CSSOM: the page's CSP allows no inline style attributes.
function applyGrow(root) {
  for (const el of root.querySelectorAll('[data-grow]')) el.style.flexGrow = el.dataset.grow;
}

// Live tables redrawn from a poll: rows kept by key, and a cell written only when its HTML
// changed, so that a button under the pointer (or a WebDriver's) is not replaced by an
// identical one. `cells(item)` gives each cell's HTML; `attrs(item)` the row's data-*.
function syncRows(tbody, items, key, cells, attrs, empty) {
  const keep = new Set(items.map(key).map(String));
  for (const tr of [...tbody.children]) if (!keep.has(tr.dataset.key)) tr.remove();
  let i = 0;
  for (const it of items) {
    const k = String(key(it));
    let tr = [...tbody.children].find(r => r.dataset.key === k);
    if (!tr) { tr = document.createElement('tr'); tr.dataset.key = k; }
    const html = cells(it);
    while (tr.children.length > html.length) tr.lastElementChild.remove();
    html.forEach((h, c) => {
      let td = tr.children[c];
      if (!td) { td = document.createElement('td'); tr.appendChild(td); }
      const [cls, inner] = Array.isArray(h) ? h : ['', h];
      if (td.className !== cls) td.className = cls;
      if (td.__html !== inner) { td.innerHTML = inner; td.__html = inner; }
    });
    for (const [a, v] of Object.entries(attrs(it))) if (tr.dataset[a] !== String(v)) tr.dataset[a] = v;
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    i++;
  }
  if (!items.length && empty) {
    tbody.innerHTML = `<tr data-key=""><td colspan="${empty[0]}" class="muted">${empty[1]}</td></tr>`;
  }
}
function ago(ms) {
  if (ms == null) return '—';
  return dur(Math.max(0, Date.now() - ms)) + ' ago';
}
async function copyText(text, btn) {
  // The Clipboard API exists only in secure contexts, and may wait on a permission: give it
  // a moment, then fall back to copying a selection.
  const viaApi = navigator.clipboard
    ? Promise.race([navigator.clipboard.writeText(text).then(() => true), new Promise(r => setTimeout(() => r(false), 1500))])
    : Promise.resolve(false);
  if (!(await viaApi.catch(() => false))) {
    // Not a secure context (plain http to a name other than localhost): select it instead.
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('aria-hidden', 'true');
    ta.className = 'visually-hidden';
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand('copy'); } catch (_) { /* the text stays visible to copy by hand */ }
    ta.remove();
    if (btn) btn.focus();
  }
  if (btn) { btn.textContent = 'Copied'; btn.dataset.copied = 'true'; setTimeout(() => { btn.textContent = 'Copy'; }, 2000); }
  toast('Copied to the clipboard');
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Every API call: the session cookie goes along by itself; changes carry the CSRF value.
async function api(method, path, body, raw) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET' && method !== 'HEAD') opts.headers['x-hearth-csrf'] = cookie('hearth_csrf');
  if (body instanceof ArrayBuffer || body instanceof Blob) {
    opts.headers['content-type'] = 'application/octet-stream';
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    if (r.status === 401 && S.me && path !== '/api/v1/session') {
      S.me = null;
      stopEvents();
      render();
    }
    throw new ApiError(r.status, msg);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  const type = r.headers.get('content-type') || '';
  return type.includes('json') ? r.json() : r.text();
}

function setMain(html, title) {
  const main = $('#main');
  main.innerHTML = html;
  applyGrow(main);
  document.title = (title ? title + ' · ' : '') + 'Hearth';
}

// ---- routing ----

function routeOf() {
  const h = location.hash.replace(/^#\/?/, '');
  const parts = h.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'jobs', rest: parts.slice(1) };
}

async function render() {
  S.gen++;
  if (S.cleanup) { S.cleanup(); S.cleanup = null; }
  S.onJobs = null;
  S.onSessions = null;
  const top = $('#top');
  if (!S.me) {
    top.hidden = true;
    return pageLogin();
  }
  top.hidden = false;
  $('#me').textContent = S.me.name + (S.me.admin ? ' (admin)' : '');
  document.querySelector('.admin-only').hidden = !S.me.admin;
  const { page, rest } = routeOf();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const pages = {
    jobs: () => rest.length ? pageJob(rest[0]) : pageJobs(),
    submit: pageSubmit, files: () => pageFiles(rest), cluster: pageCluster,
    tokens: pageTokens, sessions: pageSessions, admin: () => pageAdmin(rest),
  };
  const fn = pages[page];
  try {
    if (fn) await fn();
    else setMain(`<h1>Not found</h1><p>No page <code>${esc(page)}</code>. <a href="#/jobs">Your jobs</a>.</p>`, 'Not found');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    setMain(`<h1>Something went wrong</h1><p class="alert" role="alert">${esc(e.message)}</p>`, 'Error');
  }
  // Screen readers and keyboards start at the new page's heading.
  const h1 = $('#main h1');
  if (h1 && document.activeElement && !$('#main').contains(document.activeElement)) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  }
}

// ---- live job events ----

function startEvents(all) {
  if (S.es && S.esAll === all) return;
  stopEvents();
  S.esAll = all;
  S.es = new EventSource('/api/v1/events' + (all ? '?all=true' : ''));
  S.es.addEventListener('jobs', ev => {
    let jobs;
    try { jobs = JSON.parse(ev.data).jobs; } catch (_) { return; }
    if (S.onJobs) S.onJobs(jobs);
  });
  // A session started, changed state, stopped or was used: the page asks for the details.
  S.es.addEventListener('sessions', () => { if (S.onSessions) S.onSessions(); });
  // After a reconnect, changes made while disconnected are fetched again by the page.
  S.es.addEventListener('open', () => { if (S.onReconnect) S.onReconnect(); });
}
function stopEvents() {
  if (S.es) { S.es.close(); S.es = null; }
}

// ---- login ----
// Where the door sent a browser from (`/?next=/ui/jobs/7/`): back there after logging in.
// Only this site's proxied paths, never another site (an open redirect).
function safeNext() {
  const next = new URLSearchParams(location.search).get('next') || '';
  return /^\/(ui|user)\/[^\\]*$/.test(next) && !next.startsWith('//') ? next : null;
}


function pageLogin() {
  setMain(`
    <section class="login card" aria-labelledby="login-title">
      <h1 id="login-title">Log in to Hearth</h1>
      <form id="login-form">
        <div class="field"><label for="login-user">User name</label>
          <input type="text" id="login-user" name="user" autocomplete="username" required autofocus></div>
        <div class="field"><label for="login-password">Password</label>
          <input type="password" id="login-password" name="password" autocomplete="current-password" required></div>
        <p id="login-error" class="alert" role="alert" hidden></p>
        <button type="submit" id="login-submit">Log in</button>
      </form>
    </section>`, 'Log in');
  $('#login-user').focus();
  $('#login-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const btn = $('#login-submit');
    btn.disabled = true;
    try {
      const r = await api('POST', '/api/v1/session', { user: $('#login-user').value, password: $('#login-password').value });
      S.me = r.user;
      const next = safeNext();
      if (next) { location.assign(next); return; }
      if (!location.hash || location.hash === '#/' || location.hash === '#/login') location.hash = '#/jobs';
      render();
    } catch (e) {
      const p = $('#login-error');
      p.textContent = e.message;
      p.hidden = false;
      btn.disabled = false;
    }
  });
}

async function logout() {
  try { await api('DELETE', '/api/v1/session'); } catch (_) { /* already gone */ }
  S.me = null;
  S.jobs.clear();
  stopEvents();
  render();
}

// ---- jobs ----

// The jobs page draws at most `shown` rows (the newest first); older pages come from the API
// on demand. Rows are kept by job id and only what changed is written to the DOM, so a
// thousand live jobs updating cost little: a row's HTML is compared with what it shows.
const PAGE = 200;
const jobsView = { state: '', text: '', all: false, shown: PAGE };
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
// Absolute, so the column never needs redrawing as time passes: today's jobs by time of day.
function shortTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateFmt.format(d);
}

async function pageJobs() {
  // A load that a newer page overtook (the admin ticked "All users" while it was in flight)
  // must not write its list over the newer one's.
  const gen = S.gen;
  const current = () => gen === S.gen;
  const v = jobsView;
  v.shown = PAGE;
  setMain(`
    <h1>${v.all ? 'All jobs' : 'My jobs'}</h1>
    <form class="row card" id="jobs-filter" role="search" aria-label="Filter jobs">
      <div class="field"><label for="f-state">State</label>
        <select id="f-state"><option value="">any</option>${STATES.map(s => `<option${s === v.state ? ' selected' : ''}>${s}</option>`).join('')}</select></div>
      <div class="field"><label for="f-text">Search</label>
        <input type="search" id="f-text" value="${esc(v.text)}" placeholder="id, name, owner, file"></div>
      ${S.me.admin ? `<div class="field inline"><input type="checkbox" id="f-all"${v.all ? ' checked' : ''}><label for="f-all">All users</label></div>` : ''}
      <a class="button" href="#/submit">Submit a job</a>
    </form>
    <p id="jobs-count" class="muted" aria-live="polite"></p>
    <table id="jobs-table">
      <caption class="visually-hidden">Jobs, newest first</caption>
      <thead><tr><th scope="col" class="num">ID</th><th scope="col">Name</th>${v.all ? '<th scope="col">Owner</th>' : ''}
        <th scope="col">State</th><th scope="col" class="hide-narrow">Queue</th><th scope="col">Submitted</th>
        <th scope="col" class="num">Duration</th><th scope="col" class="num hide-narrow">Cores</th><th scope="col" class="num hide-narrow">Memory</th></tr></thead>
      <tbody id="jobs-body"></tbody>
    </table>
    <p><button type="button" class="secondary" id="jobs-older" hidden>Show older jobs</button></p>`, v.all ? 'All jobs' : 'My jobs');
  $('#f-state').addEventListener('change', e => { v.state = e.target.value; v.shown = PAGE; load().catch(e => toast(e.message, true)); });
  $('#f-text').addEventListener('input', e => { v.text = e.target.value; schedule(); });
  $('#jobs-filter').addEventListener('submit', e => e.preventDefault());
  if ($('#f-all')) $('#f-all').addEventListener('change', e => { v.all = e.target.checked; render(); });

  const rows = new Map();   // job id -> { tr, html, dur, durText }
  let oldest = null;        // the smallest job id loaded from the API
  let more = false;         // whether the API has older jobs than those loaded
  let pending = false;
  const cols = v.all ? 9 : 8;
  function rowHtml(j) {
    return `<td class="num"><a href="#/jobs/${j.id}">${j.id}</a></td>
        <td><a href="#/jobs/${j.id}">${esc(j.name)}</a></td>${v.all ? `<td>${esc(j.owner)}</td>` : ''}
        <td class="job-state">${badge(j.state)}</td><td class="hide-narrow">${esc(j.queue)}</td>
        <td title="${esc(when(j.submitted_at_ms))}">${esc(shortTime(j.submitted_at_ms))}</td>
        <td class="num dur"></td><td class="num hide-narrow">${j.cores}</td>
        <td class="num hide-narrow">${esc(mib(j.memory_limit_mib))}</td>`;
  }
  function matching() {
    const q = v.text.trim().toLowerCase();
    return [...S.jobs.values()]
      .filter(j => !v.state || j.state === v.state)
      .filter(j => !q || String(j.id) === q || [j.name, j.owner, j.main, j.state, j.queue].some(s => (s || '').toLowerCase().includes(q)))
      .sort((a, b) => b.id - a.id);
  }
  function draw() {
    pending = false;
    const body = $('#jobs-body');
    if (!body || !current()) return;
    const all = matching();
    const list = all.slice(0, v.shown);
    const now = Date.now();
    const keep = new Set();
    let i = 0;
    for (const j of list) {
      let r = rows.get(j.id);
      if (!r) {
        const tr = document.createElement('tr');
        tr.dataset.jobId = j.id;
        r = { tr, html: null, dur: null, durText: null };
        rows.set(j.id, r);
      }
      const html = rowHtml(j);
      if (r.html !== html) {
        r.tr.innerHTML = html;
        r.html = html;
        r.dur = r.tr.querySelector('.dur');
        r.durText = null;
      }
      if (r.tr.dataset.state !== j.state) r.tr.dataset.state = j.state;
      const d = j.running_at_ms ? dur((j.finished_at_ms || now) - j.running_at_ms) : '';
      if (r.durText !== d) { r.dur.textContent = d; r.durText = d; }
      keep.add(j.id);
      const at = body.children[i];
      if (at !== r.tr) body.insertBefore(r.tr, at || null);
      i++;
    }
    while (body.children.length > i) body.lastElementChild.remove();
    for (const id of rows.keys()) if (!keep.has(id)) rows.delete(id);
    if (!list.length) {
      body.innerHTML = `<tr><td colspan="${cols}" class="muted">No jobs${v.state || v.text.trim() ? ' match the filter' : ' yet: <a href="#/submit">submit one</a>'}.</td></tr>`;
    }
    // Written only when it changes: it is a live region, read out on every change.
    const count = more ? `The newest ${list.length} jobs; “Show older jobs” below for more`
      : list.length < all.length ? `The newest ${list.length} of ${all.length} jobs`
      : `${list.length} job${list.length === 1 ? '' : 's'}`;
    const countEl = $('#jobs-count');
    if (countEl.textContent !== count) countEl.textContent = count;
    const older = $('#jobs-older'), hide = !(all.length > v.shown || more);
    if (older.hidden !== hide) older.hidden = hide;
  }
  // Many events in a burst are drawn once per frame.
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };

  function params(before) {
    const p = new URLSearchParams({ limit: PAGE });
    if (v.state) p.set('state', v.state);
    if (v.all) p.set('all', 'true');
    if (before) p.set('before', before);
    return p;
  }
  async function load() {
    const r = await api('GET', '/api/v1/jobs?' + params());
    if (!current()) return;
    S.jobs = new Map(r.jobs.map(j => [j.id, j]));
    oldest = r.jobs.length ? r.jobs[r.jobs.length - 1].id : null;
    more = r.jobs.length === PAGE;
    draw();
    // For bench/web_browser.py: when the first rows were on the page.
    if (window.performance && performance.mark) performance.mark('hearth-jobs-drawn');
  }
  $('#jobs-older').addEventListener('click', async () => {
    const btn = $('#jobs-older');
    v.shown += PAGE;
    if (more && matching().length < v.shown && oldest != null) {
      btn.disabled = true;
      try {
        const r = await api('GET', '/api/v1/jobs?' + params(oldest));
        for (const j of r.jobs) S.jobs.set(j.id, j);
        if (r.jobs.length) oldest = r.jobs[r.jobs.length - 1].id;
        more = r.jobs.length === PAGE;
      } catch (e) { toast(e.message, true); }
      btn.disabled = false;
    }
    draw();
  });
  S.onJobs = jobs => {
    for (const j of jobs) {
      if (v.state && j.state !== v.state) S.jobs.delete(j.id);
      // Jobs older than the loaded pages stay out: they would show up out of order.
      else if (oldest == null || j.id >= oldest || !more) S.jobs.set(j.id, j);
    }
    schedule();
  };
  S.onReconnect = () => { load().catch(() => {}); };
  startEvents(v.all);
  await load();
  // Overtaken while loading: the newer page owns the timers and S.cleanup.
  if (!current()) return;
  // Running durations move on by themselves; only their text is rewritten.
  const tick = setInterval(schedule, 1000);
  S.cleanup = () => { clearInterval(tick); S.onReconnect = null; };
}

// ---- one job ----

// Where the time went: queued (waiting for the scheduler), starting (job directory, sandbox,
// Spark's JVM until the driver runs), running, then the end.
function timeline(j) {
  const now = Date.now();
  const phases = [];
  const sub = j.submitted_at_ms;
  const started = j.started_at_ms, running = j.running_at_ms, fin = j.finished_at_ms;
  phases.push({ name: 'queued', ms: (started || fin || now) - sub });
  if (started) phases.push({ name: 'starting', ms: (running || fin || now) - started });
  if (running) phases.push({ name: 'running', ms: (fin || now) - running });
  const total = phases.reduce((a, p) => a + Math.max(p.ms, 0), 0) || 1;
  const startup = running ? `Start-up took ${dur(running - sub)}: ${dur((started || running) - sub)} waiting in the queue, ${dur(running - (started || running))} starting.`
    : started ? `Starting for ${dur(now - started)} after ${dur(started - sub)} in the queue.`
    : fin ? 'It ended before it started.' : `Waiting in the queue for ${dur(now - sub)}.`;
  return `
    <ol class="timeline" aria-label="Phases">
      ${phases.map(p => `<li class="phase phase-${p.name}" data-grow="${Math.max(p.ms, total / 200) / total}">${esc(p.name)} ${esc(dur(p.ms))}</li>`).join('')}
      ${fin ? `<li class="phase phase-ended">${esc(j.state)}</li>` : ''}
    </ol>
    <div class="legend">${phases.map(p => `<span><strong>${esc(p.name)}</strong> ${esc(dur(p.ms))}</span>`).join('')}
      ${fin ? `<span><strong>ended</strong> ${esc(when(fin))}</span>` : `<span>${esc(j.state)} now</span>`}</div>
    <p class="muted" id="job-startup">${esc(startup)}</p>`;
}

function jobDetails(j) {
  const r = j.resources;
  const attempts = (j.attempts || []).map((a, i) => `<tr><td class="num">${i + 1}</td><td>${esc(when(a.started_at_ms))}</td>
      <td class="num">${esc(a.started_at_ms && a.running_at_ms ? dur(a.running_at_ms - a.started_at_ms) : '—')}</td>
      <td class="num">${esc(a.running_at_ms ? dur(a.ended_at_ms - a.running_at_ms) : '—')}</td>
      <td>${esc(when(a.ended_at_ms))}</td><td>${esc(a.outcome)}</td><td>${esc(a.reason)}</td></tr>`).join('');
  return `
    <h1><span id="job-name">${esc(j.name)}</span> <span class="muted">#${j.id}</span> <span id="job-state">${badge(j.state)}</span></h1>
    ${j.ui_url ? `<p><a id="job-ui" href="${esc(j.ui_url)}" target="_blank" rel="noopener">Open the Spark UI</a></p>` : ''}
    ${j.state === 'queued' && j.reason ? `<p class="notice" id="job-reason"><strong>Why it waits:</strong> ${esc(j.reason)}</p>` : ''}
    ${TERMINAL.includes(j.state) && j.reason ? `<p class="${j.state === 'succeeded' ? 'notice' : 'alert'}" id="job-reason">${esc(j.reason)}</p>` : ''}
    <section class="card" aria-labelledby="tl-h"><h2 id="tl-h">Timeline</h2>${timeline(j)}</section>
    <div class="cards">
      <section class="card" aria-labelledby="facts-h"><h2 id="facts-h">Job</h2><dl class="facts">
        <dt>Owner</dt><dd>${esc(j.owner)}</dd>
        <dt>Application</dt><dd><code>${esc(j.main)}</code>${j.class ? ` (class <code>${esc(j.class)}</code>)` : ''}</dd>
        <dt>Arguments</dt><dd><code>${esc((j.args || []).join(' '))}</code></dd>
        <dt>Queue</dt><dd>${esc(j.queue)} · priority ${esc(j.priority)}${j.preemptible ? ' · preemptible' : ''}</dd>
        <dt>Submitted</dt><dd>${esc(when(j.submitted_at_ms))}</dd>
        <dt>Node</dt><dd>${esc(j.node || '—')}</dd>
        <dt>Exit code</dt><dd>${j.exit_code == null ? '—' : esc(j.exit_code)}${j.oom_killed ? ' (killed: out of memory)' : ''}</dd>
      </dl></section>
      <section class="card" aria-labelledby="res-h"><h2 id="res-h">Resources</h2><dl class="facts">
        <dt>Driver</dt><dd>${cores(r.driver_cores)}, ${esc(mib(r.driver_memory_mib))}</dd>
        <dt>Executors</dt><dd>${r.num_executors ? `${r.num_executors} × (${cores(r.executor_cores)}, ${esc(mib(r.executor_memory_mib))})` : 'none (the driver does the work)'}</dd>
        <dt>Total</dt><dd>${cores(j.cores)} (<code>local[${j.cores}]</code>), memory limit ${esc(mib(j.memory_limit_mib))} (heap plus Spark's overhead)</dd>
      </dl></section>
    </div>
    ${attempts ? `<section class="card" aria-labelledby="att-h"><h2 id="att-h">Earlier attempts</h2><table>
      <thead><tr><th scope="col" class="num">#</th><th scope="col">Started</th><th scope="col" class="num">Starting</th><th scope="col" class="num">Ran</th><th scope="col">Ended</th><th scope="col">Outcome</th><th scope="col">Why</th></tr></thead>
      <tbody>${attempts}</tbody></table></section>` : ''}`;
}

async function pageJob(idText) {
  const id = Number(idText);
  let job;
  try {
    if (!Number.isInteger(id) || id <= 0) throw new ApiError(404, 'no such job');
    job = await api('GET', '/api/v1/jobs/' + id);
  } catch (e) {
    if (e.status === 404 || e.status === 400) {
      setMain(`<h1 id="not-found">Job ${esc(idText)} not found</h1>
        <p>You have no job ${esc(idText)}. <a href="#/jobs">Back to your jobs</a>.</p>`, 'Not found');
      return;
    }
    throw e;
  }
  setMain(`
    <div id="job-head"></div>
    <p class="row" id="job-actions"></p>
    <section class="card" aria-labelledby="log-h">
      <h2 id="log-h">Log</h2>
      <div class="log-tools">
        <div class="field inline"><input type="checkbox" id="log-follow" checked><label for="log-follow">Follow (scroll to the end)</label></div>
        <button type="button" class="secondary" id="log-pause" aria-pressed="false">Pause</button>
        <label for="log-search" class="visually-hidden">Search the log</label>
        <input type="search" id="log-search" placeholder="search the log">
        <a class="button secondary" id="log-download" href="/api/v1/jobs/${id}/logs" download="job-${id}.log">Download</a>
        <span id="log-status" class="muted" aria-live="polite"></span>
      </div>
      <pre class="log" id="log" tabindex="0" aria-label="Job output"></pre>
    </section>`, job.name);
  const head = $('#job-head');
  function show(j) {
    job = j;
    head.innerHTML = jobDetails(j);
    applyGrow(head);
    const actions = $('#job-actions');
    actions.innerHTML = TERMINAL.includes(j.state) ? '' : '<button type="button" class="danger" id="job-cancel">Cancel job</button>';
    const c = $('#job-cancel');
    if (c) c.addEventListener('click', async () => {
      if (!confirm(`Cancel job ${j.id}?`)) return;
      try { show(await api('POST', `/api/v1/jobs/${j.id}/cancel`)); toast(`Job ${j.id} cancelled`); } catch (e) { toast(e.message, true); }
    });
  }
  show(job);
  S.onJobs = jobs => { const j = jobs.find(x => x.id === id); if (j) show(j); };
  S.onReconnect = async () => { try { show(await api('GET', '/api/v1/jobs/' + id)); } catch (_) { /* shown next time */ } };
  // An admin looking at someone else's job needs everyone's events.
  startEvents(S.me.admin && (S.esAll || job.owner !== S.me.name));
  // Phase durations of an active job grow while one watches.
  const tick = setInterval(() => { if (!TERMINAL.includes(job.state)) { head.querySelector('#tl-h').parentElement.innerHTML = '<h2 id="tl-h">Timeline</h2>' + timeline(job); applyGrow(head); } }, 1000);
  const log = logTail(id, () => job);
  S.cleanup = () => { clearInterval(tick); log.stop(); S.onReconnect = null; };
}

// The live log: the last lines, then everything new; resumes from its byte offset if the
// connection drops, so no line is lost or repeated.
function logTail(id, currentJob) {
  const MAX_LINES = 5000;
  const pre = $('#log');
  const status = $('#log-status');
  let lines = [''];
  let paused = false, stopped = false, ctl = null, offset = null, dirty = false;
  let search = '';
  function draw() {
    dirty = false;
    if (paused) return;
    const shown = search ? lines.filter(l => l.toLowerCase().includes(search)) : lines;
    if (search) {
      pre.innerHTML = shown.map(l => esc(l).replace(new RegExp(searchRe(search), 'gi'), m => `<mark>${m}</mark>`)).join('\n');
      status.textContent = `${shown.length} matching line${shown.length === 1 ? "" : "s"}`;
    } else {
      pre.textContent = shown.join('\n');
      status.textContent = '';
    }
    if ($('#log-follow').checked) pre.scrollTop = pre.scrollHeight;
  }
  function searchRe(s) { return esc(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
  const schedule = () => { if (!dirty) { dirty = true; requestAnimationFrame(draw); } };
  function add(text) {
    const parts = text.split('\n');
    lines[lines.length - 1] += parts[0];
    for (let i = 1; i < parts.length; i++) lines.push(parts[i]);
    if (lines.length > MAX_LINES) lines = lines.slice(lines.length - MAX_LINES);
    schedule();
  }
  $('#log-pause').addEventListener('click', e => {
    paused = !paused;
    e.target.textContent = paused ? 'Resume' : 'Pause';
    e.target.setAttribute('aria-pressed', String(paused));
    if (paused) status.textContent = 'Paused: new output is kept and shown on resume';
    else draw();
  });
  $('#log-search').addEventListener('input', e => { search = e.target.value.toLowerCase(); schedule(); });
  $('#log-follow').addEventListener('change', schedule);
  async function run() {
    while (!stopped) {
      ctl = new AbortController();
      const q = offset == null ? 'tail=1000&follow=true' : `offset=${offset}&follow=true`;
      try {
        const r = await api('GET', `/api/v1/jobs/${id}/logs?${q}`, undefined, true);
        if (offset == null) offset = Number(r.headers.get('x-hearth-log-offset') || 0);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          offset += value.length;
          add(dec.decode(value, { stream: true }));
        }
        if (TERMINAL.includes(currentJob().state) || !(await stillActive())) {
          if (!lines.some(l => l)) { pre.textContent = '(no output)'; }
          return;
        }
      } catch (e) {
        if (stopped) return;
        status.textContent = 'Connection lost; reconnecting…';
      }
      await new Promise(res => setTimeout(res, 1000));
    }
  }
  async function stillActive() {
    try { return !TERMINAL.includes((await api('GET', '/api/v1/jobs/' + id)).state); } catch (_) { return false; }
  }
  run();
  return { stop() { stopped = true; if (ctl) ctl.abort(); } };
}

// ---- submit ----

function pageSubmit() {
  setMain(`
    <h1>Submit a job</h1>
    <form id="submit-form" class="card">
      <div class="field"><label for="s-file">Application (.py or .jar)</label>
        <input type="file" id="s-file" accept=".py,.jar" required></div>
      <div class="row">
        <div class="field"><label for="s-name">Name (optional)</label><input type="text" id="s-name"></div>
        <div class="field"><label for="s-queue">Queue (optional)</label><input type="text" id="s-queue"></div>
        <div class="field"><label for="s-priority">Priority</label>
          <select id="s-priority"><option>normal</option><option>low</option><option>high</option></select></div>
      </div>
      <div class="field"><label for="s-args">Arguments, one per line</label><textarea id="s-args" rows="3"></textarea></div>
      <fieldset><legend>Resources</legend><div class="row">
        <div class="field"><label for="s-dcores">Driver cores</label><input type="number" id="s-dcores" min="1" value="1"></div>
        <div class="field"><label for="s-dmem">Driver memory</label><input type="text" id="s-dmem" value="1g" size="6"></div>
        <div class="field"><label for="s-nexec">Executors</label><input type="number" id="s-nexec" min="0" value="1"></div>
        <div class="field"><label for="s-ecores">Executor cores</label><input type="number" id="s-ecores" min="1" value="1"></div>
        <div class="field"><label for="s-emem">Executor memory</label><input type="text" id="s-emem" value="1g" size="6"></div>
      </div></fieldset>
      <p id="submit-error" class="alert" role="alert" hidden></p>
      <p id="submit-status" class="muted" aria-live="polite"></p>
      <button type="submit" id="submit-button">Submit</button>
    </form>`, 'Submit');
  $('#submit-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const err = $('#submit-error'), st = $('#submit-status'), btn = $('#submit-button');
    err.hidden = true;
    btn.disabled = true;
    try {
      const file = $('#s-file').files[0];
      if (!file) throw new Error('choose the application file first');
      st.textContent = `Reading ${file.name}…`;
      const buf = await file.arrayBuffer();
      const sha = await sha256hex(buf);
      // Content-addressed: a file uploaded before is not sent again.
      const have = await api('GET', '/api/v1/blobs/' + sha).then(() => true, e => { if (e.status === 404) return false; throw e; });
      if (!have) { st.textContent = `Uploading ${file.name} (${bytes(buf.byteLength)})…`; await api('PUT', '/api/v1/blobs/' + sha, buf); }
      const num = id => { const v = $(id).value.trim(); return v === '' ? undefined : Number(v); };
      const text = id => $(id).value.trim() || undefined;
      const body = {
        main: { name: file.name, sha256: sha },
        args: $('#s-args').value.split('\n').map(s => s.trim()).filter(Boolean),
        resources: {
          driver_cores: num('#s-dcores'), driver_memory: text('#s-dmem'),
          num_executors: num('#s-nexec'), executor_cores: num('#s-ecores'), executor_memory: text('#s-emem'),
        },
        priority: $('#s-priority').value,
      };
      if (text('#s-name')) body.name = text('#s-name');
      if (text('#s-queue')) body.queue = text('#s-queue');
      st.textContent = 'Submitting…';
      const job = await api('POST', '/api/v1/jobs', body);
      toast(`Job ${job.id} submitted`);
      location.hash = '#/jobs/' + job.id;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      st.textContent = '';
      btn.disabled = false;
    }
  });
}

// SHA-256 of the upload. crypto.subtle exists only in secure contexts (https, localhost);
// on a closed network reached over plain http the small fallback below does the work.
async function sha256hex(buf) {
  if (window.crypto && crypto.subtle) {
    const d = await crypto.subtle.digest('SHA-256', buf);
    return [...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join('');
  }
  return sha256Fallback(new Uint8Array(buf));
}
function sha256Fallback(data) {
  const K = new Uint32Array([0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb,
    0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f,
    0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);
  const H = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const len = data.length, total = Math.ceil((len + 9) / 64) * 64;
  const m = new Uint8Array(total);
  m.set(data); m[len] = 0x80;
  const dv = new DataView(m.buffer);
  dv.setUint32(total - 8, Math.floor(len / 0x20000000)); dv.setUint32(total - 4, (len * 8) >>> 0);
  const w = new Uint32Array(64);
  const r = (x, n) => (x >>> n) | (x << (32 - n));
  for (let o = 0; o < total; o += 64) {
    for (let i = 0; i < 16; i++) w[i] = dv.getUint32(o + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = r(w[i - 15], 7) ^ r(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = r(w[i - 2], 17) ^ r(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = H;
    for (let i = 0; i < 64; i++) {
      const t1 = (h + (r(e, 6) ^ r(e, 11) ^ r(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((r(a, 2) ^ r(a, 13) ^ r(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
  }
  return [...H].map(x => x.toString(16).padStart(8, '0')).join('');
}

// ---- workspace files ----

function filePath(parts) { return parts.map(encodeURIComponent).join('/'); }

async function pageFiles(parts) {
  const path = filePath(parts);
  const list = await api('GET', '/api/v1/files' + (path ? '/' + path : ''));
  if (!Array.isArray(list)) throw new Error('that is a file, not a folder');
  const crumbs = [`<a href="#/files">workspace</a>`].concat(parts.map((p, i) =>
    `<a href="#/files/${filePath(parts.slice(0, i + 1))}">${esc(p)}</a>`)).join(' / ');
  list.sort((a, b) => (b.dir - a.dir) || a.name.localeCompare(b.name));
  setMain(`
    <h1>Files</h1>
    <nav aria-label="Folder" class="muted">${crumbs}</nav>
    <form id="upload-form" class="row card">
      <div class="field"><label for="u-file">Upload to this folder</label><input type="file" id="u-file" required></div>
      <button type="submit" id="u-button">Upload</button>
    </form>
    <table id="files-table"><thead><tr><th scope="col">Name</th><th scope="col" class="num">Size</th><th scope="col">Modified</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${list.map(f => {
      const p = filePath(parts.concat(f.name));
      return `<tr><td>${f.dir ? `<a href="#/files/${p}">${esc(f.name)}/</a>` : `<a href="/api/v1/files/${p}" download="${esc(f.name)}">${esc(f.name)}</a>`}</td>
        <td class="num">${f.dir ? '' : esc(bytes(f.size))}</td><td>${esc(when(f.modified_ms))}</td>
        <td><button type="button" class="danger" data-rm="${esc(p)}" aria-label="Delete ${esc(f.name)}">Delete</button></td></tr>`;
    }).join('') || '<tr><td colspan="4" class="muted">This folder is empty.</td></tr>'}</tbody></table>`, 'Files');
  $('#upload-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const file = $('#u-file').files[0];
    if (!file) return;
    $('#u-button').disabled = true;
    try {
      await api('PUT', '/api/v1/files/' + filePath(parts.concat(file.name)), await file.arrayBuffer());
      toast(`Uploaded ${file.name}`);
      render();
    } catch (e) { toast(e.message, true); $('#u-button').disabled = false; }
  });
  for (const b of document.querySelectorAll('[data-rm]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Delete ${decodeURIComponent(b.dataset.rm)}?`)) return;
      try { await api('DELETE', '/api/v1/files/' + b.dataset.rm); toast('Deleted'); render(); } catch (e) { toast(e.message, true); }
    });
  }
}

// ---- cluster ----

function pct(x) { return (100 * x).toFixed(0) + '%'; }
const clusterView = { hours: 6 };

// A line chart drawn as SVG by hand: `series` are [{ name, cls, values }] over `times`, on a
// y axis from 0 to `max`; the axis labels come from `fmt`.
function lineChart(id, title, times, series, max, fmt) {
  const W = 640, H = 180, L = 48, R = 10, T = 10, B = 24;
  const t0 = times[0], t1 = times[times.length - 1], span = Math.max(t1 - t0, 1);
  const x = t => L + (t - t0) / span * (W - L - R);
  const y = v => T + (1 - Math.min(v / (max || 1), 1)) * (H - T - B);
  const grid = [0, 0.5, 1].map(f => `<line class="grid" x1="${L}" x2="${W - R}" y1="${y(f * max).toFixed(1)}" y2="${y(f * max).toFixed(1)}"/>
    <text class="axis" x="${L - 6}" y="${(y(f * max) + 4).toFixed(1)}" text-anchor="end">${esc(fmt(f * max))}</text>`).join('');
  const ticks = [0, 0.5, 1].map(f => `<text class="axis" x="${(L + f * (W - L - R)).toFixed(1)}" y="${H - 6}" text-anchor="${f === 0 ? 'start' : f === 1 ? 'end' : 'middle'}">${esc(shortTime(t0 + f * span))}</text>`).join('');
  const lines = series.map(s => `<polyline class="line ${s.cls}" points="${s.values.map((v, i) => `${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`).join('');
  const last = series.map(s => `${s.name} ${fmt(s.values[s.values.length - 1])}`).join(', ');
  return `<figure class="chart-box"><figcaption>${esc(title)}</figcaption>
    <svg id="${id}" class="chart" viewBox="0 0 ${W} ${H}" role="img" data-samples="${times.length}"
      aria-label="${esc(title)}: ${esc(last)} now; ${times.length} samples since ${esc(when(t0))}">${grid}${ticks}${lines}</svg>
    <div class="legend">${series.map(s => `<span><span class="key ${s.cls}" aria-hidden="true"></span>${esc(s.name)} ${esc(fmt(s.values[s.values.length - 1]))}</span>`).join('')}</div></figure>`;
}

// At most `n` points a line: each stands for a run of samples and keeps its peak (a short
// burst of use stays visible at any zoom).
function downsample(samples, n) {
  if (samples.length <= n) return samples;
  const step = Math.ceil(samples.length / n), out = [];
  for (let i = 0; i < samples.length; i += step) {
    const run = samples.slice(i, i + step), p = Object.assign({}, run[run.length - 1]);
    for (const k of ['used_cores', 'used_memory_mib', 'running_jobs', 'queued_jobs']) p[k] = Math.max(...run.map(r => r[k]));
    out.push(p);
  }
  return out;
}

function usageCharts(u) {
  const s = downsample(u.samples, 600);
  if (s.length < 2) {
    return `<p class="muted" id="usage-empty">The charts fill in as the server samples the machine (every ${esc(dur(u.interval_seconds * 1000))}).</p>`;
  }
  const times = s.map(p => p.at_ms);
  const share = (a, b) => b ? a / b : 0;
  // An even maximum, so that the middle grid line is a whole number of jobs too.
  const maxJobs = 2 * Math.ceil(Math.max(1, ...s.map(p => Math.max(p.running_jobs, p.queued_jobs))) / 2);
  return `<div class="charts">
    ${lineChart('usage-chart', 'Cores and memory in use', times, [
      { name: 'cores', cls: 's-cores', values: s.map(p => share(p.used_cores, p.cores)) },
      { name: 'memory', cls: 's-memory', values: s.map(p => share(p.used_memory_mib, p.memory_mib)) },
    ], 1, pct)}
    ${lineChart('jobs-chart', 'Jobs running and queued', times, [
      { name: 'running', cls: 's-running', values: s.map(p => p.running_jobs) },
      { name: 'queued', cls: 's-queued', values: s.map(p => p.queued_jobs) },
    ], maxJobs, n => String(Math.round(n)))}
  </div>`;
}

function limitText(l) {
  const parts = [];
  if (l && l.cores != null) parts.push(cores(l.cores));
  if (l && l.memory) parts.push(l.memory);
  return parts.join(', ');
}
function quotaText(q) {
  const parts = [];
  if (q.max_cores != null) parts.push(cores(q.max_cores));
  if (q.max_memory) parts.push(q.max_memory);
  if (q.max_running_jobs != null) parts.push(q.max_running_jobs + ' running');
  if (q.max_queued_jobs != null) parts.push(q.max_queued_jobs + ' queued');
  return parts.join(', ') || 'no limit';
}

// A node takes new jobs: the server's own machine, or a joined node that is ready with a runtime.
function takesJobs(n) { return !n.joined || (n.state === 'ready' && !!n.runtime); }
// A node's use (running jobs and live engines) of what it offers, as bars with their numbers.
function coresBar(n) {
  return `<progress max="${n.cores}" value="${n.used_cores}" aria-label="cores used on ${esc(n.name)}"></progress> <span class="use">${n.used_cores} / ${n.cores}</span>`;
}
function memoryBar(n) {
  return `<progress max="${n.memory_mib}" value="${n.used_memory_mib}" aria-label="memory used on ${esc(n.name)}"></progress> <span class="use">${esc(mib(n.used_memory_mib))} / ${esc(mib(n.memory_mib))}</span>`;
}
// What the node's machine has in use, measured there (every process, Hearth's or not): beside
// what is held, it shows jobs that ask for more than they use, and load from outside Hearth.
function measuredCell(n) {
  const m = n.measured;
  if (!m) return `<td class="muted measured">${n.state === 'down' ? 'not connected' : 'not measured'}</td>`;
  const busy = m.busy_cores == null ? null : Number(m.busy_cores).toFixed(1);
  const cpu = busy == null
    ? '<span class="muted">CPU: measuring</span>'
    : `<progress class="measured-bar" max="${m.cpus}" value="${m.busy_cores}" aria-label="cores busy on the machine of ${esc(n.name)}, measured"></progress> <span class="use measured-cpu">${busy} / ${m.cpus} cores busy</span>`;
  return `<td class="bar-cell measured">${cpu}<br>
    <progress class="measured-bar" max="${m.memory_mib}" value="${m.used_memory_mib}" aria-label="memory in use on the machine of ${esc(n.name)}, measured"></progress> <span class="use measured-memory">${esc(mib(m.used_memory_mib))} / ${esc(mib(m.memory_mib))} in use</span></td>`;
}

async function pageCluster() {
  async function load() {
    const [nodes, queues, usage] = await Promise.all([api('GET', '/api/v1/nodes'), api('GET', '/api/v1/queues'),
      api('GET', '/api/v1/usage?seconds=' + clusterView.hours * 3600)]);
    return { nodes, queues, usage };
  }
  // What jobs can use: the nodes that take work (the server's own machine, and joined nodes
  // that are ready with a Spark runtime). Every node shows what jobs and engines hold there.
  function nodesHtml(nodes) {
    const working = nodes.filter(takesJobs), idle = nodes.filter(n => !takesJobs(n));
    const sum = (list, k) => list.reduce((a, n) => a + n[k], 0);
    const ready = idle.filter(n => n.state === 'ready').length;
    const capacity = `<p id="capacity">Jobs can use <strong>${cores(sum(working, 'cores'))}</strong> and <strong>${esc(mib(sum(working, 'memory_mib')))}</strong>
      on ${working.length} node${working.length === 1 ? '' : 's'} (${cores(sum(nodes, 'used_cores'))} and ${esc(mib(sum(nodes, 'used_memory_mib')))} held, ${sum(nodes, 'running_jobs')} running job${sum(nodes, 'running_jobs') === 1 ? '' : 's'}).${idle.length
        ? ` <span id="capacity-joined">${idle.length} joined node${idle.length === 1 ? '' : 's'} (${ready} ready) offer${idle.length === 1 ? 's' : ''} ${cores(sum(idle, 'cores'))} and ${esc(mib(sum(idle, 'memory_mib')))} more, but ${idle.length === 1 ? 'takes' : 'take'} no jobs now (no Spark runtime, or not ready).</span>` : ''}
      ${S.me.admin ? ' <a href="#/admin/nodes">Manage nodes</a>' : ''}</p>`;
    return capacity + `<table id="nodes-table"><caption class="visually-hidden">Nodes</caption><thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Cores held</th><th scope="col">Memory held</th><th scope="col">Machine use (measured)</th><th scope="col" class="num">Jobs</th><th scope="col">Isolation</th><th scope="col">Problems</th></tr></thead>
    <tbody>${nodes.map(n => `<tr data-node="${esc(n.name)}"${n.joined ? ' data-joined="true"' : ''} data-jobs="${n.running_jobs || 0}"><td>${esc(n.name)}${n.joined ? ' <span class="muted">(joined)</span>' : ''}</td><td>${badge(n.state || 'ready')}</td>
      ${takesJobs(n) || n.used_cores || n.running_jobs ? `<td class="bar-cell">${coresBar(n)}</td><td class="bar-cell">${memoryBar(n)}</td>`
        : `<td colspan="2" class="muted">offers ${cores(n.cores)}, ${esc(mib(n.memory_mib))}; takes no jobs now${n.runtime ? '' : ' (no Spark runtime)'}</td>`}
      ${measuredCell(n)}
      <td class="num">${n.running_jobs || 0}</td>
      <td>${n.joined ? '<span class="muted">—</span>' : n.isolation ? 'on' : '<strong>off</strong>'}</td><td>${n.problems.map(esc).join('<br>') || '—'}</td></tr>`).join('')}</tbody></table>
    <p class="muted" id="nodes-note">Held: granted to running jobs and live engines, what the scheduler counts. Machine use: measured on each node's machine every few seconds, every process on it, Hearth's or not.</p>`;
  }
  function queuesHtml(queues) {
    return `<table id="queues-table"><thead><tr><th scope="col">Queue</th><th scope="col" class="num">Weight</th><th scope="col" class="num">Running</th><th scope="col" class="num">Queued</th>
      <th scope="col">In use</th><th scope="col">Fair share</th><th scope="col">Guaranteed</th><th scope="col">Quota (max)</th><th scope="col">Users: use / their quota</th></tr></thead>
    <tbody>${queues.map(q => `<tr data-queue="${esc(q.spec.name)}"><td>${esc(q.spec.name)}${q.spec.best_effort ? ' <span class="muted">(best effort)</span>' : ''}</td>
      <td class="num">${q.spec.weight}</td><td class="num">${q.running_jobs}</td><td class="num">${q.queued_jobs}</td>
      <td class="bar-cell"><progress max="1" value="${q.dominant_share}" aria-label="share of the cluster queue ${esc(q.spec.name)} uses"></progress> ${pct(q.dominant_share)}
        <span class="muted">(${cores(q.cores)}, ${esc(mib(q.memory_mib))})</span></td>
      <td class="bar-cell"><progress max="1" value="${q.fair_share}" aria-label="fair share of ${esc(q.spec.name)}"></progress> ${pct(q.fair_share)}</td>
      <td>${esc(limitText(q.spec.guaranteed) || '—')}</td><td>${esc(limitText(q.spec.max) || 'no limit')}</td>
      <td>${q.users.map(u => `${esc(u.user)}: ${u.running_jobs} running, ${u.queued_jobs} queued, ${cores(u.cores)}, ${esc(mib(u.memory_mib))} / ${esc(quotaText(u.quota))}`).join('<br>') || '—'}</td></tr>`).join('')
      || '<tr><td colspan="9" class="muted">No queues and no jobs.</td></tr>'}
    </tbody></table>`;
  }
  function fill(d) {
    if (routeOf().page !== 'cluster' || !$('#nodes-box')) return;
    $('#nodes-box').innerHTML = nodesHtml(d.nodes);
    $('#queues-box').innerHTML = queuesHtml(d.queues);
    $('#usage-box').innerHTML = usageCharts(d.usage);
  }
  const gen = S.gen;
  const first = await load();
  if (gen !== S.gen) return;   // another page was opened meanwhile
  setMain(`
    <h1>Cluster</h1>
    <section aria-labelledby="nodes-h"><h2 id="nodes-h">Nodes</h2><div id="nodes-box"></div></section>
    <section aria-labelledby="util-h"><h2 id="util-h">Utilisation</h2>
      <form class="row" id="usage-form"><div class="field"><label for="usage-hours">Period</label>
        <select id="usage-hours">${[1, 6, 24].map(h => `<option value="${h}"${h === clusterView.hours ? ' selected' : ''}>last ${h === 1 ? 'hour' : h + ' hours'}</option>`).join('')}</select></div></form>
      <div id="usage-box"></div></section>
    <section aria-labelledby="queues-h"><h2 id="queues-h">Queues</h2>
      <p class="muted">A queue's use against its fair share (its weight among the queues with work) and its limits.</p>
      <div id="queues-box"></div></section>`, 'Cluster');
  fill(first);
  const refresh = async () => { try { fill(await load()); } catch (_) { /* next time */ } };
  $('#usage-hours').addEventListener('change', e => { clusterView.hours = Number(e.target.value) || 6; refresh(); });
  $('#usage-form').addEventListener('submit', e => e.preventDefault());
  const timer = setInterval(refresh, 5000);
  S.cleanup = () => clearInterval(timer);
}

// ---- tokens ----

async function pageTokens() {
  const tokens = await api('GET', '/api/v1/tokens');
  setMain(`
    <h1>Tokens</h1>
    <p class="muted">Tokens let scripts and the CLI act as you. The console's own session is one of them (named “web console”).</p>
    <form id="token-form" class="row card">
      <div class="field"><label for="t-name">Name</label><input type="text" id="t-name" required placeholder="ci"></div>
      <div class="field"><label for="t-ttl">Expires after (days, optional)</label><input type="number" id="t-ttl" min="1"></div>
      <button type="submit">Create token</button>
    </form>
    <div id="token-secret" aria-live="polite"></div>
    <table id="tokens-table"><thead><tr><th scope="col" class="num">ID</th><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${tokens.map(t => `<tr><td class="num">${t.id}</td><td>${esc(t.name)}</td><td>${esc(when(t.created_at_ms))}</td>
      <td>${esc(t.expires_at_ms ? when(t.expires_at_ms) : 'never')}</td><td>${esc(when(t.last_used_at_ms) || '—')}</td>
      <td><button type="button" class="danger" data-revoke="${t.id}" aria-label="Revoke token ${esc(t.name)}">Revoke</button></td></tr>`).join('')}</tbody></table>`, 'Tokens');
  $('#token-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const days = Number($('#t-ttl').value);
    try {
      const r = await api('POST', '/api/v1/tokens', { name: $('#t-name').value, ttl_seconds: days > 0 ? days * 86400 : undefined });
      await pageTokens();
      $('#token-secret').innerHTML = `<p class="notice">Copy this token now; it is not shown again:</p><p class="secret">${esc(r.secret)}</p>`;
    } catch (e) { toast(e.message, true); }
  });
  for (const b of document.querySelectorAll('[data-revoke]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Revoke token ${b.dataset.revoke}? Whatever uses it stops working.`)) return;
      try { await api('DELETE', '/api/v1/tokens/' + b.dataset.revoke); render(); } catch (e) { toast(e.message, true); }
    });
  }
}

// ---- sessions ----

// The user's interactive sessions: their Spark Connect engine (started by the first query
// through the gateway) and their notebook (started here). Polled every few seconds (every
// second while one is starting); rows are kept, and only changed cells are rewritten.
const KIND_NAMES = { 'spark-connect': 'Spark Connect engine', notebook: 'Notebook' };
function notebookLab(url) { return url.replace(/\/?$/, '/') + 'lab'; }
// Admins may list everyone's sessions (and stop any); the choice lasts while the console is open.
const sessionsView = { all: false };
function sessionsPath() { return '/api/v1/sessions' + (S.me.admin && sessionsView.all ? '?all=true' : ''); }

async function pageSessions() {
  const gen = S.gen;
  const [first, connect] = await Promise.all([
    api('GET', sessionsPath()),
    api('GET', '/api/v1/connect').catch(e => { if (e.status === 404) return { off: e.message }; throw e; }),
  ]);
  if (gen !== S.gen) return;   // another page was opened meanwhile
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  const url = connect.off ? '' : `sc://${host}:${connect.port}/;use_ssl=true;x-hearth-token=YOUR_TOKEN`;
  setMain(`
    <h1>Sessions</h1>
    <p class="muted">Your interactive Spark: a Spark Connect engine, started by your first query and stopped when idle, and a JupyterLab notebook whose <code>spark</code> is already connected to it. Each runs under your own account; only you can reach them.</p>
    <p class="row"><button type="button" id="notebook-start">Start notebook</button>${S.me.admin
      ? `<span class="field inline"><input type="checkbox" id="sessions-all"${sessionsView.all ? ' checked' : ''}><label for="sessions-all">All users</label></span>` : ''}</p>
    <p id="session-status" class="muted" aria-live="polite"></p>
    <table id="sessions-table"><caption class="visually-hidden" id="sessions-caption">Your sessions</caption><thead><tr><th scope="col" class="num">ID</th><th scope="col" id="sessions-owner-h" hidden>User</th><th scope="col">Kind</th><th scope="col">State</th>
      <th scope="col" class="num">Uptime</th><th scope="col" class="num">Idle</th><th scope="col" class="num hide-narrow">Cores</th><th scope="col" class="num hide-narrow">Memory</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody id="sessions-body"></tbody></table>
    <section class="card" aria-labelledby="connect-h" id="connect-box"><h2 id="connect-h">Connect with PySpark</h2>
      ${connect.off ? `<p class="notice" id="connect-off">${esc(connect.off)}</p>` : `
      <p>With the <code>hearth</code> CLI logged in, one line sets everything PySpark needs (a token, Hearth's CA, and <code>SPARK_REMOTE</code>):</p>
      <div class="command-row"><pre class="command" id="connect-cli">eval "$(hearth connect)"</pre>
        <button type="button" class="secondary" data-copy="connect-cli" aria-label="Copy the hearth connect command">Copy</button></div>
      <p>Or give stock PySpark the URL yourself, with a token from the <a href="#/tokens">Tokens</a> page (Spark's usual <code>;token=YOUR_TOKEN</code> works too, a little slower per call):</p>
      <div class="command-row"><pre class="command" id="connect-url">SparkSession.builder.remote("${esc(url)}").getOrCreate()</pre>
        <button type="button" class="secondary" data-copy="connect-url" aria-label="Copy the Spark Connect line">Copy</button></div>
      <p class="muted">The gateway listens on port <span id="connect-port">${esc(connect.port)}</span> with TLS${connect.hosts && connect.hosts.length ? ` (certificate for ${esc(connect.hosts.join(', '))})` : ''}.
        ${connect.ca_pem ? `Its certificate is signed by Hearth's own CA: <a href="/api/v1/ca.pem" download="hearth-ca.pem" id="connect-ca">download it</a> and set <code>GRPC_DEFAULT_SSL_ROOTS_FILE_PATH</code> to its path.` : ''}</p>`}
    </section>`, 'Sessions');
  for (const b of document.querySelectorAll('[data-copy]')) {
    b.addEventListener('click', () => copyText($('#' + b.dataset.copy).textContent, b));
  }
  const body = $('#sessions-body'), status = $('#session-status'), start = $('#notebook-start');
  // Changes come as session events; uptimes and idle times move on here between them.
  let sessions = first.sessions, fetched = Date.now(), tick = null, stopped = false, wanted = false;
  const all = () => S.me.admin && sessionsView.all;
  const mine = s => s.user === S.me.name;
  function draw() {
    if (!$('#sessions-body')) return;
    const everyone = all();
    $('#sessions-owner-h').hidden = !everyone;
    $('#sessions-caption').textContent = everyone ? "Every user's sessions" : 'Your sessions';
    syncRows(body, sessions, s => s.id, s => {
      const running = s.state === 'running';
      const open = s.kind === 'notebook' && running && s.url && mine(s)
        ? `<a class="button" href="${esc(notebookLab(s.url))}" target="_blank" rel="noopener" data-open="${s.id}" aria-label="Open your notebook (new tab)">Open</a>` : '';
      const ui = s.ui_url && running ? `<a class="button secondary" href="${esc(s.ui_url)}" target="_blank" rel="noopener" data-ui="${s.id}" aria-label="Spark UI of session ${s.id} (new tab)">Spark UI</a>` : '';
      const stop = s.state === 'stopped' ? '' : `<button type="button" class="danger" data-stop="${s.id}" aria-label="Stop ${esc(KIND_NAMES[s.kind] || s.kind)} ${s.id}">Stop</button>`;
      const since = s.state === 'stopped' ? 0 : Date.now() - fetched;
      return [['num', String(s.id)], ...(everyone ? [esc(s.user)] : []), esc(KIND_NAMES[s.kind] || s.kind), badge(s.state), ['num', esc(dur(s.uptime_ms + since))],
        ['num', esc(s.active_requests ? 'in use' : dur(s.idle_ms + since))], ['num hide-narrow', String(s.cores)],
        ['num hide-narrow', esc(mib(s.memory_limit_mib))], ['actions', open + ui + stop]];
    }, s => ({ session: s.id, kind: s.kind, state: s.state, user: s.user }),
    everyone ? [9, 'Nobody has a session running.']
      : [8, 'No sessions. Start a notebook above, or connect with PySpark below: your engine starts with your first query.']);
    const nb = sessions.find(s => s.kind === 'notebook' && mine(s));
    start.disabled = !!nb && nb.state !== 'stopped';
    const msg = !nb ? (wanted ? 'Your notebook stopped.' : '')
      : nb.state === 'starting' ? 'Starting your notebook (JupyterLab takes a few seconds)…'
      : nb.state === 'running' ? 'Your notebook is running: “Open” opens it in a new tab.' : '';
    if (status.textContent !== msg) status.textContent = msg;
  }
  // Only the newest answer is drawn: one asked for before a change must not undo it.
  let asked = 0;
  async function refresh() {
    const ask = ++asked;
    try {
      const r = await api('GET', sessionsPath());
      if (ask === asked && !stopped) { sessions = r.sessions; fetched = Date.now(); draw(); }
    } catch (_) { /* the next event, or reconnect, asks again */ }
  }
  start.addEventListener('click', async () => {
    start.disabled = true;
    wanted = true;
    status.textContent = 'Starting your notebook…';
    try {
      const nb = await api('POST', '/api/v1/notebooks');
      asked++;
      sessions = sessions.filter(s => s.id !== nb.id).concat([nb]).sort((a, b) => a.id - b.id);
      draw();
    } catch (e) { toast(e.message, true); status.textContent = ''; start.disabled = false; }
  });
  body.addEventListener('click', async ev => {
    const b = ev.target.closest('button[data-stop]');
    if (!b) return;
    const s = sessions.find(x => String(x.id) === b.dataset.stop);
    const what = s && !mine(s) ? `${s.user}'s ${KIND_NAMES[s.kind] || s.kind} ${s.id} (whatever it holds is lost)`
      : s ? (s.kind === 'notebook' ? 'your notebook (your files stay in your workspace)' : 'your Spark Connect engine (its temporary views and cached data are lost)') : 'this session';
    if (!confirm(`Stop ${what}?`)) return;
    b.disabled = true;
    try {
      await api('DELETE', '/api/v1/sessions/' + b.dataset.stop);
      toast(`Session ${b.dataset.stop} stopped`);
    } catch (e) { toast(e.message, true); b.disabled = false; }
    await refresh();
  });
  const allBox = $('#sessions-all');
  if (allBox) {
    allBox.addEventListener('change', async () => {
      sessionsView.all = allBox.checked;
      await refresh();
    });
  }
  draw();
  S.onSessions = refresh;
  // Changes missed while the stream was down are fetched again once it is back.
  S.onReconnect = refresh;
  if (!S.es) startEvents(false);
  tick = setInterval(draw, 1000);
  S.cleanup = () => { stopped = true; clearInterval(tick); S.onReconnect = null; };
}

// ---- admin ----

// Admin pages: users, anyone's tokens, and the scheduling policy (queues, groups, quotas).
// The policy is one versioned document: every form changes the copy this page read and
// saves it whole with that version. If another admin saved meanwhile, the server answers 409:
// the page says so, reloads the current policy and the admin makes the change again.
const ADMIN_PAGES = [['users', 'Users'], ['tokens', 'Tokens'], ['nodes', 'Nodes'], ['join-tokens', 'Join tokens'],
  ['queues', 'Queues'], ['groups', 'Groups'], ['quotas', 'Quotas'], ['policy', 'Policy document']];

function adminNav(current) {
  return `<nav aria-label="Admin" class="subnav"><ul>${ADMIN_PAGES.map(([p, label]) =>
    `<li><a href="#/admin/${p}" data-admin-nav="${p}"${p === current ? ' aria-current="page"' : ''}>${esc(label)}</a></li>`).join('')}</ul></nav>
    <div id="admin-flash">${S.flash ? `<p class="${S.flash.error ? 'alert' : 'notice'}" role="${S.flash.error ? 'alert' : 'status'}" id="${S.flash.conflict ? 'policy-conflict' : 'admin-message'}">${esc(S.flash.msg)}</p>` : ''}</div>`;
}

// What an input holds: undefined when empty, else a whole number >= 0 (or an Error).
function wholeNumber(id, what) {
  const t = $(id).value.trim();
  if (t === '') return undefined;
  if (!/^\d+$/.test(t)) throw new Error(`${what}: write a whole number, or leave it empty for no limit`);
  return Number(t);
}
function optText(id) { return $(id).value.trim() || undefined; }
function prune(o) {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

// Applies `change` to a copy of `base` (the policy as read, with its version) and saves it.
// Returns true when saved; a 409 reloads the page with the conflict shown; other errors go
// to `errorEl`, keeping what the admin typed.
async function savePolicy(base, change, done, errorEl) {
  const doc = JSON.parse(JSON.stringify(base));
  try {
    change(doc);
    await api('PUT', '/api/v1/policy', doc);
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) {
      S.flash = { error: true, conflict: true, msg: `Not saved: another admin changed the scheduling policy since this page loaded it (you had version ${base.version}). The page now shows the current policy; check it and make your change again.` };
      await render();
      return false;
    }
    if (errorEl) { errorEl.textContent = e.message; errorEl.hidden = false; errorEl.focus(); } else toast(e.message, true);
    return false;
  }
  S.flash = { msg: done };
  await render();
  return true;
}

async function pageAdmin(rest) {
  if (!S.me.admin) {
    setMain('<h1>Admins only</h1><p id="admins-only">Only admins manage users, tokens, nodes and the scheduling policy.</p>', 'Admin');
    return;
  }
  const sub = rest[0] || 'users';
  const pages = {
    users: adminUsers, tokens: adminTokens, nodes: adminNodes, 'join-tokens': adminJoinTokens,
    queues: adminQueues, groups: adminGroups, quotas: adminQuotas, policy: adminPolicy,
  };
  const fn = pages[sub];
  if (!fn) {
    setMain(`<h1>Not found</h1><p>No admin page <code>${esc(sub)}</code>. <a href="#/admin">Admin</a>.</p>`, 'Not found');
    return;
  }
  try { await fn(rest.slice(1)); } finally { S.flash = null; }
}

async function adminUsers() {
  const users = await api('GET', '/api/v1/users');
  setMain(`
    <h1>Admin: users</h1>${adminNav('users')}
    <form id="user-form" class="row card" aria-label="Add a user">
      <div class="field"><label for="n-name">User name</label><input type="text" id="n-name" required pattern="[a-z][a-z0-9_\\-]{0,31}" aria-describedby="n-name-help"></div>
      <div class="field"><label for="n-password">Password (empty: generate one)</label><input type="password" id="n-password" autocomplete="new-password"></div>
      <div class="field inline"><input type="checkbox" id="n-admin"><label for="n-admin">Admin</label></div>
      <button type="submit">Add user</button>
      <p class="muted" id="n-name-help">A lower-case letter, then letters, digits, - or _.</p>
    </form>
    <div id="user-secret" aria-live="polite"></div>
    <table id="users-table"><caption class="visually-hidden">Users</caption><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col" class="num">Linux uid</th><th scope="col">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${users.map(u => `<tr data-user="${esc(u.name)}"><td>${esc(u.name)}</td><td>${u.admin ? 'admin' : 'user'}</td><td class="num">${u.uid}</td><td>${esc(when(u.created_at_ms))}</td>
      <td><a href="#/admin/tokens/${encodeURIComponent(u.name)}">Tokens</a>
      ${u.name === S.me.name ? '' : `<button type="button" class="danger" data-remove="${esc(u.name)}" aria-label="Remove user ${esc(u.name)}">Remove</button>`}</td></tr>`).join('')}</tbody></table>`, 'Users');
  $('#user-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { name: $('#n-name').value.trim(), admin: $('#n-admin').checked };
    if ($('#n-password').value) body.password = $('#n-password').value;
    try {
      const r = await api('POST', '/api/v1/users', body);
      await render();
      if (r.generated_password) $('#user-secret').innerHTML = `<p class="notice">${esc(r.user.name)}'s password (shown once):</p><p class="secret">${esc(r.generated_password)}</p>`;
      else toast(`Added ${r.user.name}`);
    } catch (e) { toast(e.message, true); }
  });
  for (const b of document.querySelectorAll('[data-remove]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Remove user ${b.dataset.remove}? Their workspace is kept on disk.`)) return;
      try { await api('DELETE', '/api/v1/users/' + encodeURIComponent(b.dataset.remove)); toast(`Removed ${b.dataset.remove}`); render(); } catch (e) { toast(e.message, true); }
    });
  }
}

async function adminTokens(rest) {
  const users = await api('GET', '/api/v1/users');
  const who = rest[0] && users.some(u => u.name === rest[0]) ? rest[0] : S.me.name;
  const q = '?user=' + encodeURIComponent(who);
  const tokens = await api('GET', '/api/v1/tokens' + q);
  setMain(`
    <h1>Admin: tokens</h1>${adminNav('tokens')}
    <form class="row card" id="token-user-form" aria-label="Whose tokens">
      <div class="field"><label for="tk-user">User</label>
        <select id="tk-user">${users.map(u => `<option${u.name === who ? ' selected' : ''}>${esc(u.name)}</option>`).join('')}</select></div>
    </form>
    <form id="admin-token-form" class="row card" aria-label="Create a token for ${esc(who)}">
      <div class="field"><label for="tk-name">Token name</label><input type="text" id="tk-name" required maxlength="100" placeholder="ci"></div>
      <div class="field"><label for="tk-ttl">Expires after (days, optional)</label><input type="number" id="tk-ttl" min="1"></div>
      <button type="submit">Create a token for ${esc(who)}</button>
    </form>
    <div id="token-secret" aria-live="polite"></div>
    <table id="admin-tokens-table"><caption>Tokens of ${esc(who)}</caption><thead><tr><th scope="col" class="num">ID</th><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${tokens.map(t => `<tr data-token-id="${t.id}"><td class="num">${t.id}</td><td>${esc(t.name)}</td><td>${esc(when(t.created_at_ms))}</td>
      <td>${esc(t.expires_at_ms ? when(t.expires_at_ms) : 'never')}</td><td>${esc(when(t.last_used_at_ms) || '—')}</td>
      <td><button type="button" class="danger" data-revoke="${t.id}" aria-label="Revoke token ${esc(t.name)} of ${esc(who)}">Revoke</button></td></tr>`).join('')
      || '<tr><td colspan="6" class="muted">No tokens.</td></tr>'}</tbody></table>`, 'Tokens');
  $('#tk-user').addEventListener('change', e => { location.hash = '#/admin/tokens/' + encodeURIComponent(e.target.value); });
  $('#token-user-form').addEventListener('submit', e => e.preventDefault());
  $('#admin-token-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const days = Number($('#tk-ttl').value);
    try {
      const r = await api('POST', '/api/v1/tokens' + q, { name: $('#tk-name').value.trim(), ttl_seconds: days > 0 ? Math.round(days * 86400) : undefined });
      await render();
      $('#token-secret').innerHTML = `<p class="notice">${esc(who)}'s new token: copy it now, it is not shown again:</p><p class="secret">${esc(r.secret)}</p>`;
    } catch (e) { toast(e.message, true); }
  });
  for (const b of document.querySelectorAll('[data-revoke]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Revoke token ${b.dataset.revoke} of ${who}? Whatever uses it stops working.`)) return;
      try { await api('DELETE', '/api/v1/tokens/' + b.dataset.revoke); toast('Token revoked'); render(); } catch (e) { toast(e.message, true); }
    });
  }
}

// Nodes: the server's own machine and those that joined with `hearth agent`. Drain keeps new
// work off a node, undrain undoes it; remove revokes its certificate at once (it is cut off
// and refused from then on). Polled every few seconds; only changed cells are rewritten.
function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
}

async function adminNodes() {
  const gen = S.gen;
  const first = await api('GET', '/api/v1/nodes');
  if (gen !== S.gen) return;   // another page was opened meanwhile
  setMain(`
    <h1>Admin: nodes</h1>${adminNav('nodes')}
    <p class="muted">Machines join with a command from <a href="#/admin/join-tokens">Join tokens</a>. A joined node with a Spark runtime runs jobs like the server's own machine (<code>local</code>); drain keeps new work off it, remove cuts it off. Use counts running jobs and live Spark Connect engines and notebooks.</p>
    <table id="admin-nodes-table"><caption class="visually-hidden">Nodes</caption><thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Labels</th>
      <th scope="col">Last seen</th><th scope="col">Cores used</th><th scope="col">Memory used</th><th scope="col" class="num">Jobs</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody id="admin-nodes-body"></tbody></table>`, 'Nodes');
  const body = $('#admin-nodes-body');
  let nodes = first, timer = null, stopped = false;
  function draw() {
    syncRows(body, nodes, n => n.name, n => {
      const who = esc(n.name);
      const actions = !n.joined ? '<span class="muted">the server\'s own machine</span>'
        : (n.state === 'draining'
          ? `<button type="button" class="secondary" data-action="undrain" data-name="${who}" aria-label="Undrain node ${who}">Undrain</button>`
          : `<button type="button" class="secondary" data-action="drain" data-name="${who}" aria-label="Drain node ${who}">Drain</button>`)
          + `<button type="button" class="danger" data-action="remove" data-name="${who}" aria-label="Remove node ${who}">Remove</button>`;
      return [`${who}${n.joined ? (n.runtime ? '' : ' <span class="muted">(no Spark runtime: no jobs)</span>') : ' <span class="muted">(local)</span>'}`, badge(n.state || 'ready'), esc(labelsText(n.labels) || '—'),
        n.joined ? `<span title="${esc(when(n.last_seen_ms))}">${esc(n.last_seen_ms ? ago(n.last_seen_ms) : 'never')}</span>` : '<span class="muted">now (this server)</span>',
        ['bar-cell', coresBar(n)], ['bar-cell', memoryBar(n)], ['num', String(n.running_jobs || 0)], ['actions', actions]];
    }, n => ({ node: n.name, state: n.state || 'ready', joined: !!n.joined, jobs: n.running_jobs || 0 }));
  }
  // Only the newest answer is drawn: one asked for before a drain must not undo it.
  let asked = 0;
  async function refresh() {
    const mine = ++asked;
    try {
      const r = await api('GET', '/api/v1/nodes');
      if (mine === asked && !stopped) { nodes = r; draw(); }
    } catch (_) { /* next time */ }
  }
  body.addEventListener('click', async ev => {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const name = b.dataset.name, action = b.dataset.action;
    if (action === 'remove' && !confirm(`Remove node ${name}? Its certificate is revoked now: it is disconnected and refused from then on (to come back it must join again with a new token).`)) return;
    b.disabled = true;
    try {
      const path = '/api/v1/nodes/' + encodeURIComponent(name);
      if (action === 'remove') await api('DELETE', path);
      else await api('POST', `${path}/${action}`);
      toast(action === 'remove' ? `Node ${name} removed` : `Node ${name} ${action === 'drain' ? 'drained: it takes no new work' : 'takes work again'}`);
    } catch (e) { toast(e.message, true); b.disabled = false; }
    await refresh();
  });
  draw();
  timer = setInterval(refresh, 3000);
  S.cleanup = () => { stopped = true; clearInterval(timer); };
}

// Join tokens: the command a new machine runs is shown once, when the token is made.
function joinTokenState(t) {
  if (t.revoked_at_ms) return 'revoked';
  return t.expires_at_ms <= Date.now() ? 'expired' : 'active';
}

async function adminJoinTokens() {
  const tokens = await api('GET', '/api/v1/node-tokens');
  tokens.sort((a, b) => b.id - a.id);
  setMain(`
    <h1>Admin: join tokens</h1>${adminNav('join-tokens')}
    <p class="muted">A join token lets one or more machines join with <code>hearth agent</code> until it expires or is revoked. Only its SHA-256 is kept: the command with the token is shown once.</p>
    <form id="join-token-form" class="row card" aria-label="Create a join token">
      <div class="field"><label for="jt-ttl">Valid for</label><input type="number" id="jt-ttl" min="1" value="1" required></div>
      <div class="field"><label for="jt-unit">Unit</label>
        <select id="jt-unit"><option value="60">minutes</option><option value="3600" selected>hours</option><option value="86400">days</option></select></div>
      <button type="submit" id="join-token-create">Create join token</button>
    </form>
    <div id="join-secret" aria-live="polite"></div>
    <table id="join-tokens-table"><caption class="visually-hidden">Join tokens</caption><thead><tr><th scope="col" class="num">ID</th><th scope="col">State</th><th scope="col">Created by</th><th scope="col">Created</th>
      <th scope="col">Expires</th><th scope="col" class="num">Nodes joined</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${tokens.map(t => { const st = joinTokenState(t); return `<tr data-join-token="${t.id}" data-state="${st}"><td class="num">${t.id}</td><td>${badge(st)}</td>
      <td>${esc(t.created_by)}</td><td>${esc(when(t.created_at_ms))}</td><td>${esc(when(t.revoked_at_ms ? null : t.expires_at_ms) || (t.revoked_at_ms ? 'revoked ' + when(t.revoked_at_ms) : ''))}</td>
      <td class="num">${t.uses}</td><td>${st === 'active' ? `<button type="button" class="danger" data-revoke-join="${t.id}" aria-label="Revoke join token ${t.id}">Revoke</button>` : ''}</td></tr>`; }).join('')
      || '<tr><td colspan="7" class="muted">No join tokens yet.</td></tr>'}</tbody></table>`, 'Join tokens');
  $('#join-token-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const n = Number($('#jt-ttl').value), unit = Number($('#jt-unit').value);
    if (!(n > 0)) { toast('Valid for: a number above zero', true); return; }
    $('#join-token-create').disabled = true;
    try {
      const r = await api('POST', '/api/v1/node-tokens', { ttl_seconds: Math.round(n * unit) });
      await render();
      $('#join-secret').innerHTML = `<div class="card"><p class="notice">Run this on the machine that joins, as root (add <code>--cores N --memory SIZE --label k=v</code> to offer less than the whole machine). Copy it now: it is not shown again. It expires ${esc(when(r.token.expires_at_ms))}.</p>
        <div class="command-row"><pre class="command" id="join-command">${esc(r.command)}</pre>
        <button type="button" class="secondary" id="join-copy" aria-label="Copy the join command">Copy</button></div></div>`;
      $('#join-copy').addEventListener('click', e => copyText(r.command, e.target));
    } catch (e) {
      toast(e.message, true);
      const b = $('#join-token-create');
      if (b) b.disabled = false;
    }
  });
  for (const b of document.querySelectorAll('[data-revoke-join]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Revoke join token ${b.dataset.revokeJoin}? No more machines can join with it (those that joined stay).`)) return;
      try { await api('DELETE', '/api/v1/node-tokens/' + b.dataset.revokeJoin); S.flash = { msg: `Join token ${b.dataset.revokeJoin} revoked` }; render(); } catch (e) { toast(e.message, true); }
    });
  }
}

async function adminQueues() {
  const policy = await api('GET', '/api/v1/policy');
  setMain(`
    <h1>Admin: queues</h1>${adminNav('queues')}
    <p class="muted">Queues share the machine by weight (Dominant Resource Fairness over cores and memory). Policy version ${policy.version}.</p>
    <table id="policy-queues-table"><caption class="visually-hidden">Queues</caption><thead><tr><th scope="col">Queue</th><th scope="col" class="num">Weight</th><th scope="col">Guaranteed</th><th scope="col">Max</th><th scope="col">Best effort</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${policy.queues.map((q, i) => `<tr data-queue="${esc(q.name)}"><td>${esc(q.name)}</td><td class="num">${q.weight}</td>
      <td>${esc(limitText(q.guaranteed) || '—')}</td><td>${esc(limitText(q.max) || 'no limit')}</td><td>${q.best_effort ? 'yes' : 'no'}</td>
      <td><button type="button" class="secondary" data-edit="${i}" aria-label="Edit queue ${esc(q.name)}">Edit</button>
        <button type="button" class="danger" data-delete="${i}" aria-label="Delete queue ${esc(q.name)}">Delete</button></td></tr>`).join('')
      || '<tr><td colspan="6" class="muted">Only the built-in queue <code>default</code>.</td></tr>'}</tbody></table>
    <form id="queue-form" class="card" aria-labelledby="queue-form-h">
      <h2 id="queue-form-h">Add or change a queue</h2>
      <div class="row">
        <div class="field"><label for="q-name">Name</label><input type="text" id="q-name" required maxlength="64" pattern="[A-Za-z0-9_\\-]+"></div>
        <div class="field"><label for="q-weight">Weight</label><input type="number" id="q-weight" min="1" value="1" required></div>
        <div class="field inline"><input type="checkbox" id="q-best-effort"><label for="q-best-effort">Best effort (its jobs give way)</label></div>
      </div>
      <fieldset><legend>Guaranteed (empty: none)</legend><div class="row">
        <div class="field"><label for="q-g-cores">Cores</label><input type="number" id="q-g-cores" min="0"></div>
        <div class="field"><label for="q-g-memory">Memory, e.g. 16g</label><input type="text" id="q-g-memory" size="8"></div></div></fieldset>
      <fieldset><legend>Maximum, the queue's quota (empty: no limit)</legend><div class="row">
        <div class="field"><label for="q-m-cores">Cores</label><input type="number" id="q-m-cores" min="0"></div>
        <div class="field"><label for="q-m-memory">Memory, e.g. 64g</label><input type="text" id="q-m-memory" size="8"></div></div></fieldset>
      <p id="queue-error" class="alert" role="alert" tabindex="-1" hidden></p>
      <button type="submit" id="queue-save">Save queue</button>
    </form>`, 'Queues');
  const fillForm = q => {
    $('#q-name').value = q.name; $('#q-weight').value = q.weight; $('#q-best-effort').checked = !!q.best_effort;
    $('#q-g-cores').value = q.guaranteed.cores ?? ''; $('#q-g-memory').value = q.guaranteed.memory || '';
    $('#q-m-cores').value = q.max.cores ?? ''; $('#q-m-memory').value = q.max.memory || '';
    $('#q-name').focus();
  };
  for (const b of document.querySelectorAll('[data-edit]')) b.addEventListener('click', () => fillForm(policy.queues[Number(b.dataset.edit)]));
  for (const b of document.querySelectorAll('[data-delete]')) {
    b.addEventListener('click', () => {
      const name = policy.queues[Number(b.dataset.delete)].name;
      if (!confirm(`Delete queue ${name}? Its waiting jobs stay in a queue of that name with weight 1.`)) return;
      savePolicy(policy, doc => { doc.queues = doc.queues.filter(q => q.name !== name); }, `Queue ${name} deleted`);
    });
  }
  $('#queue-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const err = $('#queue-error');
    err.hidden = true;
    const name = $('#q-name').value.trim();
    savePolicy(policy, doc => {
      const spec = {
        name,
        weight: wholeNumber('#q-weight', 'Weight') ?? 1,
        guaranteed: prune({ cores: wholeNumber('#q-g-cores', 'Guaranteed cores'), memory: optText('#q-g-memory') }),
        max: prune({ cores: wholeNumber('#q-m-cores', 'Maximum cores'), memory: optText('#q-m-memory') }),
        best_effort: $('#q-best-effort').checked,
      };
      const i = doc.queues.findIndex(q => q.name === name);
      if (i >= 0) doc.queues[i] = spec; else doc.queues.push(spec);
    }, `Queue ${name} saved`, err);
  });
}

async function adminGroups() {
  const [policy, users] = await Promise.all([api('GET', '/api/v1/policy'), api('GET', '/api/v1/users')]);
  const members = g => Object.entries(policy.users).filter(([, u]) => u.group === g).map(([n]) => n);
  setMain(`
    <h1>Admin: groups</h1>${adminNav('groups')}
    <p class="muted">A group's jobs go to its queue. A user is in one group (<code>default</code> unless set here). Policy version ${policy.version}.</p>
    <table id="policy-groups-table"><caption class="visually-hidden">Groups</caption><thead><tr><th scope="col">Group</th><th scope="col">Queue</th><th scope="col">Members</th><th scope="col">Per-member quota</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${policy.groups.map((g, i) => `<tr data-group="${esc(g.name)}"><td>${esc(g.name)}</td><td>${esc(g.queue || 'default')}</td>
      <td>${esc(members(g.name).join(', ') || '—')}</td><td>${esc(quotaText(g.member_quota || {}))}</td>
      <td><button type="button" class="secondary" data-edit="${i}" aria-label="Edit group ${esc(g.name)}">Edit</button>
        <button type="button" class="danger" data-delete="${i}" aria-label="Delete group ${esc(g.name)}">Delete</button></td></tr>`).join('')
      || '<tr><td colspan="5" class="muted">No groups yet: everyone is in <code>default</code>.</td></tr>'}</tbody></table>
    <form id="group-form" class="card" aria-labelledby="group-form-h">
      <h2 id="group-form-h">Add or change a group</h2>
      <div class="row">
        <div class="field"><label for="g-name">Name</label><input type="text" id="g-name" required maxlength="64" pattern="[A-Za-z0-9_\\-]+"></div>
        <div class="field"><label for="g-queue">Queue</label>
          <select id="g-queue"><option value="">default</option>${policy.queues.map(q => `<option>${esc(q.name)}</option>`).join('')}</select></div>
      </div>
      <fieldset id="g-members"><legend>Members</legend><div class="row">
        ${users.map((u, i) => `<div class="field inline"><input type="checkbox" id="g-m-${i}" value="${esc(u.name)}"><label for="g-m-${i}">${esc(u.name)}</label></div>`).join('')}
      </div></fieldset>
      <p id="group-error" class="alert" role="alert" tabindex="-1" hidden></p>
      <button type="submit" id="group-save">Save group</button>
    </form>`, 'Groups');
  const fillForm = g => {
    $('#g-name').value = g.name; $('#g-queue').value = g.queue || '';
    const m = new Set(members(g.name));
    for (const c of document.querySelectorAll('#g-members input')) c.checked = m.has(c.value);
    $('#g-name').focus();
  };
  for (const b of document.querySelectorAll('[data-edit]')) b.addEventListener('click', () => fillForm(policy.groups[Number(b.dataset.edit)]));
  for (const b of document.querySelectorAll('[data-delete]')) {
    b.addEventListener('click', () => {
      const name = policy.groups[Number(b.dataset.delete)].name;
      if (!confirm(`Delete group ${name}? Its members go back to the group default.`)) return;
      savePolicy(policy, doc => {
        doc.groups = doc.groups.filter(g => g.name !== name);
        for (const [u, p] of Object.entries(doc.users)) if (p.group === name) { delete p.group; if (!Object.keys(p).length) delete doc.users[u]; }
      }, `Group ${name} deleted`);
    });
  }
  $('#group-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const err = $('#group-error');
    err.hidden = true;
    const name = $('#g-name').value.trim();
    const queue = $('#g-queue').value || undefined;
    const chosen = [...document.querySelectorAll('#g-members input')].map(c => [c.value, c.checked]);
    savePolicy(policy, doc => {
      const i = doc.groups.findIndex(g => g.name === name);
      const spec = prune(Object.assign(i >= 0 ? doc.groups[i] : { name }, { queue }));
      if (i >= 0) doc.groups[i] = spec; else doc.groups.push(spec);
      for (const [u, on] of chosen) {
        const p = doc.users[u] || {};
        if (on) { p.group = name; doc.users[u] = p; } else if (p.group === name) {
          delete p.group;
          if (!Object.keys(p).length) delete doc.users[u];
        }
      }
    }, `Group ${name} saved`, err);
  });
}

async function adminQuotas() {
  const [policy, users] = await Promise.all([api('GET', '/api/v1/policy'), api('GET', '/api/v1/users')]);
  const names = [...new Set(users.map(u => u.name).concat(Object.keys(policy.users)))].sort();
  setMain(`
    <h1>Admin: quotas</h1>${adminNav('quotas')}
    <p class="muted">A user's own limits; without them, their group's per-member quota applies. Policy version ${policy.version}.</p>
    <table id="quotas-table"><caption class="visually-hidden">Quotas by user</caption><thead><tr><th scope="col">User</th><th scope="col">Group</th><th scope="col">Quota</th><th scope="col">Highest priority</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${names.map(n => { const p = policy.users[n] || {}; return `<tr data-user="${esc(n)}"><td>${esc(n)}</td><td>${esc(p.group || 'default')}</td>
      <td>${p.quota ? esc(quotaText(p.quota)) : '<span class="muted">the group\'s</span>'}</td><td>${esc(p.max_priority || 'high')}</td>
      <td><button type="button" class="secondary" data-edit="${esc(n)}" aria-label="Edit the quota of ${esc(n)}">Edit</button></td></tr>`; }).join('')}</tbody></table>
    <form id="quota-form" class="card" aria-labelledby="quota-form-h">
      <h2 id="quota-form-h">Set a user's quota</h2>
      <div class="row">
        <div class="field"><label for="qu-user">User</label>
          <select id="qu-user" required>${names.map(n => `<option>${esc(n)}</option>`).join('')}</select></div>
        <div class="field"><label for="qu-priority">Highest priority</label>
          <select id="qu-priority"><option value="">high (no cap)</option><option>normal</option><option>low</option></select></div>
      </div>
      <fieldset><legend>Limits (empty: none of the user's own)</legend><div class="row">
        <div class="field"><label for="qu-cores">Max cores</label><input type="number" id="qu-cores" min="0"></div>
        <div class="field"><label for="qu-memory">Max memory, e.g. 32g</label><input type="text" id="qu-memory" size="8"></div>
        <div class="field"><label for="qu-running">Max running jobs</label><input type="number" id="qu-running" min="0"></div>
        <div class="field"><label for="qu-queued">Max queued jobs</label><input type="number" id="qu-queued" min="0"></div>
      </div></fieldset>
      <p id="quota-error" class="alert" role="alert" tabindex="-1" hidden></p>
      <button type="submit" id="quota-save">Save quota</button>
    </form>`, 'Quotas');
  const fillForm = n => {
    const p = policy.users[n] || {}, q = p.quota || {};
    $('#qu-user').value = n; $('#qu-priority').value = p.max_priority === 'high' ? '' : (p.max_priority || '');
    $('#qu-cores').value = q.max_cores ?? ''; $('#qu-memory').value = q.max_memory || '';
    $('#qu-running').value = q.max_running_jobs ?? ''; $('#qu-queued').value = q.max_queued_jobs ?? '';
  };
  // The user last edited stays chosen after a save.
  if (names.includes(S.quotaUser)) $('#qu-user').value = S.quotaUser;
  if (names.length) fillForm($('#qu-user').value);
  $('#qu-user').addEventListener('change', e => { S.quotaUser = e.target.value; fillForm(e.target.value); });
  for (const b of document.querySelectorAll('[data-edit]')) b.addEventListener('click', () => { fillForm(b.dataset.edit); $('#qu-user').focus(); });
  $('#quota-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const err = $('#quota-error');
    err.hidden = true;
    const user = $('#qu-user').value;
    S.quotaUser = user;
    savePolicy(policy, doc => {
      const quota = prune({
        max_cores: wholeNumber('#qu-cores', 'Max cores'), max_memory: optText('#qu-memory'),
        max_running_jobs: wholeNumber('#qu-running', 'Max running jobs'), max_queued_jobs: wholeNumber('#qu-queued', 'Max queued jobs'),
      });
      const p = doc.users[user] || {};
      if (Object.keys(quota).length) p.quota = quota; else delete p.quota;
      if ($('#qu-priority').value) p.max_priority = $('#qu-priority').value; else delete p.max_priority;
      if (Object.keys(p).length) doc.users[user] = p; else delete doc.users[user];
    }, `Quota of ${user} saved`, err);
  });
}

async function adminPolicy() {
  const policy = await api('GET', '/api/v1/policy');
  setMain(`
    <h1>Admin: policy document</h1>${adminNav('policy')}
    <p class="muted">The whole scheduling policy, as <code>hearth queue/group/quota</code> and the other admin pages edit it. Saving needs the version you read.</p>
    <form id="policy-form" class="card">
      <label for="policy-doc">Policy (JSON)</label>
      <textarea id="policy-doc" rows="18" spellcheck="false">${esc(JSON.stringify(policy, null, 2))}</textarea>
      <p id="policy-error" class="alert" role="alert" tabindex="-1" hidden></p>
      <p><button type="submit">Save policy</button></p>
    </form>`, 'Policy');
  $('#policy-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const err = $('#policy-error');
    err.hidden = true;
    let doc;
    try { doc = JSON.parse($('#policy-doc').value); } catch (e) { err.textContent = 'The policy is not valid JSON: ' + e.message; err.hidden = false; return; }
    savePolicy(doc, () => {}, 'Policy saved', err);
  });
}

// ---- start ----

window.addEventListener('hashchange', render);
// A page left (or kept in the back/forward cache) gives its event stream's connection back:
// browsers allow only six connections to one server.
window.addEventListener('pagehide', stopEvents);
window.addEventListener('pageshow', e => { if (e.persisted && S.me) render(); });
document.addEventListener('DOMContentLoaded', async () => {
  $('#logout').addEventListener('click', logout);
  try { S.me = await api('GET', '/api/v1/whoami'); } catch (_) { S.me = null; }
  render();
});
