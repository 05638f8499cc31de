'use strict';
// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core (pinned in
// package-lock.json; it downloads no browser). A user signs in with the link the emulator printed, watches a
// Node SDK device (azure-iot-device + Mqtt) turn Connected live, edits its desired properties and sees the
// device get them, invokes a method and reads the answer, watches a job's progress bar reach 100 %, and runs a
// query with a syntax error and sees where it is. Also refused: the page without the token, a wrong token, a
// device connection string, a forged cookie, and a cross-site page trying to act with the user's cookie.
// Any console error on the dashboard fails the run. Screenshots of each page go to SCREENSHOT_DIR.
//
// Needs IOTHUB_CONNECTION_STRING (owner), IOTHUB_DASHBOARD_URL (the banner's sign-in link),
// NODE_EXTRA_CA_CERTS=<ca.pem>; CHROMIUM (default /usr/bin/chromium), SCREENSHOT_DIR (default ./screenshots).

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { chromium } = require('playwright-core');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const harness = require('./harness');
const { check } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const signInUrl = process.env.IOTHUB_DASHBOARD_URL;
if (!signInUrl) {
  console.error('IOTHUB_DASHBOARD_URL is not set: give the sign-in link the emulator printed.');
  process.exit(2);
}
const origin = new URL(signInUrl).origin;
const screenshots = process.env.SCREENSHOT_DIR || path.join(__dirname, 'screenshots');
const registry = Registry.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(4).toString('hex');
const created = [];
const clients = [];
const createDevice = harness.deviceMaker(registry, hostName, 'dash', suffix, created);
const scenario = (name, body) => harness.scenario(name, body, 60000);

// Console errors and uncaught exceptions of dashboard pages (the cross-site page's own errors are expected).
const consoleErrors = [];
// Chromium logs every 4xx answer to a fetch as a console error. A scenario that provokes one on purpose (a
// query with a syntax error gets 400) names the request here while it runs; nothing else is forgiven.
const provoked = new Set();
// Pages opened in the watched context to play another site (their refused requests log 401s, the point of the
// test); their messages are never counted, however late they arrive.
const unwatched = new WeakSet();

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

// A browser context for the emulator's self-signed chain (the CA is trusted by the SDKs through
// NODE_EXTRA_CA_CERTS; Chromium would need an NSS database, which adds nothing to what this test checks).
// Only the user's own context is watched for console errors: the refusals tested in others log their 401s.
async function newContext(browser, { watched = false } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  if (watched) context.on('page', watchConsole);
  return context;
}

function watchConsole(page) {
  page.on('console', (message) => {
    if (unwatched.has(page) || message.type() !== 'error' || !page.url().startsWith(origin)) return;
    const where = message.location().url || '';
    if ([...provoked].some((p) => where.includes(p)) && /status of 400/.test(message.text())) return;
    consoleErrors.push(`${page.url()}: ${message.text()} (${where})`);
  });
  page.on('pageerror', (error) => {
    if (!unwatched.has(page) && page.url().startsWith(origin)) consoleErrors.push(`${page.url()}: ${error.message}`);
  });
}

async function shot(page, name) {
  fs.mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}

async function status(page, url, init = {}) {
  return page.evaluate(async ([u, i]) => (await fetch(u, i)).status, [url, init]);
}

/** Serves a page on another site (127.0.0.1, not localhost) that tries to act on the hub with the cookie. */
function crossSiteServer() {
  const page = `<!doctype html><html><body><form id="f" method="post" action="${origin}/emulator/reset"></form><script>
    fetch('${origin}/emulator/faults', { method: 'POST', mode: 'no-cors', credentials: 'include',
      headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ kind: 'outage', durationSeconds: 60 }) })
      .catch(() => {}).finally(() => { document.title = 'tried'; });
    fetch('${origin}/devices?api-version=2021-04-12', { credentials: 'include', headers: { 'X-IotHub-Dashboard': '1' } })
      .then((r) => { document.body.dataset.read = String(r.status); }, () => { document.body.dataset.read = 'blocked'; });
  </script></body></html>`;
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html' });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const browser = await launch();
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const device = await createDevice('lock');
  const stranger = await newContext(browser);
  const outside = await stranger.newPage();
  const context = await newContext(browser, { watched: true });
  const page = await context.newPage();

  await scenario('without-the-token-the-sign-in-page-and-401s', async () => {
    const page = outside;
    await page.goto(`${origin}/`);
    await page.waitForSelector('#credential');
    check(await status(page, '/dashboard/info', { headers: { 'X-IotHub-Dashboard': '1' } }) === 401, 'info without a session');
    check(await status(page, '/devices?api-version=2021-04-12', { headers: { 'X-IotHub-Dashboard': '1' } }) === 401, 'REST without a session');
    check(await status(page, '/dashboard/events') === 401, 'live feed without a session');
    const wrong = await page.goto(`${origin}/?token=${'0'.repeat(64)}`);
    check(wrong.status() === 401, `a wrong token: ${wrong.status()}`);
    await shot(page, 'sign-in');
  });

  await scenario('a-device-connection-string-cannot-sign-in', async () => {
    const page = outside;
    await page.goto(`${origin}/`);
    await page.fill('#credential', device.connectionString);
    const [answer] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    check(answer.status() === 401, `device credentials: ${answer.status()}`);
    check((await page.textContent('#signin-message')).includes('Device credentials cannot sign in'), 'says why');
    const token = await page.evaluate(async () => (await fetch('/emulator/faults')).status);
    check(token === 401, 'the controls without credentials');
    await stranger.close();
  });

  await scenario('a-forged-cookie-is-refused', async () => {
    const forged = await newContext(browser);
    await forged.addCookies([{ name: 'iothub-dashboard', value: 'f'.repeat(64), url: origin, secure: true, httpOnly: true, sameSite: 'Strict' }]);
    const other = await forged.newPage();
    await other.goto(`${origin}/`);
    await other.waitForSelector('#credential');
    check(await status(other, '/dashboard/info', { headers: { 'X-IotHub-Dashboard': '1' } }) === 401, 'info with a forged cookie');
    await forged.close();
  });

  await scenario('sign-in-link-then-no-secret-in-the-url', async () => {
    await page.goto(signInUrl);
    await page.waitForSelector('#count-devices');
    check(!page.url().includes('token'), `the token left the address bar: ${page.url()}`);
    const cookies = await context.cookies(origin);
    const session = cookies.find((c) => c.name === 'iothub-dashboard');
    check(session && session.httpOnly && session.secure && session.sameSite === 'Strict', `cookie flags ${JSON.stringify(session)}`);
    check(!(await page.evaluate(() => document.cookie)).includes('iothub-dashboard'), 'the page script cannot read the cookie');
    await page.waitForFunction(() => document.querySelector('#count-devices').textContent !== '–');
    await shot(page, 'overview');
  });

  await scenario('a-cross-site-page-cannot-act-with-the-cookie', async () => {
    const server = await crossSiteServer();
    try {
      const evil = await context.newPage();
      unwatched.add(evil);
      await evil.goto(`http://127.0.0.1:${server.address().port}/`);
      await evil.waitForFunction(() => document.title === 'tried' && document.body.dataset.read, null, { timeout: 10000 });
      const read = await evil.evaluate(() => document.body.dataset.read);
      check(read === 'blocked', `a cross-site read got through: ${read}`);
      await evil.evaluate(() => document.getElementById('f').submit());
      await evil.waitForLoadState();
      await evil.close();
      const faults = await page.evaluate(async () => (await fetch('/emulator/faults', { headers: { 'X-IotHub-Dashboard': '1' } })).json());
      check(Array.isArray(faults) && faults.length === 0, `a cross-site request put a fault in force: ${JSON.stringify(faults)}`);
      const devices = await page.evaluate(async () => (await fetch('/devices?api-version=2021-04-12', { headers: { 'X-IotHub-Dashboard': '1' } })).json());
      check(devices.some((d) => d.deviceId === device.deviceId), 'a cross-site form reset the hub');
    } finally {
      server.close();
    }
  });

  const fleet = Number(process.env.IOTHUB_DASHBOARD_FLEET || 0);
  if (fleet > 0) {
    await scenario(`${fleet}-devices-stay-responsive`, async () => {
      const timed = async (what, action) => {
        const started = Date.now();
        await action();
        const ms = Date.now() - started;
        console.log(`  ${what}: ${ms} ms`);
        check(ms < 5000, `${what} took ${ms} ms`);
      };
      await page.goto(`${origin}/#/`);
      await page.waitForFunction((n) => Number(document.querySelector('#count-devices').textContent.replace(/\D/g, '')) >= n, fleet);
      await timed('devices page, first 50 rows', async () => {
        await page.goto(`${origin}/#/devices`);
        await page.waitForFunction(() => document.querySelectorAll('#device-rows tr[data-device]').length === 50);
      });
      await timed('next page', async () => {
        const first = await page.getAttribute('#device-rows tr[data-device]', 'data-device');
        await page.click('text=Next →');
        await page.waitForFunction((f) => document.querySelector('#device-rows tr[data-device]').dataset.device !== f, first);
      });
      const last = `fleet-${String(fleet - 1).padStart(5, '0')}`;
      await timed(`search for ${last}`, async () => {
        await page.fill('#device-search', last);
        await page.waitForSelector(`tr[data-device="${last}"]`);
      });
      await page.fill('#device-search', '');
      await page.waitForFunction(() => document.querySelectorAll('#device-rows tr[data-device]').length === 50);
    });
  }

  let client;
  const desiredSeen = [];
  await scenario('a-node-sdk-device-turns-connected-live', async () => {
    await page.goto(`${origin}/#/devices`);
    await page.fill('#device-search', device.deviceId);
    await page.waitForFunction(() => document.querySelectorAll('#device-rows tr[data-device]').length === 1);
    const row = `tr[data-device="${device.deviceId}"]`;
    await page.waitForSelector(`${row} [data-state="Disconnected"]`);
    client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
    clients.push(client);
    client.onDeviceMethod('lockDoor', (request, response) => {
      response.send(200, { locked: true, door: request.payload && request.payload.door }, () => {});
    });
    await client.open();
    const twin = await client.getTwin();
    twin.on('properties.desired', (patch) => desiredSeen.push(patch));
    await page.waitForSelector(`${row} [data-state="Connected"]`, { timeout: 10000 });
    await shot(page, 'devices');
  });

  await scenario('desired-properties-edited-on-the-page-reach-the-device', async () => {
    await page.goto(`${origin}/#/devices/${encodeURIComponent(device.deviceId)}`);
    await page.waitForSelector('#device-state [data-state="Connected"]');
    await page.fill('#desired-editor', JSON.stringify({ building: '43', floor: 3 }, null, 2));
    await page.click('#save-twin');
    await harness.withTimeout((async () => {
      while (!desiredSeen.some((p) => p.floor === 3 && p.building === '43')) await new Promise((r) => setTimeout(r, 100));
    })(), 10000, 'the device got the desired change');
    check((await page.textContent('#twin-error')) === '', 'no error shown');
  });

  await scenario('a-method-invoked-from-the-page-is-answered', async () => {
    await page.fill('#method-name', 'lockDoor');
    await page.fill('#method-payload', '{"door":"front"}');
    await page.click('#invoke-method');
    await page.waitForSelector('#method-status');
    check((await page.textContent('#method-status')) === 'status 200', 'status 200');
    const answer = await page.textContent('#method-response');
    check(answer.includes('"locked"') && answer.includes('"front"'), `answer ${answer}`);
    await page.waitForFunction(() => document.querySelector('#method-calls').textContent.includes('lockDoor'));
  });

  await scenario('telemetry-shows-up-live', async () => {
    await client.sendEvent(new Message(JSON.stringify({ temperature: 21.5 })));
    await page.waitForFunction(() => document.querySelector('#telemetry').textContent.includes('21.5'), null, { timeout: 10000 });
    await shot(page, 'device');
  });

  await scenario('a-job-progress-bar-reaches-100', async () => {
    await page.goto(`${origin}/#/jobs`);
    const jobId = `dash-job-${suffix}`;
    await page.fill('#job-id', jobId);
    await page.fill('#job-condition', `deviceId IN ['${device.deviceId}']`);
    await page.fill('#job-method', 'lockDoor');
    await page.fill('#job-payload', '{"door":"back"}');
    await page.click('#schedule-job');
    await page.waitForSelector(`tr[data-job="${jobId}"] [role=progressbar][aria-valuenow="100"]`, { timeout: 20000 });
    await page.waitForSelector(`tr[data-job="${jobId}"] [data-status="completed"]`, { timeout: 10000 });
    await page.waitForSelector('#job-records [data-status="completed"]', { timeout: 10000 });
    await shot(page, 'jobs');
  });

  await scenario('a-query-syntax-error-shows-where', async () => {
    await page.goto(`${origin}/#/query`);
    await page.fill('#query-text', 'SELECT * FROM devices WHERE');
    provoked.add('/devices/query');
    await page.click('#run-query');
    await page.waitForSelector('#query-position');
    await page.waitForTimeout(200);
    provoked.delete('/devices/query');
    const error = await page.textContent('#query-error');
    check(/Line 1:\d+/.test(error), `error without a position: ${error}`);
    check((await page.textContent('#query-position')).startsWith('line 1, column'), 'the caret line');
    await shot(page, 'query');
    await page.fill('#query-text', `SELECT deviceId FROM devices WHERE deviceId = '${device.deviceId}'`);
    await page.click('#run-query');
    await page.waitForFunction((id) => document.querySelector('#query-results').textContent.includes(id), device.deviceId);
  });

  await scenario('narrow-window-still-usable', async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${origin}/#/devices/${encodeURIComponent(device.deviceId)}`);
    await page.waitForSelector('#device-state [data-state="Connected"]');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `the page is ${overflow} px wider than the window`);
    await shot(page, 'device-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await scenario('no-console-errors', async () => {
    check(consoleErrors.length === 0, consoleErrors.join(' | '));
  });
  await context.close();
}

harness.run(main, { seconds: 600, clients, registry, created });
