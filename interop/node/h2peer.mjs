// Node's own http2 as a WebSocket-over-HTTP/2 client, by hand (RFC 8441):
// the extended CONNECT, then WebSocket frames on the stream: a text
// message, its echo, a close with 1000 and its answer. Prints
// "OK echo, close CODE REASON", or "FAIL why" and exits 1.
//
//   node h2peer.mjs http://127.0.0.1:PORT    (prior knowledge)
//   node h2peer.mjs https://127.0.0.1:PORT   (TLS, ALPN h2)
import http2 from 'node:http2';
import crypto from 'node:crypto';

const [url] = process.argv.slice(2);
const fail = (why) => { console.log(`FAIL ${why}`); process.exit(1); };
setTimeout(() => fail('timeout'), 20000).unref();

function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
    : Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// https:// with the test's self-signed certificate: not verified here.
const client = http2.connect(url, { rejectUnauthorized: false });
client.on('error', (e) => fail(`connection: ${e.message}`));
client.on('remoteSettings', (settings) => {
  if (!settings.enableConnectProtocol) fail('the server does not enable extended CONNECT');
  const u = new URL(url);
  const req = client.request({
    ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': u.protocol.slice(0, -1),
    ':path': '/ws', ':authority': u.host, 'sec-websocket-version': '13', origin: url,
  });
  req.on('response', (headers) => {
    if (headers[':status'] !== 200) fail(`status ${headers[':status']}`);
    req.write(frame(1, 'hello from node http2'));
  });
  let buf = Buffer.alloc(0);
  let echoed = false;
  req.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2) {
      const opcode = buf[0] & 0x0f, len = buf[1] & 0x7f;
      if (len >= 126 || buf.length < 2 + len) return;
      const payload = buf.subarray(2, 2 + len);
      buf = buf.subarray(2 + len);
      if (opcode === 1 && !echoed) {
        if (payload.toString() !== 'hello from node http2') fail(`echo ${payload}`);
        echoed = true;
        const close = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]);
        req.write(frame(8, close));
      } else if (opcode === 8) {
        const code = payload.readUInt16BE(0);
        console.log(`OK echo, close ${code} ${payload.subarray(2)}`);
        req.end();
        client.close();
      }
    }
  });
  req.on('error', (e) => fail(`stream: ${e.message}`));
});
