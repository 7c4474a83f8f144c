// The page's connection state machine (assets/conn.js): what every close code does, and the
// transitions between connecting, attached, waiting and the closed states.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const conn = load('conn.js').conn;
const { CLOSE_CODES, BACKOFF_MIN_MS, BACKOFF_MAX_MS, step, initial, holdsSession } = conn;

// Runs events from a model; `random` 1 makes every retry wait its full backoff.
function run(model, events, random = 1) {
  let out = { model, effects: [] };
  for (const ev of [].concat(events)) out = step(out.model, ev, random);
  return out;
}

const effect = (out, type) => out.effects.find((e) => e.type === type);
const status = (out) => effect(out, 'status');
const buttons = (out) => status(out).actions;

// A page that attached to session `s1` once and then lost its socket to `close`.
function attachedThen(close, random = 1) {
  return run(initial('s1'), [{ type: 'start', canAsk: false }, { type: 'attached', session: 's1' },
    Object.assign({ type: 'closed', opened: true, final: null }, close)], random);
}

// What the page does for each code the server (src/api/protocol.rs, SPEC 3) closes with, without
// the control message (a message-less close: what a code alone says).
const ALONE = {
  1000: ['waiting', 'connection lost'],
  1001: ['waiting', 'the server is restarting or shutting down'],
  1002: ['waiting', 'connection lost'],
  1007: ['waiting', 'connection lost'],
  1008: ['waiting', 'connection lost'],
  1009: ['waiting', 'connection lost'],
  1011: ['closed', 'server error', ['Retry']],
  1012: ['waiting', 'the server is restarting'],
  4000: ['dropped', 'the session was dropped by an administrator', ['Start a new session']],
  4400: ['closed', 'bad request', ['New session']],
  4403: ['closed', 'forbidden', ['Set token', 'New session']],
  4404: ['closed', 'no such session', ['Start a new session']],
  4409: ['closed', 'the session is open in another window \u00b7 this server does not allow taking it over',
    ['Retry', 'New session']],
  4410: ['taken_over', 'opened elsewhere (another tab or device took this session)', ['Take back']],
  4429: ['waiting', 'server limit reached'],
  4503: ['waiting', 'server memory cap reached'],
};

test('the table has a row for every close code the server sends, and 1012', () => {
  assert.deepEqual(Object.keys(CLOSE_CODES).map(Number).sort((a, b) => a - b),
    Object.keys(ALONE).map(Number).sort((a, b) => a - b));
  for (const [code, row] of Object.entries(CLOSE_CODES)) {
    assert.ok(['exited', 'taken_over', 'dropped', 'stop', 'slow', 'reconnect', 'lost'].includes(row.then), code);
    assert.match(row.name, /^[a-z_]+$/, code);
  }
});

for (const [code, [state, text, labels]] of Object.entries(ALONE)) {
  test(`close ${code} (${CLOSE_CODES[code].name}) alone: ${state}`, () => {
    const out = attachedThen({ code: Number(code) });
    assert.equal(out.model.state, state);
    if (state === 'waiting') {
      assert.ok(status(out).text.startsWith(text + ' \u00b7 reconnecting in '), status(out).text);
      assert.deepEqual(buttons(out), [['Retry now', 'connect']]);
      assert.ok(effect(out, 'retry'));
    } else {
      assert.equal(status(out).level, 'bad');
      assert.equal(status(out).text, text);
      assert.deepEqual(buttons(out).map(([l]) => l), labels);
      assert.equal(effect(out, 'retry'), undefined, 'a closed state does not retry by itself');
      assert.equal(effect(out, 'open'), undefined);
    }
  });
}

test('the banners\u2019 buttons name only actions the page has', () => {
  for (const row of Object.values(CLOSE_CODES)) {
    for (const [, action] of row.actions || []) assert.ok(['connect', 'newSession', 'setToken'].includes(action));
  }
});

test('start: a page without a session connects at once, asking for a new one', () => {
  const out = run(initial(null), { type: 'start', canAsk: true });
  assert.equal(out.model.state, 'connecting');
  assert.deepEqual(status(out), { type: 'status', level: 'warn', text: 'connecting\u2026', actions: [] });
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: null, resume: false });
});

test('start: a page with a session asks the other tabs first, and connects when none holds it', () => {
  let out = run(initial('s1'), { type: 'start', canAsk: true });
  assert.equal(out.model.state, 'connecting');
  assert.deepEqual(out.effects, [{ type: 'ask', session: 's1' }]);
  out = run(out.model, { type: 'asked', session: 's1', answered: false });
  // A fresh page has nothing yet, so it asks for the whole ring (no `since`).
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: 's1', resume: false });
});

test('start: without BroadcastChannel the page connects without asking', () => {
  const out = run(initial('s1'), { type: 'start', canAsk: false });
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: 's1', resume: false });
});

test('asked: another tab holds the session, so the page offers to open it here', () => {
  const out = run(initial('s1'), [{ type: 'start', canAsk: true }, { type: 'asked', session: 's1', answered: true }]);
  assert.equal(out.model.state, 'asking');
  assert.equal(status(out).text, 'session s1 is open in another tab');
  assert.deepEqual(buttons(out), [['Open here', 'connect'], ['New session', 'newSession']]);
  assert.equal(effect(out, 'open'), undefined);
  assert.equal(holdsSession(out.model), false, 'an asking tab does not claim the session');
});

test('attached: open, the session id remembered, the backoff reset', () => {
  let out = run(initial(null), [{ type: 'start' }, { type: 'closed', code: 1006, opened: true },
    { type: 'connect' }]);
  assert.equal(out.model.backoff, 2 * BACKOFF_MIN_MS);
  out = run(out.model, { type: 'attached', session: 'fresh-id' });
  assert.deepEqual(out.model, { state: 'open', sessionId: 'fresh-id', attachedOnce: true, backoff: BACKOFF_MIN_MS });
  assert.deepEqual(out.effects, [{ type: 'remember' }]);
  assert.equal(holdsSession(out.model), true);
});

test('a lost connection reconnects with a doubling, capped, jittered backoff and `since`', () => {
  let out = attachedThen({ code: 1006 });
  const delays = [];
  for (let i = 0; i < 6; i++) {
    assert.equal(out.model.state, 'waiting');
    assert.equal(holdsSession(out.model), true, 'a waiting tab still holds its session');
    delays.push(effect(out, 'retry').delay);
    out = run(out.model, { type: 'connect' });
    assert.equal(out.model.state, 'connecting');
    assert.equal(status(out).text, 'reconnecting\u2026');
    assert.deepEqual(effect(out, 'open'), { type: 'open', session: 's1', resume: true });
    out = run(out.model, { type: 'closed', code: 1006, opened: true });
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 5000, 5000]);
  assert.equal(out.model.backoff, BACKOFF_MAX_MS);
  assert.equal(status(attachedThen({ code: 1006 })).text, 'connection lost \u00b7 reconnecting in 0.5 s');
});

test('the jitter waits between half and all of the backoff', () => {
  assert.equal(effect(attachedThen({ code: 1006 }, 0), 'retry').delay, 250);
  assert.equal(effect(attachedThen({ code: 1006 }, 0.5), 'retry').delay, 375);
  assert.equal(status(attachedThen({ code: 1006 }, 0)).text, 'connection lost \u00b7 reconnecting in 0.3 s');
});

test('wake (online, visible) retries at once only while waiting, from the shortest backoff', () => {
  let out = attachedThen({ code: 1006 });
  out = run(out.model, { type: 'closed', code: 1006, opened: true });
  out = run(out.model, { type: 'connect' });
  out = run(out.model, { type: 'closed', code: 1006, opened: true });
  assert.ok(out.model.backoff > BACKOFF_MIN_MS);
  const woken = run(out.model, { type: 'wake' });
  assert.equal(woken.model.state, 'connecting');
  assert.equal(woken.model.backoff, BACKOFF_MIN_MS);
  assert.ok(effect(woken, 'open'));
  for (const m of [woken.model, run(woken.model, { type: 'attached' }).model,
    attachedThen({ code: 4410 }).model]) {
    const same = run(m, { type: 'wake' });
    assert.equal(same.model, m);
    assert.deepEqual(same.effects, []);
  }
});

test('a socket that never opened asks over HTTP why', () => {
  const out = run(initial(null), [{ type: 'start' }, { type: 'closed', code: 1006, opened: false, final: null }]);
  assert.equal(out.model.state, 'connecting');
  assert.deepEqual(out.effects, [{ type: 'probe' }]);
});

test('the HTTP probe\u2019s answers', () => {
  const probed = (ev) => run(initial(null), [{ type: 'start' }, { type: 'closed', code: 1006, opened: false }, ev]);
  let out = probed({ type: 'probed', status: 401, hasToken: false });
  assert.equal(out.model.state, 'closed');
  assert.equal(status(out).text, 'this server needs a token');
  assert.deepEqual(buttons(out), [['Set token', 'setToken']]);
  assert.equal(status(probed({ type: 'probed', status: 401, hasToken: true })).text, 'the stored token was refused');
  out = probed({ type: 'probed', status: 403 });
  assert.equal(out.model.state, 'closed');
  assert.equal(status(out).text, 'forbidden by the server (host or origin check)');
  assert.deepEqual(buttons(out), [['Retry', 'connect']]);
  // The auth rate limit: back off the longest.
  out = probed({ type: 'probed', status: 429 });
  assert.equal(out.model.state, 'waiting');
  assert.equal(effect(out, 'retry').delay, BACKOFF_MAX_MS);
  assert.match(status(out).text, /^too many attempts · reconnecting in 5\.0 s$/);
  out = probed({ type: 'probed', status: 200 });
  assert.equal(out.model.state, 'waiting');
  assert.match(status(out).text, /^cannot connect · /);
  out = probed({ type: 'probe_failed' });
  assert.match(status(out).text, /^server unreachable · /);
});

test('exited: the program\u2019s code or signal, and a Restart', () => {
  let out = attachedThen({ code: 1000, final: { type: 'exited', code: 3, signal: null } });
  assert.equal(out.model.state, 'exited');
  assert.equal(status(out).text, 'the program exited with code 3');
  assert.deepEqual(buttons(out), [['Restart', 'newSession']]);
  out = attachedThen({ code: 1000, final: { type: 'exited', code: null, signal: 9 } });
  assert.equal(status(out).text, 'the program was killed by signal 9');
  assert.equal(holdsSession(out.model), false);
});

test('taken over: by the message, even when the close frame is lost', () => {
  for (const close of [{ code: 4410, final: { type: 'taken_over' } }, { code: 1006, final: { type: 'taken_over' } }]) {
    const out = attachedThen(close);
    assert.equal(out.model.state, 'taken_over');
    assert.deepEqual(buttons(out), [['Take back', 'connect']]);
  }
  const back = run(attachedThen({ code: 4410 }).model, { type: 'connect' });
  assert.deepEqual(effect(back, 'open'), { type: 'open', session: 's1', resume: true });
});

test('dropped by an administrator', () => {
  const out = attachedThen({ code: 4000, final: { type: 'dropped' } });
  assert.equal(out.model.state, 'dropped');
  assert.deepEqual(buttons(out), [['Start a new session', 'newSession']]);
});

test('expired: while attached (the message) and on reconnect (the error)', () => {
  let out = attachedThen({ code: 4404, final: { type: 'expired' } });
  assert.equal(out.model.state, 'closed');
  assert.equal(status(out).text, 'the session expired (idle past its time to live)');
  out = attachedThen({ code: 4404, final: { type: 'error', code: 'expired', message: 'session s1 expired' } });
  assert.equal(status(out).text, 'session s1 expired (expired)');
  out = attachedThen({ code: 4404, final: { type: 'error', code: 'not_found' } });
  assert.equal(status(out).text, 'no such session (not_found)');
  assert.deepEqual(buttons(out), [['Start a new session', 'newSession']]);
});

test('an error message\u2019s text goes into the banner of its close code', () => {
  const err = (code, close, message) => status(attachedThen({ code: close, final: { type: 'error', code, message } })).text;
  assert.equal(err('forbidden', 4403, 'not your session'), 'not your session (forbidden)');
  assert.equal(err('bad_request', 4400), 'bad request (bad_request)');
  assert.equal(err('internal', 1011, 'cannot start /bin/nope'), 'cannot start /bin/nope (internal)');
  assert.equal(err('attached_elsewhere', 4409),
    'the session is open in another window (attached_elsewhere) \u00b7 this server does not allow taking it over');
  assert.equal(err('weird', 4400), 'error (weird)');
});

test('limit and memory: retried slowly, at the longest backoff, saying which', () => {
  for (const [code, name] of [[4429, 'limit'], [4503, 'memory']]) {
    const out = attachedThen({ code, final: { type: 'error', code: name, message: 'session limit (max-sessions 2)' } });
    assert.equal(out.model.state, 'waiting');
    assert.equal(out.model.backoff, BACKOFF_MAX_MS);
    assert.equal(effect(out, 'retry').delay, BACKOFF_MAX_MS);
    assert.equal(effect(attachedThen({ code }, 0), 'retry').delay, BACKOFF_MAX_MS / 2);
    assert.equal(status(out).text, `session limit (max-sessions 2) (${name}) \u00b7 reconnecting in 5.0 s`);
  }
});

test('shutdown (1001) and restart (1012): reconnect with `since` after only the shortest backoff', () => {
  for (const close of [{ code: 1001, final: { type: 'shutdown' } }, { code: 1001 }, { code: 1012 },
    { code: 1006, final: { type: 'shutdown' } }]) {
    let out = attachedThen(close);
    assert.equal(out.model.state, 'waiting', JSON.stringify(close));
    assert.equal(effect(out, 'retry').delay, BACKOFF_MIN_MS);
    assert.deepEqual(buttons(out), [['Retry now', 'connect']]);
    out = run(out.model, { type: 'connect' });
    assert.deepEqual(effect(out, 'open'), { type: 'open', session: 's1', resume: true });
  }
});

test('the control message decides over the close code that follows it', () => {
  assert.equal(attachedThen({ code: 1006, final: { type: 'exited', code: 0 } }).model.state, 'exited');
  assert.equal(attachedThen({ code: 1006, final: { type: 'dropped' } }).model.state, 'dropped');
  assert.equal(status(attachedThen({ code: 1006, final: { type: 'expired' } })).text,
    'the session expired (idle past its time to live)');
  // An error message names no close code of its own: the code decides.
  assert.equal(attachedThen({ code: 1006, final: { type: 'error', code: 'limit' } }).model.state, 'waiting');
  assert.match(status(attachedThen({ code: 1006, final: { type: 'error', code: 'limit' } })).text, /^connection lost/);
});

test('new session: forgets the id and the offset, connects asking for a new one', () => {
  const out = run(attachedThen({ code: 4410 }).model, { type: 'new_session' });
  assert.deepEqual(out.model, { state: 'connecting', sessionId: null, attachedOnce: false, backoff: BACKOFF_MIN_MS });
  assert.deepEqual(out.effects.map((e) => e.type), ['reset', 'remember', 'status', 'open']);
  assert.equal(status(out).text, 'connecting\u2026');
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: null, resume: false });
});

test('a new token reconnects at once from the shortest backoff', () => {
  let out = run(initial(null), [{ type: 'start' }, { type: 'closed', code: 1006, opened: false },
    { type: 'probed', status: 429 }]);
  out = run(out.model, { type: 'token_set' });
  assert.equal(out.model.backoff, BACKOFF_MIN_MS);
  assert.ok(effect(out, 'open'));
});

test('a WebSocket constructor that throws stops with a Retry', () => {
  const out = run(initial(null), [{ type: 'start' }, { type: 'socket_failed', message: 'bad URL' }]);
  assert.equal(out.model.state, 'closed');
  assert.equal(status(out).text, 'cannot connect: bad URL');
  assert.deepEqual(buttons(out), [['Retry', 'connect']]);
});

test('step never changes the model it is given', () => {
  const m = initial('s1');
  const frozen = JSON.stringify(m);
  for (const ev of [{ type: 'start' }, { type: 'attached', session: 'x' }, { type: 'new_session' },
    { type: 'closed', code: 4429 }, { type: 'unknown' }]) step(m, ev, 0.5);
  assert.equal(JSON.stringify(m), frozen);
});

test('a name this page never had: asks before creating it, then creates it once', () => {
  const fresh = run(initial('work'), [{ type: 'start', canAsk: false }]);
  assert.deepEqual(effect(fresh, 'open'), { type: 'open', session: 'work', resume: false });
  let out = step(fresh.model, { type: 'closed', code: 4404, opened: true, final: { type: 'error', code: 'not_found', message: 'no such session' } });
  assert.equal(out.model.state, 'closed');
  assert.equal(status(out).text, 'no such session (not_found) \u00b7 create session work?');
  assert.deepEqual(buttons(out), [['Create work', 'create'], ['Start a new session', 'newSession']]);
  out = step(out.model, { type: 'create' });
  assert.equal(out.model.sessionId, 'work');
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: 'work', resume: false, create: true });
  // Attached, then lost: the reconnect resumes the name and never creates it again.
  out = run(out.model, [{ type: 'attached', session: 'work' }, { type: 'closed', code: 1006, opened: true, final: null }]);
  out = step(out.model, { type: 'connect' });
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: 'work', resume: true });
  // And a name that goes missing after an attach is not offered for creation.
  out = step(out.model, { type: 'closed', code: 4404, opened: true, final: { type: 'error', code: 'not_found' } });
  assert.deepEqual(buttons(out), [['Start a new session', 'newSession']]);
});

test('the menu creates a named session in place', () => {
  const out = step(attachedThen({ code: 1006 }).model, { type: 'create', session: 'build' });
  assert.deepEqual(out.effects.map((e) => e.type), ['reset', 'remember', 'status', 'open']);
  assert.deepEqual(effect(out, 'open'), { type: 'open', session: 'build', resume: false, create: true });
  assert.equal(out.model.attachedOnce, false);
});
