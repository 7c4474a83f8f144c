// The page's `#token=` handover (assets/token.js): which links carry a token, when a link's
// token is taken silently, when the user is asked, and that a refusal keeps the stored one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { fromHash, plan, question, userText, take } = load('token.js').token;

test('fromHash reads only a well-formed #token= fragment', () => {
  assert.equal(fromHash('#token=abc'), 'abc');
  assert.equal(fromHash('#token=%7E%7E%3F%20'), '~~?');
  assert.equal(fromHash('#token=  x  '), 'x');
  for (const h of ['', '#', '#token=', '#token=%20', '#tok=abc', '#x&token=abc', '#token=%E0%A4%A', null, undefined]) {
    assert.equal(fromHash(h), null, String(h));
  }
});

test('plan: take into an empty store, ask before replacing, ignore the same token', () => {
  assert.equal(plan(null, null), 'none');
  assert.equal(plan('old', null), 'none');
  assert.equal(plan(null, 'new'), 'store');
  assert.equal(plan('', 'new'), 'store');
  assert.equal(plan('new', 'new'), 'same');
  assert.equal(plan('old', 'new'), 'ask');
});

test('the question names both users, or says a token is not accepted', () => {
  const q = question('mallory', 'alice');
  assert.match(q, /mallory/);
  assert.match(q, /alice/);
  assert.ok(q.indexOf('mallory') < q.indexOf('alice'), q);
  assert.match(question(null, 'alice'), /does not accept/);
  assert.equal(userText('alice', true), 'signed in as alice');
  assert.equal(userText(null, true), 'token not accepted');
  assert.equal(userText(null, false), 'no token');
});

// An io over a plain variable that records what was asked.
function io(stored, users, answer) {
  const asked = [];
  const box = { stored };
  return {
    box,
    asked,
    get: () => box.stored,
    set: (t) => { box.stored = t; },
    whoami: async (t) => users[t] || null,
    confirm: (text) => { asked.push(text); return answer; },
  };
}

test('take: a refused question keeps the stored token, an accepted one replaces it', async () => {
  const users = { tokA: 'alice', tokM: 'mallory' };
  const no = io('tokA', users, false);
  assert.equal(await take('#token=tokM', no), false);
  assert.equal(no.box.stored, 'tokA');
  assert.equal(no.asked.length, 1);
  assert.match(no.asked[0], /mallory[\s\S]*alice/);

  const yes = io('tokA', users, true);
  assert.equal(await take('#token=tokM', yes), true);
  assert.equal(yes.box.stored, 'tokM');

  const empty = io(null, users, false);
  assert.equal(await take('#token=tokM', empty), true, 'nothing to replace: taken');
  assert.equal(empty.box.stored, 'tokM');
  assert.equal(empty.asked.length, 0, 'and nobody asked');

  const same = io('tokA', users, false);
  assert.equal(await take('#token=tokA', same), false);
  assert.equal(same.asked.length, 0);
  assert.equal(await take('', same), false);
});
