'use strict';

// wss://: centrifuge-js over TLS (http_server.tls) with a certificate made by the test (a CA and
// a leaf for 127.0.0.1, by the openssl command), and the server API over HTTPS. The test CA is
// trusted through the `ws` options, as a browser would trust an installed CA.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, subscribe, unique, WebSocket } = require('../lib/sdk');

const T = { timeout: 20000 };

/** A CA and a leaf certificate for 127.0.0.1 / localhost in `dir`; returns the paths. */
function makeCertificates(dir) {
  const file = (name) => path.join(dir, name);
  const openssl = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Herald compat CA']);
  openssl(['req', ...ec, '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost']);
  fs.writeFileSync(
    file('leaf.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n',
  );
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'cert.pem', '-days', '1', '-extfile', 'leaf.ext']);
  return { ca: file('ca.pem'), cert: file('cert.pem'), key: file('key.pem') };
}

let herald;
let dir;
let ca;
let wssUrl;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-tls-'));
  const files = makeCertificates(dir);
  ca = fs.readFileSync(files.ca);
  herald = await startHerald({
    env: {
      HERALD_HTTP_SERVER_TLS_ENABLED: 'true',
      HERALD_HTTP_SERVER_TLS_CERT_PEM: files.cert,
      HERALD_HTTP_SERVER_TLS_KEY_PEM: files.key,
    },
  });
  wssUrl = `wss://127.0.0.1:${herald.port}/connection/websocket`;
});
after(async () => {
  if (herald) await herald.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** `ws` with the test CA trusted, for the SDK's `websocket` option. */
class TrustingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { ca });
  }
}

/** A server API call over HTTPS. */
function api(method, body) {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port: herald.port,
      path: `/api/${method}`,
      method: 'POST',
      ca,
      headers: { 'X-API-Key': herald.apiKey, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      timeout: 5000,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(payload);
  });
}

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`wss:// (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('connects over TLS and receives a publication sent through the HTTPS server API', T, async () => {
      const token = herald.token({ sub: 'tls-user', exp: now() + 3600 });
      const { c, connected } = await clients.connect(wssUrl, { token, websocket: TrustingWebSocket });
      assert.equal(connected.transport, 'websocket');
      const channel = unique('chat:tls');
      const { rec } = await subscribe(c, channel);
      const payload = { text: 'encrypted', n: 1 };
      const res = await api('publish', { channel, data: payload });
      assert.equal(res.status, 200);
      assert.equal(res.json.error, undefined);
      const pub = await rec.waitFor('publication');
      assert.deepEqual(dec(pub.data), payload);
    });
  });
}

describe('wss:// refusals', () => {
  it('a client that does not trust the certificate gets a TLS error, not a connection', T, async () => {
    const ws = new WebSocket(wssUrl);
    const err = await new Promise((resolve) => {
      ws.on('error', resolve);
      ws.on('open', () => resolve(null));
    });
    assert.ok(err, 'the connection must not open');
    assert.match(String(err.code || err.message), /CERT|certificate|UNABLE_TO_VERIFY/i);
  });

  it('the HTTPS server API answers a wrong key with 401', T, async () => {
    const payload = JSON.stringify({ channel: 'chat:x', data: {} });
    const status = await new Promise((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1', port: herald.port, path: '/api/publish', method: 'POST', ca,
        headers: { 'X-API-Key': 'wrong', 'Content-Type': 'application/json' },
      }, (res) => { res.resume(); resolve(res.statusCode); });
      req.on('error', reject);
      req.end(payload);
    });
    assert.equal(status, 401);
  });
});
