// Shared driving code for the browser tests (page.mjs, token.mjs): one headless Debian
// Chromium through playwright-core (its own browser downloads are never used), a bounded run,
// and on failure everything needed to see why: the terminal buffer, the page state, the page
// console, a screenshot.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const STEP_TIMEOUT_MS = 15_000;

// Where screenshots and measurements go; tests/browser.rs points it into target/.
export const ARTIFACTS = process.env.KEEPTY_ARTIFACTS || 'target/browser';

export function createHarness({ name, overallTimeoutMs = 90_000, redact = (s) => String(s) }) {
  const t0 = Date.now();
  const pageLog = [];
  const pageErrors = [];
  mkdirSync(ARTIFACTS, { recursive: true });

  const h = {
    browser: null,
    // The page the helpers below act on; a test switches it between tabs.
    page: null,
    scenario: '',

    log(msg) {
      console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
    },

    artifact(file) {
      return join(ARTIFACTS, file);
    },

    async fail(msg) {
      console.error(redact(`FAIL${h.scenario ? ` (${h.scenario})` : ''}: ${msg}`));
      if (h.page) {
        try {
          console.error(redact('--- terminal buffer ---\n' + (await h.screenText()) + '\n--- end ---'));
          console.error(redact(`page url: ${h.page.url()}`));
          console.error(redact('page state: ' + JSON.stringify(await h.page.evaluate(() => window.keepty && {
            state: window.keepty.state, offset: window.keepty.offset, role: window.keepty.role,
            session: window.keepty.sessionId, states: window.keepty.states,
            status: document.getElementById('status').textContent.trim(),
            sockets: (window.__sockets || []).length,
          }))));
          const shot = h.artifact(`${name}-failure.png`);
          await h.page.screenshot({ path: shot });
          console.error(`screenshot: ${shot}`);
        } catch (e) {
          console.error(`(could not read the page: ${e.message})`);
        }
      }
      if (pageLog.length) console.error(redact('--- page console ---\n' + pageLog.join('\n')));
      try { await h.browser?.close(); } catch (_) { /* exiting anyway */ }
      process.exit(1);
    },

    async launch() {
      h.browser = await chromium.launch({
        executablePath: '/usr/bin/chromium',
        headless: true,
        args: [
          '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
          '--disable-background-networking', '--disable-quic', '--disable-component-update',
          '--disable-sync',
        ],
        timeout: 30_000,
      });
      return h.browser;
    },

    // A new browser context whose pages record every WebSocket they make in
    // window.__sockets, so a test can see the URLs and drop a socket as a network would.
    // While window.__noNetwork is true, new sockets go to a path the server refuses (404) and
    // fail at once, as they would with the network gone, without touching any session
    // (Chromium's offline emulation may leave a closing socket hanging for a long time).
    async newContext(options) {
      const context = await h.browser.newContext(options);
      await context.addInitScript(() => {
        const Native = window.WebSocket;
        window.__sockets = [];
        window.__noNetwork = false;
        window.WebSocket = class extends Native {
          constructor(url, protocols) {
            super(window.__noNetwork ? new URL('/no-network', url).href : url, protocols);
            this.__protocols = [].concat(protocols || []);
            window.__sockets.push(this);
          }
        };
      });
      return context;
    },

    // Logs the page's console and uncaught errors; the errors fail the run in finish().
    track(page, tag) {
      page.on('console', (m) => pageLog.push(`${tag} ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => {
        pageErrors.push(`${tag}: ${e.message}`);
        pageLog.push(`${tag} pageerror: ${e.message}`);
      });
      return page;
    },

    screenText() {
      return h.page.evaluate(() => {
        const b = window.keepty.term.buffer.active;
        const lines = [];
        for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
        return lines.join('\n').replace(/\n+$/, '');
      });
    },

    status() {
      return h.page.evaluate(() => document.getElementById('status-text').textContent.trim());
    },

    async waitFor(what, fn, arg, timeout = STEP_TIMEOUT_MS) {
      try {
        await h.page.waitForFunction(fn, arg, { timeout, polling: 50 });
      } catch (e) {
        await h.fail(`timed out waiting for ${what}`);
      }
    },

    // Waits for a line of the terminal buffer matching `re` and returns its match groups.
    async waitForLine(re, what, timeout) {
      await h.waitFor(what || `a line matching ${re}`, ([src, flags]) => {
        const re = new RegExp(src, flags);
        const b = window.keepty.term.buffer.active;
        for (let i = 0; i < b.length; i++) if (re.test(b.getLine(i).translateToString(true))) return true;
        return false;
      }, [re.source, re.flags], timeout);
      const text = await h.screenText();
      return text.split('\n').map((l) => l.match(re)).filter(Boolean).pop();
    },

    // Attached, done with the replay, and the shell has printed something (its prompt): keys
    // typed before would be dropped with the terminal's answers to replayed output, or raced.
    async waitShell(what) {
      await h.waitFor(what, () => window.keepty && window.keepty.state === 'open'
        && !window.keepty.replaying && window.keepty.offset > 0);
    },

    // Waits for the status line to be in `state` with a button named `button` and text
    // matching `text`; returns the status text.
    async waitBanner(what, state, text, button) {
      await h.waitFor(what, ([st, src, label]) => window.keepty && window.keepty.state === st
        && new RegExp(src, 'i').test(document.getElementById('status-text').textContent)
        && (!label || [...document.querySelectorAll('#status-actions button')]
          .some((b) => b.textContent === label)), [state, text.source, button || '']);
      return h.status();
    },

    async typeLine(text) {
      await h.page.evaluate(() => window.keepty.term.focus());
      await h.page.keyboard.type(text);
      await h.page.keyboard.press('Enter');
    },

    // Types a command whose output proves a live shell (the echoed command line itself does
    // not match: it starts with the prompt and holds no 42).
    async checkEcho(tag) {
      await h.typeLine(`echo ${tag}-$((6*7))`);
      await h.waitForLine(new RegExp(`^${tag}-42$`), `${tag}-42 from the shell`);
    },

    sessionOf(url) {
      return new URL(url || h.page.url()).searchParams.get('s');
    },

    async finish() {
      if (pageErrors.length) await h.fail(`uncaught errors in the page: ${pageErrors.join('; ')}`);
      await h.browser.close();
      clearTimeout(hardStop);
      console.log(`${name} browser test: all scenarios passed`);
    },
  };

  const hardStop = setTimeout(() => {
    h.fail(`overall timeout of ${overallTimeoutMs / 1000} s exceeded`);
    // fail() itself may hang on a wedged browser.
    setTimeout(() => process.exit(1), 5000).unref();
  }, overallTimeoutMs);

  return h;
}
