'use strict';
// A minimal logic-layer backend for measuring Herald's proxies (keep-alive HTTP on 127.0.0.1):
// every connect is allowed as user "u<n>", every RPC (path ending in /rpc) answers
// {"data": {"ok": true}}, and a webhook batch (path ending in /webhook) is acknowledged with
// 200 and counted. Usage:
//   node bench/proxy-backend.js [port]      # default 3100; prints "listening on PORT"
const http = require('node:http');

let n = 0;
let events = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    n += 1;
    let body;
    if (req.url.endsWith('/rpc')) {
      body = JSON.stringify({ result: { data: { ok: true } } });
    } else if (req.url.endsWith('/webhook')) {
      events += JSON.parse(Buffer.concat(chunks).toString()).events.length;
      body = '{}';
    } else if (req.url === '/_stats') {
      body = JSON.stringify({ requests: n, webhook_events: events });
    } else {
      body = JSON.stringify({ result: { user: `u${n}` } });
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.argv[2] || 3100), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
