// The extra-keys bar, the compose bar, OSC 52 and session names (assets/keys.js): the bytes
// each key sends are xterm's own (what a desktop keyboard in the same mode would send).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

globalThis.atob ??= (s) => Buffer.from(s, 'base64').toString('latin1');
const { keyAction, composeBytes, osc52Text, validName, safeLink, OSC52_MAX } = load('keys.js').keys;

const NONE = {};
const SHELL = { appCursor: false, alternate: false };
const VIM = { appCursor: true, alternate: true };
const LESS = { appCursor: false, alternate: true };

test('arrows follow the cursor-key mode and carry modifiers', () => {
  assert.deepEqual(keyAction('up', NONE, SHELL), { send: '\x1b[A' });
  assert.deepEqual(keyAction('left', NONE, VIM), { send: '\x1bOD' });
  assert.deepEqual(keyAction('right', { ctrl: true }, VIM), { send: '\x1b[1;5C' });
  assert.deepEqual(keyAction('down', { alt: true, ctrl: true }, SHELL), { send: '\x1b[1;7B' });
});

test('paging keys scroll the scrollback at a shell prompt', () => {
  assert.deepEqual(keyAction('pgup', NONE, SHELL), { scroll: 'page_up' });
  assert.deepEqual(keyAction('pgdn', NONE, SHELL), { scroll: 'page_down' });
  assert.deepEqual(keyAction('home', NONE, SHELL), { scroll: 'top' });
  assert.deepEqual(keyAction('end', { ctrl: true }, SHELL), { scroll: 'bottom' });
});

test('paging keys go to a full-screen program as VT220 keys', () => {
  assert.deepEqual(keyAction('pgup', NONE, LESS), { send: '\x1b[5~' });
  assert.deepEqual(keyAction('pgdn', NONE, VIM), { send: '\x1b[6~' });
  assert.deepEqual(keyAction('pgdn', { ctrl: true }, LESS), { send: '\x1b[6;5~' });
  assert.deepEqual(keyAction('home', NONE, LESS), { send: '\x1b[H' });
  assert.deepEqual(keyAction('end', NONE, VIM), { send: '\x1bOF' });
  assert.deepEqual(keyAction('home', { alt: true }, VIM), { send: '\x1b[1;3H' });
});

test('Esc, Tab and the modifiers', () => {
  assert.deepEqual(keyAction('esc', NONE, SHELL), { send: '\x1b' });
  assert.deepEqual(keyAction('esc', { alt: true }, SHELL), { send: '\x1b\x1b' });
  assert.deepEqual(keyAction('tab', { ctrl: true }, SHELL), { send: '\t' });
  assert.deepEqual(keyAction('ctrl', NONE, SHELL), { toggle: 'ctrl' });
  assert.equal(keyAction('nonsense', NONE, SHELL), null);
});

test('the compose bar sends a line once, with a carriage return', () => {
  assert.equal(composeBytes('héllo wörld', NONE), 'héllo wörld\r');
  assert.equal(composeBytes('', NONE), '\r');
  assert.equal(composeBytes('a\nb\r\nc', NONE), 'a\rb\rc\r');
  assert.equal(composeBytes('日本語', NONE), '日本語\r');
});

test('compose with a sticky modifier: one character is a key press, more is a line', () => {
  assert.equal(composeBytes('c', { ctrl: true }), '\x03');
  assert.equal(composeBytes('x', { alt: true }), '\x1bx');
  assert.equal(composeBytes('d', { ctrl: true, alt: true }), '\x1b\x04');
  assert.equal(composeBytes('é', { ctrl: true }), 'é');
  assert.equal(composeBytes('ls', { alt: true }), '\x1bls\r');
});

test('OSC 52 writes decode as UTF-8; queries, clears and junk do nothing', () => {
  const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
  assert.equal(osc52Text('c;' + b64('héllo from vim')), 'héllo from vim');
  assert.equal(osc52Text(';' + b64('empty target')), 'empty target');
  assert.equal(osc52Text('pc;' + b64('x')), 'x');
  assert.equal(osc52Text('c;?'), null);
  assert.equal(osc52Text('c;'), null);
  assert.equal(osc52Text('c'), null);
  assert.equal(osc52Text('z;' + b64('bad target')), null);
  assert.equal(osc52Text('c;@@@@'), null);
  assert.equal(osc52Text('c;' + 'A'.repeat(OSC52_MAX + 4)), null);
});

test('session names are the server\'s ids', () => {
  for (const ok of ['work', 'a', 'build_box-2', 'x'.repeat(64)]) assert.ok(validName(ok), ok);
  for (const bad of ['', 'x'.repeat(65), 'a b', 'é', 'a/b', '../x', null, 7]) assert.ok(!validName(bad), String(bad));
});

test('only web links open', () => {
  assert.equal(safeLink('https://example.com/a b'), 'https://example.com/a%20b');
  assert.equal(safeLink('http://10.0.0.2:7700/'), 'http://10.0.0.2:7700/');
  assert.equal(safeLink('javascript:alert(1)'), null);
  assert.equal(safeLink('file:///etc/passwd'), null);
  assert.equal(safeLink('not a url'), null);
});
