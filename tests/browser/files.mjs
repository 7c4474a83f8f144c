// Files to and from the box through the page (issue 19), in headless Chromium against a real
// keepty, on a desktop and on a phone (touch, 390x844):
//   node tests/browser/files.mjs URL KEEPTY_BIN SERVER_PID
// Run by tests/browser.rs. For each size: the shell changes to a fresh directory (the cwd the
// page's prompts start from); "Upload file..." opens the file picker, whose file is set through
// CDP (Playwright's file chooser: DOM.setFileInputFiles), the prompt's prefill is the cwd route's
// directory, and the file lands there byte for byte; the same upload again answers 409 and is
// replaced after the question; on the desktop a file dropped on the terminal uploads too; an
// upload stalled in progress shows it and is cancelled, leaving nothing;
// "Download file..." and an offer made by `keepty send` in the shell download through the
// ticket (the browser's download, which Playwright takes with Browser.setDownloadBehavior into
// its own temporary directory), byte for byte; failures are shown in words; and the terminal
// still takes keys afterwards.
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHarness } from './lib.mjs';

const base = (process.argv[2] || '').replace(/\/+$/, '');
const bin = process.argv[3] || '';
const serverPid = Number(process.argv[4]);
if (!/^https?:\/\//.test(base) || !bin || !(serverPid > 1)) {
  console.error('usage: node tests/browser/files.mjs URL KEEPTY_BIN SERVER_PID');
  process.exit(2);
}

const h = createHarness({ name: 'files', overallTimeoutMs: 170_000 });
const { log, fail, waitFor, waitForLine, waitShell, typeLine, checkEcho } = h;
const SIZES = {
  desktop: { viewport: { width: 1000, height: 640 }, acceptDownloads: true },
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, acceptDownloads: true },
};

// Bytes that show a slice moved, repeated or cut: a counter hashed per position.
function pattern(n, seed) {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function sameBytes(what, got, want) {
  if (Buffer.compare(got, want) === 0) return;
  let i = 0;
  while (i < Math.min(got.length, want.length) && got[i] === want[i]) i++;
  return fail(`${what}: ${got.length} bytes, want ${want.length}; first difference at ${i}`);
}

// Dialogs are answered in the order they are expected: nextDialog(answer) queues an answer
// for the next dialog and resolves to its type, message and prefilled value. `answer(seen)`
// gives a string to type, true to accept as it is, false to dismiss. Queued before the action,
// so a dialog that comes fast (the 409 question) never meets a page without a handler, and an
// unexpected one is dismissed (and fails the run) rather than left blocking the page.
const dialogs = { queue: [], unexpected: [] };
function handleDialogs(page) {
  page.on('dialog', async (d) => {
    const seen = { type: d.type(), message: d.message(), value: d.defaultValue() };
    const next = dialogs.queue.shift();
    if (!next) {
      dialogs.unexpected.push(seen);
      await d.dismiss();
      return;
    }
    clearTimeout(next.timer);
    const a = next.answer(seen);
    if (a === false) await d.dismiss();
    // A prompt accepted with no text would answer "": accept its prefilled value.
    else if (a === true) await d.accept(d.type() === 'prompt' ? d.defaultValue() : undefined);
    else await d.accept(a);
    next.resolve(seen);
  });
}
function nextDialog(answer, timeout = 40_000) {
  return new Promise((resolve) => {
    const timer = setTimeout(async () => {
      await fail(`a dialog did not come within ${timeout / 1000} s; the bar says ${JSON.stringify(await barText())}`);
    }, timeout);
    dialogs.queue.push({ answer, resolve, timer });
  });
}

async function press(sel, phone) {
  if (phone) await h.page.tap(sel);
  else await h.page.click(sel);
}

async function menu(item, phone) {
  await press('#menu-button', phone);
  await press(`[data-menu="${item}"]`, phone);
}

const barText = () => h.page.evaluate(() => window.keepty.filesText);

async function waitBar(what, re, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  let text = '';
  while (Date.now() < deadline) {
    text = await barText();
    if (re.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  return fail(`timed out waiting for ${what}: the bar says ${JSON.stringify(text)}`);
}

async function run(kind) {
  const phone = kind === 'phone';
  h.scenario = `${kind}: attach`;
  const dir = realpathSync(mkdtempSync(join(tmpdir(), `keepty-files-${kind}-`)));
  const context = await h.newContext(SIZES[kind]);
  h.page = h.track(await context.newPage(), kind);
  handleDialogs(h.page);
  await h.page.goto(`${base}/`);
  await waitShell(`${kind} attached`);
  await typeLine(`cd '${dir}' && echo in-$((6*7))`);
  await waitForLine(/^in-42$/);

  // 1. Upload through the menu and the file picker, to the prefilled CWD/NAME.
  h.scenario = `${kind}: upload by the picker`;
  const srcDir = mkdtempSync(join(tmpdir(), 'keepty-files-src-'));
  const local = join(srcDir, 'photo 1.bin');
  const first = pattern(700 * 1024 + 13, kind.length);
  writeFileSync(local, first);
  const chooser = h.page.waitForEvent('filechooser', { timeout: 15_000 });
  const prompt = nextDialog(() => true);
  await menu('upload', phone);
  await (await chooser).setFiles(local);
  const asked = await prompt;
  if (asked.type !== 'prompt' || asked.value !== `${dir}/photo 1.bin`) {
    await fail(`the upload prompt: ${JSON.stringify(asked)}, want the value ${dir}/photo 1.bin`);
  }
  const done = await waitBar('the upload to finish', /^uploaded /, 30_000);
  sameBytes('the uploaded file', readFileSync(join(dir, 'photo 1.bin')), first);
  log(`${kind} 1 ok: ${done}`);

  // 2. The same name again: 409, the question, then replaced.
  h.scenario = `${kind}: upload over an existing file`;
  const second = pattern(5000, 99);
  writeFileSync(local, second);
  const chooser2 = h.page.waitForEvent('filechooser', { timeout: 15_000 });
  const prompt2 = nextDialog(() => true);
  const question = nextDialog(() => true);
  await menu('upload', phone);
  await (await chooser2).setFiles(local);
  await prompt2;
  const replace = await question;
  if (replace.type !== 'confirm' || !/exists/.test(replace.message)) await fail(`the overwrite question: ${JSON.stringify(replace)}`);
  await waitBar('the replacing upload to finish', /^uploaded /, 30_000);
  sameBytes('the replaced file', readFileSync(join(dir, 'photo 1.bin')), second);
  log(`${kind} 2 ok: asked "${replace.message}", replaced`);

  // 3. Desktop: a file dropped on the terminal.
  if (!phone) {
    h.scenario = `${kind}: drop on the terminal`;
    const dropped = nextDialog(() => `${dir}/dropped.txt`);
    await h.page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['dropped\n'.repeat(1000)], 'd.txt', { type: 'text/plain' }));
      const t = document.getElementById('term');
      for (const type of ['dragenter', 'dragover', 'drop']) {
        t.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    });
    const d = await dropped;
    if (d.value !== `${dir}/d.txt`) await fail(`the drop's prompt: ${JSON.stringify(d)}`);
    await waitBar('the dropped upload to finish', /^uploaded /, 30_000);
    sameBytes('the dropped file', readFileSync(join(dir, 'dropped.txt')), Buffer.from('dropped\n'.repeat(1000)));
    log(`${kind} 3 ok: a drop uploaded`);
  }

  // 3b. An upload in progress shows it and is cancelled: nothing is left in the directory,
  // not even the temporary file. The server is stopped (SIGSTOP) once the prompt is answered,
  // so the upload stalls with what the kernel's socket buffers took, as on a slow link.
  h.scenario = `${kind}: progress and cancel`;
  writeFileSync(local, pattern(48 << 20, 5));
  const chooser4 = h.page.waitForEvent('filechooser', { timeout: 15_000 });
  const prompt6 = nextDialog(() => {
    process.kill(serverPid, 'SIGSTOP');
    return `${dir}/big.bin`;
  });
  await menu('upload', phone);
  await (await chooser4).setFiles(local);
  await prompt6;
  let moving;
  let bar;
  try {
    moving = await waitBar('the progress', /^uploading big\.bin: \d{1,2}% of 48MB$/, 20_000);
    bar = await h.page.evaluate(() => ({
      value: document.getElementById('files-progress').value,
      shown: !document.getElementById('files-progress').hidden,
      cancel: document.getElementById('files-x').textContent,
    }));
    if (!bar.shown || !(bar.value >= 0 && bar.value < 1) || bar.cancel !== 'Cancel') await fail(`the progress bar: ${JSON.stringify(bar)}`);
    await press('#files-x', phone);
    await waitBar('the cancel', /^upload of big\.bin cancelled$/, 10_000);
  } finally {
    process.kill(serverPid, 'SIGCONT');
  }
  const deadline = Date.now() + 10_000;
  const leftover = () => readdirSync(dir).filter((n) => n === 'big.bin' || n.includes('keepty-upload'));
  while (leftover().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (leftover().length) await fail(`a cancelled upload left ${JSON.stringify(leftover())}`);
  log(`${kind} 3b ok: "${moving}" (bar at ${bar.value.toFixed(2)}), cancelled, nothing left`);

  // 4. An upload the server refuses is said in words (the directory does not exist).
  h.scenario = `${kind}: a refused upload`;
  const chooser3 = h.page.waitForEvent('filechooser', { timeout: 15_000 });
  const prompt3 = nextDialog(() => `${dir}/no/such/dir/x.bin`);
  await menu('upload', phone);
  await (await chooser3).setFiles(local);
  await prompt3;
  const refused = await waitBar('the refusal', /failed: /, 15_000);
  log(`${kind} 4 ok: ${refused}`);

  // 5. Download through the menu: the prompt starts at CWD/.
  h.scenario = `${kind}: download from the menu`;
  const served = pattern(900 * 1024 + 7, 7 + kind.length);
  writeFileSync(join(dir, 'from box.bin'), served);
  const got = h.page.waitForEvent('download', { timeout: 30_000 });
  const prompt4 = nextDialog((d) => (d.value === `${dir}/` ? `${d.value}from box.bin` : false));
  await menu('download', phone);
  const asked4 = await prompt4;
  if (asked4.value !== `${dir}/`) await fail(`the download prompt: ${JSON.stringify(asked4)}, want ${dir}/`);
  const dl = await got;
  if (dl.suggestedFilename() !== 'from box.bin') await fail(`downloaded as ${dl.suggestedFilename()}`);
  sameBytes('the downloaded file', readFileSync(await dl.path()), served);
  log(`${kind} 5 ok: downloaded ${dl.suggestedFilename()} (${served.length} bytes)`);

  // 6. `keepty send` in the shell: the bar offers it; Download gets it.
  h.scenario = `${kind}: an offer from keepty send`;
  const sent = pattern(64 * 1024 + 1, 3);
  writeFileSync(join(dir, 'sent.log'), sent);
  await typeLine(`'${bin}' send sent.log`);
  const offer = await waitBar('the offer bar', /^Download sent\.log \(64K?B\)\?$/, 15_000);
  const got2 = h.page.waitForEvent('download', { timeout: 30_000 });
  await press('#files-go', phone);
  const dl2 = await got2;
  sameBytes('the offered file', readFileSync(await dl2.path()), sent);
  log(`${kind} 6 ok: "${offer}" downloaded`);

  // 7. A download the server refuses, in words; Dismiss closes the bar; keys still reach
  // the shell.
  h.scenario = `${kind}: a refused download, then the terminal`;
  const prompt5 = nextDialog(() => `${dir}/missing.bin`);
  await menu('download', phone);
  await prompt5;
  const missing = await waitBar('the refused download', /failed: /, 15_000);
  await press('#files-x', phone);
  await waitFor('the bar to close', () => window.keepty.filesText === '');
  if (phone) {
    await h.page.tap('#term');
    await checkEcho(`${kind}-after`);
  } else {
    // The bar gave the keyboard back: keys typed now, without focusing anything, reach the shell.
    const focus = await h.page.evaluate(() => !!document.activeElement && !!document.activeElement.closest('#term'));
    if (!focus) await fail('the terminal lost the keyboard to the files bar');
    await h.page.keyboard.type('echo after-$((6*7))');
    await h.page.keyboard.press('Enter');
    await waitForLine(/^after-42$/);
  }
  log(`${kind} 7 ok: ${missing}; the terminal takes keys`);

  if (dialogs.unexpected.length) await fail(`unexpected dialogs: ${JSON.stringify(dialogs.unexpected)}`);
  await h.page.screenshot({ path: h.artifact(`files-${kind}.png`) });
  await context.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(srcDir, { recursive: true, force: true });
}

await h.launch();
for (const kind of ['desktop', 'phone']) await run(kind);
await h.finish();
