// keepty browser client: one xterm.js terminal bound to one keepty session over the
// WebSocket protocol of SPEC section 3. A plain script (no modules, no bundler) so the files
// embedded in the binary are served exactly as they are here. What the connection does next
// (connect, wait, stop, which banner) is decided by conn.js, which has no DOM to test around;
// this file owns the DOM, xterm.js, the timers and the socket, feeds their events to it
// through dispatch() and carries out the effects it returns.
(function () {
  'use strict';

  const connection = window.keepty.conn;
  const formatBytes = window.keepty.format.bytes;
  const keys = window.keepty.keys;
  const views = window.keepty.views;

  // The server stops sending at 256 KiB un-acked; acking every 64 KiB keeps output flowing
  // without an ack per frame, the timer covers the tail of a burst.
  const ACK_BYTES = 64 * 1024;
  const ACK_DELAY_MS = 250;
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
    // OSC 8 hyperlinks (ls --hyperlink, gcc, systemd): web links only, in a new tab.
    linkHandler: { activate: (e, uri) => openLink(uri), allowNonHttpProtocols: false },
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
  // Plain URLs in the output become links (hover and click; a tap on a phone).
  term.loadAddon(new WebLinksAddon.WebLinksAddon((e, uri) => openLink(uri)));
  term.open(document.getElementById('term'));
  safeFit();

  // A new tab that cannot reach back into this one (noopener: no window.opener).
  function openLink(uri) {
    const href = keys.safeLink(uri);
    if (href) window.open(href, '_blank', 'noopener');
  }

  // --- state -------------------------------------------------------------------------------

  const pageUrl = new URL(location.href);
  // The connection's state machine (conn.js) owns the session id, the state shown as
  // data-state and the backoff; dispatch() is the only way they change. The URL names the
  // session; sessionStorage keeps it for this tab when the address bar loses it (a bookmark of
  // the bare page, a navigation back to /).
  let machine = connection.initial(pageUrl.searchParams.get('s') || store.get('sessionStorage', SESSION_KEY) || null);
  // The socket now in use (see openSocket) and the timer of the next retry.
  const link = { conn: null, retryTimer: null };
  const output = {
    // Bytes of session output received; `since` for the next reconnect.
    offset: 0,
    // Replay chunks handed to term.write whose parsing has not finished yet. While any are
    // pending, whatever the terminal emits is its answer to old output and must not reach the
    // PTY (SPEC 3, last bullet). Counted across connections, because a reconnect can start
    // while an earlier replay is still queued inside xterm.
    replayPending: 0,
  };
  // What the status line says about the attached session.
  const view = { role: 'writer', policy: '', title: '', noticeTimer: null };
  // The sticky modifiers of the extra-keys bar.
  const armed = { ctrl: false, alt: false };

  // A token can be handed over as #token=... (e.g. from a QR code); it moves to localStorage
  // and out of the address bar. token.js asks before it replaces another stored token.
  const tokens = window.keepty.token;
  const tokenIo = {
    get: () => storedToken() || null,
    set: (t) => store.set('localStorage', TOKEN_KEY, t),
    whoami: (t) => fetch(new URL('api/whoami', location.href), {
      headers: t ? { Authorization: 'Bearer ' + t } : {}, cache: 'no-store',
    }).then((r) => (r.ok ? r.json() : null)).then((j) => (j && j.user) || null).catch(() => null),
    confirm: (text) => window.confirm(text),
  };
  function takeHashToken() {
    const taken = tokens.take(location.hash, tokenIo);
    if (location.hash.startsWith('#token=')) {
      const clean = new URL(location.href);
      clean.hash = '';
      history.replaceState(null, '', clean.href);
    }
    return taken;
  }
  function showUser() {
    tokenIo.whoami(storedToken()).then((u) => tokens.showUser(document, tokens.userText(u, storedToken() !== '')));
  }
  const handedOver = takeHashToken();
  // A link opened in this tab later (it shows "needs a token", say) is taken the same way.
  window.addEventListener('hashchange', () => {
    takeHashToken().then((changed) => {
      if (!changed) return;
      showUser();
      dispatch({ type: 'token_set' });
    });
  });
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

  function showOpenStatus(note) {
    clearTimeout(view.noticeTimer);
    const id = machine.sessionId;
    const name = view.title ? view.title : id ? 'session ' + id : 'session';
    if (view.role === 'viewer') {
      setStatus('warn', 'view only \u00b7 ' + name + (note ? ' \u00b7 ' + note : ''),
        [['Take control', () => sendJson({ type: 'take_control' })]]);
    } else {
      setStatus(note ? 'warn' : 'ok', 'connected \u00b7 ' + name + (note ? ' \u00b7 ' + note : ''));
    }
    if (note) view.noticeTimer = setTimeout(() => { if (machine.state === 'open') showOpenStatus(); }, 8000);
  }

  // The last states passed through, for tests that must see a transient one.
  const stateLog = [];
  function setState(s) {
    document.body.dataset.state = s;
    if (stateLog[stateLog.length - 1] !== s) {
      stateLog.push(s);
      if (stateLog.length > 32) stateLog.shift();
    }
  }

  // --- the state machine's effects ---------------------------------------------------------

  // What the buttons of the machine's banners do, by the names conn.js gives them.
  const ACTIONS = {
    connect: () => dispatch({ type: 'connect' }),
    newSession: () => dispatch({ type: 'new_session' }),
    create: () => dispatch({ type: 'create' }),
    setToken,
  };

  function dispatch(ev) {
    const next = connection.step(machine, ev, Math.random());
    machine = next.model;
    setState(machine.state);
    for (const e of next.effects) perform(e);
  }

  function perform(e) {
    switch (e.type) {
      case 'status':
        setStatus(e.level, e.text, e.actions.map(([label, name]) => [label, ACTIONS[name]]));
        break;
      case 'open': openSocket(e); break;
      case 'retry':
        clearTimeout(link.retryTimer);
        link.retryTimer = setTimeout(() => dispatch({ type: 'connect' }), e.delay);
        break;
      case 'probe': probeAuth(); break;
      case 'ask': askOtherTabs(e.session); break;
      case 'remember': rememberSession(); break;
      case 'reset':
        output.offset = 0;
        view.title = '';
        document.title = 'keepty';
        break;
      default: break;
    }
  }

  // --- identity ----------------------------------------------------------------------------

  // Remembers the session in the address bar and in this tab's sessionStorage.
  function rememberSession() {
    const id = machine.sessionId;
    store.set('sessionStorage', SESSION_KEY, id);
    const u = new URL(location.href);
    if (id === null) u.searchParams.delete('s');
    else u.searchParams.set('s', id);
    if (u.href !== location.href) history.replaceState(null, '', u.href);
  }

  // Other tabs of this browser answer "mine" for the session they hold, so a duplicated tab
  // (same URL, copied sessionStorage) asks before it takes the session over.
  const channel = window.BroadcastChannel ? new BroadcastChannel('keepty') : null;
  if (channel) {
    channel.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.type === 'who' && m.session === machine.sessionId && connection.holdsSession(machine)) {
        channel.postMessage({ type: 'mine', session: machine.sessionId });
      }
    };
  }

  function askOtherTabs(id) {
    let answered = false;
    const listener = (ev) => {
      const m = ev.data || {};
      if (m.type === 'mine' && m.session === id) answered = true;
    };
    channel.addEventListener('message', listener);
    channel.postMessage({ type: 'who', session: id });
    setTimeout(() => {
      channel.removeEventListener('message', listener);
      dispatch({ type: 'asked', session: id, answered });
    }, CLAIM_WAIT_MS);
  }

  // --- connection --------------------------------------------------------------------------

  function wsUrl(open) {
    const params = new URLSearchParams();
    if (open.session) {
      params.set('session', open.session);
      if (open.resume) params.set('since', String(output.offset));
      // Only when the user chose to create this name (conn.js).
      if (open.create) params.set('new', '1');
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

  // One socket at a time: a new one abandons the old, and events of an abandoned socket are
  // ignored (link.conn is no longer theirs).
  function openSocket(open) {
    clearTimeout(link.retryTimer);
    link.retryTimer = null;
    if (link.conn) abandon(link.conn);

    const protocols = ['keepty.v1'];
    const token = storedToken();
    if (token) protocols.push('keepty.token.' + base64url(token));

    let ws;
    try {
      ws = new WebSocket(wsUrl(open), protocols);
    } catch (e) {
      dispatch({ type: 'socket_failed', message: e.message });
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
      timer: setTimeout(() => { if (link.conn === c && !c.attached) ws.close(); }, CONNECT_TIMEOUT_MS),
    };
    link.conn = c;
    ws.onopen = () => { c.opened = true; };
    ws.onmessage = (ev) => {
      if (link.conn !== c) return;
      if (typeof ev.data === 'string') onText(c, ev.data);
      else onBinary(c, new Uint8Array(ev.data));
    };
    ws.onclose = (ev) => {
      if (link.conn !== c) return;
      link.conn = null;
      clearTimeout(c.timer);
      clearTimeout(c.ackTimer);
      dispatch({ type: 'closed', code: ev.code, final: c.final, opened: c.opened });
    };
  }

  function abandon(c) {
    link.conn = null;
    clearTimeout(c.timer);
    clearTimeout(c.ackTimer);
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
    try { c.ws.close(); } catch (_) { /* already closing */ }
  }

  function sendJson(obj) {
    if (link.conn && link.conn.ws.readyState === WebSocket.OPEN) link.conn.ws.send(JSON.stringify(obj));
  }

  window.addEventListener('online', () => dispatch({ type: 'wake' }));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') dispatch({ type: 'wake' });
  });

  function setToken() {
    const t = window.prompt('keepty token (kept in this browser\u2019s local storage):', '');
    if (t === null) return;
    store.set('localStorage', TOKEN_KEY, t.trim() ? t.trim() : null);
    showUser();
    dispatch({ type: 'token_set' });
  }

  // A refused upgrade tells a WebSocket nothing; the same request over HTTP says why.
  function probeAuth() {
    const hasToken = storedToken() !== '';
    fetch(new URL('api/sessions', location.href), { headers: authHeaders(), cache: 'no-store' })
      .then((r) => dispatch({ type: 'probed', status: r.status, hasToken }))
      .catch(() => dispatch({ type: 'probe_failed' }));
  }

  // --- incoming ----------------------------------------------------------------------------

  function onText(c, text) {
    let msg;
    try { msg = JSON.parse(text); } catch (_) { return; }
    switch (msg.type) {
      case 'attached': onAttached(c, msg); break;
      case 'gap': {
        const lost = Number(msg.lost) || 0;
        output.offset = Number(msg.offset) || output.offset;
        const at = output.offset;
        term.write(lostNotice(lost), () => { if (link.conn === c) c.parsed = Math.max(c.parsed, at); });
        showOpenStatus(formatBytes(lost) + ' bytes skipped (this window fell behind)');
        break;
      }
      case 'role':
        view.role = msg.role === 'viewer' ? 'viewer' : 'writer';
        // A new writer's window decides the PTY size.
        if (view.role === 'writer') sendResize();
        if (machine.state === 'open') showOpenStatus();
        break;
      case 'offer': files.offer(msg); break;
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
    const first = !machine.attachedOnce;
    c.attached = true;
    clearTimeout(c.timer);
    view.role = msg.role === 'viewer' ? 'viewer' : 'writer';
    view.policy = typeof msg.policy === 'string' ? msg.policy : '';
    dispatch({ type: 'attached', session: msg.session });

    output.offset = Number(msg.offset) || 0;
    c.parsed = c.acked = output.offset;
    // Without `end` the server gives no way to tell replay from live output; treating it as
    // live is what keeps a live program's cursor queries answered.
    c.replayEnd = typeof msg.end === 'number' ? msg.end : output.offset;
    const lost = Number(msg.lost) || 0;
    const restore = typeof msg.restore === 'string' ? msg.restore : null;

    if (restore !== null || first || lost > 0) {
      // RIS goes through the write queue, unlike term.reset(), so output of an earlier
      // connection still queued inside xterm cannot land on the fresh screen.
      term.write('\x1bc');
      if (lost > 0 && !first) term.write(lostNotice(lost));
      if (restore) writeReplay(restore);
    }
    showOpenStatus(lost > 0 && !first ? formatBytes(lost) + ' bytes of output lost' : '');

    // The size asked for in the URL may be stale if the window changed while connecting.
    if (view.role === 'writer' && (msg.cols !== term.cols || msg.rows !== term.rows)) sendResize();
    if (!coarse && document.hasFocus()) term.focus();
  }

  function onBinary(c, bytes) {
    if (!c.attached) return;
    const start = output.offset;
    const end = start + bytes.byteLength;
    output.offset = end;
    if (start < c.replayEnd) {
      const cut = Math.min(bytes.byteLength, c.replayEnd - start);
      writeReplay(cut === bytes.byteLength ? bytes : bytes.subarray(0, cut), () => parsedTo(c, start + cut));
      if (cut === bytes.byteLength) return;
      bytes = bytes.subarray(cut);
    }
    term.write(bytes, () => parsedTo(c, end));
  }

  function writeReplay(data, done) {
    output.replayPending++;
    term.write(data, () => {
      output.replayPending--;
      if (done) done();
    });
  }

  // Acks follow what xterm has parsed, not what arrived, so a slow tab slows the server
  // instead of piling output up in xterm's write buffer.
  function parsedTo(c, at) {
    if (link.conn !== c) return;
    c.parsed = Math.max(c.parsed, at);
    if (c.parsed - c.acked >= ACK_BYTES) sendAck(c);
    else if (c.parsed > c.acked && !c.ackTimer) c.ackTimer = setTimeout(() => sendAck(c), ACK_DELAY_MS);
  }

  function sendAck(c) {
    clearTimeout(c.ackTimer);
    c.ackTimer = null;
    if (link.conn !== c || c.parsed <= c.acked || c.ws.readyState !== WebSocket.OPEN) return;
    c.acked = c.parsed;
    c.ws.send(JSON.stringify({ type: 'ack', offset: c.acked }));
  }

  function lostNotice(n) {
    return '\r\n\x1b[0;2m[keepty: ' + n + ' bytes of output were lost]\x1b[0m\r\n';
  }

  // --- input -------------------------------------------------------------------------------

  function sendInput(data) {
    const c = link.conn;
    if (output.replayPending > 0) return;
    if (!c || !c.attached || view.role === 'viewer' || c.ws.readyState !== WebSocket.OPEN) return;
    const bytes = typeof data === 'string' ? encoder.encode(data) : data;
    for (let i = 0; i < bytes.length; i += MAX_INPUT_FRAME) {
      c.ws.send(bytes.subarray(i, i + MAX_INPUT_FRAME));
    }
  }

  function setModifier(name, on) {
    armed[name] = on;
    const b = keysEl.querySelector('[data-key="' + name + '"]');
    if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
  }

  // Applies the sticky Ctrl and Alt of the extra-keys bar to one key's worth of input, and
  // releases them: a phone keyboard has neither.
  function withModifiers(seq) {
    const out = keys.modified(seq, armed);
    releaseModifiers();
    return out;
  }

  function releaseModifiers() {
    setModifier('ctrl', false);
    setModifier('alt', false);
  }

  term.onData((d) => {
    if (output.replayPending > 0) return;
    // A paste (many characters at once) is not a key press; modifiers wait for a key.
    if ((armed.ctrl || armed.alt) && d.length === 1) d = withModifiers(d);
    sendInput(d);
  });
  term.onBinary((d) => {
    if (output.replayPending > 0) return;
    const bytes = new Uint8Array(d.length);
    for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 0xff;
    sendInput(bytes);
  });

  function keyBar(key, text) {
    if (key === 'compose') { compose.set(!compose.isOpen); return; }
    if (key === 'select') { selectView.open(); return; }
    if (text) { sendInput(withModifiers(text)); return; }
    const act = keys.keyAction(key, armed, {
      appCursor: term.modes.applicationCursorKeysMode,
      alternate: term.buffer.active.type === 'alternate',
    });
    if (!act) return;
    if (act.toggle) { setModifier(act.toggle, !armed[act.toggle]); return; }
    releaseModifiers();
    if (act.send) sendInput(act.send);
    else if (act.scroll === 'page_up') term.scrollPages(-1);
    else if (act.scroll === 'page_down') term.scrollPages(1);
    else if (act.scroll === 'top') term.scrollToTop();
    else if (act.scroll === 'bottom') term.scrollToBottom();
  }
  // Where the keyboard goes after a key of the bar: the compose field when it is open (its
  // soft keyboard stays up), else the terminal.
  function refocus() {
    if (compose.isOpen) compose.input.focus();
    else term.focus();
  }
  for (const b of keysEl.querySelectorAll('button')) {
    // Keep the focus (and so the on-screen keyboard) on the terminal.
    b.addEventListener('pointerdown', (e) => e.preventDefault());
    b.addEventListener('mousedown', (e) => e.preventDefault());
    b.addEventListener('click', (e) => {
      e.preventDefault();
      keyBar(b.dataset.key, b.dataset.text);
      if (!selectView.isOpen) refocus();
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
  const clip = { timer: null, lastCopied: '', osc52: 0 };
  function copySelection() {
    const text = term.getSelection();
    if (text) copyText(text, '');
  }
  function copyText(text, what) {
    const done = () => {
      clip.lastCopied = text;
      if (machine.state === 'open') showOpenStatus('copied ' + (what ? what + ', ' : '') + text.length + ' characters');
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
      // Outside a tap or a key press (OSC 52 from a program, a tab without focus) browsers
      // refuse; say so rather than leave the user to paste something old.
      else if (machine.state === 'open') showOpenStatus('the browser refused to copy ' + (what || 'the selection'));
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, legacy);
    } else {
      legacy();
    }
  }

  // OSC 52 (tmux set-clipboard, vim's osc52, `printf '\e]52;c;BASE64\a'`): a program on the
  // box puts text in this device's clipboard. Only the writer's page does it, and only for
  // live output: a viewer watching someone else's session, and a replay of old output after
  // a reload, never touch the clipboard. Reads (`?`) are never answered.
  term.parser.registerOscHandler(52, (data) => {
    if (view.role !== 'writer' || output.replayPending > 0) return true;
    const text = keys.osc52Text(data);
    if (text) {
      clip.osc52++;
      copyText(text, 'from the program');
    }
    return true;
  });

  if (!coarse) {
    term.onSelectionChange(() => {
      clearTimeout(clip.timer);
      clip.timer = setTimeout(copySelection, 120);
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
      case 'new': setMenu(false); dispatch({ type: 'new_session' }); break;
      case 'named': setMenu(false); askName(); break;
      case 'select': setMenu(false); selectView.open(); break;
      case 'search': setMenu(false); finder.set(true); break;
      case 'compose': setMenu(false); compose.set(!compose.isOpen); break;
      case 'font-down': setFontSize(term.options.fontSize - 1); break;
      case 'font-up': setFontSize(term.options.fontSize + 1); break;
      case 'paste': setMenu(false); pasteFromClipboard(); break;
      case 'upload': setMenu(false); files.pick(); break;
      case 'download': setMenu(false); files.askDownload(); break;
      case 'keys': setExtraKeys(!document.body.classList.contains('show-keys'), true); safeFit(); break;
      case 'token': setMenu(false); setToken(); break;
      case 'refresh': refreshSessions(); break;
      default: break;
    }
  });
  // A name typed once lands in the same shell every time after: it is created if it does not
  // exist and attached if it does. `?s=NAME` in a bookmark does the same, after asking.
  function askName() {
    const name = window.prompt('Session name (letters, digits, - and _):', '');
    if (name === null || name === '') return;
    if (!keys.validName(name)) {
      setStatus('warn', 'not a session name: ' + name + ' (letters, digits, - and _, at most 64)');
      return;
    }
    if (name === machine.sessionId) return;
    dispatch({ type: 'create', session: name });
  }

  // The list rows are links, so a session can also be opened in a new tab.
  listEl.addEventListener('click', (e) => {
    const a = e.target.closest('a[data-session]');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    if (a.dataset.session === machine.sessionId) { setMenu(false); return; }
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

  // Answers to an earlier refresh that arrive after a later one's are stale.
  const listing = { seq: 0 };
  function refreshSessions() {
    const seq = ++listing.seq;
    listEl.replaceChildren(listItem('loading\u2026'));
    fetch(new URL('api/sessions', location.href), { headers: authHeaders(), cache: 'no-store' })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => {
        if (seq !== listing.seq) return;
        if (!ok) {
          listEl.replaceChildren(listItem((body && body.message) || 'cannot list sessions'));
          return;
        }
        renderSessions(Array.isArray(body.sessions) ? body.sessions : [], Number(body.now) || 0);
      })
      .catch(() => { if (seq === listing.seq) listEl.replaceChildren(listItem('cannot reach the server')); });
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
      if (id === machine.sessionId) a.setAttribute('aria-current', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.title ? String(s.title) : id;
      const meta = document.createElement('span');
      meta.className = 'meta';
      const parts = [];
      if (s.title) parts.push(id);
      parts.push(s.state === 'exited' ? 'exited' : 'running');
      // What it costs: the foreground program and its memory (sampled every few seconds).
      if (s.command) parts.push(String(s.command));
      if (s.rss_bytes) parts.push(window.keepty.format.bytes(s.rss_bytes));
      parts.push(id === machine.sessionId ? 'this tab' : Number(s.clients) > 0 ? 'attached' : 'detached');
      const idle = now && s.last_seen ? Math.max(0, now - Number(s.last_seen)) : Number(s.idle_secs) || 0;
      parts.push('seen ' + ago(idle));
      meta.textContent = parts.join(' \u00b7 ');
      a.append(name, meta);
      li.appendChild(a);
      return li;
    });
    listEl.replaceChildren(...rows);
  }

  // --- phone views: touch scroll, select text, compose, find --------------------------------

  const touch = window.keepty.touch.install(document.getElementById('term'), {
    lineHeight: () => {
      const screen = document.querySelector('#term .xterm-screen');
      return screen ? screen.getBoundingClientRect().height / term.rows : 16;
    },
    lines: (n) => {
      if (term.buffer.active.type === 'alternate') {
        // No scrollback there: the program scrolls, as with xterm's wheel.
        const key = (term.modes.applicationCursorKeysMode ? '\x1bO' : '\x1b[') + (n < 0 ? 'A' : 'B');
        sendInput(key.repeat(Math.min(Math.abs(n), 50)));
      } else {
        term.scrollLines(n);
      }
    },
  });
  const selectView = views.selectView({
    term,
    copy: copyText,
    note: (text) => setStatus('warn', text),
    closed: () => { if (!coarse) term.focus(); },
  });
  const compose = views.composeBar({
    mods: () => ({ ctrl: armed.ctrl, alt: armed.alt }),
    release: releaseModifiers,
    send: (bytes) => sendInput(bytes),
    shown: (on) => {
      const b = keysEl.querySelector('[data-key="compose"]');
      if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
      const m = menuEl.querySelector('[data-menu="compose"]');
      if (m) m.setAttribute('aria-pressed', on ? 'true' : 'false');
      safeFit();
    },
  });
  const finder = views.findBar({
    term,
    shown: (on) => { safeFit(); if (!on && !coarse) term.focus(); },
  });
  // Upload, download and `keepty send` offers (assets/files.js).
  const files = window.keepty.files.install({
    session: () => (machine.state === 'open' ? machine.sessionId : null),
    headers: authHeaders,
    bytes: formatBytes,
    done: () => { if (!coarse) term.focus(); },
  });
  term.attachCustomKeyEventHandler((e) => {
    if (e.type === 'keydown' && e.ctrlKey && e.shiftKey && (e.key === 'F' || e.key === 'f')) {
      e.preventDefault();
      finder.set(true);
      return false;
    }
    return true;
  });

  // --- size and title ----------------------------------------------------------------------

  function safeFit() {
    try { fitAddon.fit(); } catch (_) { /* not laid out yet */ }
  }

  // The size last sent, and the debounce of window resizes.
  const size = { cols: 0, rows: 0, timer: null };
  function sendResize() {
    if (!link.conn || !link.conn.attached) return;
    size.cols = term.cols;
    size.rows = term.rows;
    sendJson({ type: 'resize', cols: term.cols, rows: term.rows });
  }
  term.onResize(() => {
    if (term.cols !== size.cols || term.rows !== size.rows) sendResize();
  });

  function scheduleFit() {
    clearTimeout(size.timer);
    size.timer = setTimeout(safeFit, RESIZE_DEBOUNCE_MS);
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
    view.title = t;
    document.title = t ? t + ' \u00b7 keepty' : 'keepty';
    if (machine.state === 'open') showOpenStatus();
  });

  // --- test hooks --------------------------------------------------------------------------

  // On the namespace format.js and conn.js share, which the tests read as window.keepty.
  Object.defineProperties(window.keepty, {
    term: { value: term, enumerable: true },
    offset: { get: () => output.offset, enumerable: true },
    sessionId: { get: () => machine.sessionId, enumerable: true },
    state: { get: () => machine.state, enumerable: true },
    role: { get: () => view.role, enumerable: true },
    policy: { get: () => view.policy, enumerable: true },
    lastCopied: { get: () => clip.lastCopied, enumerable: true },
    osc52Writes: { get: () => clip.osc52, enumerable: true },
    flinging: { get: () => touch.flinging, enumerable: true },
    filesText: { get: () => files.text, enumerable: true },
    states: { get: () => stateLog.slice(), enumerable: true },
    // True while replayed output is still being parsed (and terminal answers are dropped).
    replaying: {
      get: () => output.replayPending > 0 || (link.conn !== null && output.offset < link.conn.replayEnd),
      enumerable: true,
    },
  });

  handedOver.then(() => {
    showUser();
    // Notices for sessions nobody watches (assets/notify.js): it needs only the token.
    if (window.keepty.notify) window.keepty.notify.start({ headers: authHeaders });
    dispatch({ type: 'start', canAsk: channel !== null });
  });
  if (!coarse) term.focus();
})();
