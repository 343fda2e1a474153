// Hearth console: a single-page app over the REST API (/api/v1), the same JSON the CLI uses.
// Hash routes (#/jobs, #/jobs/12, ...). No framework: pages render HTML strings built with
// esc() for every value, and live updates come from one EventSource (/api/v1/events).
'use strict';

const S = {
  me: null,          // the logged-in user, or null
  jobs: new Map(),   // id -> job, what the jobs page shows
  es: null,          // the EventSource of job events
  esAll: false,      // whether it streams everyone's jobs
  cleanup: null,     // stops the current page's streams and timers
  onJobs: null,      // the current page's handler of job events
  samples: [],       // cluster utilisation samples taken while the console is open
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
function ago(ms) {
  if (!ms) return '';
  const d = Date.now() - ms;
  return d < 5000 ? 'just now' : dur(d) + ' ago';
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
  if (S.cleanup) { S.cleanup(); S.cleanup = null; }
  S.onJobs = null;
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
    tokens: pageTokens, admin: pageAdmin,
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

const jobsView = { state: '', text: '', all: false, limit: 200 };

async function pageJobs() {
  const v = jobsView;
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
      <caption class="muted" hidden>Jobs, newest first</caption>
      <thead><tr><th scope="col" class="num">ID</th><th scope="col">Name</th>${v.all ? '<th scope="col">Owner</th>' : ''}
        <th scope="col">State</th><th scope="col" class="hide-narrow">Queue</th><th scope="col">Submitted</th>
        <th scope="col" class="num">Duration</th><th scope="col" class="num hide-narrow">Cores</th><th scope="col" class="num hide-narrow">Memory</th></tr></thead>
      <tbody id="jobs-body"></tbody>
    </table>`, v.all ? 'All jobs' : 'My jobs');
  $('#f-state').addEventListener('change', e => { v.state = e.target.value; load(); });
  $('#f-text').addEventListener('input', e => { v.text = e.target.value; draw(); });
  $('#jobs-filter').addEventListener('submit', e => e.preventDefault());
  if ($('#f-all')) $('#f-all').addEventListener('change', e => { v.all = e.target.checked; render(); });

  let pending = false;
  function draw() {
    pending = false;
    const body = $('#jobs-body');
    if (!body) return;
    const q = v.text.trim().toLowerCase();
    const list = [...S.jobs.values()]
      .filter(j => !v.state || j.state === v.state)
      .filter(j => !q || String(j.id) === q || [j.name, j.owner, j.main, j.state, j.queue].some(s => (s || '').toLowerCase().includes(q)))
      .sort((a, b) => b.id - a.id);
    const now = Date.now();
    body.innerHTML = list.map(j => {
      const end = j.finished_at_ms || now;
      const d = j.running_at_ms ? end - j.running_at_ms : null;
      return `<tr data-job-id="${j.id}" data-state="${esc(j.state)}">
        <td class="num"><a href="#/jobs/${j.id}">${j.id}</a></td>
        <td><a href="#/jobs/${j.id}">${esc(j.name)}</a></td>${v.all ? `<td>${esc(j.owner)}</td>` : ''}
        <td class="job-state">${badge(j.state)}</td><td class="hide-narrow">${esc(j.queue)}</td>
        <td title="${esc(when(j.submitted_at_ms))}">${esc(ago(j.submitted_at_ms))}</td>
        <td class="num">${esc(dur(d))}</td><td class="num hide-narrow">${j.cores}</td>
        <td class="num hide-narrow">${esc(mib(j.memory_limit_mib))}</td></tr>`;
    }).join('') || `<tr><td colspan="9" class="muted">No jobs${v.state || q ? ' match the filter' : ' yet: <a href="#/submit">submit one</a>'}.</td></tr>`;
    $('#jobs-count').textContent = `${list.length} shown of the newest ${S.jobs.size} loaded` +
      (S.jobs.size >= v.limit ? ` (older jobs: hearth jobs --limit N)` : '');
  }
  // Many events in a burst are drawn once per frame.
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };

  async function load() {
    const params = new URLSearchParams({ limit: v.limit });
    if (v.state) params.set('state', v.state);
    if (v.all) params.set('all', 'true');
    const r = await api('GET', '/api/v1/jobs?' + params);
    S.jobs = new Map(r.jobs.map(j => [j.id, j]));
    draw();
  }
  S.onJobs = jobs => {
    for (const j of jobs) {
      if (v.state && j.state !== v.state) S.jobs.delete(j.id);
      else S.jobs.set(j.id, j);
    }
    schedule();
  };
  S.onReconnect = () => { load().catch(() => {}); };
  startEvents(v.all);
  await load();
  // Relative times and running durations move on by themselves.
  const tick = setInterval(schedule, 5000);
  S.cleanup = () => { clearInterval(tick); S.onReconnect = null; };
}

// ---- one job ----

function timeline(j) {
  const now = Date.now();
  const phases = [];
  const sub = j.submitted_at_ms;
  const started = j.started_at_ms, running = j.running_at_ms, fin = j.finished_at_ms;
  phases.push({ name: 'queued', ms: (started || fin || now) - sub });
  if (started) phases.push({ name: 'starting', ms: (running || fin || now) - started });
  if (running) phases.push({ name: 'running', ms: (fin || now) - running });
  const total = phases.reduce((a, p) => a + Math.max(p.ms, 0), 0) || 1;
  return `
    <div class="timeline" role="img" aria-label="${esc(phases.map(p => p.name + ' ' + dur(p.ms)).join(', '))}">
      ${phases.map(p => `<div class="phase phase-${p.name}" data-grow="${Math.max(p.ms, total / 200) / total}">${esc(p.name)} ${esc(dur(p.ms))}</div>`).join('')}
    </div>
    <div class="legend">${phases.map(p => `<span><strong>${esc(p.name)}</strong> ${esc(dur(p.ms))}</span>`).join('')}
      ${fin ? `<span>ended ${esc(when(fin))}</span>` : `<span>${esc(j.state)} now</span>`}</div>`;
}

function jobDetails(j) {
  const r = j.resources;
  const attempts = (j.attempts || []).map((a, i) => `<tr><td class="num">${i + 1}</td><td>${esc(when(a.started_at_ms))}</td>
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
      <thead><tr><th scope="col" class="num">#</th><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">Outcome</th><th scope="col">Why</th></tr></thead>
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

async function pageCluster() {
  async function load() {
    const [nodes, queues] = await Promise.all([api('GET', '/api/v1/nodes'), api('GET', '/api/v1/queues')]);
    const cores = nodes.reduce((a, n) => a + n.cores, 0), used = nodes.reduce((a, n) => a + n.used_cores, 0);
    const mem = nodes.reduce((a, n) => a + n.memory_mib, 0), memUsed = nodes.reduce((a, n) => a + n.used_memory_mib, 0);
    S.samples.push({ t: Date.now(), cpu: cores ? used / cores : 0, mem: mem ? memUsed / mem : 0 });
    if (S.samples.length > 2000) S.samples.shift();
    return { nodes, queues };
  }
  function html({ nodes, queues }) {
    return `
    <h1>Cluster</h1>
    <section aria-labelledby="nodes-h"><h2 id="nodes-h">Nodes</h2>
    <table id="nodes-table"><thead><tr><th scope="col">Node</th><th scope="col">Cores used</th><th scope="col">Memory used</th><th scope="col">Isolation</th><th scope="col">Problems</th></tr></thead>
    <tbody>${nodes.map(n => `<tr><td>${esc(n.name)}</td>
      <td class="bar-cell"><progress max="${n.cores}" value="${n.used_cores}" aria-label="cores used on ${esc(n.name)}"></progress> ${n.used_cores} / ${n.cores}</td>
      <td class="bar-cell"><progress max="${n.memory_mib}" value="${n.used_memory_mib}" aria-label="memory used on ${esc(n.name)}"></progress> ${esc(mib(n.used_memory_mib))} / ${esc(mib(n.memory_mib))}</td>
      <td>${n.isolation ? 'on' : '<strong>off</strong>'}</td><td>${n.problems.map(esc).join('<br>') || '—'}</td></tr>`).join('')}</tbody></table></section>
    <section aria-labelledby="util-h"><h2 id="util-h">Utilisation</h2>${chart()}</section>
    <section aria-labelledby="queues-h"><h2 id="queues-h">Queues</h2>
    <table id="queues-table"><thead><tr><th scope="col">Queue</th><th scope="col" class="num">Weight</th><th scope="col" class="num">Running</th><th scope="col" class="num">Queued</th>
      <th scope="col">Share in use</th><th scope="col">Fair share</th><th scope="col">Users</th></tr></thead>
    <tbody>${queues.map(q => `<tr><td>${esc(q.spec.name)}${q.spec.best_effort ? ' <span class="muted">(best effort)</span>' : ''}</td>
      <td class="num">${q.spec.weight}</td><td class="num">${q.running_jobs}</td><td class="num">${q.queued_jobs}</td>
      <td class="bar-cell"><progress max="1" value="${q.dominant_share}" aria-label="share of ${esc(q.spec.name)} in use"></progress> ${pct(q.dominant_share)}</td>
      <td class="bar-cell"><progress max="1" value="${q.fair_share}" aria-label="fair share of ${esc(q.spec.name)}"></progress> ${pct(q.fair_share)}</td>
      <td>${q.users.map(u => `${esc(u.user)}: ${u.running_jobs} running, ${u.queued_jobs} queued, ${pct(u.dominant_share)}`).join('<br>') || '—'}</td></tr>`).join('')}
    </tbody></table></section>`;
  }
  function chart() {
    const s = S.samples;
    if (s.length < 2) return '<p class="muted">The chart fills in while this page is open (a sample every 5 seconds).</p>';
    const t0 = s[0].t, span = Math.max(s[s.length - 1].t - t0, 1);
    const line = key => s.map(p => `${((p.t - t0) / span * 1000).toFixed(1)},${(100 - p[key] * 100).toFixed(1)}`).join(' ');
    const last = s[s.length - 1];
    return `<svg class="chart" viewBox="0 0 1000 100" preserveAspectRatio="none" role="img"
        aria-label="CPU ${pct(last.cpu)} and memory ${pct(last.mem)} in use now; ${s.length} samples over ${esc(dur(span))}">
      <polyline fill="none" stroke="#2d5f9a" stroke-width="2" vector-effect="non-scaling-stroke" points="${line('cpu')}"/>
      <polyline fill="none" stroke="#9c3d00" stroke-width="2" stroke-dasharray="6 3" vector-effect="non-scaling-stroke" points="${line('mem')}"/></svg>
      <div class="legend"><span><strong>cores</strong> (solid) ${pct(last.cpu)}</span><span><strong>memory</strong> (dashed) ${pct(last.mem)}</span>
      <span class="muted">since ${esc(when(t0))} (sampled while the console is open)</span></div>`;
  }
  setMain(html(await load()), 'Cluster');
  const timer = setInterval(async () => {
    try { const data = await load(); if (routeOf().page === 'cluster') setMain(html(data), 'Cluster'); } catch (_) { /* next time */ }
  }, 5000);
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

// ---- admin ----

async function pageAdmin() {
  if (!S.me.admin) {
    setMain('<h1>Admins only</h1><p>Only admins manage users and the scheduling policy.</p>', 'Admin');
    return;
  }
  const [users, policy] = await Promise.all([api('GET', '/api/v1/users'), api('GET', '/api/v1/policy')]);
  setMain(`
    <h1>Admin</h1>
    <section aria-labelledby="users-h"><h2 id="users-h">Users</h2>
    <form id="user-form" class="row card">
      <div class="field"><label for="n-name">User name</label><input type="text" id="n-name" required pattern="[a-z][a-z0-9_-]{0,31}"></div>
      <div class="field"><label for="n-password">Password (empty: generate one)</label><input type="password" id="n-password" autocomplete="new-password"></div>
      <div class="field inline"><input type="checkbox" id="n-admin"><label for="n-admin">Admin</label></div>
      <button type="submit">Add user</button>
    </form>
    <div id="user-secret" aria-live="polite"></div>
    <table id="users-table"><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col" class="num">Linux uid</th><th scope="col">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
    <tbody>${users.map(u => `<tr><td>${esc(u.name)}</td><td>${u.admin ? 'admin' : 'user'}</td><td class="num">${u.uid}</td><td>${esc(when(u.created_at_ms))}</td>
      <td>${u.name === S.me.name ? '' : `<button type="button" class="danger" data-remove="${esc(u.name)}" aria-label="Remove user ${esc(u.name)}">Remove</button>`}</td></tr>`).join('')}</tbody></table></section>
    <section aria-labelledby="policy-h"><h2 id="policy-h">Scheduling policy</h2>
    <p class="muted">Queues, groups and quotas, as <code>hearth queue/group/quota</code> edit them. Saving needs the version you read.</p>
    <form id="policy-form" class="card">
      <label for="policy-doc">Policy (JSON)</label>
      <textarea id="policy-doc" rows="14" spellcheck="false">${esc(JSON.stringify(policy, null, 2))}</textarea>
      <p><button type="submit">Save policy</button></p>
    </form></section>`, 'Admin');
  $('#user-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { name: $('#n-name').value.trim(), admin: $('#n-admin').checked };
    if ($('#n-password').value) body.password = $('#n-password').value;
    try {
      const r = await api('POST', '/api/v1/users', body);
      await pageAdmin();
      if (r.generated_password) $('#user-secret').innerHTML = `<p class="notice">${esc(r.user.name)}'s password (shown once):</p><p class="secret">${esc(r.generated_password)}</p>`;
      else toast(`Added ${r.user.name}`);
    } catch (e) { toast(e.message, true); }
  });
  for (const b of document.querySelectorAll('[data-remove]')) {
    b.addEventListener('click', async () => {
      if (!confirm(`Remove user ${b.dataset.remove}? Their workspace is kept on disk.`)) return;
      try { await api('DELETE', '/api/v1/users/' + encodeURIComponent(b.dataset.remove)); render(); } catch (e) { toast(e.message, true); }
    });
  }
  $('#policy-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    let doc;
    try { doc = JSON.parse($('#policy-doc').value); } catch (e) { toast('The policy is not valid JSON: ' + e.message, true); return; }
    try { await api('PUT', '/api/v1/policy', doc); toast('Policy saved'); render(); } catch (e) { toast(e.message, true); }
  });
}

// ---- start ----

window.addEventListener('hashchange', render);
document.addEventListener('DOMContentLoaded', async () => {
  $('#logout').addEventListener('click', logout);
  try { S.me = await api('GET', '/api/v1/whoami'); } catch (_) { S.me = null; }
  render();
});
