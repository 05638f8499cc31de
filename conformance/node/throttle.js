'use strict';
// Throttling conformance with Microsoft's unmodified `azure-iothub` (pinned in package-lock.json): against an
// emulator started with `--throttle s1`, calls past one S1 unit's quota come back as the SDK's own
// `ThrottlingError`, so a user's back-off code sees exactly what a throttled hub gives it.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner) and IOTHUB_THROTTLE_TIER=s1 (the tier the emulator was started with;
// this script spends a whole minute's quota, so it will not run without being told the hub is throttled).
// Prints "PASS <name>" / "FAIL <name>: <why>", then "N passed, M failed"; exits 0 only when nothing failed.

const { Registry } = require('azure-iothub');
const { check, scenario, finish } = require('./harness');

const connectionString = process.env.IOTHUB_CONNECTION_STRING;
if (!connectionString || (process.env.IOTHUB_THROTTLE_TIER || '').toLowerCase() !== 's1') {
  console.error('needs IOTHUB_CONNECTION_STRING and IOTHUB_THROTTLE_TIER=s1 (an emulator started with --throttle s1)');
  process.exit(2);
}

const registry = Registry.fromConnectionString(connectionString);
// Calls `operation` until it is refused (at most `limit` times); returns how many succeeded and the refusal.
async function untilRefused(operation, limit) {
  for (let done = 0; done < limit; done++) {
    try {
      await operation();
    } catch (err) {
      return { succeeded: done, err };
    }
  }
  return { succeeded: limit, err: undefined };
}

function checkThrottled(err, what) {
  check(err, `${what} was never throttled`);
  check(err.name === 'ThrottlingError', `expected ThrottlingError, got ${err.name}: ${err.message}`);
  check(err.response && err.response.statusCode === 429, `status ${err.response && err.response.statusCode}`);
  const code = err.response.headers['iothub-errorcode'];
  check(code === 'ThrottlingException', `iothub-errorcode ${code}`);
  const body = JSON.parse(err.responseBody || '{}');
  check(/ThrottlingException/.test(body.Message || ''), `Message ${body.Message}`);
}

async function main() {
  const deviceId = 'throttle-node';
  await registry.create({ deviceId });

  await scenario('registry-past-100-a-minute-is-ThrottlingError', async () => {
    // One S1 unit: 100 identity registry operations a minute (the create above was one of them).
    const { succeeded, err } = await untilRefused(() => registry.get(deviceId), 150);
    checkThrottled(err, 'registry.get');
    check(succeeded >= 95 && succeeded <= 105, `${succeeded} gets passed before the 429, expected about 99`);
  });

  await scenario('query-past-20-a-minute-is-ThrottlingError', async () => {
    const query = () => registry.createQuery('SELECT * FROM devices', 10).nextAsTwin();
    const { succeeded, err } = await untilRefused(query, 40);
    checkThrottled(err, 'a query');
    check(succeeded >= 19 && succeeded <= 21, `${succeeded} queries passed before the 429, expected 20`);
  });

  await scenario('twins-are-a-separate-quota', async () => {
    // Registry operations are spent, twin reads (100 a second) are not.
    const { responseBody } = await registry.getTwin(deviceId);
    check(responseBody.deviceId === deviceId, `twin of ${responseBody.deviceId}`);
  });

  finish();
}

main().catch((err) => {
  console.log(`FAIL throttle: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
