// keepty.format.bytes against human_bytes in src/api/admin.rs: the admin page and the server's
// text table must print the same numbers the same way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { bytes } = load('format.js').format;

// Printed by human_bytes itself (the function copied into a scratch program), including its
// own unit test's cases, every rounding edge and each unit's first value.
const RUST = [
  [0n, '0'], [1n, '1'], [9n, '9'], [10n, '10'], [99n, '99'], [100n, '100'], [512n, '512'],
  [999n, '999'], [1000n, '1000'], [1023n, '1023'], [1024n, '1K'], [1025n, '1K'], [1075n, '1K'],
  [1076n, '1.1K'], [1127n, '1.1K'], [1280n, '1.3K'], [1535n, '1.5K'], [1536n, '1.5K'],
  [1587n, '1.5K'], [1588n, '1.6K'], [2047n, '2K'], [2048n, '2K'], [10188n, '9.9K'],
  [10189n, '10K'], [10239n, '10K'], [10240n, '10K'], [10291n, '10K'], [10292n, '10K'],
  [12288n, '12K'], [12799n, '12K'], [12800n, '13K'], [12888n, '13K'], [101836n, '99K'],
  [101837n, '99K'], [102400n, '100K'], [262144n, '256K'], [1047552n, '1023K'],
  [1048063n, '1023K'], [1048064n, '1M'], [1048552n, '1M'], [1048575n, '1M'], [1048576n, '1M'],
  [1101004n, '1M'], [1101005n, '1.1M'], [1572864n, '1.5M'], [10485760n, '10M'],
  [67108864n, '64M'], [104857600n, '100M'], [1072693248n, '1023M'], [1073741823n, '1G'],
  [1073741824n, '1G'], [5368709120n, '5G'], [5905580032n, '5.5G'], [1099511627776n, '1T'],
  [1125899906842624n, '1P'], [9007199254740991n, '8P'], [9007199254740992n, '8P'],
  [1152921504606846976n, '1E'], [18446744073709551615n, '16E'],
];

test('matches human_bytes for the numbers JSON carries exactly', () => {
  for (const [n, want] of RUST) {
    if (n > BigInt(Number.MAX_SAFE_INTEGER) + 1n) continue;
    assert.equal(bytes(Number(n)), want, `bytes(${n})`);
  }
});

test('matches human_bytes over the whole u64 range given a BigInt', () => {
  for (const [n, want] of RUST) assert.equal(bytes(n), want, `bytes(${n}n)`);
});

test('u64::MAX as JSON parses to 2^64, which still reads 16E', () => {
  assert.equal(bytes(JSON.parse('18446744073709551615')), '16E');
});

test('a missing or broken number reads 0 rather than throwing in the middle of a render', () => {
  for (const n of [undefined, null, NaN, -5, Infinity, 'x']) assert.equal(bytes(n), '0', String(n));
});
