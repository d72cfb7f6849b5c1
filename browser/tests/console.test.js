'use strict';

// The admin console in headless Chromium (Debian's `chromium`, driven through playwright-core)
// against a real Herald: a wrong password is refused, the connection count follows test
// clients, a publication made from the console reaches a client, a user is disconnected from
// the console, and a user trace shows its lines live. Screenshots (desktop and phone width)
// go to browser/test-output/.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startHerald, now } = require('../../compat/lib/herald');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(__dirname, '..', 'test-output');
const PASSWORD = 'browser-console-pass';
const CHANNEL = 'chat:console';

let herald;
let browser;

async function waitFor(page, what, predicate, arg, timeout = 15000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`${what}: ${e.message}\n--- herald stderr ---\n${herald.stderr().slice(-4000)}`);
  }
}

// Test clients: WebSockets opened by a page of Herald's own origin, speaking the JSON protocol.
const CLIENT_SCRIPT = () => {
  window.clients = {};
  window.openClient = (name, url, token, channel) => new Promise((resolve, reject) => {
    const c = { pubs: [], closed: null, connected: false };
    window.clients[name] = c;
    const ws = new WebSocket(url);
    c.ws = ws;
    let id = 0;
    c.send = (cmd) => ws.send(JSON.stringify({ id: ++id, ...cmd }));
    ws.onopen = () => c.send({ connect: { token } });
    ws.onmessage = (ev) => {
      for (const line of String(ev.data).split('\n').filter(Boolean)) {
        const msg = JSON.parse(line);
        if (!msg.id && !msg.push) { ws.send('{}'); continue; } // ping → pong
        if (msg.connect) { c.connected = true; c.client = msg.connect.client; c.send({ subscribe: { channel } }); }
        if (msg.subscribe) resolve(c.client);
        if (msg.error && !c.connected) reject(new Error(JSON.stringify(msg.error)));
        if (msg.push && msg.push.pub) c.pubs.push(msg.push.pub.data);
      }
    };
    ws.onclose = (ev) => { c.closed = ev.code; };
  });
};

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  herald = await startHerald({
    env: {
      HERALD_ADMIN_ENABLED: 'true',
      HERALD_ADMIN_PASSWORD: PASSWORD,
      HERALD_ADMIN_SECRET: 'browser-console-secret',
    },
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  if (herald) await herald.stop();
});

describe('admin console', () => {
  it('logs in, follows connections, publishes, traces and disconnects a user', { timeout: 90000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${herald.httpUrl}/`);

    // A wrong password is refused, and the console stays locked.
    await page.getByLabel('Password').fill('wrong');
    await page.getByRole('button', { name: 'Log in' }).click();
    await waitFor(page, 'the refusal', () => document.getElementById('login-error').textContent.includes('wrong password'));
    assert.equal(await page.locator('#app-view').isVisible(), false);

    await page.getByLabel('Password').fill(PASSWORD);
    await page.keyboard.press('Enter'); // the form works from the keyboard
    await waitFor(page, 'the dashboard', () => !document.getElementById('app-view').hidden
      && document.querySelector('#nodes tbody tr td:nth-child(2)') !== null);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'herald_admin_session');
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));
    assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is not readable by scripts');
    assert.equal(await page.locator('#nodes tbody tr td:nth-child(2)').textContent(), '0');

    // Two test clients connect: the dashboard's connection count follows.
    const clients = await context.newPage();
    await clients.goto(`${herald.httpUrl}/app.css`);
    await clients.evaluate(CLIENT_SCRIPT);
    const token = (sub) => herald.token({ sub, exp: now() + 3600 });
    const wsUrl = herald.url;
    await clients.evaluate(([u, t, ch]) => window.openClient('alice', u, t, ch), [wsUrl, token('alice'), CHANNEL]);
    await clients.evaluate(([u, t, ch]) => window.openClient('bob', u, t, ch), [wsUrl, token('bob'), CHANNEL]);
    await waitFor(page, 'two connections on the dashboard',
      () => document.querySelector('#nodes tbody tr td:nth-child(2)').textContent === '2');
    await waitFor(page, 'the channel list', (ch) => document.getElementById('channels').textContent.includes(ch), CHANNEL);

    // Publish from the console: both clients receive it.
    await page.getByLabel('Channel', { exact: true }).fill(CHANNEL);
    await page.getByLabel('Data (JSON)').fill('{"from": "console"}');
    await page.getByRole('button', { name: 'Publish' }).click();
    await waitFor(clients, 'the publication at both clients',
      () => ['alice', 'bob'].every((n) => window.clients[n].pubs.some((d) => d.from === 'console')));

    // Trace alice: her commands and pushes show up live, bob's do not.
    await page.getByLabel('User id').fill('alice');
    await page.getByRole('button', { name: 'Start trace' }).click();
    await waitFor(page, 'the trace to start', () => document.getElementById('traces').textContent.includes('alice'));
    await clients.evaluate(() => {
      window.clients.alice.send({ presence_stats: { channel: 'chat:console' } });
      window.clients.bob.send({ presence_stats: { channel: 'chat:console' } });
    });
    await herald.api('publish', { channel: CHANNEL, data: { traced: true } });
    await waitFor(page, 'alice\'s trace lines', () => {
      const text = document.getElementById('trace-lines').textContent;
      return text.includes('command presence_stats') && text.includes('push chat:console');
    });
    const traceText = await page.locator('#trace-lines').textContent();
    assert.ok(!traceText.includes('user=bob'), traceText);
    await page.screenshot({ path: path.join(OUT, 'console-desktop.png'), fullPage: true });

    // Look the user up, then disconnect her from the console.
    await page.getByRole('button', { name: 'Look up' }).click();
    await waitFor(page, 'the lookup', () => document.getElementById('user-result').textContent.includes('chat:console'));
    await page.getByRole('button', { name: 'Disconnect' }).click();
    await waitFor(clients, 'alice disconnected', () => window.clients.alice.closed !== null);
    assert.equal(await clients.evaluate(() => window.clients.bob.closed), null, 'bob stays');
    await waitFor(page, 'one connection left', () => document.querySelector('#nodes tbody tr td:nth-child(2)').textContent === '1');

    await page.setViewportSize({ width: 390, height: 844 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(OUT, 'console-phone.png'), fullPage: false });
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('refuses actions without the CSRF token or from another origin', { timeout: 30000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${herald.httpUrl}/`);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await waitFor(page, 'the dashboard', () => !document.getElementById('app-view').hidden);
    const status = await page.evaluate(async () => (await fetch('admin/api/info', { method: 'POST', body: '{}' })).status);
    assert.equal(status, 403, 'the session cookie alone is not enough');
    await context.close();
  });
});
