// The pure parts of the page's file transfers (assets/files.js): the paths it prefills, the
// route URLs it calls, the words for a failure, and which drags are files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { joinPath, baseName, route, errorText, hasFiles } = load('files.js').files;

test('joinPath prefills CWD/NAME, and NAME alone without a cwd', () => {
  assert.equal(joinPath('/home/pi', 'a.txt'), '/home/pi/a.txt');
  assert.equal(joinPath('/home/pi/', 'a.txt'), '/home/pi/a.txt');
  assert.equal(joinPath('/', 'a.txt'), '/a.txt');
  assert.equal(joinPath('/srv', ''), '/srv/', 'the download prompt starts at CWD/');
  assert.equal(joinPath('', 'a.txt'), 'a.txt');
  assert.equal(joinPath(null, 'a.txt'), 'a.txt');
  assert.equal(joinPath(undefined, ''), '');
});

test('baseName is the last part of a path', () => {
  assert.equal(baseName('/var/log/syslog'), 'syslog');
  assert.equal(baseName('rel/x.tar.gz'), 'x.tar.gz');
  assert.equal(baseName('plain'), 'plain');
  assert.equal(baseName('/etc/'), 'etc');
  assert.equal(baseName('/'), '/');
});

test('routes escape the session and the path', () => {
  assert.equal(route('s1', 'cwd'), 'api/sessions/s1/cwd');
  assert.equal(route('s1', 'files', '/tmp/a b&c=d?#%.txt'),
    'api/sessions/s1/files?path=%2Ftmp%2Fa%20b%26c%3Dd%3F%23%25.txt');
  assert.equal(route('s1', 'files', 'x', true), 'api/sessions/s1/files?path=x&overwrite=1');
  assert.equal(route('s1', 'files/ticket', '/\u00e9'), 'api/sessions/s1/files/ticket?path=%2F%C3%A9');
  assert.equal(route('a/b', 'cwd'), 'api/sessions/a%2Fb/cwd');
});

test('errors in words: the server message first, else the status', () => {
  assert.equal(errorText(413, { error: 'too_large', message: 'over the 1 MiB upload cap' }), 'over the 1 MiB upload cap');
  assert.equal(errorText(0, null), 'the connection to the server was lost');
  assert.match(errorText(401, null), /token/);
  assert.equal(errorText(502, { message: '' }), 'the server answered 502');
  assert.equal(errorText(500, 'junk'), 'the server answered 500');
});

test('only a drag that carries files is taken', () => {
  assert.equal(hasFiles({ types: ['Files'] }), true);
  assert.equal(hasFiles({ types: ['text/plain', 'Files'] }), true);
  assert.equal(hasFiles({ types: ['text/plain', 'text/uri-list'] }), false);
  assert.equal(hasFiles({}), false);
  assert.equal(hasFiles(null), false);
});
