// iothub-emulator dashboard: a small page app over the hub's own REST API (the same calls the SDKs make) and
// one server-sent-events stream (/dashboard/events) for what changes live. No framework and no build step:
// the browser runs this file as served. Every REST call carries the session cookie and X-IotHub-Dashboard;
// the server signs it with the session's policy, so the page has exactly the REST API's rights.

const API_VERSION = 'api-version=2021-04-12';
const PAGE_SIZE = 50;

const state = {
  info: null,
  stats: null,
  jobs: [],
  rates: [],
  cleanup: [],
  live: null,
  liveWatch: null,
  handlers: {},
};

// ---------- small helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'style') el.style.cssText = value; // CSSOM, which the page's CSP allows (style attributes it does not)
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** JSON with highlighting: keys, strings, numbers and literals get their own colour. */
function json(value, attrs = {}) {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  const pattern = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let html = '';
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    html += esc(text.slice(last, match.index));
    if (match[1]) html += `<span class="${match[2] ? 'k' : 's'}">${esc(match[1])}</span>${match[2] ? esc(match[2]) : ''}`;
    else if (match[3]) html += `<span class="l">${match[3]}</span>`;
    else html += `<span class="n">${esc(match[4])}</span>`;
    last = match.index + match[0].length;
  }
  html += esc(text.slice(last));
  const pre = h('pre', { class: 'json', ...attrs });
  pre.innerHTML = html;
  return pre;
}

function when(iso) {
  if (!iso || iso.startsWith('0001-01-01')) return 'never';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds >= 0 && seconds < 60) return `${seconds} s ago`;
  if (seconds >= 60 && seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return date.toLocaleString();
}

function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

function toast(message, bad = false) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = bad ? 'toast bad' : 'toast';
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 2500);
}

function copyButton(text, label = 'Copy') {
  return h('button', {
    class: 'small',
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(typeof text === 'function' ? text() : text);
        toast('Copied');
      } catch {
        toast('The browser did not allow copying; select the text instead', true);
      }
    },
  }, label);
}

function copyable(text, attrs = {}) {
  return h('div', { class: 'copy' }, h('code', attrs, text), copyButton(text));
}

function badge(connectionState) {
  const connected = connectionState === 'Connected';
  return h('span', { class: `badge ${connected ? 'ok' : 'idle'}`, 'data-state': connectionState }, connectionState || 'Disconnected');
}

function quote(text) {
  return `'${String(text).replace(/'/g, "''")}'`;
}

/** The hub's error body, as "Code: message" (both envelopes: ErrorCode:X;text and the JSON one of methods). */
function hubError(status, body) {
  let code = `HTTP ${status}`;
  let message = typeof body === 'string' ? body : '';
  if (body && typeof body === 'object' && typeof body.Message === 'string') {
    const text = body.Message;
    const legacy = /^ErrorCode:([^;]+);([\s\S]*)$/.exec(text);
    if (legacy) {
      code = legacy[1];
      message = legacy[2];
    } else {
      try {
        const inner = JSON.parse(text);
        code = String(inner.errorCode ?? code);
        message = inner.message ?? text;
      } catch {
        message = text;
      }
    }
  }
  const error = new Error(`${code}: ${message}`);
  error.status = status;
  error.code = code;
  return error;
}

/** Calls the REST API as the signed-in session. */
async function api(method, path, body, headers = {}) {
  const separator = path.includes('?') ? '&' : '?';
  const url = path.startsWith('/emulator/') || path.startsWith('/dashboard/') ? path : `${path}${separator}${API_VERSION}`;
  const init = { method, credentials: 'same-origin', headers: { 'X-IotHub-Dashboard': '1', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (response.status === 401 && path.startsWith('/dashboard/')) {
    location.href = '/';
  }
  if (!response.ok) throw hubError(response.status, data);
  return { data, headers: response.headers, status: response.status };
}

async function query(text, continuation, pageSize = PAGE_SIZE) {
  const headers = { 'x-ms-max-item-count': String(pageSize) };
  if (continuation) headers['x-ms-continuation'] = continuation;
  const { data, headers: answer } = await api('POST', '/devices/query', { query: text }, headers);
  return { items: data || [], continuation: answer.get('x-ms-continuation') };
}

function failed(el) {
  return (error) => { el.textContent = error.message; };
}

function parseJsonInput(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
}

// ---------- the live feed ----------

function on(name, handler) {
  (state.handlers[name] ||= new Set()).add(handler);
  state.cleanup.push(() => state.handlers[name].delete(handler));
}

function emit(name, data) {
  for (const handler of state.handlers[name] || []) handler(data);
}

/** Opens the event stream, watching `watch` (a device id, or device/module) when given. */
function connectLive(watch = null) {
  if (state.live && state.liveWatch === watch) return;
  if (state.live) state.live.close();
  const params = new URLSearchParams();
  if (watch) {
    const [device, module] = watch.split('/');
    params.set('device', device);
    if (module) params.set('module', module);
  }
  const source = new EventSource(`/dashboard/events${params.size ? `?${params}` : ''}`);
  state.live = source;
  state.liveWatch = watch;
  const indicator = document.getElementById('live');
  source.onopen = () => indicator.classList.add('on');
  source.onerror = () => indicator.classList.remove('on');
  for (const name of ['stats', 'presence', 'jobs', 'telemetry', 'device', 'resync', 'skipped']) {
    source.addEventListener(name, (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch { return; }
      if (name === 'stats') {
        state.stats = data;
        state.rates.push(data.messagesPerSecond);
        if (state.rates.length > 60) state.rates.shift();
        const outage = (data.faults || []).find((fault) => fault.kind === 'outage');
        const banner = document.getElementById('banner');
        banner.hidden = !outage;
        if (outage) banner.textContent = `Hub outage in force until ${clock(outage.endTime)}: devices are refused, the service API answers 503 and its AMQP links are detached.`;
      }
      if (name === 'jobs') state.jobs = data;
      emit(name, data);
    });
  }
}

// ---------- pages ----------

function sparkline(values) {
  const width = 240;
  const height = 36;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'sparkline');
  if (points.length) {
    const area = document.createElementNS(svg.namespaceURI, 'polygon');
    area.setAttribute('points', `0,${height} ${points.join(' ')} ${((values.length - 1) * step).toFixed(1)},${height}`);
    const line = document.createElementNS(svg.namespaceURI, 'polyline');
    line.setAttribute('points', points.join(' '));
    svg.append(area, line);
  }
  return svg;
}

function faultText(fault) {
  const target = fault.deviceId ? `${fault.deviceId}${fault.moduleId ? `/${fault.moduleId}` : ''}` : 'the hub';
  const extra = fault.delayMs ? ` (${fault.delayMs} ms)` : fault.status ? ` (${fault.status})` : '';
  return `${fault.kind}${extra} on ${target}, until ${clock(fault.endTime)}`;
}

function faultList(filter) {
  const list = h('div', { id: 'fault-list' });
  const render = () => {
    const faults = (state.stats?.faults || []).filter(filter);
    list.replaceChildren(
      faults.length === 0
        ? h('p', { class: 'muted' }, 'No fault in force.')
        : h('table', {}, h('tbody', {}, faults.map((fault) => h('tr', {},
          h('td', {}, faultText(fault)),
          h('td', { class: 'num' }, h('button', {
            class: 'small',
            onclick: async () => {
              try {
                await api('DELETE', `/emulator/faults/${encodeURIComponent(fault.id)}`);
                toast('Fault removed');
              } catch (error) { toast(error.message, true); }
            },
          }, 'Remove')))))),
    );
  };
  render();
  on('stats', render);
  return list;
}

async function overview(page) {
  const info = state.info;
  const counts = {
    devices: h('div', { class: 'value', id: 'count-devices' }, '–'),
    connected: h('div', { class: 'value', id: 'count-connected' }, '–'),
    jobs: h('div', { class: 'value', id: 'count-jobs' }, '–'),
    rate: h('div', { class: 'value', id: 'count-rate' }, '–'),
  };
  const spark = h('div', {}, sparkline(state.rates));
  const outageSeconds = h('input', { type: 'number', min: 1, max: 86400, value: 30, id: 'outage-seconds', style: 'width:90px' });
  const resetError = h('p', { class: 'error' });
  page.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Devices'), counts.devices),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Connected'), counts.connected),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Active jobs'), counts.jobs),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Messages / s'), counts.rate, spark)),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' },
        h('h2', {}, 'Endpoints'),
        h('dl', { class: 'kv' },
          h('dt', {}, 'Host'), h('dd', {}, info.hostName),
          h('dt', {}, 'Service API'), h('dd', { class: 'mono' }, `https://${info.hostName}:${info.httpsPort}`),
          h('dt', {}, 'Devices (MQTT)'), h('dd', { class: 'mono' }, `mqtts://${info.hostName}:${info.mqttPort}`),
          h('dt', {}, 'AMQP'), h('dd', { class: 'mono' }, `amqps://${info.hostName}:${info.amqpPort}`),
          h('dt', {}, 'WebSockets'), h('dd', { class: 'mono' }, `wss://${info.hostName}:${info.httpsPort}/$iothub/websocket`),
          info.eventhubsPlainPort ? [h('dt', {}, 'Event Hubs (plain)'), h('dd', { class: 'mono' }, `amqp://localhost:${info.eventhubsPlainPort}`)] : null,
          h('dt', {}, 'CA certificate'), h('dd', {}, h('a', { href: '/dashboard/ca.pem', download: 'iothub-emulator-ca.pem' }, 'Download'), info.caPath ? h('span', { class: 'muted' }, ` ${info.caPath}`) : null))),
      h('section', { class: 'panel' },
        h('h2', {}, 'Connection strings'),
        h('label', {}, 'Service (iothubowner)'), copyable(info.connectionString, { id: 'service-connection-string' }),
        h('label', {}, 'Event Hub-compatible endpoint'), copyable(info.eventHubConnectionString))),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' },
        h('h2', {}, 'Faults in force'),
        faultList(() => true),
        h('div', { class: 'row' },
          h('span', {}, 'Hub outage for'), outageSeconds, h('span', {}, 'seconds'),
          h('button', {
            id: 'start-outage',
            onclick: async () => {
              try {
                await api('POST', '/emulator/faults', { kind: 'outage', durationSeconds: Number(outageSeconds.value) });
                toast('Outage started');
              } catch (error) { toast(error.message, true); }
            },
          }, 'Start outage'),
          h('button', {
            onclick: async () => {
              try { await api('DELETE', '/emulator/faults'); toast('Every fault removed'); } catch (error) { toast(error.message, true); }
            },
          }, 'Remove all'))),
      h('section', { class: 'panel' },
        h('h2', {}, 'Reset'),
        h('p', { class: 'muted' }, 'Empties the hub for the next test run: devices, modules, jobs, messages, telemetry, faults and history go; the CA, policies and keys stay.'),
        h('button', {
          class: 'danger',
          id: 'reset-hub',
          onclick: async () => {
            if (!confirm('Delete every device, job and message of this hub?')) return;
            try {
              const { data } = await api('POST', '/emulator/reset');
              toast(`Reset: ${data.devicesDeleted} devices, ${data.modulesDeleted} modules, ${data.jobsDeleted} jobs removed`);
            } catch (error) { resetError.textContent = error.message; }
          },
        }, 'Reset hub'),
        resetError)),
  );
  const render = (stats) => {
    counts.devices.textContent = stats.devices.toLocaleString();
    counts.connected.textContent = stats.connectedDevices.toLocaleString();
    counts.jobs.textContent = stats.jobsActive.toLocaleString();
    counts.rate.textContent = stats.messagesPerSecond.toLocaleString();
    spark.replaceChildren(sparkline(state.rates));
  };
  if (state.stats) render(state.stats);
  on('stats', render);
}

async function devices(page) {
  const search = h('input', { type: 'search', placeholder: 'Device id contains…', id: 'device-search', class: 'grow', 'aria-label': 'Search devices' });
  const newId = h('input', { placeholder: 'new-device-id', id: 'new-device-id', 'aria-label': 'New device id' });
  const body = h('tbody', { id: 'device-rows' });
  const status = h('span', { class: 'muted', id: 'device-page' });
  const error = h('p', { class: 'error' });
  const prev = h('button', { disabled: true }, '← Previous');
  const next = h('button', { disabled: true }, 'Next →');
  const shown = h('div', { class: 'result' });
  const tokens = [null];
  let index = 0;
  let continuation = null;
  const rows = new Map();

  let latest = 0;
  const load = async () => {
    error.textContent = '';
    const term = search.value.trim();
    const text = term ? `SELECT * FROM devices WHERE CONTAINS(deviceId, ${quote(term)})` : 'SELECT * FROM devices';
    const ticket = ++latest;
    try {
      const result = await query(text, tokens[index]);
      // Only the newest request is shown: an older, slower answer must not overwrite a newer search.
      if (ticket !== latest) return;
      continuation = result.continuation;
      rows.clear();
      body.replaceChildren(...result.items.map((twin) => {
        const state = h('td', {}, badge(twin.connectionState));
        const activity = h('td', { class: 'hide-narrow' }, when(twin.lastActivityTime));
        const row = h('tr', { 'data-device': twin.deviceId },
          h('td', {}, h('a', { href: `#/devices/${encodeURIComponent(twin.deviceId)}` }, twin.deviceId)),
          h('td', {}, h('span', { class: `badge ${twin.status === 'enabled' ? 'idle' : 'warn'}` }, twin.status)),
          state,
          activity,
          h('td', { class: 'num' },
            h('button', { class: 'small', onclick: () => showConnectionString(twin.deviceId, shown) }, 'Connection string'),
            ' ',
            h('button', { class: 'small danger', onclick: () => deleteDevice(twin.deviceId, load) }, 'Delete')));
        rows.set(twin.deviceId, { state, activity });
        return row;
      }));
      if (result.items.length === 0) body.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, term ? 'No device matches.' : 'No devices yet.')));
      status.textContent = `Page ${index + 1}`;
      prev.disabled = index === 0;
      next.disabled = !continuation;
    } catch (e) { error.textContent = e.message; }
  };
  prev.onclick = () => { if (index > 0) { index -= 1; load(); } };
  next.onclick = () => { if (continuation) { tokens[index + 1] = continuation; index += 1; load(); } };
  let typing = null;
  search.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { tokens.length = 1; index = 0; load(); }, 250);
  });
  const create = async () => {
    const id = newId.value.trim();
    if (!id) return;
    try {
      await api('PUT', `/devices/${encodeURIComponent(id)}`, { deviceId: id });
      toast(`Created ${id}`);
      newId.value = '';
      load();
    } catch (e) { error.textContent = e.message; }
  };
  newId.addEventListener('keydown', (event) => { if (event.key === 'Enter') create(); });

  page.replaceChildren(
    h('h1', {}, 'Devices', h('span', { class: 'muted', id: 'device-total' }, state.stats ? `${state.stats.devices.toLocaleString()} registered` : '')),
    h('section', { class: 'panel' },
      h('div', { class: 'row' }, search, newId, h('button', { class: 'primary', id: 'create-device', onclick: create }, 'Create device')),
      error,
      shown,
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Device id'), h('th', {}, 'Status'), h('th', {}, 'Connection'), h('th', { class: 'hide-narrow' }, 'Last activity'), h('th', {}))),
        body)),
      h('div', { class: 'pager' }, status, prev, next)),
  );
  on('presence', (change) => {
    if (change.moduleId) return;
    const row = rows.get(change.deviceId);
    if (!row) return;
    row.state.replaceChildren(badge(change.connectionState));
    row.activity.textContent = when(change.time);
  });
  on('stats', (stats) => {
    const total = document.getElementById('device-total');
    if (total) total.textContent = ` ${stats.devices.toLocaleString()} registered`;
  });
  on('resync', load);
  await load();
}

async function deviceConnectionString(id) {
  const { data } = await api('GET', `/devices/${encodeURIComponent(id)}`);
  const key = data.authentication?.symmetricKey?.primaryKey;
  if (!key) throw new Error(`${id} does not use a shared access key`);
  return `HostName=${state.info.hostName};DeviceId=${id};SharedAccessKey=${key}`;
}

async function showConnectionString(id, where) {
  try {
    const text = await deviceConnectionString(id);
    where.replaceChildren(h('label', {}, `Connection string of ${id}`), copyable(text, { id: 'device-connection-string' }));
  } catch (error) { toast(error.message, true); }
}

async function deleteDevice(id, then) {
  if (!confirm(`Delete device ${id} with its twin and modules?`)) return;
  try {
    await api('DELETE', `/devices/${encodeURIComponent(id)}`, undefined, { 'If-Match': '*' });
    toast(`Deleted ${id}`);
    then();
  } catch (error) { toast(error.message, true); }
}

function withoutMetadata(section) {
  const copy = { ...(section || {}) };
  delete copy.$metadata;
  delete copy.$version;
  return copy;
}

async function device(page, id) {
  connectLive(id);
  const path = `/twins/${encodeURIComponent(id)}`;
  const stateBadge = h('span', { id: 'device-state' });
  const twinView = h('div', { id: 'twin' });
  const tags = h('textarea', { id: 'tags-editor', spellcheck: 'false', 'aria-label': 'Tags' });
  const desired = h('textarea', { id: 'desired-editor', spellcheck: 'false', 'aria-label': 'Desired properties' });
  const twinError = h('p', { class: 'error', id: 'twin-error' });
  const methodName = h('input', { id: 'method-name', value: 'lockDoor', 'aria-label': 'Method name', class: 'grow' });
  const methodTimeout = h('input', { id: 'method-timeout', type: 'number', min: 5, max: 300, value: 30, style: 'width:80px', 'aria-label': 'Response timeout in seconds' });
  const methodPayload = h('textarea', { id: 'method-payload', spellcheck: 'false', 'aria-label': 'Method payload' }, '{}');
  const methodResult = h('div', { id: 'method-result', class: 'result' });
  const c2dBody = h('textarea', { id: 'c2d-body', spellcheck: 'false', 'aria-label': 'Message body' }, '{"command":"ping"}');
  const c2dProps = h('input', { id: 'c2d-properties', placeholder: 'key=value, key2=value2', class: 'grow', 'aria-label': 'Message properties' });
  const c2dResult = h('p', { class: 'error' });
  const telemetry = h('div', { class: 'feed', id: 'telemetry' }, h('p', { class: 'muted' }, 'Waiting for messages…'));
  const methodCalls = h('div', { id: 'method-calls' });
  const twinChanges = h('div', { id: 'twin-changes' });
  const modules = h('div', { id: 'modules' });
  const connection = h('div', { class: 'result' });
  const faultKind = h('select', { id: 'fault-kind', 'aria-label': 'Fault kind' },
    ...[['disconnect', 'Disconnect and refuse reconnects'], ['methodsUndelivered', 'Methods not delivered'], ['methodsLate', 'Methods delivered late'],
      ['twinErrors', 'Twin requests fail'], ['withholdTelemetryAcks', 'Withhold telemetry PUBACKs'], ['latency', 'Latency on everything sent']]
      .map(([value, text]) => h('option', { value }, text)));
  const faultSeconds = h('input', { type: 'number', min: 1, max: 86400, value: 30, style: 'width:80px', 'aria-label': 'Fault duration in seconds', id: 'fault-seconds' });
  const faultExtra = h('input', { type: 'number', min: 1, value: 2000, style: 'width:90px', 'aria-label': 'Delay in ms or status', id: 'fault-extra', title: 'delay (ms) or status (429/500)' });
  let etag = null;

  const loadTwin = async () => {
    try {
      const { data } = await api('GET', path);
      etag = data.etag;
      stateBadge.replaceChildren(badge(data.connectionState));
      const desiredNow = withoutMetadata(data.properties?.desired);
      if (document.activeElement !== tags) tags.value = JSON.stringify(data.tags || {}, null, 2);
      if (document.activeElement !== desired) desired.value = JSON.stringify(desiredNow, null, 2);
      twinView.replaceChildren(
        h('dl', { class: 'kv' },
          h('dt', {}, 'Status'), h('dd', {}, data.status),
          h('dt', {}, 'Last activity'), h('dd', {}, when(data.lastActivityTime)),
          h('dt', {}, 'Twin version'), h('dd', { id: 'twin-version' }, String(data.version)),
          h('dt', {}, 'Desired $version'), h('dd', {}, String(data.properties?.desired?.$version ?? '')),
          h('dt', {}, 'Reported $version'), h('dd', {}, String(data.properties?.reported?.$version ?? ''))),
        h('h2', { style: 'margin-top:12px' }, 'Reported properties'),
        json(withoutMetadata(data.properties?.reported), { id: 'reported' }),
        h('details', {}, h('summary', {}, 'Whole twin document with $metadata'), json(data)));
    } catch (error) {
      twinView.replaceChildren(h('p', { class: 'error' }, error.message));
    }
  };

  const loadHistory = async () => {
    try {
      const [calls, changes] = await Promise.all([
        api('GET', `/emulator/devices/${encodeURIComponent(id)}/methodCalls`),
        api('GET', `/emulator/devices/${encodeURIComponent(id)}/twinChanges`),
      ]);
      methodCalls.replaceChildren(calls.data.length === 0 ? h('p', { class: 'muted' }, 'No method calls yet.') :
        h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Method'), h('th', {}, 'Outcome'), h('th', { class: 'num' }, 'ms'))),
          h('tbody', {}, calls.data.map((call) => h('tr', {},
            h('td', {}, clock(call.time)),
            h('td', {}, call.methodName),
            h('td', {}, call.errorCode ? h('span', { class: 'badge bad' }, call.errorCode) : h('span', {}, h('span', { class: 'badge ok' }, String(call.status)), ' ', h('code', {}, JSON.stringify(call.response)))),
            h('td', { class: 'num' }, String(call.durationMs))))))));
      twinChanges.replaceChildren(changes.data.length === 0 ? h('p', { class: 'muted' }, 'No twin changes yet.') :
        h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Section'), h('th', {}, 'Patch'))),
          h('tbody', {}, changes.data.map((change) => h('tr', {},
            h('td', {}, clock(change.time)),
            h('td', {}, `${change.section}${change.replaced ? ' (replaced)' : ''}${change.version ? ` → $version ${change.version}` : ''}`),
            h('td', {}, h('code', {}, JSON.stringify(change.patch)))))))));
    } catch (error) {
      methodCalls.replaceChildren(h('p', { class: 'error' }, error.message));
    }
  };

  const loadModules = async () => {
    try {
      const { data } = await api('GET', `/devices/${encodeURIComponent(id)}/modules`);
      modules.replaceChildren(data.length === 0 ? h('p', { class: 'muted' }, 'No modules.') :
        h('table', {}, h('tbody', {}, data.map((module) => h('tr', {}, h('td', {}, module.moduleId), h('td', {}, badge(module.connectionState)))))));
    } catch (error) { modules.replaceChildren(h('p', { class: 'error' }, error.message)); }
  };

  const saveTwin = async () => {
    twinError.textContent = '';
    try {
      const body = { tags: parseJsonInput(tags.value, 'Tags'), properties: { desired: parseJsonInput(desired.value, 'Desired') } };
      await api('PUT', path, body, { 'If-Match': `"${etag}"` });
      toast('Twin saved');
      desired.blur();
      tags.blur();
      await loadTwin();
    } catch (error) { twinError.textContent = error.message; }
  };

  const invoke = async () => {
    methodResult.replaceChildren(h('p', { class: 'muted' }, 'Calling…'));
    try {
      const body = {
        methodName: methodName.value.trim(),
        payload: parseJsonInput(methodPayload.value || 'null', 'Payload'),
        responseTimeoutInSeconds: Number(methodTimeout.value),
        connectTimeoutInSeconds: 0,
      };
      const { data } = await api('POST', `${path}/methods`, body);
      methodResult.replaceChildren(h('p', {}, h('span', { class: 'badge ok', id: 'method-status' }, `status ${data.status}`)), json(data.payload, { id: 'method-response' }));
    } catch (error) {
      methodResult.replaceChildren(h('p', { class: 'error', id: 'method-error' }, error.message));
    }
  };

  const sendMessage = async () => {
    c2dResult.textContent = '';
    const properties = {};
    for (const pair of c2dProps.value.split(',').map((p) => p.trim()).filter(Boolean)) {
      const [key, ...rest] = pair.split('=');
      properties[key.trim()] = rest.join('=').trim();
    }
    try {
      await api('POST', `/emulator/devices/${encodeURIComponent(id)}/messages/devicebound`, { body: c2dBody.value, properties });
      toast('Message queued for the device');
    } catch (error) { c2dResult.textContent = error.message; }
  };

  const addFault = async () => {
    const kind = faultKind.value;
    const request = { kind, deviceId: id, durationSeconds: Number(faultSeconds.value) };
    if (kind === 'methodsLate' || kind === 'latency') request.delayMs = Number(faultExtra.value);
    if (kind === 'twinErrors') request.status = Number(faultExtra.value) === 429 ? 429 : 500;
    try {
      await api('POST', '/emulator/faults', request);
      toast(`${kind} fault on ${id}`);
    } catch (error) { toast(error.message, true); }
  };

  page.replaceChildren(
    h('p', {}, h('a', { href: '#/devices' }, '← Devices')),
    h('h1', {}, h('span', { id: 'device-title' }, id), stateBadge,
      h('button', { class: 'small', onclick: () => showConnectionString(id, connection) }, 'Connection string'),
      h('button', { class: 'small danger', onclick: () => deleteDevice(id, () => { location.hash = '#/devices'; }) }, 'Delete')),
    connection,
    h('div', { class: 'grid' },
      h('section', { class: 'panel' }, h('h2', {}, 'Twin'), twinView),
      h('section', { class: 'panel' },
        h('h2', {}, 'Edit tags and desired properties'),
        h('label', { for: 'tags-editor' }, 'Tags'), tags,
        h('label', { for: 'desired-editor', style: 'margin-top:8px' }, 'Desired properties'), desired,
        h('div', { class: 'row', style: 'margin-top:8px' }, h('button', { class: 'primary', id: 'save-twin', onclick: saveTwin }, 'Save twin'), h('span', { class: 'muted' }, 'replaces both sections (If-Match: the twin etag)')),
        twinError)),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' },
        h('h2', {}, 'Direct method'),
        h('div', { class: 'row' }, methodName, h('label', {}, 'timeout (s)'), methodTimeout),
        methodPayload,
        h('div', { class: 'row', style: 'margin-top:8px' }, h('button', { class: 'primary', id: 'invoke-method', onclick: invoke }, 'Invoke')),
        methodResult),
      h('section', { class: 'panel' },
        h('h2', {}, 'Cloud-to-device message'),
        c2dBody,
        h('div', { class: 'row', style: 'margin-top:8px' }, c2dProps, h('button', { id: 'send-c2d', onclick: sendMessage }, 'Send')),
        c2dResult)),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' }, h('h2', {}, 'Live telemetry'), telemetry),
      h('section', { class: 'panel' }, h('h2', {}, 'Faults on this device'),
        faultList((fault) => fault.deviceId === id),
        h('div', { class: 'row' }, faultKind, h('label', {}, 'for (s)'), faultSeconds, h('label', {}, 'delay ms / status'), faultExtra,
          h('button', { id: 'add-fault', onclick: addFault }, 'Add fault')))),
    h('div', { class: 'grid' },
      h('section', { class: 'panel' }, h('h2', {}, 'Recent method calls'), methodCalls),
      h('section', { class: 'panel' }, h('h2', {}, 'Recent twin changes'), twinChanges)),
    h('section', { class: 'panel' }, h('h2', {}, 'Modules'), modules),
  );

  let messages = 0;
  on('telemetry', (message) => {
    if (messages === 0) telemetry.replaceChildren();
    messages += 1;
    const properties = Object.entries(message.properties || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    let body = message.body;
    try { body = JSON.parse(message.body); } catch { /* shown as text */ }
    const item = h('div', { class: 'item' },
      h('div', { class: 'muted' }, `${clock(message.enqueuedTime)} · #${message.sequenceNumber}${properties ? ` · ${properties}` : ''}`),
      message.body === null ? h('code', {}, `(binary) ${message.bodyBase64}`) : json(body));
    telemetry.prepend(item);
    while (telemetry.children.length > 50) telemetry.lastChild.remove();
  });
  on('device', () => { loadTwin(); loadHistory(); });
  on('presence', (change) => {
    if (change.deviceId === id && !change.moduleId) stateBadge.replaceChildren(badge(change.connectionState));
    if (change.deviceId === id && change.moduleId) loadModules();
  });
  await Promise.all([loadTwin(), loadHistory(), loadModules()]);
}

function progress(job) {
  const total = job.deviceJobStatistics?.deviceCount || 0;
  const done = job.deviceJobStatistics?.succeededCount || 0;
  const failed = job.deviceJobStatistics?.failedCount || 0;
  const percent = (n) => (total ? (100 * n) / total : job.status === 'completed' ? 100 : 0);
  return h('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': Math.round(percent(done + failed)), 'data-job': job.jobId, title: `${done} succeeded, ${failed} failed of ${total}` },
    h('div', { class: 'done', style: `width:${percent(done)}%` }),
    h('div', { class: 'failed', style: `width:${percent(failed)}%` }));
}

function jobBadge(status) {
  const kind = { completed: 'ok', failed: 'bad', cancelled: 'warn', running: 'ok' }[status] || 'idle';
  return h('span', { class: `badge ${kind}`, 'data-status': status }, status);
}

async function jobs(page) {
  const body = h('tbody', { id: 'job-rows' });
  const records = h('div', { id: 'job-records' }, h('p', { class: 'muted' }, 'Choose a job to see its device records.'));
  const error = h('p', { class: 'error' });
  const type = h('select', { id: 'job-type', 'aria-label': 'Job type' }, h('option', { value: 'method' }, 'Direct method'), h('option', { value: 'twin' }, 'Twin update'));
  const jobId = h('input', { id: 'job-id', value: `job-${Date.now()}`, class: 'grow', 'aria-label': 'Job id' });
  const condition = h('input', { id: 'job-condition', value: "deviceId IN ['myDeviceId']", class: 'grow', 'aria-label': 'Query condition' });
  const method = h('input', { id: 'job-method', value: 'lockDoor', 'aria-label': 'Method name' });
  const payload = h('textarea', { id: 'job-payload', spellcheck: 'false', 'aria-label': 'Payload or desired patch' }, '{}');
  let selected = null;

  const render = () => {
    body.replaceChildren(...(state.jobs.length === 0 ? [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No jobs yet.'))] : state.jobs.map((job) => {
      const stats = job.deviceJobStatistics || {};
      return h('tr', { 'data-job': job.jobId },
        h('td', {}, h('button', { class: 'link', onclick: () => showRecords(job.jobId) }, job.jobId)),
        h('td', { class: 'hide-narrow' }, job.type),
        h('td', {}, jobBadge(job.status)),
        h('td', {}, progress(job)),
        h('td', { class: 'num' }, `${stats.succeededCount || 0} ✓ ${stats.failedCount || 0} ✗ ${stats.pendingCount || 0} … / ${stats.deviceCount || 0}`),
        h('td', { class: 'num' }, ['queued', 'scheduled', 'running'].includes(job.status)
          ? h('button', { class: 'small danger', onclick: () => cancel(job.jobId) }, 'Cancel') : ''));
    })));
  };
  const showRecords = async (id) => {
    selected = id;
    try {
      const result = await query(`SELECT * FROM devices.jobs WHERE devices.jobs.jobId = ${quote(id)}`, null, 100);
      records.replaceChildren(h('h2', {}, `Devices of ${id}`),
        result.items.length === 0 ? h('p', { class: 'muted' }, 'No device records yet.') :
          h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Status'), h('th', {}, 'Outcome'))),
            h('tbody', {}, result.items.map((record) => h('tr', {},
              h('td', {}, h('a', { href: `#/devices/${encodeURIComponent(record.deviceId)}` }, record.deviceId)),
              h('td', {}, jobBadge(record.status)),
              h('td', {}, record.error ? h('span', { class: 'badge bad' }, `${record.error.code}`) : record.outcome ? h('code', {}, JSON.stringify(record.outcome)) : '')))))));
    } catch (e) { records.replaceChildren(h('p', { class: 'error' }, e.message)); }
  };
  const cancel = async (id) => {
    try { await api('POST', `/jobs/v2/${encodeURIComponent(id)}/cancel`); toast(`Cancelled ${id}`); } catch (e) { toast(e.message, true); }
  };
  const schedule = async () => {
    error.textContent = '';
    try {
      const id = jobId.value.trim();
      const parsed = parseJsonInput(payload.value || 'null', type.value === 'method' ? 'Payload' : 'Desired patch');
      const request = {
        jobId: id,
        queryCondition: condition.value,
        startTime: new Date().toISOString(),
        maxExecutionTimeInSeconds: 3600,
      };
      if (type.value === 'method') {
        request.type = 'scheduleDeviceMethod';
        request.cloudToDeviceMethod = { methodName: method.value.trim(), payload: parsed, responseTimeoutInSeconds: 30 };
      } else {
        request.type = 'scheduleUpdateTwin';
        request.updateTwin = { etag: '*', properties: { desired: parsed } };
      }
      await api('PUT', `/jobs/v2/${encodeURIComponent(id)}`, request);
      toast(`Scheduled ${id}`);
      jobId.value = `job-${Date.now()}`;
      showRecords(id);
    } catch (e) { error.textContent = e.message; }
  };
  type.addEventListener('change', () => { method.disabled = type.value !== 'method'; payload.value = type.value === 'method' ? '{}' : '{"building":"43"}'; });

  page.replaceChildren(
    h('h1', {}, 'Jobs'),
    h('section', { class: 'panel' },
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', { class: 'hide-narrow' }, 'Type'), h('th', {}, 'Status'), h('th', {}, 'Progress'), h('th', { class: 'num' }, 'Devices'), h('th', {}))),
        body))),
    h('section', { class: 'panel' }, records),
    h('section', { class: 'panel' },
      h('h2', {}, 'Schedule a job'),
      h('div', { class: 'row' }, type, jobId),
      h('div', { class: 'row' }, h('label', {}, 'Devices where'), condition),
      h('div', { class: 'row' }, h('label', {}, 'Method'), method),
      h('label', {}, 'Payload (method) or desired patch (twin)'), payload,
      h('div', { class: 'row', style: 'margin-top:8px' }, h('button', { class: 'primary', id: 'schedule-job', onclick: schedule }, 'Schedule now')),
      error),
  );
  render();
  on('jobs', () => { render(); if (selected) showRecords(selected); });
}

async function queryPage(page) {
  const text = h('textarea', { id: 'query-text', spellcheck: 'false', 'aria-label': 'Query' }, 'SELECT * FROM devices');
  const results = h('div', { id: 'query-results', class: 'result' });
  const error = h('p', { class: 'error', id: 'query-error' });
  const more = h('button', { disabled: true, id: 'query-more' }, 'Next page →');
  let continuation = null;
  let count = 0;
  const run = async (next) => {
    error.textContent = '';
    try {
      const result = await query(text.value, next ? continuation : null, 100);
      continuation = result.continuation;
      if (!next) { results.replaceChildren(); count = 0; }
      count += result.items.length;
      results.append(json(result.items));
      more.disabled = !continuation;
      more.textContent = continuation ? 'Next page →' : `${count} result${count === 1 ? '' : 's'}`;
    } catch (e) {
      results.replaceChildren();
      error.textContent = e.message;
      const where = /Line (\d+):(\d+)/.exec(e.message);
      if (where) showPosition(Number(where[1]), Number(where[2]));
    }
  };
  // Points at a syntax error: the line of the query with a caret under the column, and the cursor put there.
  const showPosition = (line, column) => {
    const lines = text.value.split('\n');
    const source = lines[line - 1] ?? '';
    results.replaceChildren(h('pre', { class: 'json', id: 'query-position' }, `line ${line}, column ${column}\n${source}\n${' '.repeat(Math.max(0, column - 1))}^`));
    const offset = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0) + column - 1;
    text.focus();
    text.setSelectionRange(offset, Math.min(text.value.length, offset + 1));
  };
  more.onclick = () => run(true);
  text.addEventListener('keydown', (event) => { if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) run(false); });
  page.replaceChildren(
    h('h1', {}, 'Query'),
    h('section', { class: 'panel' },
      h('p', { class: 'muted' }, 'The hub\'s query language over devices, devices.modules and devices.jobs. Ctrl+Enter runs it.'),
      text,
      h('div', { class: 'row', style: 'margin-top:8px' }, h('button', { class: 'primary', id: 'run-query', onclick: () => run(false) }, 'Run'), more),
      error,
      results),
  );
}

// ---------- routing ----------

async function route() {
  for (const undo of state.cleanup.splice(0)) undo();
  const hash = location.hash.replace(/^#/, '') || '/';
  const parts = hash.split('/').filter(Boolean).map(decodeURIComponent);
  const page = document.getElementById('page');
  const name = parts[0] || 'overview';
  for (const link of document.querySelectorAll('.top nav a')) link.classList.toggle('active', link.dataset.page === name);
  if (name !== 'devices' || parts.length < 2) connectLive(null);
  try {
    if (name === 'devices' && parts[1]) await device(page, parts[1]);
    else if (name === 'devices') await devices(page);
    else if (name === 'jobs') await jobs(page);
    else if (name === 'query') await queryPage(page);
    else await overview(page);
  } catch (error) {
    page.replaceChildren(h('p', { class: 'error' }, error.message));
  }
}

async function start() {
  try {
    const { data } = await api('GET', '/dashboard/info');
    state.info = data;
    document.getElementById('host').textContent = data.hostName;
    document.title = `${data.hostName} · iothub-emulator`;
  } catch (error) {
    document.getElementById('page').replaceChildren(h('p', { class: 'error' }, error.message));
    return;
  }
  window.addEventListener('hashchange', route);
  await route();
}

start();
