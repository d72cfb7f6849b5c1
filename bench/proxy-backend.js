'use strict';
// A minimal connect-proxy backend for measuring Herald's connect proxy (keep-alive HTTP on
// 127.0.0.1): every connect is allowed as user "u<n>". Usage:
//   node bench/proxy-backend.js [port]      # default 3100; prints "listening on PORT"
const http = require('node:http');

let n = 0;
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    n += 1;
    const body = JSON.stringify({ result: { user: `u${n}` } });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.argv[2] || 3100), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
