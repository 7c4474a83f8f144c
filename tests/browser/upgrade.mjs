// The page across an upgrade in place (SIGUSR2's twin, POST /admin/upgrade):
//   node tests/browser/upgrade.mjs http://127.0.0.1:PORT
// Run by tests/browser.rs. A shell prints a numbered line every 20 ms; halfway through, the
// server re-executes itself. The page must be told (1012), reconnect on its own with `since`,
// and show every line exactly once, with the shell still answering afterwards.
import { createHarness } from './lib.mjs';

const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/upgrade.mjs http://HOST:PORT');
  process.exit(2);
}

const h = createHarness({ name: 'upgrade', overallTimeoutMs: 90_000 });
const { log, fail, waitFor, waitForLine, waitShell, checkEcho } = h;
const LINES = 150;

async function main() {
  await h.launch();
  h.scenario = 'upgrade';
  const context = await h.newContext({ viewport: { width: 900, height: 560 } });
  h.page = h.track(await context.newPage(), 'page');
  await h.page.goto(`${base}/`);
  await waitShell('the first attach');
  // A scrollback deep enough for every line, so the buffer can be checked for each.
  await h.page.evaluate(() => { window.keepty.term.options.scrollback = 5000; });
  await h.typeLine(`i=0; while [ $i -lt ${LINES} ]; do echo "tick-$i"; i=$((i+1)); sleep 0.02; done; echo done-$((6*7))`);
  await waitForLine(/^tick-20$/, 'output flowing before the upgrade');
  const socketsBefore = await h.page.evaluate(() => window.__sockets.length);
  const r = await fetch(`${base}/admin/upgrade`, { method: 'POST' });
  if (r.status !== 202) await fail(`/admin/upgrade answered ${r.status}: ${await r.text()}`);
  log('upgrade requested');
  await waitFor('the page to reconnect', (n) => window.__sockets.length > n
    && window.keepty.state === 'open', socketsBefore, 15_000);
  await waitForLine(/^done-42$/, 'the output to run to its end across the upgrade', 30_000);
  const text = await h.screenText();
  const ticks = text.split('\n').filter((l) => /^tick-\d+$/.test(l)).map((l) => Number(l.slice(5)));
  const want = Array.from({ length: LINES }, (_, i) => i);
  if (JSON.stringify(ticks) !== JSON.stringify(want)) {
    await fail(`the lines are not each there once, in order: got ${ticks.length}: ${ticks.join(',')}`);
  }
  const urls = await h.page.evaluate(() => window.__sockets.map((s) => s.url));
  const resumed = urls.slice(socketsBefore).find((u) => /[?&]since=\d+/.test(u));
  if (!resumed) await fail(`the page did not resume with since: ${urls.join(' ')}`);
  log(`ok: ${LINES} lines each once across the upgrade, resumed with ${resumed}`);
  await checkEcho('after');
  log('ok: the shell answers after the upgrade');
  await h.finish();
}

main().catch((e) => fail(e.stack || String(e)));
