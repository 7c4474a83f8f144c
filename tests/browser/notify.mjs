// The page's notifications (assets/notify.js) in headless Chromium against a real keepty:
//   node tests/browser/notify.mjs http://127.0.0.1:PORT
// Run by tests/browser.rs. The notification permission is granted through CDP
// (Browser.grantPermissions) and the page's Notification constructor is wrapped to record what
// it shows. One tab starts a program in session A that rings the bell and then exits with
// code 4, then closes (A runs on, detached); a second tab on session B turns "Notify me" on:
// it must show one notification for A's bell and one for A's exit, and none for B, which it
// watches.
import { createHarness } from './lib.mjs';

const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/notify.mjs http://HOST:PORT');
  process.exit(2);
}

const h = createHarness({ name: 'notify', overallTimeoutMs: 90_000 });
const { log, fail, waitFor, waitShell } = h;

await h.launch();
const cdp = await h.browser.newBrowserCDPSession();
const context = await h.newContext({ viewport: { width: 900, height: 560 } });
await context.addInitScript(() => {
  window.keepty = { notifyEveryMs: 300 };
  const Real = window.Notification;
  window.__notes = [];
  window.Notification = class {
    constructor(title, options) {
      window.__notes.push({ title, body: options && options.body, tag: options && options.tag });
    }
    static get permission() { return Real.permission; }
    static requestPermission() { return Real.requestPermission(); }
  };
});
const first = h.track(await context.newPage(), 'tab A');
h.page = first;
// The grant goes to this context (Playwright's, not the browser's default one).
const pageCdp = await context.newCDPSession(first);
const { targetInfo } = await pageCdp.send('Target.getTargetInfo');
await cdp.send('Browser.grantPermissions', {
  origin: base, permissions: ['notifications'], browserContextId: targetInfo.browserContextId,
});
await pageCdp.detach();

h.scenario = 'start a program in A';
await h.page.goto(`${base}/`);
await waitShell('A attached');
const A = await h.page.evaluate(() => window.keepty.sessionId);
// Long enough for the second tab to open and take its baseline before the bell rings.
const before = await h.page.evaluate(() => window.keepty.offset);
await h.typeLine("sleep 6; printf 'ring\\007'; sleep 4; exit 4");
// The shell echoes the line back: it got all of it before this tab goes.
await waitFor('the command echoed', (o) => window.keepty.offset >= o + 45, before);

h.scenario = 'watch B, with notifications on';
h.page = h.track(await context.newPage(), 'tab B');
await first.close();
await h.page.goto(`${base}/`);
await waitShell('B attached');
const B = await h.page.evaluate(() => window.keepty.sessionId);
if (A === B) await fail('the second tab got the first one\'s session');
const perm = await h.page.evaluate(() => window.Notification.permission);
if (perm !== 'granted') await fail(`permission through CDP: ${perm}`);
await h.page.click('#menu-button');
await h.page.click('[data-menu="notify"]');
await waitFor('the button to say it is on', () =>
  document.querySelector('[data-menu="notify"]').getAttribute('aria-pressed') === 'true');

h.scenario = 'the bell and the exit of A';
await waitFor('a bell notification for A', (id) =>
  window.__notes.some((n) => n.tag === `keepty-bell-${id}-1`), A, 20_000);
await waitFor('an exit notification for A', (id) =>
  window.__notes.some((n) => n.tag === `keepty-exit-${id}` && /code 4/.test(n.body)), A, 20_000);
const notes = await h.page.evaluate(() => window.__notes);
log(`notifications: ${JSON.stringify(notes)}`);
if (notes.length !== 2) await fail(`expected exactly two notifications, got ${JSON.stringify(notes)}`);
if (notes.some((n) => n.body.includes(B))) await fail('a notification for the watched session');

await h.finish();
