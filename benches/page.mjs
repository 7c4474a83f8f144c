// Page-load bench: the terminal page's weight on the wire and its paint times, from
// localhost, in headless Debian Chromium.
//   cargo build --release && node benches/page.mjs [RUNS]
// Starts target/release/keepty on 127.0.0.1:0, loads the page RUNS times (default 30), each
// in a fresh browser context (empty cache: every byte crosses the wire), after one warm-up
// load that pays for the browser's own start. Prints medians and p90s and writes
// target/page-bench.json.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const RUNS = Number(process.argv[2]) || 30;
const bin = 'target/release/keepty';

const server = spawn(bin, ['--listen', '127.0.0.1:0', '--', '/bin/sh'], { stdio: ['ignore', 'pipe', 'ignore'] });
const killServer = () => { try { server.kill('SIGKILL'); } catch (_) { /* gone */ } };
process.on('exit', killServer);
const firstLine = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('keepty did not print its address in 5 s')), 5000);
  createInterface({ input: server.stdout }).once('line', (l) => { clearTimeout(t); resolve(l); });
  server.once('exit', (c) => reject(new Error(`keepty exited (${c})`)));
});
const base = firstLine.match(/(http:\/\/\S+?)\/?$/)[1];

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});

async function load() {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(base + '/');
  await page.waitForFunction(() => window.keepty && window.keepty.state === 'open' && window.keepty.offset > 0,
    undefined, { timeout: 10_000, polling: 'raf' });
  const wallToPrompt = Date.now() - t0;
  const m = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const all = [nav, ...performance.getEntriesByType('resource')];
    const paint = (n) => (performance.getEntriesByName(n)[0] || {}).startTime;
    return {
      wire_bytes: all.reduce((n, e) => n + (e.transferSize || 0), 0),
      compressed_body_bytes: all.reduce((n, e) => n + (e.encodedBodySize || 0), 0),
      uncompressed_body_bytes: all.reduce((n, e) => n + (e.decodedBodySize || 0), 0),
      requests: all.length,
      first_paint_ms: paint('first-paint'),
      first_contentful_paint_ms: paint('first-contentful-paint'),
      dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    };
  });
  m.prompt_on_screen_ms = wallToPrompt;
  await ctx.close();
  return m;
}

await load();
const runs = [];
for (let i = 0; i < RUNS; i++) runs.push(await load());
await browser.close();
killServer();

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
const out = { runs: RUNS, ...runs[0] };
for (const k of ['first_paint_ms', 'first_contentful_paint_ms', 'dom_content_loaded_ms', 'prompt_on_screen_ms']) {
  const xs = runs.map((r) => r[k]);
  out[k] = { median: Math.round(pct(xs, 0.5) * 10) / 10, p90: Math.round(pct(xs, 0.9) * 10) / 10 };
}
writeFileSync('target/page-bench.json', JSON.stringify(out, null, 2) + '\n');
console.log(`page: ${out.requests} requests, ${out.compressed_body_bytes} B compressed bodies ` +
  `(${out.wire_bytes} B with headers; ${out.uncompressed_body_bytes} B uncompressed)`);
for (const k of ['first_paint_ms', 'first_contentful_paint_ms', 'dom_content_loaded_ms', 'prompt_on_screen_ms']) {
  console.log(`${k.padEnd(28)} median ${out[k].median}  p90 ${out[k].p90}`);
}
console.log('written: target/page-bench.json');
