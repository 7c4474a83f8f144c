// keepty.notify.changes: which list changes make a notification (assets/notify.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { changes } = load('notify.js').notify;

const rec = (id, state, bells, clients, extra = {}) => ({ id, state, bells, clients, exit_code: null, ...extra });

test('the first sight of a session is only its baseline', () => {
  const known = new Map();
  assert.deepEqual(changes(known, [rec('a', 'exited', 5, 0, { exit_code: 1 })]), []);
  assert.deepEqual(known.get('a'), { state: 'exited', bells: 5 });
});

test('an exit and a bell while detached notify, once each', () => {
  const known = new Map();
  changes(known, [rec('a', 'running', 0, 0), rec('b', 'running', 2, 0, { title: 'make' })]);
  const ev = changes(known, [rec('a', 'exited', 0, 0, { exit_code: 3 }), rec('b', 'running', 3, 0, { title: 'make' })]);
  assert.deepEqual(ev, [
    { id: 'a', kind: 'exited', text: 'a: the program exited with code 3', tag: 'keepty-exit-a' },
    { id: 'b', kind: 'bell', text: 'make (b) rang the bell', tag: 'keepty-bell-b-3' },
  ]);
  assert.deepEqual(changes(known, [rec('a', 'exited', 0, 0, { exit_code: 3 }), rec('b', 'running', 3, 0)]), []);
});

test('a watched session does not notify, and a gone one is forgotten', () => {
  const known = new Map();
  changes(known, [rec('a', 'running', 0, 1)]);
  assert.deepEqual(changes(known, [rec('a', 'running', 4, 1)]), []);
  assert.deepEqual(changes(known, [rec('a', 'exited', 4, 1)]), []);
  changes(known, []);
  assert.equal(known.size, 0);
});
