'use strict';
// What every Node conformance script shares: `check`, `scenario` (one "PASS <name>" or "FAIL <name>: <why>"
// line each, under a time limit so a hang is a failure, not a stuck run) and `finish` (the summary line and
// the exit code: 0 only when nothing failed).

const results = [];

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

module.exports = { check, scenario, withTimeout, fail, finish };
