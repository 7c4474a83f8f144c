// Drives keepty's token handling in headless Chromium against a server started with
// --token-file:
//   node tests/browser/token.mjs http://127.0.0.1:PORT TOKEN
// Run by tests/browser.rs. Needs /usr/bin/chromium (Debian's `chromium`) and `npm ci`;
// Playwright's own browser downloads are never used.
//
// Each scenario uses a fresh browser context (its own, empty localStorage):
//   1. #token=... attaches, leaves the address bar and lands in localStorage;
//   2. a reload attaches again with the stored token alone, to the same session;
//   3. no token: no shell, a "needs a token" state, and the "Set token" prompt gets one in;
//   4. a wrong stored token: a "refused" state after a few requests, no reconnect loop
//      (each wrong token counts toward the server's per-address rate limit).
import { createHarness } from './lib.mjs';

const base = (process.argv[2] || '').replace(/\/+$/, '');
const TOKEN = process.argv[3] || '';
if (!/^https?:\/\//.test(base) || !TOKEN) {
  console.error('usage: node tests/browser/token.mjs http://HOST:PORT TOKEN');
  process.exit(2);
}

const TOKEN_KEY = 'keepty.token';

// The token must never be printed; a failure message may quote URLs or page text.
function redact(s) {
  return String(s).split(TOKEN).join('<TOKEN>').split(encodeURIComponent(TOKEN)).join('<TOKEN>');
}

const h = createHarness({ name: 'token', overallTimeoutMs: 90_000, redact });
const { log, fail, waitFor, waitForLine, waitShell, checkEcho, status } = h;
const sessionOf = (url) => h.sessionOf(url);

function base64url(s) {
  return Buffer.from(s, 'utf8').toString('base64url');
}

async function storedToken() {
  return h.page.evaluate((k) => localStorage.getItem(k), TOKEN_KEY);
}

// Sessions on the server (admin surface: loopback without --admin-token-file).
async function sessionCount() {
  const r = await fetch(`${base}/admin/sessions`);
  if (r.status !== 200) await fail(`/admin/sessions answered ${r.status}`);
  return (await r.json()).sessions.length;
}

// A fresh context (its own, empty localStorage) whose page counts its requests to /ws and
// /api/sessions.
async function freshPage(tag, initToken) {
  const context = await h.newContext({ viewport: { width: 900, height: 560 } });
  if (initToken !== undefined) {
    await context.addInitScript(([k, v]) => localStorage.setItem(k, v), [TOKEN_KEY, initToken]);
  }
  const p = h.track(await context.newPage(), tag);
  h.page = p;
  const counts = { ws: 0, api: 0 };
  p.on('websocket', (ws) => { if (new URL(ws.url()).pathname === '/ws') counts.ws++; });
  p.on('request', (r) => {
    // WebSockets come as 'websocket' events, not requests; counted there.
    if (new URL(r.url()).pathname === '/api/sessions') counts.api++;
  });
  return { context, counts };
}

async function lastSocket() {
  return h.page.evaluate(() => {
    const s = window.__sockets[window.__sockets.length - 1];
    return s ? { url: s.url, protocols: s.__protocols } : null;
  });
}

// The page must send the token as the keepty.token.BASE64URL subprotocol, never in the URL.
async function checkSocketCarriesToken(what) {
  const s = await lastSocket();
  if (!s) await fail(`${what}: the page made no WebSocket`);
  if (s.url.includes(TOKEN) || s.url.includes(encodeURIComponent(TOKEN)) || /token/i.test(s.url)) {
    await fail(`${what}: the WebSocket URL carries the token: ${s.url}`);
  }
  const want = 'keepty.token.' + base64url(TOKEN);
  if (!s.protocols.includes('keepty.v1') || !s.protocols.includes(want)) {
    await fail(`${what}: WebSocket subprotocols ${JSON.stringify(s.protocols)} lack keepty.v1 / keepty.token.<base64url>`);
  }
}

async function main() {
  await h.launch();

  // 1. #token=... attaches, and moves out of the address bar into localStorage.
  h.scenario = '1 #token=';
  const ctx1 = await freshPage('ctx1');
  await h.page.goto(`${base}/#token=${encodeURIComponent(TOKEN)}`);
  await waitShell('the attach with the #token= fragment');
  await checkEcho('tok');
  const url1 = h.page.url();
  if (/token/i.test(url1) || url1.includes(encodeURIComponent(TOKEN)) || url1.includes(TOKEN)) {
    await fail(`the address bar still holds the token: ${url1}`);
  }
  if (new URL(url1).hash !== '') await fail(`the address bar kept a fragment: ${url1}`);
  if ((await storedToken()) !== TOKEN) {
    await fail(`localStorage ${TOKEN_KEY} does not hold the token (got ${JSON.stringify(await storedToken())})`);
  }
  await checkSocketCarriesToken('#token= attach');
  const sid = sessionOf(url1);
  if (!sid) await fail(`no ?s=ID in the URL after attach: ${url1}`);
  log(`ok 1: #token= attached session ${sid}, echo works, token moved to localStorage, URL clean`);

  // 2. A reload attaches again from the stored token alone, to the same session.
  h.scenario = '2 reload';
  await h.page.reload();
  if (new URL(h.page.url()).hash !== '') await fail(`the reload carried a fragment: ${h.page.url()}`);
  await waitShell('the attach after reload (token from localStorage)');
  if (sessionOf(h.page.url()) !== sid) await fail(`the reload changed the session: ${h.page.url()} (was ${sid})`);
  await waitForLine(/^tok-42$/, 'the replayed tok-42 (same session)');
  await checkEcho('again');
  await checkSocketCarriesToken('reload attach');
  log(`ok 2: reload reattached to ${sid} with the stored token, no fragment`);
  await ctx1.context.close();

  // 3. No token: no shell, a "needs a token" state; "Set token" (a prompt) gets one in.
  h.scenario = '3 no token';
  const before3 = await sessionCount();
  const ctx3 = await freshPage('ctx3');
  const prompts = [];
  h.page.on('dialog', async (d) => {
    prompts.push(`${d.type()}: ${d.message()}`);
    if (d.type() === 'prompt') await d.accept(TOKEN);
    else await d.dismiss();
  });
  await h.page.goto(`${base}/`);
  await waitFor('the page to say a token is needed',
    () => window.keepty && window.keepty.state === 'closed'
      && /token/i.test(document.getElementById('status-text').textContent)
      && [...document.querySelectorAll('#status-actions button')].some((b) => /set token/i.test(b.textContent)),
    undefined, 5_000);
  const st3 = await status();
  if (!/needs a token/i.test(st3)) await fail(`status does not say a token is needed: ${JSON.stringify(st3)}`);
  if ((await h.page.evaluate(() => window.keepty.offset)) !== 0) await fail('the tokenless page got terminal output');
  if ((await sessionCount()) !== before3) await fail('the tokenless page created a session on the server');
  await h.page.getByRole('button', { name: 'Set token' }).click();
  await waitShell('the attach after Set token');
  if (!prompts.some((p) => p.startsWith('prompt:'))) await fail(`Set token showed no prompt (dialogs: ${JSON.stringify(prompts)})`);
  await checkEcho('set');
  if ((await storedToken()) !== TOKEN) await fail(`Set token did not store the token in localStorage ${TOKEN_KEY}`);
  await checkSocketCarriesToken('Set token attach');
  log(`ok 3: no token -> ${JSON.stringify(st3)}, no shell; Set token prompt -> attached, echo works`);
  await ctx3.context.close();

  // 4. A wrong stored token: a "refused" state, not a reconnect loop feeding the rate limit.
  h.scenario = '4 wrong token';
  const ctx4 = await freshPage('ctx4', 'wrong-' + TOKEN.slice(0, 4) + '-not-a-token');
  h.page.on('dialog', (d) => d.dismiss());
  const start4 = Date.now();
  await h.page.goto(`${base}/`);
  await waitFor('the page to say the token was refused',
    () => window.keepty && window.keepty.state === 'closed'
      && /token/i.test(document.getElementById('status-text').textContent)
      && [...document.querySelectorAll('#status-actions button')].some((b) => /set token/i.test(b.textContent)),
    undefined, 5_000);
  const st4 = await status();
  // Stay 5 s on the page in all, so a retry timer (backoff 0.5 s, 1 s, 2 s, ...) would show.
  await h.page.waitForTimeout(Math.max(0, 5_000 - (Date.now() - start4)));
  const sockets4 = await h.page.evaluate(() => window.__sockets.length);
  const ws4 = Math.max(ctx4.counts.ws, sockets4);
  const total4 = ws4 + ctx4.counts.api;
  const state4 = await h.page.evaluate(() => window.keepty.state);
  if (state4 !== 'closed') await fail(`after 5 s with a wrong token the page is ${state4}, not closed (a retry loop?)`);
  if (total4 >= 6) {
    await fail(`a wrong token made ${ws4} /ws and ${ctx4.counts.api} /api/sessions requests in 5 s (a retry loop burns the auth rate limit)`);
  }
  if (!/refused|wrong|invalid/i.test(st4)) await fail(`status does not say the token was refused: ${JSON.stringify(st4)}`);
  // The address has not been pushed into the server's failure block by the h.page.
  const check = await fetch(`${base}/api/sessions`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (check.status !== 200) await fail(`the right token now gets ${check.status} from /api/sessions (rate limit tripped?)`);
  log(`ok 4: wrong token -> ${JSON.stringify(st4)}, state closed, ${ws4} /ws + ${ctx4.counts.api} /api/sessions requests in 5 s`);
  await ctx4.context.close();

  await h.finish();
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
