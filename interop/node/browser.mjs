// Headless Chromium on the echo app's page (interop/tests/browser.rs):
//
//   node browser.mjs http://127.0.0.1:PORT/
//
// Opens the page, presses Connect, sends ASCII, multi-byte UTF-8 and a 1 MiB
// message through the page's Send button, checks that the communication log
// shows each one sent and echoed, presses Close Socket and checks the log
// shows a clean close. Prints "EXTENSIONS <negotiated extensions>" (from the
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
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
  page.on('console', (m) => process.stderr.write(`console.${m.type()}: ${m.text()}\n`));

  await page.goto(url);
  await page.click('#connect');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
  await page.waitForFunction(
    (kind) => [...document.querySelectorAll(`#log tr.${kind} td:last-child`)].some((t) => t.textContent === 'connected'),
    'open',
  );
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

  await page.click('#close');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'closed');
  const closes = await page.evaluate(rows, 'close');
  // Newest first: the close event after "closing (1000)", with the code
  // and the reason the server echoed.
  if (closes[0] !== 'code 1000, reason: bye' || closes[1] !== 'closing (1000)') {
    throw new Error(`expected a clean close with code 1000 and reason "bye" in the log, got ${JSON.stringify(closes)}`);
  }
  process.stdout.write(`CLOSE ${closes[0]}\n`);
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
