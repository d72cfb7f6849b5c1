'use strict';

// A `nats-server -js` for the cluster scenarios: a free loopback port (never the machine's
// 4222), its store in a temp dir, stopped by PID.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/** Resolves to { url, stop() } once the server accepts connections. */
async function startNats() {
  const port = await freePort();
  if (port === 4222) throw new Error('refusing the machine NATS port');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-nats-'));
  const child = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: 'ignore' });
  let exited = false;
  const exit = new Promise((resolve) => child.on('exit', () => { exited = true; resolve(); }));
  child.on('error', () => { exited = true; });
  const deadline = Date.now() + 10000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > deadline) throw new Error('nats-server did not start (is it installed?)');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    async stop() {
      if (!exited) {
        child.kill('SIGKILL');
        await exit;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { startNats };
