// The terminal page's connection state machine, apart from the page: `step(model, event,
// random)` returns the next model and the effects the page carries out (open a socket, set a
// timer, show a banner). No DOM, timers or sockets in here, so every close code and every
// transition can be tested in Node (tests/page/conn.test.mjs).
//
// model.state is what the page shows as data-state and window.keepty.state:
//   connecting | asking (another tab holds the session) | open | waiting (backoff before a
//   retry) | exited | taken_over | dropped | closed (stopped on an error; a button offers the
//   way on)
(function (ns) {
  'use strict';

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;

  // What a close code means to the page. Mirrors the server's codes (src/api/protocol.rs, SPEC
  // section 3); a code the server adds needs a row here. `message`: the control message the
  // server sends before closing with the code; when it arrived it decides, because the close
  // frame itself may be lost with the network. `then`, what the page does:
  //   exited, taken_over, dropped: that state, with its own banner;
  //   stop: state closed with a banner and buttons, since retrying alone would only repeat it;
  //   slow: retry at the longest backoff, since a limit frees up only when something else ends;
  //   reconnect: the server went away on purpose and comes back; reconnect with `since` at
  //     once (the shortest backoff after an attach, whose jitter spreads many tabs apart);
  //   lost: anything else; reconnect with a growing backoff, or ask over HTTP why when the
  //     socket never opened.
  // `alone: false`: the code without its message says nothing more than a lost connection.
  const CLOSE_CODES = {
    1000: { name: 'normal', message: 'exited', then: 'exited', alone: false },
    1001: { name: 'going_away', message: 'shutdown', then: 'reconnect', text: 'the server is restarting or shutting down' },
    1002: { name: 'protocol_error', then: 'lost' },
    1007: { name: 'invalid_payload', then: 'lost' },
    1008: { name: 'policy', then: 'lost' },
    1009: { name: 'too_big', then: 'lost' },
    // The server could not start the command; retrying by itself would only repeat that.
    1011: { name: 'internal', then: 'stop', text: 'server error', actions: [['Retry', 'connect']] },
    1012: { name: 'restarting', then: 'reconnect', text: 'the server is restarting' },
    4000: {
      name: 'dropped', message: 'dropped', then: 'dropped',
      text: 'the session was dropped by an administrator', actions: [['Start a new session', 'newSession']],
    },
    4400: { name: 'bad_request', then: 'stop', text: 'bad request', actions: [['New session', 'newSession']] },
    4403: {
      name: 'forbidden', then: 'stop', text: 'forbidden',
      actions: [['Set token', 'setToken'], ['New session', 'newSession']],
    },
    4404: {
      name: 'not_found', message: 'expired', then: 'stop', text: 'no such session',
      expiredText: 'the session expired (idle past its time to live)',
      actions: [['Start a new session', 'newSession']],
    },
    // Only the reject policy refuses a second window; it has no way to take over.
    4409: {
      name: 'attached_elsewhere', then: 'stop', text: 'the session is open in another window',
      suffix: ' \u00b7 this server does not allow taking it over',
      actions: [['Retry', 'connect'], ['New session', 'newSession']],
    },
    4410: {
      name: 'taken_over', message: 'taken_over', then: 'taken_over',
      text: 'opened elsewhere (another tab or device took this session)', actions: [['Take back', 'connect']],
    },
    4429: { name: 'limit', then: 'slow', text: 'server limit reached' },
    4503: { name: 'memory', then: 'slow', text: 'server memory cap reached' },
  };

  const BY_MESSAGE = {};
  for (const code of Object.keys(CLOSE_CODES)) {
    const row = CLOSE_CODES[code];
    if (row.message) BY_MESSAGE[row.message] = row;
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

  const LOST = { name: 'lost', then: 'lost' };

  // The row that decides a close: the control message's, else the code's.
  function closeRow(code, final) {
    const byMessage = final && BY_MESSAGE[final.type];
    if (byMessage) return byMessage;
    const row = CLOSE_CODES[code];
    return row && row.alone !== false ? row : LOST;
  }

  function initial(sessionId) {
    return { state: 'connecting', sessionId: sessionId || null, attachedOnce: false, backoff: BACKOFF_MIN_MS };
  }

  // Whether this tab answers "mine" when another tab of this browser asks about its session.
  function holdsSession(m) {
    return m.sessionId !== null && (m.state === 'open' || m.state === 'connecting' || m.state === 'waiting');
  }

  function status(level, text, actions) {
    return { type: 'status', level, text, actions: actions || [] };
  }

  // `create`: this one connect may start the named session (new=1). Only an explicit choice
  // of the user sets it, and never a reconnect, so a name that ended is never silently
  // replaced by a fresh shell.
  function connect(m, create) {
    const open = { type: 'open', session: m.sessionId, resume: m.sessionId !== null && m.attachedOnce };
    if (create) open.create = true;
    return {
      model: Object.assign({}, m, { state: 'connecting' }),
      effects: [
        status('warn', m.attachedOnce ? 'reconnecting\u2026' : 'connecting\u2026'),
        // A fresh page has nothing, so it asks for everything the ring holds; one that has
        // attached continues from its offset.
        open,
      ],
    };
  }

  function retry(m, why, random, backoff) {
    const b = backoff === undefined ? m.backoff : backoff;
    // Jitter spreads the retries of many tabs (or many phones after a Wi-Fi blip) apart.
    const delay = Math.round(b / 2 + random * b / 2);
    return {
      model: Object.assign({}, m, { state: 'waiting', backoff: Math.min(b * 2, BACKOFF_MAX_MS) }),
      effects: [
        status('warn', why + ' \u00b7 reconnecting in ' + (delay / 1000).toFixed(1) + ' s', [['Retry now', 'connect']]),
        { type: 'retry', delay },
      ],
    };
  }

  function stop(m, state, level, text, actions) {
    return { model: Object.assign({}, m, { state }), effects: [status(level, text, actions)] };
  }

  function onClose(m, ev, random) {
    const f = ev.final || {};
    const row = closeRow(ev.code, ev.final);
    const errText = f.type === 'error'
      ? (f.message || ERROR_TEXT[f.code] || 'error') + ' (' + f.code + ')'
      : '';
    switch (row.then) {
      case 'exited': {
        const how = f.signal ? 'was killed by signal ' + f.signal : 'exited with code ' + f.code;
        return stop(m, 'exited', 'bad', 'the program ' + how, [['Restart', 'newSession']]);
      }
      case 'taken_over':
      case 'dropped':
        return stop(m, row.then, 'bad', row.text, row.actions);
      case 'stop': {
        const text = f.type === 'expired' && row.expiredText ? row.expiredText : errText || row.text;
        // A name this tab never had (a bookmark, a typed ?s=NAME), or one that ended: offer
        // to create it, and never do so without asking.
        if (ev.code === 4404 && m.sessionId !== null && !m.attachedOnce) {
          return stop(m, 'closed', 'bad', text + ' \u00b7 create session ' + m.sessionId + '?',
            [['Create ' + m.sessionId, 'create']].concat(row.actions));
        }
        return stop(m, 'closed', 'bad', text + (row.suffix || ''), row.actions);
      }
      case 'slow':
        return retry(m, errText || row.text, random, BACKOFF_MAX_MS);
      case 'reconnect':
        return retry(m, row.text, random);
      default:
        // A refused upgrade (401, 403, 429) looks like a network error to a WebSocket; ask
        // over HTTP, because retrying a bad token would only trip the auth rate limit.
        if (!ev.opened) return { model: Object.assign({}, m, { state: 'connecting' }), effects: [{ type: 'probe' }] };
        return retry(m, 'connection lost', random);
    }
  }

  function onProbed(m, ev, random) {
    if (ev.status === 401) {
      return stop(m, 'closed', 'bad', ev.hasToken ? 'the stored token was refused' : 'this server needs a token',
        [['Set token', 'setToken']]);
    }
    if (ev.status === 429) return retry(m, 'too many attempts', random, BACKOFF_MAX_MS);
    if (ev.status === 403) {
      return stop(m, 'closed', 'bad', 'forbidden by the server (host or origin check)', [['Retry', 'connect']]);
    }
    return retry(m, 'cannot connect', random);
  }

  // Events, from the page:
  //   start {canAsk}: the page loaded; canAsk when other tabs can be asked about the session
  //   asked {session, answered}: another tab did (not) answer that it holds `session`
  //   connect: a button, or the retry timer
  //   wake: the network came back or the tab became visible
  //   socket_failed {message}: the WebSocket constructor threw
  //   attached {session}: the server's `attached` message
  //   closed {code, final, opened}: the socket closed; `final` is the last control message
  //   probed {status, hasToken} / probe_failed: the answer to the HTTP probe
  //   new_session, token_set: the user started a fresh session or changed the token
  //   create {session}: the user chose to create (or open) the session of that name; without
  //     `session`, the one this page names
  // `random` in [0, 1) jitters retry delays.
  function step(m, ev, random) {
    const r = random === undefined ? 1 : random;
    switch (ev.type) {
      case 'start':
        if (!m.sessionId || !ev.canAsk) return connect(m);
        return {
          model: Object.assign({}, m, { state: 'connecting' }),
          effects: [{ type: 'ask', session: m.sessionId }],
        };
      case 'asked':
        if (!ev.answered) return connect(m);
        return stop(m, 'asking', 'warn', 'session ' + ev.session + ' is open in another tab',
          [['Open here', 'connect'], ['New session', 'newSession']]);
      case 'connect':
        return connect(m);
      case 'wake':
        if (m.state !== 'waiting') return { model: m, effects: [] };
        return connect(Object.assign({}, m, { backoff: BACKOFF_MIN_MS }));
      case 'socket_failed':
        return stop(m, 'closed', 'bad', 'cannot connect: ' + ev.message, [['Retry', 'connect']]);
      case 'attached':
        return {
          model: Object.assign({}, m, {
            state: 'open',
            attachedOnce: true,
            backoff: BACKOFF_MIN_MS,
            sessionId: ev.session ? String(ev.session) : m.sessionId,
          }),
          effects: [{ type: 'remember' }],
        };
      case 'closed':
        return onClose(m, ev, r);
      case 'probed':
        return onProbed(m, ev, r);
      case 'probe_failed':
        return retry(m, 'server unreachable', r);
      case 'new_session': {
        // The session it leaves keeps running until its TTL.
        const fresh = Object.assign({}, m, { sessionId: null, attachedOnce: false, backoff: BACKOFF_MIN_MS });
        const next = connect(fresh);
        next.effects.unshift({ type: 'reset' }, { type: 'remember' });
        return next;
      }
      case 'create': {
        const name = ev.session ? String(ev.session) : m.sessionId;
        if (name === null) return { model: m, effects: [] };
        const named = Object.assign({}, m, { sessionId: name, attachedOnce: false, backoff: BACKOFF_MIN_MS });
        const next = connect(named, true);
        next.effects.unshift({ type: 'reset' }, { type: 'remember' });
        return next;
      }
      case 'token_set':
        return connect(Object.assign({}, m, { backoff: BACKOFF_MIN_MS }));
      default:
        return { model: m, effects: [] };
    }
  }

  ns.conn = { CLOSE_CODES, ERROR_TEXT, BACKOFF_MIN_MS, BACKOFF_MAX_MS, closeRow, initial, holdsSession, step };
})(window.keepty = window.keepty || {});
