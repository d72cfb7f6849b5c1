// The Herald admin console: plain JavaScript, no framework, no build step. Every action is a
// server API method called through POST admin/api/<method> with the session cookie and the
// CSRF token; the dashboard polls `info` every 3 s; trace lines come as Server-Sent Events.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { csrf: '', history: [], last: null, trace: null, timers: [] };
window.consoleState = state;

function show(loggedIn) {
  $('login-view').hidden = loggedIn;
  $('app-view').hidden = !loggedIn;
  $('logout').hidden = !loggedIn;
}

async function post(path, body, withCsrf = true) {
  const headers = { 'Content-Type': 'application/json' };
  if (withCsrf) headers['X-Herald-CSRF'] = state.csrf;
  const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' });
  const json = await res.json().catch(() => ({}));
  if (res.status === 401) { stop(); show(false); }
  return { status: res.status, json };
}

async function api(method, params) {
  const { status, json } = await post('admin/api/' + method, params);
  if (status !== 200) throw new Error(json.error || 'HTTP ' + status);
  if (json.error) throw new Error(json.error.code + ': ' + json.error.message);
  return json.result;
}

function say(text, bad) {
  $('status').textContent = text;
  $('status').className = bad ? 'error' : '';
}

function fmtBytes(n) {
  if (!n) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + ' ' + u[i];
}

function fmtUptime(s) {
  if (!s) return '–';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text;
  tr.appendChild(td);
}

function chart(svg, values) {
  const max = Math.max(1, ...values);
  const step = 300 / Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(58 - (v / max) * 54).toFixed(1)}`).join(' ');
  svg.innerHTML = `<polyline points="${points}"></polyline>`;
}

async function refreshNodes() {
  let info;
  try { info = await api('info', {}); } catch (e) { say('info failed: ' + e.message, true); return; }
  const now = Date.now();
  const prev = state.last;
  const tbody = $('nodes').querySelector('tbody');
  tbody.textContent = '';
  let conns = 0, out = 0;
  for (const n of info.nodes) {
    const before = prev && prev.nodes.find((p) => p.uid === n.uid);
    const secs = prev ? (now - prev.at) / 1000 : 0;
    const rate = (k) => (before && secs > 0 ? Math.max(0, (n[k] - before[k]) / secs) : 0);
    const tr = document.createElement('tr');
    [n.name, n.num_clients, n.num_users, n.num_subs, n.num_channels, rate('num_msgs_in').toFixed(1),
      rate('num_msgs_out').toFixed(1), fmtBytes(n.rss), fmtUptime(n.uptime)].forEach((v) => cell(tr, String(v)));
    tbody.appendChild(tr);
    conns += n.num_clients;
    out += rate('num_msgs_out');
  }
  state.last = { at: now, nodes: info.nodes };
  state.history.push({ conns, out });
  if (state.history.length > 60) state.history.shift();
  $('total-conns').textContent = String(conns);
  $('total-out').textContent = out.toFixed(1);
  chart($('chart-conns'), state.history.map((h) => h.conns));
  chart($('chart-out'), state.history.map((h) => h.out));
}

async function refreshChannels() {
  const pattern = $('channel-search').value.trim();
  let result;
  try { result = await api('channels', { pattern }); } catch (e) { say('channels: ' + e.message, true); return; }
  const list = $('channels');
  list.textContent = '';
  const names = Object.keys(result.channels).sort();
  for (const name of names.slice(0, 500)) {
    const li = document.createElement('li');
    li.textContent = `${name} — ${result.channels[name].num_clients} subscriber(s)`;
    list.appendChild(li);
  }
  if (!names.length) list.innerHTML = '<li>No channel with subscribers matches.</li>';
  // Nodes that did not answer in time are named: their subscribers are not counted.
  const notes = [];
  if (result.missing_nodes) notes.push('Not answering (not counted): ' + result.missing_nodes.join(', '));
  if (result.truncated || names.length > 500) notes.push('More channels match: refine the search.');
  for (const note of notes) {
    const li = document.createElement('li');
    li.className = 'note';
    li.textContent = note;
    list.appendChild(li);
  }
}

function addTraceLine(l) {
  const ol = $('trace-lines');
  const li = document.createElement('li');
  const time = new Date(l.time).toISOString().slice(11, 23);
  li.textContent = `${time} ${l.node} user=${l.user} client=${l.client || '-'} ${l.kind} ${l.method} ${l.payload}`;
  ol.appendChild(li);
  while (ol.children.length > 1000) ol.removeChild(ol.firstChild);
  ol.scrollTop = ol.scrollHeight;
}

// Trace lines arrive as Server-Sent Events; each response ends after a batch and the browser
// reconnects with Last-Event-ID, so no line is shown twice or lost while it is in the ring.
function followTrace() {
  const source = new EventSource('admin/trace');
  state.trace = source;
  source.addEventListener('line', (ev) => addTraceLine(JSON.parse(ev.data)));
  source.addEventListener('traces', (ev) => {
    const traces = JSON.parse(ev.data);
    $('traces').textContent = traces.length
      ? 'Tracing: ' + traces.map((t) => `${t.user} (until ${new Date(t.until).toLocaleTimeString()})`).join(', ')
      : 'No trace running.';
  });
}

async function userAction(action) {
  const user = $('user-id').value.trim();
  const out = $('user-result');
  try {
    let result;
    if (action === 'lookup') result = await api('connections', { user });
    if (action === 'disconnect') result = await api('disconnect', { user });
    if (action === 'unsubscribe') result = await api('unsubscribe', { user, channel: $('user-channel').value.trim() });
    if (action === 'trace') result = await api('trace_user', { user, duration: Number($('trace-duration').value) });
    if (action === 'trace_stop') result = await api('trace_stop', { user });
    out.textContent = action + ': ' + JSON.stringify(result, null, 2);
    say(`${action} ${user}: done`);
  } catch (e) {
    out.textContent = action + ' failed: ' + e.message;
    say(`${action} failed: ${e.message}`, true);
  }
}

function start() {
  show(true);
  refreshNodes();
  refreshChannels();
  state.timers.push(setInterval(refreshNodes, 3000), setInterval(refreshChannels, 5000));
  followTrace();
}

function stop() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  if (state.trace) state.trace.close();
  state.trace = null;
}

async function init() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    const { status, json } = await post('admin/login', { password: $('password').value }, false);
    if (status === 200) {
      state.csrf = json.csrf;
      $('password').value = '';
      start();
    } else {
      $('login-error').textContent = json.error || 'login failed';
      $('password').focus();
    }
  });
  $('logout').addEventListener('click', async () => {
    await post('admin/logout', {}, false);
    stop();
    show(false);
  });
  $('publish-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let data;
    try { data = JSON.parse($('pub-data').value); } catch (e) { say('data is not JSON: ' + e.message, true); return; }
    try {
      await api('publish', { channel: $('pub-channel').value.trim(), data });
      say('published to ' + $('pub-channel').value.trim());
    } catch (e) { say('publish failed: ' + e.message, true); }
  });
  $('user-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    userAction(ev.submitter ? ev.submitter.dataset.action : 'lookup');
  });
  $('channel-search').addEventListener('input', () => refreshChannels());
  const res = await fetch('admin/session', { credentials: 'same-origin' });
  if (res.ok) {
    state.csrf = (await res.json()).csrf;
    start();
  } else {
    show(false);
    $('password').focus();
  }
}

document.addEventListener('DOMContentLoaded', init);
