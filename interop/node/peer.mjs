// Node `ws` peer of tether's interop tests (interop/tests/node.rs).
//
//   node peer.mjs server          scenario server on 127.0.0.1, port 0; prints
//                                 "READY <port>", then one "RESULT <query>"
//                                 line per connection, until killed
//   node peer.mjs client URL...   connects to each URL in turn, runs its
//                                 scenario, prints one "RESULT <query>" line
//                                 per URL; exits 0 when every scenario
//                                 passed, 1 otherwise
//
// Each connection is described by the query string of its URL, as for the
// Python peer (interop/python/peer.py): id, scenario, deflate=SPEC
// (snct,cnct,smwb=N,cmwb=N; absent: no compression), protocols (client),
// pick (server). The tether side of each scenario is interop/src/scenario.rs.

import http from 'node:http';
import process from 'node:process';
import { WebSocket, WebSocketServer } from 'ws';

// Every step (a receive, a send, a ping) is bounded by this.
const STEP_TIMEOUT_MS = 60_000;
const MAX_PAYLOAD = 32 * 1024 * 1024;
const LARGE = 16 * 1024 * 1024;

// ---- Test data (the same in interop/src/data.rs and interop/python/peer.py) ----

const cache = new Map();
function cached(key, make) {
  if (!cache.has(key)) cache.set(key, make());
  return cache.get(key);
}

/** n characters of "000000000000000\n000000000000001\n...". */
function lines(n) {
  return cached(`lines${n}`, () => {
    const parts = [];
    for (let i = 0; i <= n / 16; i++) parts.push(String(i).padStart(15, '0') + '\n');
    return parts.join('').slice(0, n);
  });
}

/** lines(n) with every byte XORed with 0xA5 (not UTF-8). */
function binpat(n) {
  return cached(`binpat${n}`, () => {
    const buf = Buffer.from(lines(n), 'latin1');
    for (let i = 0; i < buf.length; i++) buf[i] ^= 0xa5;
    return buf;
  });
}

/** n bytes from a 31-bit LCG: x = x * 1103515245 + 12345; byte = x >> 16. */
function noise(n, seed) {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
    out[i] = (x >> 16) & 0xff;
  }
  return out;
}

const UTF8 = 'héllo wörld ✓ 日本語 🚀';
const TEXTS = ['hello', UTF8, '', lines(70_000)];
const BINS = [Buffer.alloc(0), Buffer.from([...Array(256).keys()]), binpat(100_000)];
// Fragments the peer sends: the text cut inside characters, at the same
// byte offsets as tether's, and a binary message with an empty fragment.
const UTF8_BYTES = Buffer.from(UTF8);
const FRAG_TEXT_PIECES = [UTF8_BYTES.subarray(0, 2), UTF8_BYTES.subarray(2, 9), UTF8_BYTES.subarray(9, 20), UTF8_BYTES.subarray(20)];
const FRAG_BIN_PIECES = [Buffer.from([0, 1]), Buffer.alloc(0), Buffer.alloc(1000, 0xff), Buffer.from('end')];
const FRAG_BIN = Buffer.concat(FRAG_BIN_PIECES);
const DEFLATE_MESSAGES = [
  noise(200, 1),
  noise(200, 1),
  Buffer.concat(Array(64).fill(noise(1000, 2))),
  (UTF8 + ' ').repeat(1000),
];

class Failure extends Error {}

function describe(data) {
  if (data === undefined) return 'nothing';
  const kind = typeof data === 'string' ? 'text' : 'binary';
  const shown = typeof data === 'string' ? JSON.stringify(data.slice(0, 40)) : data.subarray(0, 40).toString('hex');
  return `${kind} of ${data.length} (${shown}${data.length > 40 ? '...' : ''})`;
}

function same(a, b) {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`timed out: ${what}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- A connection as a queue of events ----

class Conn {
  constructor(ws) {
    this.ws = ws;
    this.events = [];
    this.waiters = [];
    this.pings = [];
    this.closed = null;
    ws.on('message', (data, isBinary) => this.push({ type: 'message', data: isBinary ? data : data.toString('utf8') }));
    ws.on('ping', (data) => this.pings.push(Buffer.from(data)));
    ws.on('pong', (data) => this.push({ type: 'pong', data: Buffer.from(data) }));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString('utf8') };
      this.push({ type: 'close', ...this.closed });
    });
    ws.on('error', (error) => this.push({ type: 'error', error }));
  }

  push(event) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(event);
    else this.events.push(event);
  }

  next(what) {
    if (this.events.length) return Promise.resolve(this.events.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), what);
  }

  async recv(what) {
    const event = await this.next(what);
    if (event.type === 'message') return event.data;
    if (event.type === 'close') throw new Failure(`${what}: closed with ${event.code} ${JSON.stringify(event.reason)}`);
    if (event.type === 'error') throw new Failure(`${what}: ${event.error.message}`);
    throw new Failure(`${what}: unexpected ${event.type}`);
  }

  send(data, options = {}) {
    return withTimeout(
      new Promise((resolve, reject) => this.ws.send(data, options, (err) => (err ? reject(err) : resolve()))),
      'send',
    );
  }

  async expect(expected, what) {
    const got = await this.recv(what);
    if (!same(got, expected)) throw new Failure(`${what}: expected ${describe(expected)}, got ${describe(got)}`);
  }

  async waitClosed() {
    while (!this.closed) {
      const event = await this.next('close');
      if (event.type === 'message') throw new Failure(`expected a close, got ${describe(event.data)}`);
      if (event.type === 'error') throw new Failure(`expected a close, got an error: ${event.error.message}`);
    }
    return this.closed;
  }
}

// ---- Steps ----

/** tether sends each message, the peer checks it and echoes it. */
async function peerEchoes(c, messages) {
  for (const [i, m] of messages.entries()) {
    await c.expect(m, `message ${i} from tether`);
    await c.send(m);
  }
}

/** The peer sends each message, tether echoes it, the peer checks the echo. */
async function peerSends(c, messages) {
  for (const [i, m] of messages.entries()) {
    await c.send(m);
    await c.expect(m, `echo ${i} from tether`);
  }
}

async function expectClose(c, report, code = 1000, reason = 'done') {
  const closed = await c.waitClosed();
  report.close_code = closed.code;
  report.close_reason = closed.reason;
  if (closed.code !== code || closed.reason !== reason) {
    throw new Failure(`expected close ${code} ${JSON.stringify(reason)}, got ${closed.code} ${JSON.stringify(closed.reason)}`);
  }
}

async function sendFragments(c, pieces, binary) {
  for (const [i, piece] of pieces.entries()) {
    await c.send(piece, { binary, fin: i === pieces.length - 1 });
  }
}

// ---- Scenarios (peer side) ----

const SCENARIOS = {
  async text(c, report) {
    await peerEchoes(c, TEXTS);
    await peerSends(c, TEXTS);
    await expectClose(c, report);
  },

  async binary(c, report) {
    await peerEchoes(c, BINS);
    await peerSends(c, BINS);
    await expectClose(c, report);
  },

  // ws reassembles fragments before its 'message' event, so the number of
  // frames is not observable here (the Python peer checks it).
  async fragmented(c, report) {
    await peerEchoes(c, [UTF8, FRAG_BIN]);
    await sendFragments(c, FRAG_TEXT_PIECES, false);
    await c.expect(UTF8, 'echo of the fragmented text');
    await sendFragments(c, FRAG_BIN_PIECES, true);
    await c.expect(FRAG_BIN, 'echo of the fragmented binary');
    await expectClose(c, report);
  },

  async large(c, report) {
    await peerEchoes(c, [binpat(LARGE)]);
    await peerSends(c, [lines(LARGE)]);
    await expectClose(c, report);
  },

  async ping(c, report) {
    await c.expect('got pong', "text after tether's ping");
    const seen = c.pings.map((p) => p.toString());
    if (seen.length !== 1 || seen[0] !== 'tether-ping') {
      throw new Failure(`expected one ping "tether-ping", saw ${JSON.stringify(seen)}`);
    }
    c.ws.ping(Buffer.from('peer-ping'));
    const event = await c.next('pong');
    if (event.type !== 'pong' || event.data.toString() !== 'peer-ping') {
      throw new Failure(`expected pong "peer-ping", got ${event.type} ${describe(event.data)}`);
    }
    await c.send('got pong too');
    report.pings = seen.join(',');
    await expectClose(c, report);
  },

  async 'close-tether'(c, report) {
    await peerEchoes(c, ['hi']);
    await expectClose(c, report, 4001, 'tether says bye ✓');
  },

  async 'close-peer'(c, report) {
    await peerEchoes(c, ['hi']);
    c.ws.close(4002, 'peer says bye ✓');
    const closed = await c.waitClosed();
    report.close_code = closed.code;
    report.close_reason = closed.reason;
    // tether echoes the code and the reason (RFC 6455 section 5.5.1).
    if (closed.code !== 4002 || closed.reason !== 'peer says bye ✓') {
      throw new Failure(`expected tether to answer 4002 "peer says bye ✓", got ${closed.code} ${JSON.stringify(closed.reason)}`);
    }
  },

  async subprotocol(c, report) {
    if (c.ws.protocol !== 'chat.v2') throw new Failure(`expected subprotocol chat.v2, got ${JSON.stringify(c.ws.protocol)}`);
    await peerEchoes(c, ['hi']);
    await expectClose(c, report);
  },

  async deflate(c, report) {
    if (!(report.extensions || '').startsWith('permessage-deflate')) {
      throw new Failure(`permessage-deflate not negotiated: ${JSON.stringify(report.extensions)}`);
    }
    await peerEchoes(c, [...DEFLATE_MESSAGES, UTF8]);
    await peerSends(c, DEFLATE_MESSAGES);
    await sendFragments(c, FRAG_TEXT_PIECES, false);
    await c.expect(UTF8, 'echo of the fragmented text');
    await expectClose(c, report);
  },
};

// ---- Plumbing ----

function deflateOptions(spec) {
  const options = { threshold: 0 };
  for (const item of spec.split(',').filter(Boolean)) {
    const [name, value] = item.split('=');
    if (name === 'snct') options.serverNoContextTakeover = true;
    else if (name === 'cnct') options.clientNoContextTakeover = true;
    else if (name === 'smwb') options.serverMaxWindowBits = Number(value);
    else if (name === 'cmwb') options.clientMaxWindowBits = Number(value);
    else throw new Error(`unknown deflate parameter ${item}`);
  }
  return options;
}

function emit(report) {
  const clean = Object.fromEntries(Object.entries(report).map(([k, v]) => [k, v == null ? '' : String(v)]));
  process.stdout.write(`RESULT ${new URLSearchParams(clean).toString().replaceAll('+', '%20')}\n`);
}

async function runScenario(c, query, extensions) {
  const ws = c.ws;
  const report = { id: query.get('id') ?? '', ok: 0, subprotocol: ws.protocol, extensions: extensions ?? '' };
  try {
    const scenario = SCENARIOS[query.get('scenario')];
    if (!scenario) throw new Failure(`unknown scenario ${query.get('scenario')}`);
    await scenario(c, report);
    report.ok = 1;
  } catch (e) {
    report.error = `${e.constructor.name}: ${e.message}`;
    ws.terminate();
  }
  return report;
}

function serverMain() {
  // One WebSocketServer per deflate configuration, chosen by the query.
  const servers = new Map();
  const serverFor = (spec) => {
    if (!servers.has(spec)) {
      const wss = new WebSocketServer({
        noServer: true,
        maxPayload: MAX_PAYLOAD,
        perMessageDeflate: spec === null ? false : deflateOptions(spec),
        handleProtocols(protocols, request) {
          const pick = new URL(request.url, 'http://peer').searchParams.get('pick');
          return protocols.has(pick) ? pick : false;
        },
      });
      wss.on('headers', (headers, request) => {
        const line = headers.find((h) => /^sec-websocket-extensions:/i.test(h));
        request.negotiatedExtensions = line ? line.slice(line.indexOf(':') + 1).trim() : '';
      });
      servers.set(spec, wss);
    }
    return servers.get(spec);
  };
  const server = http.createServer((_, res) => res.writeHead(404).end());
  server.on('upgrade', (request, socket, head) => {
    const query = new URL(request.url, 'http://peer').searchParams;
    const wss = serverFor(query.has('deflate') ? query.get('deflate') : null);
    wss.handleUpgrade(request, socket, head, async (ws) => {
      emit(await runScenario(new Conn(ws), query, request.negotiatedExtensions));
    });
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`READY ${server.address().port}\n`);
  });
}

async function clientOne(url) {
  const query = new URL(url).searchParams;
  const protocols = (query.get('protocols') ?? '').split(',').filter(Boolean);
  const ws = new WebSocket(url, protocols, {
    perMessageDeflate: query.has('deflate') ? deflateOptions(query.get('deflate')) : false,
    maxPayload: MAX_PAYLOAD,
    handshakeTimeout: STEP_TIMEOUT_MS,
  });
  // Listen before 'open': the first message may come in the same read as
  // the handshake response, and is emitted right after 'open'.
  const c = new Conn(ws);
  let extensions = '';
  ws.on('upgrade', (response) => {
    extensions = response.headers['sec-websocket-extensions'] ?? '';
  });
  const opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_, response) => reject(new Error(`HTTP ${response.statusCode}`)));
  });
  try {
    await withTimeout(opened, 'opening handshake');
  } catch (e) {
    ws.terminate();
    return { id: query.get('id') ?? '', ok: 0, error: `${e.constructor.name}: ${e.message}` };
  }
  return runScenario(c, query, extensions);
}

async function clientMain(urls) {
  let failed = 0;
  for (const url of urls) {
    const report = await clientOne(url);
    emit(report);
    if (report.ok !== 1) failed++;
  }
  return failed ? 1 : 0;
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'server') {
  serverMain();
} else if (mode === 'client' && rest.length) {
  process.exitCode = await clientMain(rest);
} else {
  process.stderr.write('usage: node peer.mjs server | client URL...\n');
  process.exitCode = 2;
}
