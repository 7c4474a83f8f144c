// keepty admin page: lists every session from admin/sessions, refreshes itself, drops one
// session or all of them. A plain script under a strict CSP (no inline code), and all data
// goes into the page through textContent, never as HTML: ids, owners and peer addresses come
// from clients and token files.
(function () {
  'use strict';

  const REFRESH_MS = 3000;
  const TOKEN_KEY = 'keepty.admin.token';

  const $ = (id) => document.getElementById(id);
  const dot = $('dot');
  const statusEl = $('status');
  const notice = $('notice');
  const list = $('sessions');
  const empty = $('empty');
  const dropAllBtn = $('drop-all');
  const tokenForm = $('token-form');
  const tokenInput = $('token-input');

  // --- token ---------------------------------------------------------------------------------

  // The operator types /admin?token=... on a phone. The token stays in the address bar: the
  // server checks it on /admin itself, so without it a reload would be refused, and the typed
  // URL is in the browser's history regardless. No-referrer keeps it from leaking onward.
  let token = null;
  try { token = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
  {
    const fromUrl = new URL(location.href).searchParams.get('token');
    if (fromUrl) setToken(fromUrl);
  }

  function setToken(t) {
    token = t || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* kept in memory only */ }
  }

  // --- requests ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Resolves to the parsed JSON answer; rejects with an ApiError carrying the server's
  // {"error","message"} (or the HTTP status when the body is not that).
  async function api(method, path) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    let resp;
    try {
      resp = await fetch(path, { method, headers, cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      throw new ApiError(0, 'network', 'server unreachable');
    }
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const code = body && typeof body.error === 'string' ? body.error : 'http_' + resp.status;
      const msg = body && typeof body.message === 'string' ? body.message
        : (text.trim().slice(0, 200) || resp.statusText || 'request failed');
      throw new ApiError(resp.status, code, msg);
    }
    return body;
  }

  // --- formatting (the same units as the server's text table) -------------------------------

  function humanSecs(s) {
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }

  // format.js, shared with the terminal page.
  const humanBytes = window.keepty.format.bytes;

  const pad = (n) => String(n).padStart(2, '0');

  // Local time: the operator reads it on their own phone; the title attribute keeps UTC.
  function localMinute(unix) {
    const d = new Date(unix * 1000);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes());
  }

  function stateText(s) {
    if (s.state === 'exited' && s.exit_code !== null && s.exit_code !== undefined) {
      return 'exited ' + s.exit_code;
    }
    return String(s.state);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- status and notices --------------------------------------------------------------------

  function setStatus(text, level) {
    statusEl.textContent = text;
    dot.dataset.level = level || '';
  }

  let noticeTimer = null;

  // Errors stay until something replaces them; confirmations fade so they are not mistaken
  // for news on the next glance.
  function showNotice(text, level) {
    clearTimeout(noticeTimer);
    notice.textContent = text;
    notice.dataset.level = level || 'bad';
    notice.hidden = false;
    if (level === 'ok' || level === 'warn') noticeTimer = setTimeout(clearNotice, 8000);
  }

  function clearNotice() {
    clearTimeout(noticeTimer);
    notice.hidden = true;
    notice.textContent = '';
    delete notice.dataset.level;
  }

  function errorText(e) {
    if (!(e instanceof ApiError)) return String(e && e.message || e);
    return e.status ? e.message + ' (' + e.status + ' ' + e.code + ')' : e.message;
  }

  // --- rendering -----------------------------------------------------------------------------

  // Cards are kept per id and updated in place, so a refresh does not replace the button
  // under a finger that is tapping it.
  const cards = new Map();
  let shownCount = 0;

  // As human_cpu in src/api/admin.rs: tenths of a second below 10 s, then whole units.
  function cpuText(ms) {
    if (ms < 10000) return Math.floor(ms / 1000) + '.' + Math.floor(ms % 1000 / 100) + 's';
    return humanSecs(Math.floor(ms / 1000));
  }

  function makeCard(id) {
    const li = el('li', 'card');
    const head = el('div', 'head');
    const state = el('span', 'state');
    const idEl = el('span', 'id', id);
    head.append(state, idEl);

    const dl = el('dl', 'fields');
    const fields = {};
    for (const [key, label] of [
      ['title', 'title'], ['owner', 'owner'], ['clients', 'clients'], ['idle', 'idle'], ['expires', 'expires'],
      ['buffered', 'buffered'], ['total', 'total'], ['command', 'command'], ['cwd', 'directory'],
      ['rss', 'memory'], ['cpu', 'cpu'], ['size', 'size'], ['pid', 'pid'],
      ['created', 'created'], ['active', 'writer'],
    ]) {
      const wrap = el('div', 'field f-' + key);
      const dd = el('dd');
      wrap.append(el('dt', null, label), dd);
      dl.append(wrap);
      fields[key] = { wrap, dd };
    }

    const actions = el('div', 'card-actions');
    const open = el('a', 'open', 'Open');
    open.href = './?s=' + encodeURIComponent(id);
    open.target = '_blank';
    open.rel = 'noopener noreferrer';
    open.setAttribute('aria-label', 'open session ' + id);
    const drop = el('button', 'danger', 'Drop');
    drop.type = 'button';
    drop.setAttribute('aria-label', 'drop session ' + id);
    drop.addEventListener('click', () => dropOne(id, drop));
    actions.append(open, drop);

    li.append(head, dl, actions);
    return { li, state, fields };
  }

  function updateCard(card, s) {
    card.state.textContent = stateText(s);
    card.state.dataset.state = s.state === 'exited' ? 'exited' : 'running';
    const f = card.fields;
    f.owner.dd.textContent = s.owner;
    f.clients.dd.textContent = String(s.clients);
    f.idle.dd.textContent = humanSecs(s.idle_secs);
    f.expires.dd.textContent = humanSecs(s.expires_in_secs);
    f.buffered.dd.textContent = humanBytes(s.bytes_buffered);
    f.total.dd.textContent = humanBytes(s.bytes_total);
    // What the session costs, sampled by the server every few seconds.
    f.command.dd.textContent = s.command || '-';
    f.cwd.dd.textContent = s.cwd || '';
    f.cwd.wrap.hidden = !s.cwd;
    f.rss.dd.textContent = humanBytes(s.rss_bytes || 0);
    f.cpu.dd.textContent = cpuText(s.cpu_ms || 0);
    // The server already stripped control characters; textContent keeps markup inert.
    f.title.dd.textContent = s.title || '';
    f.title.wrap.hidden = !s.title;
    f.size.dd.textContent = s.cols + 'x' + s.rows + (s.alt_screen ? ' full screen' : '');
    f.pid.dd.textContent = String(s.pid);
    f.created.dd.textContent = localMinute(s.created_at);
    f.created.dd.title = new Date(s.created_at * 1000).toISOString();
    f.active.dd.textContent = s.active_client || '';
    f.active.wrap.hidden = !s.active_client;
  }

  function render(data) {
    const sessions = Array.isArray(data.sessions) ? data.sessions.slice() : [];
    // Oldest first and stable, so rows do not jump around between refreshes.
    sessions.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

    const seen = new Set();
    sessions.forEach((s, i) => {
      let card = cards.get(s.id);
      if (!card) {
        card = makeCard(s.id);
        cards.set(s.id, card);
      }
      updateCard(card, s);
      seen.add(s.id);
      // Only move nodes that are out of place: moving one cancels a tap in progress.
      if (list.children[i] !== card.li) list.insertBefore(card.li, list.children[i] || null);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.li.remove();
        cards.delete(id);
      }
    }

    shownCount = sessions.length;
    const clients = sessions.reduce((n, s) => n + (s.clients || 0), 0);
    const exited = sessions.filter((s) => s.state === 'exited').length;
    $('n-sessions').textContent = String(shownCount);
    $('n-clients').textContent = String(clients);
    $('n-exited').textContent = String(exited);
    empty.hidden = shownCount !== 0;
    dropAllBtn.disabled = shownCount === 0 || dropAllBtn.dataset.busy === '1';
    dropAllBtn.textContent = 'Drop all (' + shownCount + ')';

    const lim = data.limits || {};
    $('max-sessions').textContent = lim.max_sessions !== undefined ? String(lim.max_sessions) : '-';
    const mem = data.memory || {};
    $('mem-reserved').textContent = humanBytes(mem.reserved || 0);
    $('mem-cap').textContent = humanBytes(mem.cap || 0);
    $('mem-meter').value = mem.cap ? Math.min(1, (mem.reserved || 0) / mem.cap) : 0;
    const parts = [];
    if (lim.ttl_secs !== undefined) parts.push('ttl ' + humanSecs(lim.ttl_secs));
    if (lim.attach_policy) parts.push('policy ' + lim.attach_policy);
    if (lim.scrollback !== undefined) parts.push('scrollback ' + humanBytes(lim.scrollback));
    if (lim.max_clients !== undefined) parts.push('max clients ' + lim.max_clients);
    if (lim.detached_output) parts.push('detached ' + lim.detached_output);
    $('limits').textContent = parts.join(' · ');
  }

  // --- refresh loop --------------------------------------------------------------------------

  let timer = null;
  let inFlight = false;
  // A refresh asked for while one is in flight (e.g. right after a drop) must see the new
  // state, so it runs again when the current one ends instead of being dropped.
  let again = false;
  // Set when the server refused our credentials: polling on would only count more auth
  // failures and get this address rate-limited (429) for everybody on it.
  let halted = false;

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (halted || document.hidden) return;
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    again = false;
    try {
      const data = await api('GET', 'admin/sessions');
      render(data || {});
      halted = false;
      list.classList.remove('stale');
      tokenForm.hidden = true;
      const t = new Date();
      setStatus('updated ' + pad(t.getHours()) + ':' + pad(t.getMinutes()) + ':' + pad(t.getSeconds()), 'ok');
      if (notice.dataset.level === 'stale') clearNotice();
    } catch (e) {
      if (e.status === 401 || e.status === 403 || e.status === 429) {
        halted = true;
        list.classList.add('stale');
        setStatus('stopped', 'bad');
        if (e.status === 401) tokenForm.hidden = false;
        showNotice(errorText(e) + (e.status === 401
          ? ' — open this page as admin?token=… or enter the admin token below.'
          : ' — auto-refresh stopped; press Refresh to try again.'));
      } else {
        setStatus('retrying', 'warn');
        showNotice('Could not refresh: ' + errorText(e), 'stale');
      }
    } finally {
      inFlight = false;
      if (again && !halted) refresh();
      else schedule();
    }
  }

  function refreshNow() {
    halted = false;
    refresh();
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
      if (!halted) setStatus('paused', '');
    } else if (!halted) {
      refresh();
    }
  });

  $('refresh').addEventListener('click', refreshNow);

  tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setToken(tokenInput.value.trim());
    tokenInput.value = '';
    clearNotice();
    refreshNow();
  });

  // --- actions -------------------------------------------------------------------------------

  async function dropOne(id, button) {
    if (!confirm('Drop session ' + id + '?\nIts processes are killed and attached clients are disconnected.')) return;
    button.disabled = true;
    button.textContent = 'Dropping…';
    try {
      await api('POST', 'admin/drop?id=' + encodeURIComponent(id));
      showNotice('Dropped ' + id + '.', 'ok');
    } catch (e) {
      if (e.status === 404) showNotice('Session ' + id + ' is already gone.', 'warn');
      else showNotice('Drop failed: ' + errorText(e));
      button.disabled = false;
      button.textContent = 'Drop';
    }
    refreshNow();
  }

  dropAllBtn.addEventListener('click', async () => {
    // The count the operator saw is the count the server checks: if a session came or went
    // meanwhile, nothing is dropped (409 confirm_mismatch) and the list is shown afresh.
    const n = shownCount;
    if (n === 0) return;
    if (!confirm('Drop all ' + n + ' session' + (n === 1 ? '' : 's') + '?\nEvery process is killed and every client is disconnected.')) return;
    dropAllBtn.dataset.busy = '1';
    dropAllBtn.disabled = true;
    try {
      await api('POST', 'admin/drop-all?confirm=' + n);
      showNotice('Dropped ' + n + ' session' + (n === 1 ? '' : 's') + '.', 'ok');
    } catch (e) {
      if (e.status === 409 || e.code === 'confirm_mismatch') {
        showNotice('The number of sessions changed since the list showed ' + n +
          '; nothing was dropped. Check the list and try again.', 'warn');
      } else {
        showNotice('Drop all failed: ' + errorText(e));
      }
    } finally {
      delete dropAllBtn.dataset.busy;
      dropAllBtn.disabled = shownCount === 0;
    }
    refreshNow();
  });

  refresh();
})();
