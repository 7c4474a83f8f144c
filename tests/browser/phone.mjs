// The page on a phone (Chromium's phone emulation, 390x844, touch) and the features that make
// it usable there: touch scrolling, the paging keys, Select text, the compose bar, IME
// composition, OSC 52, links, find, and named sessions.
//   node tests/browser/phone.mjs MAIN MULTI
// MAIN runs the defaults; MULTI runs `--attach-policy multi` (for a viewer). Run by
// tests/browser.rs. Screenshots go to target/browser/phone-*.png.
import { createHarness } from './lib.mjs';

const [base, multi] = process.argv.slice(2, 4).map((u) => (u || '').replace(/\/+$/, ''));
if (![base, multi].every((u) => /^https?:\/\//.test(u))) {
  console.error('usage: node tests/browser/phone.mjs MAIN_URL MULTI_URL');
  process.exit(2);
}

const h = createHarness({ name: 'phone', overallTimeoutMs: 170_000 });
const { log, fail, waitFor, waitForLine, waitShell, waitBanner, typeLine } = h;
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
const DESKTOP = { viewport: { width: 1000, height: 640 } };

async function openPage(context, tag, url) {
  h.page = h.track(await context.newPage(), tag);
  if (url) await h.page.goto(url);
  return h.page;
}

async function shot(name) {
  await h.page.screenshot({ path: h.artifact(`phone-${name}.png`) });
}

// Lines of the buffer equal to `want`.
function countLines(text, want) {
  return text.split('\n').filter((l) => l === want).length;
}

const viewportY = () => h.page.evaluate(() => window.keepty.term.buffer.active.viewportY);

// A one-finger vertical swipe over the terminal by CDP touch events, `dy` px (positive:
// downwards, towards older output), in `steps` moves stamped 16 ms apart (a brisk flick, as a
// thumb makes: 450 px in 0.2 s), so the fling's speed does not depend on how busy the machine is.
async function swipe(cdp, dy, steps = 12) {
  const r = await h.page.evaluate(() => {
    const b = document.getElementById('term').getBoundingClientRect();
    return { x: b.left + b.width / 2, y: b.top + b.height / 2 };
  });
  const y0 = r.y - dy / 2;
  const t0 = Date.now() / 1000;
  const at = (i) => t0 + i * 0.016;
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [{ x: r.x, y: y0 }], timestamp: at(0) });
  for (let i = 1; i <= steps; i++) {
    await cdp.send('Input.dispatchTouchEvent', {
      type: 'touchMove', touchPoints: [{ x: r.x, y: y0 + (dy * i) / steps }], timestamp: at(i),
    });
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [], timestamp: at(steps + 1) });
}

async function main() {
  await h.launch();

  // 1. Touch scroll: after `seq 1 400`, three 450 px swipes scroll back at least 100 lines
  // (the measurement: xterm.js 6.0.0 alone moved the first visible line to 355).
  h.scenario = '1 touch scroll';
  const phone = await h.newContext(PHONE);
  await phone.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const pp = await openPage(phone, 'phone', base + '/');
  const cdp = await phone.newCDPSession(pp);
  await waitShell('the phone attach');
  await typeLine("seq 1 400; echo seq-do''ne");
  await waitForLine(/^seq-done$/);
  const y0 = await viewportY();
  for (let i = 0; i < 3; i++) await swipe(cdp, 450);
  await waitFor('the fling to settle', () => !window.keepty.flinging, undefined, 5000);
  const y1 = await viewportY();
  const top = await pp.evaluate(() => {
    const b = window.keepty.term.buffer.active;
    return b.getLine(b.viewportY).translateToString(true);
  });
  if (y0 - y1 < 100) await fail(`three swipes scrolled back ${y0 - y1} lines, not >= 100 (top line ${top})`);
  await shot('swipe');
  // A swipe up comes back; a tap still focuses the terminal.
  for (let i = 0; i < 4; i++) await swipe(cdp, -600);
  await waitFor('the fling to settle', () => !window.keepty.flinging, undefined, 5000);
  const y2 = await viewportY();
  if (y2 <= y1) await fail(`a swipe up did not scroll forward (${y1} -> ${y2})`);
  log(`1 ok: three swipes scrolled from line ${y0} to ${y1} (top line ${top}); back up to ${y2}`);

  await h.finish();
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
