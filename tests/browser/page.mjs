// Drives keepty's page in headless Chromium against a running server:
//   node tests/browser/page.mjs http://127.0.0.1:PORT
// Run by tests/browser.rs. Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci`;
// Playwright's own browser downloads are never used.
import { chromium } from 'playwright-core';

const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/page.mjs http://HOST:PORT');
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;
const SCREENSHOT = '/tmp/keepty-page.png';
const PHONE_SCREENSHOT = '/tmp/keepty-page-phone.png';
const t0 = Date.now();

let browser = null;
let page = null;
const pageLog = [];

function log(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

async function fail(msg) {
  console.error(`FAIL: ${msg}`);
  if (page) {
    try {
      console.error('--- terminal buffer ---\n' + (await screenText()) + '\n--- end ---');
      console.error(`page url: ${page.url()}`);
      console.error('page state: ' + JSON.stringify(await page.evaluate(() => window.keepty && {
        state: window.keepty.state, offset: window.keepty.offset, role: window.keepty.role,
        status: document.getElementById('status').textContent.trim(),
      })));
      await page.screenshot({ path: SCREENSHOT });
      console.error(`screenshot: ${SCREENSHOT}`);
    } catch (e) {
      console.error(`(could not read the page: ${e.message})`);
    }
  }
  if (pageLog.length) console.error('--- page console ---\n' + pageLog.join('\n'));
  try { await browser?.close(); } catch (_) { /* exiting anyway */ }
  process.exit(1);
}

const hardStop = setTimeout(() => {
  fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s exceeded`);
  // fail() itself may hang on a wedged browser.
  setTimeout(() => process.exit(1), 5000).unref();
}, OVERALL_TIMEOUT_MS);

function screenText() {
  return page.evaluate(() => {
    const b = window.keepty.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join('\n').replace(/\n+$/, '');
  });
}

async function waitFor(what, fn, arg, timeout = STEP_TIMEOUT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    await fail(`timed out waiting for ${what}`);
  }
}

// Waits for a line of the terminal buffer matching `re` and returns its match groups.
async function waitForLine(re, what, timeout) {
  await waitFor(what || `a line matching ${re}`, ([src, flags]) => {
    const re = new RegExp(src, flags);
    const b = window.keepty.term.buffer.active;
    for (let i = 0; i < b.length; i++) if (re.test(b.getLine(i).translateToString(true))) return true;
    return false;
  }, [re.source, re.flags], timeout);
  const text = await screenText();
  return text.split('\n').map((l) => l.match(re)).filter(Boolean).pop();
}

// Attached and done with the replay: keys typed during a replay are dropped with the
// terminal's answers, so a test must not type before.
async function waitOpen(what) {
  await waitFor(what, () => window.keepty && window.keepty.state === 'open' && !window.keepty.replaying);
}

async function typeLine(text) {
  await page.evaluate(() => window.keepty.term.focus());
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

function sessionOf(url) {
  return new URL(url).searchParams.get('s');
}

async function main() {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-quic', '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  // Lets the test drop the page's socket the way a network would.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
    };
  });
  page = await context.newPage();
  page.on('console', (m) => pageLog.push(`${m.type()}: ${m.text()}`));
  const pageErrors = [];
  page.on('pageerror', (e) => { pageErrors.push(e.message); pageLog.push(`pageerror: ${e.message}`); });

  // a. A fresh page creates a session, puts its id in the URL and runs commands.
  await page.goto(base + '/');
  await waitOpen('the first attach');
  const sid = sessionOf(page.url());
  if (!sid || !/^[A-Za-z0-9_-]{1,64}$/.test(sid)) await fail(`no ?s=ID in the URL after attach: ${page.url()}`);
  await waitFor('the shell prompt', () => window.keepty.offset > 0);
  await typeLine('export KEEPTY_MARK=abc123');
  await typeLine('echo hello-$KEEPTY_MARK');
  await waitForLine(/^hello-abc123$/);
  log(`a ok: new session ${sid}, command output seen`);

  // b. A reload reattaches to the same session: output replayed, same shell.
  await page.reload();
  await waitOpen('the attach after reload');
  if (sessionOf(page.url()) !== sid) await fail(`reload changed the session: ${page.url()}`);
  await waitForLine(/^hello-abc123$/, 'the replayed hello-abc123');
  await typeLine('echo again-$KEEPTY_MARK');
  await waitForLine(/^again-abc123$/, 'again-abc123 (the same shell, with its variable)');
  log('b ok: reload replayed the output and kept the shell');

  // b2. A dropped connection resumes from its offset: no reset, nothing twice, and output
  // made while disconnected arrives.
  await typeLine("sleep 0.3; echo after-dr''op");
  const nSockets = await page.evaluate(() => {
    window.__sockets[window.__sockets.length - 1].close();
    return window.__sockets.length;
  });
  await waitFor('the reconnect', (n) => window.__sockets.length > n && window.keepty.state === 'open', nSockets);
  const wsUrl = await page.evaluate(() => window.__sockets[window.__sockets.length - 1].url);
  if (!/[?&]since=\d+/.test(wsUrl) || /[?&]new=1/.test(wsUrl)) await fail(`reconnect URL: ${wsUrl}`);
  await waitForLine(/^after-drop$/, 'output made while disconnected');
  const lines = (await screenText()).split('\n');
  for (const want of ['hello-abc123', 'again-abc123', 'after-drop']) {
    const n = lines.filter((l) => l === want).length;
    if (n !== 1) await fail(`after the reconnect ${want} is on screen ${n} times, not once`);
  }
  log('b2 ok: a dropped socket resumed with since=, nothing lost or doubled');

  // c. Replayed terminal queries must not be answered into the PTY.
  // First, live: the terminal does answer ESC[6n / ESC[c, and the page forwards the answers
  // (a dd in non-canonical mode reads them, so they do not end up at the prompt). This shows
  // the check below is able to see answers at all.
  await typeLine(
    "stty -echo -icanon min 0 time 20; printf '\\033[6n\\033[c'; sleep 1; " +
    'x=$(dd bs=1024 count=1 2>/dev/null | cat -v); stty echo icanon; echo "live:[$x]"');
  const live = await waitForLine(/^live:\[(.*)\]$/, 'the live answers to ESC[6n/ESC[c');
  if (!/\^\[\[\d+;\d+R/.test(live[1])) await fail(`the terminal did not answer ESC[6n live: ${live[0]}`);
  // Then: that output (with its queries) is in the ring. Start a reader of raw input, reload
  // while it waits, and see what reaches it. min 0 time 60: dd returns on the first byte or
  // after 6 s of silence. The '' keeps the typed line from matching the marker.
  await typeLine(
    "stty -echo -icanon min 0 time 60; echo cap-st''art; " +
    'x=$(dd bs=1024 count=1 2>/dev/null | cat -v); stty echo icanon; echo "cap:[$x]"');
  await waitForLine(/^cap-start$/, 'the raw-input reader to start');
  await page.reload();
  await waitOpen('the attach after the second reload');
  const cap = await waitForLine(/^cap:\[(.*)\]$/, 'the raw-input reader to finish', 20_000);
  if (cap[1] !== '') {
    await fail(`replayed output turned into input: the shell read ${JSON.stringify(cap[1])}`);
  }
  log('c ok: replayed ESC[6n/ESC[c were not answered into the PTY');

  // d. Resizing the window resizes the PTY.
  const before = await page.evaluate(() => [window.keepty.term.cols, window.keepty.term.rows]);
  await page.setViewportSize({ width: 640, height: 380 });
  await waitFor('the terminal to refit', ([c, r]) => window.keepty.term.cols !== c && window.keepty.term.rows !== r, before);
  // Past the page's resize debounce, so the resize message goes out before the command.
  await page.waitForTimeout(300);
  const [cols, rows] = await page.evaluate(() => [window.keepty.term.cols, window.keepty.term.rows]);
  await typeLine('stty size');
  await waitForLine(new RegExp(`^${rows} ${cols}$`), `stty size to print "${rows} ${cols}"`);
  log(`d ok: ${before[0]}x${before[1]} -> ${cols}x${rows}, stty size agrees`);

  // Far more output than the server keeps un-acked (256 KiB): it only all arrives if the
  // page's acks flow.
  await typeLine("seq 1 80000; echo flow-do''ne");
  await waitForLine(/^flow-done$/, 'the end of 450 KB of output (acks must flow)', 30_000);
  log(`flow ok: offset ${await page.evaluate(() => window.keepty.offset)}`);

  const title = await page.title();
  if (!title.startsWith('keepty')) await fail(`document title is ${JSON.stringify(title)}`);
  await page.screenshot({ path: SCREENSHOT });
  log(`screenshot: ${SCREENSHOT}`);
  await context.close();

  // e. On a phone the extra-keys bar shows, and its sticky Ctrl turns the next key into a
  // control character: Ctrl, then c, interrupts a sleep.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 700 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  page = await phone.newPage();
  page.on('console', (m) => pageLog.push(`phone ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => { pageErrors.push(e.message); pageLog.push(`phone pageerror: ${e.message}`); });
  await page.goto(`${base}/?s=${sid}`);
  await waitOpen('the phone attach');
  if (!(await page.isVisible('#keys'))) await fail('the extra-keys bar is hidden on a touch screen');
  await typeLine('sleep 30; echo sl""ept');
  await page.waitForTimeout(300);
  await page.tap('#keys [data-key="ctrl"]');
  await page.keyboard.type('c');
  await typeLine('echo ctrl-$KEEPTY_MARK');
  await waitForLine(/^ctrl-abc123$/, 'Ctrl (extra-keys bar) + c to interrupt the sleep', 10_000);
  if ((await screenText()).includes('\nslept')) await fail('the sleep was not interrupted');
  await page.screenshot({ path: PHONE_SCREENSHOT });
  log(`e ok: extra-keys Ctrl+c interrupted a command; screenshot: ${PHONE_SCREENSHOT}`);

  // f. An unknown id is an error with a way out, never a silent new shell; the new shell's
  // exit is shown as such.
  await page.goto(`${base}/?s=no-such-session-here`);
  await waitFor('the not_found error', () => window.keepty.state === 'closed'
    && /no such session/.test(document.getElementById('status').textContent));
  if (sessionOf(page.url()) !== 'no-such-session-here') await fail(`the URL changed: ${page.url()}`);
  await page.getByRole('button', { name: 'New session' }).tap();
  await waitOpen('the attach of the new session');
  const sid2 = sessionOf(page.url());
  if (!sid2 || sid2 === sid || sid2 === 'no-such-session-here') await fail(`bad new session id in ${page.url()}`);
  await waitFor('the new shell prompt', () => window.keepty.offset > 0);
  await typeLine('exit 3');
  await waitFor('the exit to be shown', () => window.keepty.state === 'exited'
    && /exited with code 3/.test(document.getElementById('status').textContent));
  log(`f ok: unknown id refused, New session ${sid2} created, its exit shown`);

  if (pageErrors.length) await fail(`uncaught errors in the page: ${pageErrors.join('; ')}`);
  await browser.close();
  clearTimeout(hardStop);
  console.log('browser test: all scenarios passed');
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
