'use strict';
// Bulk identity operations with Microsoft's unmodified `azure-iothub` (pinned in package-lock.json):
// `Registry.addDevices`, `updateDevices` (forced and by etag) and `removeDevices` (forced and by etag), each one
// `POST /devices` with up to 100 items, answered item by item.
//
// Runs against whatever hub IOTHUB_CONNECTION_STRING names: the emulator (trust its CA with
// NODE_EXTRA_CA_CERTS=<ca.pem>) or a real Azure IoT Hub. Each scenario prints "PASS <name>" or "FAIL <name>: <why>";
// the last line is "N passed, M failed". The devices it creates have random ids and are deleted at the end.

const crypto = require('crypto');
const { Registry } = require('azure-iothub');
const { ownerConnection, check, scenario, finish } = require('./harness');

const { connectionString } = ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(4).toString('hex');
const ids = [0, 1, 2].map((i) => `conf-bulk-${i}-${suffix}`);

async function main() {
  await scenario('add-devices', async () => {
    const { responseBody } = await registry.addDevices(ids.map((deviceId) => ({ deviceId })));
    check(responseBody.isSuccessful === true, `isSuccessful ${JSON.stringify(responseBody)}`);
    for (const id of ids) {
      const { responseBody: device } = await registry.get(id);
      check(device.authentication.symmetricKey.primaryKey.length === 44, `${id} has generated keys`);
    }
  });

  await scenario('add-devices-reports-the-one-that-exists', async () => {
    const fresh = `conf-bulk-3-${suffix}`;
    ids.push(fresh);
    const { responseBody } = await registry.addDevices([{ deviceId: ids[0] }, { deviceId: fresh }]);
    check(responseBody.isSuccessful === false, 'not all succeeded');
    check(responseBody.errors.length === 1 && responseBody.errors[0].deviceId === ids[0], JSON.stringify(responseBody.errors));
    check(Number(responseBody.errors[0].errorCode) === 409001, `errorCode ${responseBody.errors[0].errorCode}`);
    await registry.get(fresh);
  });

  await scenario('update-devices-forced-and-by-etag', async () => {
    const { responseBody: first } = await registry.get(ids[0]);
    const { responseBody: forced } = await registry.updateDevices([{ deviceId: ids[1], status: 'disabled' }], true);
    check(forced.isSuccessful === true, JSON.stringify(forced));
    const stale = Object.assign({}, first, { status: 'disabled', etag: 'MQ==' });
    const { responseBody: byEtag } = await registry.updateDevices([Object.assign({}, first, { status: 'disabled' }), ], false);
    check(byEtag.isSuccessful === true, `with the current etag: ${JSON.stringify(byEtag)}`);
    const { responseBody: mismatch } = await registry.updateDevices([stale], false);
    check(mismatch.isSuccessful === false && Number(mismatch.errors[0].errorCode) === 412001, JSON.stringify(mismatch));
    const { responseBody: disabled } = await registry.get(ids[1]);
    check(disabled.status === 'disabled', `status ${disabled.status}`);
  });

  await scenario('remove-devices-forced-and-by-etag', async () => {
    const { responseBody: current } = await registry.get(ids[2]);
    const { responseBody: stale } = await registry.removeDevices([Object.assign({}, current, { etag: 'MQ==' })], false);
    check(stale.isSuccessful === false && Number(stale.errors[0].errorCode) === 412001, JSON.stringify(stale));
    const { responseBody: removed } = await registry.removeDevices([current], false);
    check(removed.isSuccessful === true, JSON.stringify(removed));
    const { responseBody: forced } = await registry.removeDevices(ids.filter((id) => id !== ids[2]).map((deviceId) => ({ deviceId })), true);
    check(forced.isSuccessful === true, JSON.stringify(forced));
    const { responseBody: list } = await registry.list();
    check(!list.some((d) => ids.includes(d.deviceId)), 'all gone');
  });

  finish();
}

main().catch(async (err) => {
  console.log(`FAIL bulk-suite: ${err.message}`);
  try {
    await registry.removeDevices(ids.map((deviceId) => ({ deviceId })), true);
  } catch (_) {
    // best effort
  }
  finish();
});
