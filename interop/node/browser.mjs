// Headless Chromium on the echo app's page (interop/tests/browser.rs):
//
//   node browser.mjs http://127.0.0.1:PORT/
//
// Opens the page, presses Connect, sends ASCII, multi-byte UTF-8 and a 1 MiB
// message through the page's Send button, checks that the communication log
// shows each one sent and echoed, presses Close Socket and checks the log
// shows a clean close. Also checks the page itself: the buttons enabled only
// when they can be used (Send and Close Socket once the socket is open), the
// log titled "Communication Log" with its rows oldest first, each with a
// time, and a 1 MiB message wrapped inside the page's width. Prints "EXTENSIONS <negotiated extensions>" (from the
// page's WebSocket), "ECHO <n> chars" per message and "CLOSE <log text>";
// exits 0 when everything was seen, 1 otherwise.
//
// Chromium is the Debian package (/usr/bin/chromium, or
// $TETHER_INTEROP_CHROMIUM); this never downloads a browser.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { chromium } from 'playwright-core';

const STEP_TIMEOUT_MS = 30_000;
const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: node browser.mjs http://127.0.0.1:PORT/\n');
  process.exit(2);
}

const UTF8 = 'héllo wörld ✓ 日本語 🚀';
// 1 MiB of "000000000000000 000000000000001 ..." (a text input drops
// newlines, so spaces separate the numbers).
const parts = [];
for (let i = 0; i <= (1 << 20) / 16; i++) parts.push(String(i).padStart(15, '0') + ' ');
const MIB = parts.join('').slice(0, 1 << 20);
const MESSAGES = ['Hello, tether!', UTF8, MIB];

// The text of the log rows of one kind ("open", "send", "receive", "close").
function rows(kind) {
  return [...document.querySelectorAll(`#log tr.${kind} td:last-child`)].map((td) => td.textContent);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'tether-chromium-'));
let context;
let failed = false;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.TETHER_INTEROP_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    timeout: 60_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // The https:// runs use a certificate made at the server's start.
      '--ignore-certificate-errors',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
  page.on('console', (m) => process.stderr.write(`console.${m.type()}: ${m.text()}\n`));

  // Which buttons can be pressed, as [connect, send, close].
  const buttons = () =>
    page.evaluate(() => ['connect', 'send', 'close'].map((id) => !document.getElementById(id).disabled));
  const expectButtons = async (when, expected) => {
    const actual = await buttons();
    if (JSON.stringify(actual) !== JSON.stringify(expected)) {
      throw new Error(`${when}: buttons [connect, send, close] enabled ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
    }
  };

  await page.goto(url);
  const title = await page.evaluate(() => document.getElementById('log-title').textContent);
  if (title !== 'Communication Log') throw new Error(`the log is titled ${JSON.stringify(title)}`);
  await expectButtons('before connecting', [true, false, false]);
  await page.click('#connect');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
  await page.waitForFunction(
    (kind) => [...document.querySelectorAll(`#log tr.${kind} td:last-child`)].some((t) => t.textContent === 'connected'),
    'open',
  );
  await expectButtons('while open', [false, true, true]);
  // `socket` is the page's own WebSocket (a global of its script).
  const extensions = await page.evaluate(() => socket.extensions);
  process.stdout.write(`EXTENSIONS ${extensions}\n`);

  for (const message of MESSAGES) {
    await page.fill('#message', message);
    await page.click('#send');
    await page.waitForFunction(
      (m) => [...document.querySelectorAll('#log tr.receive td:last-child')].some((t) => t.textContent === m),
      message,
    );
    const sent = (await page.evaluate(rows, 'send')).filter((t) => t === message).length;
    if (sent !== 1) throw new Error(`the log shows ${sent} sends of a ${message.length}-char message`);
    process.stdout.write(`ECHO ${message.length} chars\n`);
  }
  const received = await page.evaluate(rows, 'receive');
  if (received.length !== MESSAGES.length) {
    throw new Error(`expected ${MESSAGES.length} echoes in the log, got ${received.length}`);
  }
  // Oldest first: the rows in the order the events happened, each timed.
  const order = await page.evaluate(() =>
    [...document.querySelectorAll('#log tr')].map((tr) => `${tr.className}:${tr.lastChild.textContent.length}`),
  );
  const expected = ['open:', 'open:'].concat(MESSAGES.flatMap((m) => [`send:${m.length}`, `receive:${m.length}`]));
  const got = order.map((o) => (o.startsWith('open:') ? 'open:' : o));
  if (JSON.stringify(got) !== JSON.stringify(expected)) {
    throw new Error(`log rows out of order: ${JSON.stringify(got)}`);
  }
  const untimed = await page.evaluate(
    () => [...document.querySelectorAll('#log td.time')].filter((td) => !/^\d\d:\d\d:\d\d\.\d{3}$/.test(td.textContent)).length,
  );
  if (untimed) throw new Error(`${untimed} log rows have no time`);
  // The 1 MiB message wraps: nothing is wider than the window.
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (widths[0] > widths[1]) throw new Error(`the page is ${widths[0]} px wide in a ${widths[1]} px window`);

  await page.click('#close');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'closed');
  await expectButtons('after closing', [true, false, false]);
  const closes = await page.evaluate(rows, 'close');
  // Oldest first: "closing (1000)", then the close event with the code and
  // the reason the server echoed.
  if (closes[0] !== 'closing (1000)' || closes[1] !== 'code 1000, reason: bye') {
    throw new Error(`expected a clean close with code 1000 and reason "bye" in the log, got ${JSON.stringify(closes)}`);
  }
  process.stdout.write(`CLOSE ${closes[1]}\n`);
  if (process.env.TETHER_INTEROP_SCREENSHOT) {
    await page.screenshot({ path: process.env.TETHER_INTEROP_SCREENSHOT, fullPage: false });
  }
  const errors = await page.evaluate(rows, 'error');
  if (errors.length) throw new Error(`the log shows errors: ${JSON.stringify(errors)}`);
} catch (e) {
  failed = true;
  process.stdout.write(`FAILED ${e.message.split('\n')[0]}\n`);
  process.stderr.write(`${e.stack}\n`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
