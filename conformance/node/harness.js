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

module.exports = { ownerConnection, check, scenario, withTimeout, fail, finish };
