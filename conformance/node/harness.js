'use strict';
// What every Node conformance script shares: `check`, `scenario` (one "PASS <name>" or "FAIL <name>: <why>"
// line each, under a time limit so a hang is a failure, not a stuck run) and `finish` (the summary line and
// the exit code: 0 only when nothing failed).

const results = [];

// The hub owner connection string from IOTHUB_CONNECTION_STRING (exit 2 when it is not set) and its host name.
function ownerConnection() {
  const connectionString = process.env.IOTHUB_CONNECTION_STRING;
  if (!connectionString) {
    console.error('IOTHUB_CONNECTION_STRING is not set: give the hub owner connection string (the emulator prints it).');
    process.exit(2);
  }
  return { connectionString, hostName: /HostName=([^;]+)/.exec(connectionString)[1] };
}

/** Resolves after `ms` milliseconds. */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function scenario(name, body, timeoutMs = 60000) {
  try {
    await withTimeout(Promise.resolve().then(body), timeoutMs, name);
    results.push(true);
    console.log(`PASS ${name}`);
  } catch (err) {
    results.push(false);
    console.log(`FAIL ${name}: ${err && err.message ? err.message : err}`);
  }
}

// Records a failure outside any scenario (an unexpected error in the script itself).
function fail(name, err) {
  results.push(false);
  console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
}

// Prints "N passed, M failed" and exits.
function finish() {
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

// A `createDevice(label)` that registers `<prefix>-<label>-<suffix>`, remembers it in `created` for `run` to
// delete, and returns its id and connection string.
function deviceMaker(registry, hostName, prefix, suffix, created) {
  return async function createDevice(label) {
    const deviceId = `${prefix}-${label}-${suffix}`;
    const { responseBody } = await registry.create({ deviceId });
    created.push(deviceId);
    const key = responseBody.authentication.symmetricKey.primaryKey;
    return { deviceId, connectionString: `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}` };
  };
}

// Runs `main` under an overall time limit, then closes `clients` (in order, as filled by `main`) and the
// `service` client if given, deletes the `created` devices and finishes: the ending every device script shares.
function run(main, { seconds, clients, service, registry, created }) {
  const overall = setTimeout(() => {
    console.log(`FAIL timeout: the scenarios did not finish within ${seconds} s`);
    process.exit(1);
  }, seconds * 1000);
  main()
    .catch((err) => fail('unexpected', err))
    .finally(async () => {
      for (const c of clients) {
        try { await c.close(); } catch (_) { /* already closed */ }
      }
      if (service) {
        try { await service.close(); } catch (_) { /* already closed */ }
      }
      for (const id of created) {
        try { await registry.delete(id); } catch (_) { /* already gone */ }
      }
      clearTimeout(overall);
      finish();
    });
}

// A caller of the emulator's test-suite controls (/emulator/...), signed as the service SDK signs itself with the
// owner connection string: `await emulator('POST', '/emulator/faults', {...})` gives the parsed answer.
function emulatorControls(connectionString) {
  const { ConnectionString, SharedAccessSignature } = require('azure-iothub');
  const { HostName: hostName, SharedAccessKeyName: keyName, SharedAccessKey: key } = ConnectionString.parse(connectionString);
  return async function emulator(method, path, body) {
    const token = SharedAccessSignature.create(hostName, keyName, key, Math.ceil(Date.now() / 1000) + 3600).toString();
    const response = await fetch(`https://${hostName}${path}`, {
      method,
      headers: { Authorization: token, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
}

module.exports = { emulatorControls, ownerConnection, check, scenario, sleep, withTimeout, fail, finish, deviceMaker, run };
