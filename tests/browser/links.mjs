// What another site can do to keepty through this browser (issue 15), in headless Chromium
// against a server started with --token-file (users `browser` TOKEN and `other` OTHER) and
// --admin-token-file (ADMIN):
//   node tests/browser/links.mjs http://127.0.0.1:PORT TOKEN OTHER ADMIN
// Run by tests/browser.rs.
//   1. a #token= link to another user's token, in a browser that stores a token: the page
//      asks, naming both users; "no" keeps the stored token (and attaches with it), "yes"
//      takes the link's; the menu names the current user;
//   2. a #token= link opened in a tab that shows "needs a token" (a hashchange, not a load)
//      is taken and attaches;
//   3. a page on another site (served here from http://localhost:N, another site than
//      127.0.0.1:PORT to the browser, without keepty's Content-Security-Policy) loads a dozen
//      <img src=".../admin/sessions?token=x"> and opens WebSockets with a junk token: the
//      operator's tokens still work (no 429).
import { createServer } from 'node:http';
import { createHarness } from './lib.mjs';

const base = (process.argv[2] || '').replace(/\/+$/, '');
const [TOKEN, OTHER, ADMIN] = process.argv.slice(3, 6);
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(base) || !TOKEN || !OTHER || !ADMIN) {
  console.error('usage: node tests/browser/links.mjs http://127.0.0.1:PORT TOKEN OTHER ADMIN');
  process.exit(2);
}
const TOKEN_KEY = 'keepty.token';

function redact(s) {
  let out = String(s);
  for (const t of [TOKEN, OTHER, ADMIN]) out = out.split(t).join('<TOKEN>').split(encodeURIComponent(t)).join('<TOKEN>');
  return out;
}

const h = createHarness({ name: 'links', overallTimeoutMs: 90_000, redact });
const { log, fail, waitFor, waitShell, checkEcho } = h;

async function freshPage(tag, initToken) {
  const context = await h.newContext({ viewport: { width: 900, height: 560 } });
  if (initToken !== undefined) {
    await context.addInitScript(([k, v]) => {
      // Only on the first load of the context: a reload must see what the page stored.
      if (!sessionStorage.getItem('__seeded')) {
        localStorage.setItem(k, v);
        sessionStorage.setItem('__seeded', '1');
      }
    }, [TOKEN_KEY, initToken]);
  }
  const p = h.track(await context.newPage(), tag);
  h.page = p;
  return context;
}

const stored = () => h.page.evaluate((k) => localStorage.getItem(k), TOKEN_KEY);
const menuUser = () => h.page.evaluate(() => document.getElementById('menu-user')?.textContent || '');

async function ownerOf(id) {
  const r = await fetch(`${base}/admin/sessions`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  if (r.status !== 200) await fail(`/admin/sessions answered ${r.status}`);
  const s = (await r.json()).sessions.find((x) => x.id === id);
  return s ? s.owner : null;
}

async function main() {
  await h.launch();

  // 1. A link carrying another user's token: asked, with both names; no keeps, yes takes.
  h.scenario = '1 link replaces a token';
  const ctx1 = await freshPage('ctx1', TOKEN);
  const dialogs = [];
  let answer = false;
  h.page.on('dialog', async (d) => {
    dialogs.push({ type: d.type(), message: d.message() });
    if (answer) await d.accept(); else await d.dismiss();
  });
  await h.page.goto(`${base}/#token=${encodeURIComponent(OTHER)}`);
  await waitShell('the attach after refusing the link');
  const asked = dialogs.find((d) => d.type === 'confirm');
  if (!asked) await fail(`no confirm before replacing the token (dialogs: ${JSON.stringify(dialogs)})`);
  if (!/\u201cother\u201d/.test(asked.message) || !/\u201cbrowser\u201d/.test(asked.message)) {
    await fail(`the question does not name both users: ${JSON.stringify(asked.message)}`);
  }
  if ((await stored()) !== TOKEN) await fail('refusing the link still replaced the stored token');
  if (new URL(h.page.url()).hash !== '') await fail(`the fragment stayed: ${h.page.url()}`);
  const sid1 = h.sessionOf();
  if ((await ownerOf(sid1)) !== 'browser') await fail(`the session is ${await ownerOf(sid1)}'s, not browser's`);
  await waitFor('the menu to name the user', () => /signed in as browser/.test(document.getElementById('menu-user')?.textContent || ''));
  log(`ok 1a: asked ${JSON.stringify(asked.message.split('\n')[0])}; refused; attached as browser; menu: ${await menuUser()}`);

  answer = true;
  dialogs.length = 0;
  await h.page.goto(`${base}/?s=fresh-${Date.now()}#token=${encodeURIComponent(OTHER)}`);
  for (let i = 0; i < 100 && !dialogs.some((d) => d.type === 'confirm'); i++) await h.page.waitForTimeout(50);
  if (!dialogs.some((d) => d.type === 'confirm')) await fail('the second link was not asked about');
  await waitFor('the link\u2019s token stored', ([k, v]) => localStorage.getItem(k) === v, [TOKEN_KEY, OTHER]);
  await waitFor('the menu to name the new user', () => /signed in as other/.test(document.getElementById('menu-user')?.textContent || ''));
  log(`ok 1b: accepted; stored token is the link's; menu: ${await menuUser()}`);
  await ctx1.close();

  // 2. A tab that needs a token takes a #token= link opened in it (hashchange).
  h.scenario = '2 hashchange';
  const ctx2 = await freshPage('ctx2');
  h.page.on('dialog', (d) => d.dismiss());
  await h.page.goto(`${base}/`);
  await waitFor('the page to say a token is needed',
    () => window.keepty && window.keepty.state === 'closed' && /token/i.test(document.getElementById('status-text').textContent),
    undefined, 5_000);
  await h.page.evaluate(() => { window.__sameDocument = 'yes'; });
  await h.page.evaluate((t) => { location.hash = '#token=' + encodeURIComponent(t); }, TOKEN);
  await waitShell('the attach after the hashchange');
  if ((await h.page.evaluate(() => window.__sameDocument)) !== 'yes') await fail('the page reloaded instead of taking the hashchange');
  await checkEcho('hash');
  if ((await stored()) !== TOKEN) await fail('the hashchange token is not stored');
  if (new URL(h.page.url()).hash !== '') await fail(`the fragment stayed: ${h.page.url()}`);
  log('ok 2: "needs a token" tab took a #token= hashchange and attached');
  await ctx2.close();

  // 3. Another site's images and sockets with junk tokens do not lock the operator out.
  h.scenario = '3 cross-site lockout';
  const ctx3 = await freshPage('ctx3');
  const foreign = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>another site</title><p>nothing to see');
  });
  await new Promise((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  await h.page.goto(`http://localhost:${foreign.address().port}/`);
  const attempts = await h.page.evaluate(async (target) => {
    const loads = [];
    for (let i = 0; i < 12; i++) {
      loads.push(new Promise((resolve) => {
        const img = new Image();
        img.onload = img.onerror = () => resolve('img');
        img.src = `${target}/admin/sessions?token=junk${i}&n=${Math.random()}`;
      }));
      loads.push(new Promise((resolve) => {
        const ws = new WebSocket(`${target.replace('http', 'ws')}/ws?new=1`, ['keepty.v1', 'keepty.token.anVuaw']);
        ws.onerror = ws.onclose = () => resolve('ws');
        ws.onopen = () => { ws.close(); resolve('ws-open'); };
      }));
    }
    return Promise.all(loads);
  }, base);
  foreign.close();
  if (attempts.includes('ws-open')) await fail('a cross-site WebSocket with a junk token opened');
  const api = await fetch(`${base}/api/sessions`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (api.status !== 200) await fail(`after the foreign page, the user token gets ${api.status}`);
  const adm = await fetch(`${base}/admin/sessions?token=${encodeURIComponent(ADMIN)}`);
  if (adm.status !== 200) await fail(`after the foreign page, the admin token gets ${adm.status}`);
  log(`ok 3: ${attempts.length} cross-site attempts; user and admin tokens still 200`);
  await ctx3.close();

  await h.finish();
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
