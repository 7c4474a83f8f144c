// Drives keepty's page in headless Chromium against three running servers:
//   node tests/browser/page.mjs MAIN SHORT REJECT
// MAIN runs the defaults (handoff policy); SHORT runs `--ttl 2s --attach-policy multi
// --scrollback 16K`;
// REJECT runs `--attach-policy reject --max-sessions 2`. Run by tests/browser.rs, which starts them.
// Screenshots and measurements go to target/browser/ (KEEPTY_ARTIFACTS).
import { writeFileSync } from 'node:fs';
import { createHarness } from './lib.mjs';

const [base, short, reject] = process.argv.slice(2, 5).map((u) => (u || '').replace(/\/+$/, ''));
if (![base, short, reject].every((u) => /^https?:\/\//.test(u))) {
  console.error('usage: node tests/browser/page.mjs MAIN_URL SHORT_TTL_MULTI_URL REJECT_URL');
  process.exit(2);
}

const h = createHarness({ name: 'page', overallTimeoutMs: 150_000 });
const { log, fail, waitFor, waitForLine, waitShell, waitBanner, typeLine, checkEcho } = h;
const DESKTOP = { viewport: { width: 1000, height: 640 } };
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 3 };

async function openPage(context, tag, url) {
  h.page = h.track(await context.newPage(), tag);
  if (url) await h.page.goto(url);
  return h.page;
}

function countLines(text, want) {
  return text.split('\n').filter((l) => l === want).length;
}

// Closes the page's live socket from the client side, as a dead network would, and returns
// how many sockets the page had made by then.
function dropSocket() {
  return h.page.evaluate(() => {
    window.__sockets[window.__sockets.length - 1].close();
    return window.__sockets.length;
  });
}

async function adminJson(server, path) {
  const r = await fetch(server + path);
  if (r.status !== 200) await fail(`${path} answered ${r.status}`);
  return r.json();
}

async function clickButton(name) {
  await h.page.getByRole('button', { name, exact: true }).click();
}

async function main() {
  await h.launch();
  const metrics = {};

  // a. A fresh page creates a session, puts its id in the URL and runs commands. Its weight
  // on the wire and its first paint are recorded (a budget, measured here, not asserted on
  // time).
  h.scenario = 'a first page';
  const desk = await h.newContext(DESKTOP);
  await desk.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const p1 = await openPage(desk, 'tab1', base + '/');
  await waitShell('the first attach');
  const sid = h.sessionOf();
  if (!sid || !/^[A-Za-z0-9_-]{1,64}$/.test(sid)) await fail(`no ?s=ID in the URL after attach: ${p1.url()}`);
  await typeLine('export KEEPTY_MARK=abc123');
  await typeLine('echo hello-$KEEPTY_MARK');
  await waitForLine(/^hello-abc123$/);
  Object.assign(metrics, await p1.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const res = performance.getEntriesByType('resource').filter((r) => !r.name.includes('/ws'));
    const all = [nav, ...res];
    const paint = (n) => (performance.getEntriesByName(n)[0] || {}).startTime;
    return {
      requests: all.length,
      wire_bytes: all.reduce((n, e) => n + (e.transferSize || 0), 0),
      body_bytes_encoded: all.reduce((n, e) => n + (e.encodedBodySize || 0), 0),
      body_bytes_decoded: all.reduce((n, e) => n + (e.decodedBodySize || 0), 0),
      first_paint_ms: paint('first-paint'),
      first_contentful_paint_ms: paint('first-contentful-paint'),
      dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    };
  }));
  if (!(metrics.wire_bytes > 0)) await fail(`no transfer sizes measured: ${JSON.stringify(metrics)}`);
  if (metrics.body_bytes_encoded > 200 * 1024) {
    await fail(`the page weighs ${metrics.body_bytes_encoded} bytes compressed, over the 200 KB budget`);
  }
  log(`a ok: new session ${sid}; page ${JSON.stringify(metrics)}`);

  // b. A reload reattaches to the same session: output replayed, same shell. The bare page
  // in the same tab finds the session again through sessionStorage.
  h.scenario = 'b reload';
  await p1.reload();
  await waitShell('the attach after reload');
  if (h.sessionOf() !== sid) await fail(`reload changed the session: ${p1.url()}`);
  await waitForLine(/^hello-abc123$/, 'the replayed hello-abc123');
  await typeLine('echo again-$KEEPTY_MARK');
  await waitForLine(/^again-abc123$/, 'again-abc123 (the same shell, with its variable)');
  await p1.goto(base + '/');
  await waitShell('the attach of the bare page');
  if (h.sessionOf() !== sid) await fail(`the bare page in the same tab opened ${p1.url()}, not ${sid}`);
  log('b ok: reload and the bare URL replayed the output and kept the shell');

  // b2. A dropped connection shows "reconnecting", resumes from its offset: no reset,
  // nothing twice, and output made while disconnected arrives.
  h.scenario = 'b2 dropped socket';
  await typeLine("sleep 0.3; echo after-dr''op");
  const nSockets = await dropSocket();
  await waitFor('the reconnect', (n) => window.__sockets.length > n && window.keepty.state === 'open', nSockets);
  const states = await p1.evaluate(() => window.keepty.states);
  if (!states.slice(-3).includes('waiting')) await fail(`no reconnecting state shown: ${states}`);
  const wsUrl = await p1.evaluate(() => window.__sockets[window.__sockets.length - 1].url);
  if (!/[?&]since=\d+/.test(wsUrl) || /[?&]new=1/.test(wsUrl)) await fail(`reconnect URL: ${wsUrl}`);
  await waitForLine(/^after-drop$/, 'output made while disconnected');
  const text = await h.screenText();
  for (const want of ['hello-abc123', 'again-abc123', 'after-drop']) {
    const n = countLines(text, want);
    if (n !== 1) await fail(`after the reconnect ${want} is on screen ${n} times, not once`);
  }
  log(`b2 ok: states ${states.slice(-3).join(' > ')}; since= resumed, nothing lost or doubled`);

  // c. Replayed terminal queries must not be answered into the PTY.
  // First, live: the terminal does answer ESC[6n / ESC[c, and the page forwards the answers
  // (a dd in non-canonical mode reads them, so they do not end up at the prompt). This shows
  // the check below is able to see answers at all.
  h.scenario = 'c replayed queries';
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
  await p1.reload();
  await h.waitFor('the attach after the second reload', () => window.keepty && window.keepty.state === 'open'
    && !window.keepty.replaying);
  const cap = await waitForLine(/^cap:\[(.*)\]$/, 'the raw-input reader to finish', 20_000);
  if (cap[1] !== '') await fail(`replayed output turned into input: the shell read ${JSON.stringify(cap[1])}`);
  log('c ok: replayed ESC[6n/ESC[c were not answered into the PTY');

  // d. Resizing the window resizes the PTY; the font size buttons refit and are remembered.
  h.scenario = 'd resize and font';
  const before = await p1.evaluate(() => [window.keepty.term.cols, window.keepty.term.rows]);
  await p1.setViewportSize({ width: 640, height: 380 });
  await waitFor('the terminal to refit', ([c, r]) => window.keepty.term.cols !== c && window.keepty.term.rows !== r, before);
  // Past the page's resize debounce, so the resize message goes out before the command.
  await p1.waitForTimeout(300);
  const [cols, rows] = await p1.evaluate(() => [window.keepty.term.cols, window.keepty.term.rows]);
  await typeLine('stty size');
  await waitForLine(new RegExp(`^${rows} ${cols}$`), `stty size to print "${rows} ${cols}"`);
  await p1.setViewportSize(DESKTOP.viewport);
  await clickButton('Sessions and settings');
  const font0 = await p1.evaluate(() => window.keepty.term.options.fontSize);
  const cols0 = await p1.evaluate(() => window.keepty.term.cols);
  await clickButton('larger font');
  await clickButton('larger font');
  await waitFor('the terminal to refit to a larger font', ([f, c]) => window.keepty.term.options.fontSize === f + 2
    && window.keepty.term.cols < c, [font0, cols0]);
  await clickButton('Sessions and settings');
  await p1.reload();
  await waitShell('the attach after the font change');
  const font1 = await p1.evaluate(() => window.keepty.term.options.fontSize);
  if (font1 !== font0 + 2) await fail(`font size ${font1} after reload, not the chosen ${font0 + 2}`);
  log(`d ok: ${before[0]}x${before[1]} -> ${cols}x${rows}, stty agrees; font ${font0} -> ${font1} kept`);

  // Far more output than the server keeps un-acked (256 KiB): it only all arrives if the
  // page's acks flow.
  h.scenario = 'flow';
  await typeLine("seq 1 80000; echo flow-do''ne");
  await waitForLine(/^flow-done$/, 'the end of 450 KB of output (acks must flow)', 30_000);
  log(`flow ok: offset ${await p1.evaluate(() => window.keepty.offset)}`);

  // e. The window title goes to the tab title and to the session list; the list shows this
  // session and its state.
  h.scenario = 'e title and session list';
  await typeLine("printf '\\033]0;%s\\007' build-box-title; clear");
  await waitFor('the tab title', () => document.title.startsWith('build-box-title'));
  await clickButton('Sessions and settings');
  await waitFor('this session in the list, with its title', (id) => {
    const a = document.querySelector(`#session-list a[data-session="${id}"]`);
    return a && a.getAttribute('aria-current') === 'true' && /build-box-title/.test(a.textContent)
      && /this tab/.test(a.textContent) && /running/.test(a.textContent);
  }, sid);
  await p1.screenshot({ path: h.artifact('desktop-menu.png') });
  await clickButton('Sessions and settings');

  // Copy on select: a mouse drag over a line puts its text in the clipboard.
  await typeLine("echo copy-me-pl''ease");
  await waitForLine(/^copy-me-please$/);
  const box = await p1.evaluate(() => {
    const t = window.keepty.term;
    const b = t.buffer.active;
    let row = -1;
    for (let i = b.viewportY; i < b.viewportY + t.rows; i++) {
      if (b.getLine(i).translateToString(true) === 'copy-me-please') row = i - b.viewportY;
    }
    const r = document.querySelector('#term .xterm-screen').getBoundingClientRect();
    return { row, x: r.left, y: r.top, w: r.width / t.cols, hgt: r.height / t.rows };
  });
  if (box.row < 0) await fail('copy-me-please is not in the viewport');
  const y = box.y + (box.row + 0.5) * box.hgt;
  await p1.mouse.move(box.x + 2, y);
  await p1.mouse.down();
  await p1.mouse.move(box.x + box.w * 14 - 2, y, { steps: 5 });
  await p1.mouse.up();
  await waitFor('the selection to be copied', () => window.keepty.lastCopied === 'copy-me-please');
  const clip = await p1.evaluate(() => navigator.clipboard.readText());
  if (clip !== 'copy-me-please') await fail(`the clipboard holds ${JSON.stringify(clip)}`);
  await p1.screenshot({ path: h.artifact('desktop.png') });
  log('e ok: title in the tab and the session list; copy on select filled the clipboard');

  // g. The same session in a duplicated tab: the new tab asks first; "Open here" takes it,
  // the first tab says so and can take it back.
  h.scenario = 'g second tab';
  const p2 = await openPage(desk, 'tab2', `${base}/?s=${sid}`);
  const asked = await waitBanner('the second tab to ask', 'asking', /open in another tab/, 'Open here');
  if ((await p2.evaluate(() => window.__sockets.length)) !== 0) await fail('the second tab connected before asking');
  await clickButton('Open here');
  await waitShell('the second tab to attach');
  h.page = p1;
  const taken = await waitBanner('the first tab\'s taken-over banner', 'taken_over', /opened elsewhere/, 'Take back');
  await clickButton('Take back');
  await waitShell('the first tab to take the session back');
  h.page = p2;
  await waitBanner('the second tab\'s taken-over banner', 'taken_over', /opened elsewhere/, 'Take back');
  await p2.close();
  h.page = p1;
  await checkEcho('back');
  log(`g ok: second tab asked (${JSON.stringify(asked)}); first tab showed ${JSON.stringify(taken)} and took it back`);

  // h. The administrator drops the session: a banner, and a new session from it.
  h.scenario = 'h admin drop';
  const dropped = await fetch(`${base}/admin/drop?id=${sid}`, { method: 'POST' });
  if (dropped.status !== 200) await fail(`/admin/drop answered ${dropped.status}`);
  const dropText = await waitBanner('the dropped banner', 'dropped', /dropped/, 'Start a new session');
  await clickButton('Start a new session');
  await waitShell('the new session after the drop');
  const sid2 = h.sessionOf();
  if (!sid2 || sid2 === sid) await fail(`no new session after the drop: ${p1.url()}`);
  await checkEcho('fresh');
  log(`h ok: drop showed ${JSON.stringify(dropText)}; new session ${sid2}`);

  // k. An unknown id is an error with a way out, never a silent new shell; an exit is shown
  // with its code and Restart starts over.
  h.scenario = 'k unknown id and exit';
  await p1.goto(`${base}/?s=no-such-session-here`);
  await waitBanner('the not_found error', 'closed', /no such session/, 'Start a new session');
  if (h.sessionOf() !== 'no-such-session-here') await fail(`the URL changed: ${p1.url()}`);
  await clickButton('Start a new session');
  await waitShell('the attach of the new session');
  const sid3 = h.sessionOf();
  if (!sid3 || sid3 === sid2 || sid3 === 'no-such-session-here') await fail(`bad new session id in ${p1.url()}`);
  await typeLine('exit 3');
  await waitBanner('the exit to be shown', 'exited', /exited with code 3/, 'Restart');
  await clickButton('Restart');
  await waitShell('the restarted session');
  await checkEcho('restarted');
  log(`k ok: unknown id refused, new session ${sid3}, exit 3 shown, Restart works`);
  await desk.close();

  // j. On a phone the extra-keys bar shows; sticky Alt prefixes ESC, sticky Ctrl turns the
  // next key into a control character (Ctrl, then c, interrupts `sleep 100`).
  h.scenario = 'j phone';
  const phone = await h.newContext(PHONE);
  const pp = await openPage(phone, 'phone', base + '/');
  await waitShell('the phone attach');
  if (!(await pp.isVisible('#keys'))) await fail('the extra-keys bar is hidden on a touch screen');
  const bar = await pp.evaluate(() => {
    const r = document.getElementById('keys').getBoundingClientRect();
    const keys = [...document.querySelectorAll('#keys button')].map((b) => b.getBoundingClientRect());
    return { bottom: r.bottom, right: Math.max(...keys.map((k) => k.right)), h: innerHeight, w: innerWidth };
  });
  if (bar.bottom > bar.h + 1 || bar.right > bar.w + 1) await fail(`the extra keys do not fit the portrait screen: ${JSON.stringify(bar)}`);
  await typeLine('export KEEPTY_MARK=phone7');
  await typeLine('cat -v');
  await pp.waitForTimeout(200);
  await pp.tap('#keys [data-key="alt"]');
  await pp.keyboard.type('x');
  await pp.keyboard.press('Enter');
  await waitForLine(/^\^\[x$/, 'Alt (extra-keys bar) + x to arrive as ESC x');
  await pp.tap('#keys [data-key="ctrl"]');
  await pp.keyboard.type('c');
  await typeLine('sleep 100; echo sl""ept');
  await pp.waitForTimeout(300);
  await pp.tap('#keys [data-key="ctrl"]');
  await pp.keyboard.type('c');
  await typeLine('echo ctrl-$KEEPTY_MARK');
  await waitForLine(/^ctrl-phone7$/, 'Ctrl (extra-keys bar) + c to interrupt the sleep', 10_000);
  if ((await h.screenText()).includes('\nslept')) await fail('the sleep was not interrupted');
  await typeLine("printf '\\033]0;%s\\007' phone-title; seq 1 5");
  await pp.screenshot({ path: h.artifact('phone.png') });
  await pp.tap('#menu-button');
  await waitFor('the phone session list', () => document.querySelectorAll('#session-list a').length > 0);
  // The list's arrival shrinks the terminal; let the debounced refit land.
  await pp.waitForTimeout(400);
  await pp.screenshot({ path: h.artifact('phone-menu.png') });
  log('j ok: extra keys fit 390 px; Alt+x gave ESC x, Ctrl+c interrupted sleep 100');
  await phone.close();

  // l. SHORT server (--ttl 2s, multi): a second device is a viewer with "Take control"; a
  // page that stays away past the TTL (its network gone) comes back to "expired" and a working "Start a
  // new session".
  h.scenario = 'l multi viewer';
  const devA = await h.newContext(DESKTOP);
  const pa = await openPage(devA, 'devA', short + '/');
  await waitShell('device A attach');
  const sidS = h.sessionOf();
  const devB = await h.newContext(DESKTOP);
  const pb = await openPage(devB, 'devB', `${short}/?s=${sidS}`);
  await waitBanner('the viewer banner', 'open', /view only/, 'Take control');
  await clickButton('Take control');
  await waitFor('device B to become the writer', () => window.keepty.role === 'writer');
  await checkEcho('viewer-took');
  h.page = pa;
  await waitBanner('device A to become a viewer', 'open', /view only/, 'Take control');
  await devB.close();
  await waitFor('device A to be the writer again', () => window.keepty.role === 'writer');
  log('l ok: second device was a viewer, took control; the writer role came back');

  h.scenario = 'l ttl';
  await pa.evaluate(() => { window.__noNetwork = true; });
  await dropSocket();
  await waitFor('the page to wait for the network', () => window.keepty.state === 'waiting');
  await pa.waitForTimeout(4_000);
  const list = await adminJson(short, '/admin/sessions');
  if (list.sessions.some((s) => s.id === sidS)) await fail('the session outlived its 2 s TTL');
  await pa.evaluate(() => { window.__noNetwork = false; });
  const expired = await waitBanner('the expired banner', 'closed', /expired/, 'Start a new session');
  await clickButton('Start a new session');
  await waitShell('the session started after expiry');
  await checkEcho('after-ttl');
  log(`l ok: no network past the TTL -> ${JSON.stringify(expired)}; a new session works`);
  await devA.close();

  // m. REJECT server: a second device is refused with a banner that says why.
  h.scenario = 'm reject';
  const r1 = await h.newContext(DESKTOP);
  await openPage(r1, 'rej1', reject + '/');
  await waitShell('the first attach (reject server)');
  const sidR = h.sessionOf();
  const r2 = await h.newContext(DESKTOP);
  await openPage(r2, 'rej2', `${reject}/?s=${sidR}`);
  const rej = await waitBanner('the attached_elsewhere banner', 'closed', /another window/, 'Retry');
  await clickButton('New session');
  await waitShell('the second session (reject server)');
  // A third session is past --max-sessions 2: the banner names the limit.
  const r3 = await h.newContext(DESKTOP);
  await openPage(r3, 'rej3', reject + '/');
  const lim = await waitBanner('the limit banner', 'waiting', /session limit.*max-sessions 2/, 'Retry now');
  await r3.close();
  await r2.close();
  await r1.close();
  log(`m ok: ${JSON.stringify(rej)}; then ${JSON.stringify(lim)}`);

  // n. SHORT server (16 KiB ring): reload a tab running `less` after its output has pushed
  // the switch to the alternate screen out of the ring. The new page must land on the
  // alternate screen (restore) and less must repaint (SIGWINCH on attach): one clean page of
  // consecutive lines, no stacked frames.
  h.scenario = 'n less after reload';
  const lc = await h.newContext(DESKTOP);
  const pl = await openPage(lc, 'less', short + '/');
  await waitShell('the attach for less');
  await typeLine("seq -f '%060g' 1 3000 > /tmp/keepty-less-$$; less /tmp/keepty-less-$$");
  await waitFor('less to show its first page', () => window.keepty.term.buffer.active.type === 'alternate');
  for (let i = 0; i < 12; i++) {
    const at = await pl.evaluate(() => window.keepty.offset);
    await pl.keyboard.press('Space');
    await waitFor(`less to page forward (${i + 1})`, (o) => window.keepty.offset > o, at);
  }
  const endBefore = await pl.evaluate(() => window.keepty.offset);
  if (endBefore < 20_000) await fail(`less wrote only ${endBefore} bytes, not enough to wrap the 16 KiB ring`);
  await pl.waitForTimeout(300);
  await pl.reload();
  await waitFor('the reloaded page on the alternate screen with less repainted', () => {
    const k = window.keepty;
    if (!k || k.state !== 'open' || k.replaying || k.term.buffer.active.type !== 'alternate') return false;
    const b = k.term.buffer.active;
    const nums = [];
    for (let i = 0; i < k.term.rows - 1; i++) nums.push(b.getLine(i).translateToString(true));
    return nums.every((l, i) => /^0+\d+$/.test(l) && (i === 0 || Number(l) === Number(nums[i - 1]) + 1));
  });
  const normal = await pl.evaluate(() => {
    const b = window.keepty.term.buffer.normal;
    let n = 0;
    for (let i = 0; i < b.length; i++) if (/^0{20,}\d+$/.test(b.getLine(i).translateToString(true))) n++;
    return n;
  });
  if (normal > 0) await fail(`${normal} lines of less ended up on the normal screen (stacked frames)`);
  await pl.screenshot({ path: h.artifact('less-after-reload.png') });
  await pl.keyboard.press('q');
  await waitFor('less to quit back to the normal screen', () => window.keepty.term.buffer.active.type === 'normal');
  log('n ok: less after a reload: alternate screen restored, one clean repainted page');
  await lc.close();

  writeFileSync(h.artifact('page-metrics.json'), JSON.stringify(metrics, null, 2) + '\n');
  log(`metrics: ${h.artifact('page-metrics.json')}`);
  await h.finish();
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
