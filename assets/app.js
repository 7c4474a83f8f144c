// keepty browser client: one xterm.js terminal bound to one keepty session over the
// WebSocket protocol of SPEC section 3. A plain script (no modules, no bundler) so the files
// embedded in the binary are served exactly as they are here.
(function () {
  'use strict';

  // The server stops sending at 256 KiB un-acked; acking every 64 KiB keeps output flowing
  // without an ack per frame, the timer covers the tail of a burst.
  const ACK_BYTES = 64 * 1024;
  const ACK_DELAY_MS = 250;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const RESIZE_DEBOUNCE_MS = 100;
  // A socket that neither opens nor attaches in this time is treated as dead (a phone that
  // changed networks can leave one hanging in CONNECTING for minutes).
  const CONNECT_TIMEOUT_MS = 10000;
  // How long another tab of this browser gets to say it holds the session (BroadcastChannel
  // answers within a few ms; only a page opened with an id waits for it).
  const CLAIM_WAIT_MS = 120;
  const MAX_INPUT_FRAME = 64 * 1024;
  const FONT_MIN = 8;
  const FONT_MAX = 32;
  const TOKEN_KEY = 'keepty.token';
  const FONT_KEY = 'keepty.fontSize';
  const KEYS_KEY = 'keepty.keys';
  const SESSION_KEY = 'keepty.session';

  const statusEl = document.getElementById('status');
  const statusText = document.getElementById('status-text');
  const statusActions = document.getElementById('status-actions');
  const keysEl = document.getElementById('keys');
  const menuEl = document.getElementById('menu');
  const menuButton = document.getElementById('menu-button');
  const listEl = document.getElementById('session-list');
  const fontSizeEl = document.getElementById('font-size');
  const encoder = new TextEncoder();

  const store = {
    get(storage, key) {
      try { return window[storage].getItem(key); } catch (_) { return null; }
    },
    // Storage may be disabled or full; the page then only forgets things on reload.
    set(storage, key, value) {
      try {
        if (value === null) window[storage].removeItem(key);
        else window[storage].setItem(key, value);
      } catch (_) { /* not remembered */ }
    },
  };

  const coarse = window.matchMedia && window.matchMedia('(pointer: coarse)').matches;
  const savedFont = Number(store.get('localStorage', FONT_KEY));
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, "Liberation Mono", monospace',
    fontSize: savedFont >= FONT_MIN && savedFont <= FONT_MAX ? savedFont : (coarse ? 13 : 14),
    // At 1.0 the DOM renderer clips underscores of common monospace fonts.
    lineHeight: 1.1,
    scrollback: 5000,
    theme: {
      background: '#101317',
      foreground: '#d8dee9',
      cursor: '#d8dee9',
      cursorAccent: '#101317',
      selectionBackground: '#3b4a60',
      black: '#1d2129', red: '#e0605a', green: '#8cc26b', yellow: '#e5c07b',
      blue: '#61a6e8', magenta: '#c678dd', cyan: '#56b6c2', white: '#c8ced8',
      brightBlack: '#5c6370', brightRed: '#ff7a73', brightGreen: '#a5d987', brightYellow: '#f0d197',
      brightBlue: '#82bcf2', brightMagenta: '#d99bec', brightCyan: '#7fcfd9', brightWhite: '#ffffff',
    },
  });
  const fitAddon = new FitAddon.FitAddon();
  term.loadAddon(fitAddon);
  term.open(document.getElementById('term'));
  safeFit();

  // --- state -------------------------------------------------------------------------------

  const pageUrl = new URL(location.href);
  // The URL names the session; sessionStorage keeps it for this tab when the address bar
  // loses it (a bookmark of the bare page, a navigation back to /).
  let sessionId = pageUrl.searchParams.get('s') || store.get('sessionStorage', SESSION_KEY) || null;
  // Bytes of session output received; `since` for the next reconnect.
  let offset = 0;
  // Whether this page has attached (and so holds output worth continuing from) yet.
  let attachedOnce = false;
  // asking (another tab holds the session) | connecting | open | waiting (backoff before a
  // retry) | exited | taken_over | dropped | closed (stopped on an error; a button offers the
  // way on)
  let state = 'connecting';
  let role = 'writer';
  let policy = '';
  let title = '';
  let conn = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;
  // Replay chunks handed to term.write whose parsing has not finished yet. While any are
  // pending, whatever the terminal emits is its answer to old output and must not reach the
  // PTY (SPEC 3, last bullet). Counted across connections, because a reconnect can start
  // while an earlier replay is still queued inside xterm.
  let replayPending = 0;
  let ctrlArmed = false;
  let altArmed = false;

  // A token can be handed over once as #token=... (e.g. from a QR code); it moves to
  // localStorage and out of the address bar.
  if (location.hash.startsWith('#token=')) {
    store.set('localStorage', TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
    pageUrl.hash = '';
    history.replaceState(null, '', pageUrl.href);
  }
  const keysParam = pageUrl.searchParams.get('keys');
  setExtraKeys(keysParam !== null ? keysParam === '1' : store.get('localStorage', KEYS_KEY) === '1', false);

  // --- status line -------------------------------------------------------------------------

  function setStatus(level, text, actions) {
    statusEl.dataset.level = level;
    statusText.textContent = text;
    statusText.title = text;
    statusActions.replaceChildren();
    for (const [label, fn] of actions || []) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.addEventListener('click', () => { fn(); if (!coarse) term.focus(); });
      statusActions.appendChild(b);
    }
  }

  let noticeTimer = null;
  function showOpenStatus(note) {
    clearTimeout(noticeTimer);
    const name = title ? title : sessionId ? 'session ' + sessionId : 'session';
    if (role === 'viewer') {
      setStatus('warn', 'view only \u00b7 ' + name + (note ? ' \u00b7 ' + note : ''),
        [['Take control', () => sendJson({ type: 'take_control' })]]);
    } else {
      setStatus(note ? 'warn' : 'ok', 'connected \u00b7 ' + name + (note ? ' \u00b7 ' + note : ''));
    }
    if (note) noticeTimer = setTimeout(() => { if (state === 'open') showOpenStatus(); }, 8000);
  }

  // The last states passed through, for tests that must see a transient one.
  const stateLog = [];
  function setState(s) {
    state = s;
    document.body.dataset.state = s;
    if (stateLog[stateLog.length - 1] !== s) {
      stateLog.push(s);
      if (stateLog.length > 32) stateLog.shift();
    }
  }

  // --- identity ----------------------------------------------------------------------------

  // Remembers the session in the address bar and in this tab's sessionStorage.
  function rememberSession() {
    store.set('sessionStorage', SESSION_KEY, sessionId);
    const u = new URL(location.href);
    if (sessionId === null) u.searchParams.delete('s');
    else u.searchParams.set('s', sessionId);
    if (u.href !== location.href) history.replaceState(null, '', u.href);
  }

  // Other tabs of this browser answer "mine" for the session they hold, so a duplicated tab
  // (same URL, copied sessionStorage) asks before it takes the session over.
  const channel = window.BroadcastChannel ? new BroadcastChannel('keepty') : null;
  if (channel) {
    channel.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.type === 'who' && m.session === sessionId && holdsSession()) {
        channel.postMessage({ type: 'mine', session: sessionId });
      }
    };
  }

  function holdsSession() {
    return sessionId !== null && (state === 'open' || state === 'connecting' || state === 'waiting');
  }

  function start() {
    if (!sessionId || !channel) { connect(); return; }
    setState('connecting');
    let answered = false;
    const id = sessionId;
    const listener = (ev) => {
      const m = ev.data || {};
      if (m.type === 'mine' && m.session === id) answered = true;
    };
    channel.addEventListener('message', listener);
    channel.postMessage({ type: 'who', session: id });
    setTimeout(() => {
      channel.removeEventListener('message', listener);
      if (!answered) { connect(); return; }
      setState('asking');
      setStatus('warn', 'session ' + id + ' is open in another tab',
        [['Open here', connect], ['New session', newSession]]);
    }, CLAIM_WAIT_MS);
  }

  // --- connection --------------------------------------------------------------------------

  function wsUrl() {
    const params = new URLSearchParams();
    if (sessionId) {
      params.set('session', sessionId);
      // A fresh page has nothing, so it asks for everything the ring holds.
      if (attachedOnce) params.set('since', String(offset));
    } else {
      params.set('new', '1');
    }
    params.set('flow', '1');
    params.set('cols', String(term.cols));
    params.set('rows', String(term.rows));
    const u = new URL('ws?' + params.toString(), location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.hash = '';
    return u.href;
  }

  function base64url(str) {
    let bin = '';
    for (const b of encoder.encode(str)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function storedToken() {
    return store.get('localStorage', TOKEN_KEY) || '';
  }

  function authHeaders() {
    const token = storedToken();
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (conn) abandon(conn);
    setState('connecting');
    setStatus('warn', attachedOnce ? 'reconnecting\u2026' : 'connecting\u2026');

    const protocols = ['keepty.v1'];
    const token = storedToken();
    if (token) protocols.push('keepty.token.' + base64url(token));

    let ws;
    try {
      ws = new WebSocket(wsUrl(), protocols);
    } catch (e) {
      setState('closed');
      setStatus('bad', 'cannot connect: ' + e.message, [['Retry', connect]]);
      return;
    }
    ws.binaryType = 'arraybuffer';
    const c = {
      ws,
      opened: false,
      attached: false,
      // Session offset where the replay ends; binary bytes below it are replay.
      replayEnd: 0,
      // Offset xterm has finished parsing and the offset last acked.
      parsed: 0,
      acked: 0,
      ackTimer: null,
      // The last control message, which decides what the close that follows means.
      final: null,
      timer: setTimeout(() => { if (conn === c && !c.attached) ws.close(); }, CONNECT_TIMEOUT_MS),
    };
    conn = c;
    ws.onopen = () => { c.opened = true; };
    ws.onmessage = (ev) => {
      if (conn !== c) return;
      if (typeof ev.data === 'string') onText(c, ev.data);
      else onBinary(c, new Uint8Array(ev.data));
    };
    ws.onclose = (ev) => {
      if (conn !== c) return;
      conn = null;
      clearTimeout(c.timer);
      clearTimeout(c.ackTimer);
      onClose(c, ev);
    };
  }

  function abandon(c) {
    conn = null;
    clearTimeout(c.timer);
    clearTimeout(c.ackTimer);
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
    try { c.ws.close(); } catch (_) { /* already closing */ }
  }

  function sendJson(obj) {
    if (conn && conn.ws.readyState === WebSocket.OPEN) conn.ws.send(JSON.stringify(obj));
  }

  function scheduleReconnect(why) {
    setState('waiting');
    // Jitter spreads the retries of many tabs (or many phones after a Wi-Fi blip) apart.
    const delay = Math.round(backoff / 2 + Math.random() * backoff / 2);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setStatus('warn', why + ' \u00b7 reconnecting in ' + (delay / 1000).toFixed(1) + ' s',
      [['Retry now', connect]]);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function retryNowIfWaiting() {
    if (state === 'waiting') {
      backoff = BACKOFF_MIN_MS;
      connect();
    }
  }
  window.addEventListener('online', retryNowIfWaiting);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') retryNowIfWaiting();
  });

  // Starts a fresh session in this tab; the one it leaves keeps running until its TTL.
  function newSession() {
    sessionId = null;
    attachedOnce = false;
    offset = 0;
    title = '';
    document.title = 'keepty';
    backoff = BACKOFF_MIN_MS;
    rememberSession();
    connect();
  }

  function setToken() {
    const t = window.prompt('keepty token (kept in this browser\u2019s local storage):', '');
    if (t === null) return;
    store.set('localStorage', TOKEN_KEY, t.trim() ? t.trim() : null);
    backoff = BACKOFF_MIN_MS;
    connect();
  }

  // --- incoming ----------------------------------------------------------------------------

  function onText(c, text) {
    let msg;
    try { msg = JSON.parse(text); } catch (_) { return; }
    switch (msg.type) {
      case 'attached': onAttached(c, msg); break;
      case 'gap': {
        const lost = Number(msg.lost) || 0;
        offset = Number(msg.offset) || offset;
        const at = offset;
        term.write(lostNotice(lost), () => { if (conn === c) c.parsed = Math.max(c.parsed, at); });
        showOpenStatus(formatBytes(lost) + ' skipped (this window fell behind)');
        break;
      }
      case 'role':
        role = msg.role === 'viewer' ? 'viewer' : 'writer';
        // A new writer's window decides the PTY size.
        if (role === 'writer') sendResize();
        if (state === 'open') showOpenStatus();
        break;
      case 'exited':
      case 'taken_over':
      case 'dropped':
      case 'shutdown':
      case 'expired':
      case 'error':
        c.final = msg;
        break;
      default:
        break;
    }
  }

  function onAttached(c, msg) {
    const first = !attachedOnce;
    c.attached = true;
    clearTimeout(c.timer);
    attachedOnce = true;
    backoff = BACKOFF_MIN_MS;
    role = msg.role === 'viewer' ? 'viewer' : 'writer';
    policy = typeof msg.policy === 'string' ? msg.policy : '';
    if (msg.session && msg.session !== sessionId) sessionId = String(msg.session);
    rememberSession();

    offset = Number(msg.offset) || 0;
    c.parsed = c.acked = offset;
    // Without `end` the server gives no way to tell replay from live output; treating it as
    // live is what keeps a live program's cursor queries answered.
    c.replayEnd = typeof msg.end === 'number' ? msg.end : offset;
    const lost = Number(msg.lost) || 0;
    const restore = typeof msg.restore === 'string' ? msg.restore : null;

    if (restore !== null || first || lost > 0) {
      // RIS goes through the write queue, unlike term.reset(), so output of an earlier
      // connection still queued inside xterm cannot land on the fresh screen.
      term.write('\x1bc');
      if (lost > 0 && !first) term.write(lostNotice(lost));
      if (restore) writeReplay(restore);
    }
    setState('open');
    showOpenStatus(lost > 0 && !first ? formatBytes(lost) + ' of output lost' : '');

    // The size asked for in the URL may be stale if the window changed while connecting.
    if (role === 'writer' && (msg.cols !== term.cols || msg.rows !== term.rows)) sendResize();
    if (!coarse && document.hasFocus()) term.focus();
  }

  function onBinary(c, bytes) {
    if (!c.attached) return;
    const start = offset;
    const end = start + bytes.byteLength;
    offset = end;
    if (start < c.replayEnd) {
      const cut = Math.min(bytes.byteLength, c.replayEnd - start);
      writeReplay(cut === bytes.byteLength ? bytes : bytes.subarray(0, cut), () => parsedTo(c, start + cut));
      if (cut === bytes.byteLength) return;
      bytes = bytes.subarray(cut);
    }
    term.write(bytes, () => parsedTo(c, end));
  }

  function writeReplay(data, done) {
    replayPending++;
    term.write(data, () => {
      replayPending--;
      if (done) done();
    });
  }

  // Acks follow what xterm has parsed, not what arrived, so a slow tab slows the server
  // instead of piling output up in xterm's write buffer.
  function parsedTo(c, at) {
    if (conn !== c) return;
    c.parsed = Math.max(c.parsed, at);
    if (c.parsed - c.acked >= ACK_BYTES) sendAck(c);
    else if (c.parsed > c.acked && !c.ackTimer) c.ackTimer = setTimeout(() => sendAck(c), ACK_DELAY_MS);
  }

  function sendAck(c) {
    clearTimeout(c.ackTimer);
    c.ackTimer = null;
    if (conn !== c || c.parsed <= c.acked || c.ws.readyState !== WebSocket.OPEN) return;
    c.acked = c.parsed;
    c.ws.send(JSON.stringify({ type: 'ack', offset: c.acked }));
  }

  function lostNotice(n) {
    return '\r\n\x1b[0;2m[keepty: ' + n + ' bytes of output were lost]\x1b[0m\r\n';
  }

  function formatBytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1024 / 1024).toFixed(1) + ' MiB';
  }

  const ERROR_TEXT = {
    not_found: 'no such session',
    expired: 'the session expired',
    dropped: 'the session was dropped',
    forbidden: 'forbidden',
    attached_elsewhere: 'the session is open in another window',
    limit: 'server limit reached',
    memory: 'server memory cap reached',
    bad_request: 'bad request',
  };

  function onClose(c, ev) {
    const f = c.final || {};
    const code = ev.code;
    const errText = f.type === 'error'
      ? (f.message || ERROR_TEXT[f.code] || 'error') + ' (' + f.code + ')'
      : '';

    if (f.type === 'exited') {
      setState('exited');
      const how = f.signal ? 'was killed by signal ' + f.signal : 'exited with code ' + f.code;
      setStatus('bad', 'the program ' + how, [['Restart', newSession]]);
      return;
    }
    if (f.type === 'taken_over' || code === 4410) {
      setState('taken_over');
      setStatus('bad', 'opened elsewhere (another tab or device took this session)',
        [['Take back', connect]]);
      return;
    }
    if (f.type === 'dropped' || code === 4000) {
      setState('dropped');
      setStatus('bad', 'the session was dropped by an administrator',
        [['Start a new session', newSession]]);
      return;
    }
    if (f.type === 'expired' || code === 4404) {
      setState('closed');
      const text = f.type === 'expired' ? 'the session expired (idle past its time to live)' : errText;
      setStatus('bad', text || 'no such session', [['Start a new session', newSession]]);
      return;
    }
    if (code === 4403) {
      setState('closed');
      setStatus('bad', errText || 'forbidden', [['Set token', setToken], ['New session', newSession]]);
      return;
    }
    if (code === 4409) {
      // Only the reject policy refuses a second window; it has no way to take over.
      setState('closed');
      setStatus('bad', (errText || 'the session is open in another window')
        + ' \u00b7 this server does not allow taking it over',
        [['Retry', connect], ['New session', newSession]]);
      return;
    }
    if (code === 4400) {
      setState('closed');
      setStatus('bad', errText || 'bad request', [['New session', newSession]]);
      return;
    }
    if (code === 1011) {
      // The server could not start the command; retrying by itself would only repeat that.
      setState('closed');
      setStatus('bad', errText || 'server error', [['Retry', connect]]);
      return;
    }
    if (code === 4429 || code === 4503) {
      // A session or connection limit frees up when something else ends; keep trying, slowly.
      backoff = BACKOFF_MAX_MS;
      scheduleReconnect(errText || (code === 4503 ? 'server memory cap reached' : 'server limit reached'));
      return;
    }
    if (f.type === 'shutdown' || code === 1001) {
      scheduleReconnect('the server is restarting or shutting down');
      return;
    }
    if (!c.opened) {
      // A refused upgrade (401, 403, 429) looks like a network error to a WebSocket; ask
      // over HTTP, because retrying a bad token would only trip the auth rate limit.
      probeAuth();
      return;
    }
    scheduleReconnect('connection lost');
  }

  function probeAuth() {
    setState('connecting');
    const token = storedToken();
    fetch(new URL('api/sessions', location.href), { headers: authHeaders(), cache: 'no-store' })
      .then((r) => {
        if (r.status === 401) {
          setState('closed');
          setStatus('bad', token ? 'the stored token was refused' : 'this server needs a token',
            [['Set token', setToken]]);
        } else if (r.status === 429) {
          backoff = BACKOFF_MAX_MS;
          scheduleReconnect('too many attempts');
        } else if (r.status === 403) {
          setState('closed');
          setStatus('bad', 'forbidden by the server (host or origin check)', [['Retry', connect]]);
        } else {
          scheduleReconnect('cannot connect');
        }
      })
      .catch(() => scheduleReconnect('server unreachable'));
  }

  // --- input -------------------------------------------------------------------------------

  function sendInput(data) {
    if (replayPending > 0) return;
    if (!conn || !conn.attached || role === 'viewer' || conn.ws.readyState !== WebSocket.OPEN) return;
    const bytes = typeof data === 'string' ? encoder.encode(data) : data;
    for (let i = 0; i < bytes.length; i += MAX_INPUT_FRAME) {
      conn.ws.send(bytes.subarray(i, i + MAX_INPUT_FRAME));
    }
  }

  function setModifier(name, on) {
    if (name === 'ctrl') ctrlArmed = on;
    else altArmed = on;
    const b = keysEl.querySelector('[data-key="' + name + '"]');
    if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
  }

  function ctrlOf(ch) {
    if (ch.length !== 1) return null;
    const c = ch.toUpperCase().charCodeAt(0);
    if (c >= 64 && c <= 95) return String.fromCharCode(c & 0x1f);
    if (ch === ' ' || ch === '2') return '\x00';
    if (ch === '?' || ch === '8') return '\x7f';
    return null;
  }

  // Applies the sticky Ctrl and Alt of the extra-keys bar to one key's worth of input, and
  // releases them: a phone keyboard has neither.
  function withModifiers(seq) {
    if (ctrlArmed) {
      const c = ctrlOf(seq);
      if (c !== null) seq = c;
      setModifier('ctrl', false);
    }
    if (altArmed) {
      seq = '\x1b' + seq;
      setModifier('alt', false);
    }
    return seq;
  }

  term.onData((d) => {
    if (replayPending > 0) return;
    // A paste (many characters at once) is not a key press; modifiers wait for a key.
    if ((ctrlArmed || altArmed) && d.length === 1) d = withModifiers(d);
    sendInput(d);
  });
  term.onBinary((d) => {
    if (replayPending > 0) return;
    const bytes = new Uint8Array(d.length);
    for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 0xff;
    sendInput(bytes);
  });

  const ARROWS = { up: 'A', down: 'B', right: 'C', left: 'D' };
  function keyBar(key, text) {
    if (key === 'ctrl' || key === 'alt') {
      setModifier(key, !(key === 'ctrl' ? ctrlArmed : altArmed));
      return;
    }
    let seq;
    if (text) seq = text;
    else if (key === 'esc') seq = '\x1b';
    else if (key === 'tab') seq = '\t';
    else if (ARROWS[key]) {
      // xterm's modifier encoding: 1 + (Alt 2) + (Ctrl 4).
      const mod = 1 + (altArmed ? 2 : 0) + (ctrlArmed ? 4 : 0);
      if (mod > 1) {
        seq = '\x1b[1;' + mod + ARROWS[key];
        setModifier('ctrl', false);
        setModifier('alt', false);
      } else {
        seq = (term.modes.applicationCursorKeysMode ? '\x1bO' : '\x1b[') + ARROWS[key];
      }
    }
    if (!seq) return;
    sendInput(withModifiers(seq));
  }
  for (const b of keysEl.querySelectorAll('button')) {
    // Keep the focus (and so the on-screen keyboard) on the terminal.
    b.addEventListener('pointerdown', (e) => e.preventDefault());
    b.addEventListener('mousedown', (e) => e.preventDefault());
    b.addEventListener('click', (e) => {
      e.preventDefault();
      keyBar(b.dataset.key, b.dataset.text);
      term.focus();
    });
  }

  function setExtraKeys(on, persist) {
    document.body.classList.toggle('show-keys', on);
    const b = menuEl.querySelector('[data-menu="keys"]');
    if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
    if (persist) store.set('localStorage', KEYS_KEY, on ? '1' : null);
  }

  // --- clipboard ---------------------------------------------------------------------------

  // Copy on select, as in xterm and most desktop terminals. The async clipboard needs a
  // secure context (https or localhost); on a plain-http LAN page execCommand still works
  // inside the user gesture that made the selection.
  let copyTimer = null;
  let lastCopied = '';
  function copySelection() {
    const text = term.getSelection();
    if (!text) return;
    const done = () => {
      lastCopied = text;
      if (state === 'open') showOpenStatus('copied ' + text.length + ' characters');
    };
    const legacy = () => {
      const onCopy = (e) => {
        e.clipboardData.setData('text/plain', text);
        e.preventDefault();
      };
      document.addEventListener('copy', onCopy);
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      document.removeEventListener('copy', onCopy);
      if (ok) done();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, legacy);
    } else {
      legacy();
    }
  }
  if (!coarse) {
    term.onSelectionChange(() => {
      clearTimeout(copyTimer);
      copyTimer = setTimeout(copySelection, 120);
    });
  }

  // Keyboard paste (Ctrl+Shift+V, Cmd+V) reaches xterm.js natively; this is for phones and
  // for the menu. term.paste applies bracketed paste when the program asked for it.
  function pasteFromClipboard() {
    const ask = () => {
      const t = window.prompt('Text to paste into the terminal:', '');
      if (t) term.paste(t);
    };
    if (navigator.clipboard && navigator.clipboard.readText && window.isSecureContext) {
      navigator.clipboard.readText().then((t) => { if (t) term.paste(t); }, ask);
    } else {
      ask();
    }
  }

  // --- menu: sessions and settings ---------------------------------------------------------

  function setMenu(open) {
    menuEl.hidden = !open;
    menuButton.setAttribute('aria-expanded', open ? 'true' : 'false');
    if (open) refreshSessions();
    safeFit();
  }
  menuButton.addEventListener('click', () => setMenu(menuEl.hidden));

  function setFontSize(n) {
    const size = Math.max(FONT_MIN, Math.min(FONT_MAX, n));
    term.options.fontSize = size;
    fontSizeEl.textContent = String(size);
    store.set('localStorage', FONT_KEY, String(size));
    safeFit();
  }
  fontSizeEl.textContent = String(term.options.fontSize);

  menuEl.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-menu]');
    if (!b) return;
    switch (b.dataset.menu) {
      case 'new': setMenu(false); newSession(); break;
      case 'font-down': setFontSize(term.options.fontSize - 1); break;
      case 'font-up': setFontSize(term.options.fontSize + 1); break;
      case 'paste': setMenu(false); pasteFromClipboard(); break;
      case 'keys': setExtraKeys(!document.body.classList.contains('show-keys'), true); safeFit(); break;
      case 'token': setMenu(false); setToken(); break;
      case 'refresh': refreshSessions(); break;
      default: break;
    }
  });
  // The list rows are links, so a session can also be opened in a new tab.
  listEl.addEventListener('click', (e) => {
    const a = e.target.closest('a[data-session]');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    if (a.dataset.session === sessionId) { setMenu(false); return; }
    // A fresh page for the other session: its own terminal, replay and claims; this one's
    // session goes on running detached.
    store.set('sessionStorage', SESSION_KEY, a.dataset.session);
    location.href = a.href;
  });

  function ago(secs) {
    if (secs < 60) return 'just now';
    if (secs < 3600) return Math.floor(secs / 60) + ' min ago';
    if (secs < 86400) return Math.floor(secs / 3600) + ' h ago';
    return Math.floor(secs / 86400) + ' d ago';
  }

  let listSeq = 0;
  function refreshSessions() {
    const seq = ++listSeq;
    listEl.replaceChildren(listItem('loading\u2026'));
    fetch(new URL('api/sessions', location.href), { headers: authHeaders(), cache: 'no-store' })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => {
        if (seq !== listSeq) return;
        if (!ok) {
          listEl.replaceChildren(listItem((body && body.message) || 'cannot list sessions'));
          return;
        }
        renderSessions(Array.isArray(body.sessions) ? body.sessions : [], Number(body.now) || 0);
      })
      .catch(() => { if (seq === listSeq) listEl.replaceChildren(listItem('cannot reach the server')); });
  }

  function listItem(text) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = text;
    return li;
  }

  function renderSessions(sessions, now) {
    if (!sessions.length) {
      listEl.replaceChildren(listItem('no sessions'));
      return;
    }
    sessions.sort((a, b) => (Number(b.last_seen) || 0) - (Number(a.last_seen) || 0));
    const rows = sessions.map((s) => {
      const id = String(s.id);
      const li = document.createElement('li');
      const a = document.createElement('a');
      const u = new URL(location.href);
      u.searchParams.set('s', id);
      a.href = u.href;
      a.dataset.session = id;
      if (id === sessionId) a.setAttribute('aria-current', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.title ? String(s.title) : id;
      const meta = document.createElement('span');
      meta.className = 'meta';
      const parts = [];
      if (s.title) parts.push(id);
      parts.push(s.state === 'exited' ? 'exited' : 'running');
      parts.push(id === sessionId ? 'this tab' : Number(s.clients) > 0 ? 'attached' : 'detached');
      const idle = now && s.last_seen ? Math.max(0, now - Number(s.last_seen)) : Number(s.idle_secs) || 0;
      parts.push('seen ' + ago(idle));
      meta.textContent = parts.join(' \u00b7 ');
      a.append(name, meta);
      li.appendChild(a);
      return li;
    });
    listEl.replaceChildren(...rows);
  }

  // --- size and title ----------------------------------------------------------------------

  function safeFit() {
    try { fitAddon.fit(); } catch (_) { /* not laid out yet */ }
  }

  let sentCols = 0;
  let sentRows = 0;
  function sendResize() {
    if (!conn || !conn.attached) return;
    sentCols = term.cols;
    sentRows = term.rows;
    sendJson({ type: 'resize', cols: term.cols, rows: term.rows });
  }
  term.onResize(() => {
    if (term.cols !== sentCols || term.rows !== sentRows) sendResize();
  });

  let resizeTimer = null;
  function scheduleFit() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(safeFit, RESIZE_DEBOUNCE_MS);
  }
  window.addEventListener('resize', scheduleFit);
  if (window.ResizeObserver) new ResizeObserver(scheduleFit).observe(document.getElementById('term'));

  // On phones the on-screen keyboard shrinks only the visual viewport; sizing the app to it
  // keeps the prompt above the keyboard.
  if (window.visualViewport) {
    const vv = window.visualViewport;
    const fitViewport = () => {
      document.documentElement.style.setProperty('--app-height', vv.height + 'px');
      document.getElementById('app').style.top = vv.offsetTop + 'px';
    };
    vv.addEventListener('resize', fitViewport);
    vv.addEventListener('scroll', fitViewport);
    fitViewport();
  }

  term.onTitleChange((t) => {
    title = t;
    document.title = t ? t + ' \u00b7 keepty' : 'keepty';
    if (state === 'open') showOpenStatus();
  });

  // --- test hooks --------------------------------------------------------------------------

  window.keepty = {
    term,
    get offset() { return offset; },
    get sessionId() { return sessionId; },
    get state() { return state; },
    get role() { return role; },
    get policy() { return policy; },
    get lastCopied() { return lastCopied; },
    get states() { return stateLog.slice(); },
    // True while replayed output is still being parsed (and terminal answers are dropped).
    get replaying() { return replayPending > 0 || (conn !== null && offset < conn.replayEnd); },
  };

  start();
  if (!coarse) term.focus();
})();
