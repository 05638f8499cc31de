'use strict';
// Registry conformance with Microsoft's unmodified `azure-iothub` (pinned in package-lock.json).
//
// Runs against whatever hub IOTHUB_CONNECTION_STRING names: the emulator (trust its CA with
// NODE_EXTRA_CA_CERTS=<ca.pem>; the SDK always dials port 443) or a real Azure IoT Hub. Each scenario prints
// "PASS <name>" or "FAIL <name>: <why>"; the last line is "N passed, M failed"; the exit code is 0 only when
// nothing failed. The device it creates has a random id and is deleted at the end.

const crypto = require('crypto');
const { Registry } = require('azure-iothub');
const { ownerConnection, check, scenario, fail, finish } = require('./harness');

const { connectionString } = ownerConnection();

const extraDevices = [];
const deviceId = `conf-node-${crypto.randomBytes(6).toString('hex')}`;
const registry = Registry.fromConnectionString(connectionString);

async function expectRejection(promise, errorName) {
  try {
    await promise;
  } catch (err) {
    check(err.name === errorName, `expected ${errorName}, got ${err.name}: ${err.message}`);
    return;
  }
  throw new Error(`expected ${errorName}, but the call succeeded`);
}

async function main() {
  let primaryKey;

  await scenario('create', async () => {
    const { responseBody, httpResponse } = await registry.create({ deviceId });
    check(httpResponse.statusCode === 200, `status ${httpResponse.statusCode}, expected 200`);
    check(responseBody.deviceId === deviceId, `deviceId ${responseBody.deviceId}`);
    primaryKey = responseBody.authentication.symmetricKey.primaryKey;
    check(typeof primaryKey === 'string' && primaryKey.length === 44, `generated key ${primaryKey}`);
    check(Buffer.from(primaryKey, 'base64').length === 32, 'the key is base64 of 32 bytes');
    check(responseBody.status === 'enabled', `status ${responseBody.status}`);
  });

  await scenario('create-duplicate', async () => {
    await expectRejection(registry.create({ deviceId }), 'DeviceAlreadyExistsError');
  });

  await scenario('get', async () => {
    const { responseBody } = await registry.get(deviceId);
    check(responseBody.deviceId === deviceId, `deviceId ${responseBody.deviceId}`);
    check(responseBody.authentication.symmetricKey.primaryKey === primaryKey, 'same key as created');
    check(typeof responseBody.etag === 'string' && responseBody.etag.length > 0, 'has an etag');
    check(responseBody.connectionState === 'Disconnected', `connectionState ${responseBody.connectionState}`);
  });

  await scenario('list', async () => {
    const { responseBody } = await registry.list();
    check(Array.isArray(responseBody), 'an array');
    check(responseBody.some((d) => d.deviceId === deviceId), 'contains the new device');
  });

  await scenario('update', async () => {
    const { responseBody } = await registry.update({ deviceId, status: 'disabled' });
    check(responseBody.status === 'disabled', `status ${responseBody.status}`);
    const fetched = await registry.get(deviceId);
    check(fetched.responseBody.status === 'disabled', `status after get ${fetched.responseBody.status}`);
  });

  await scenario('getTwin', async () => {
    const { responseBody } = await registry.getTwin(deviceId);
    check(responseBody.deviceId === deviceId, `deviceId ${responseBody.deviceId}`);
    check(typeof responseBody.etag === 'string', 'has an etag');
    check(typeof responseBody.properties.desired.$version === 'number', 'desired has a $version');
    check(typeof responseBody.properties.reported.$version === 'number', 'reported has a $version');
    check(responseBody.tags && typeof responseBody.tags === 'object', 'tags is an object');
  });

  await scenario('twin-keeps-the-order-keys-were-written-in', async () => {
    const written = { zulu: 1, bravo: { y: 1, x: 2 } };
    await registry.updateTwin(deviceId, { tags: written, properties: { desired: written } }, '*');
    const { responseBody } = await registry.getTwin(deviceId);
    const keys = (o) => JSON.stringify(Object.keys(o));
    const { desired } = responseBody.properties;
    check(keys(desired) === '["zulu","bravo","$metadata","$version"]', `desired keys ${keys(desired)}`);
    check(keys(desired.bravo) === '["y","x"]', `desired.bravo keys ${keys(desired.bravo)}`);
    check(keys(desired.$metadata) === '["$lastUpdated","$lastUpdatedVersion","zulu","bravo"]',
      `desired.$metadata keys ${keys(desired.$metadata)}`);
    check(keys(desired.$metadata.bravo) === '["$lastUpdated","$lastUpdatedVersion","y","x"]',
      `desired.$metadata.bravo keys ${keys(desired.$metadata.bravo)}`);
    check(keys(responseBody.tags) === '["zulu","bravo"]', `tags keys ${keys(responseBody.tags)}`);
    check(keys(responseBody.tags.bravo) === '["y","x"]', `tags.bravo keys ${keys(responseBody.tags.bravo)}`);
  });

  await scenario('registry-statistics', async () => {
    const { responseBody } = await registry.getRegistryStatistics();
    check(typeof responseBody.totalDeviceCount === 'number' && responseBody.totalDeviceCount >= 1,
      `totalDeviceCount ${responseBody.totalDeviceCount}`);
    check(responseBody.disabledDeviceCount >= 1, `disabledDeviceCount ${responseBody.disabledDeviceCount}`);
  });

  await scenario('query-paged-nextAsTwin', async () => {
    const tag = `conf${crypto.randomBytes(4).toString('hex')}`;
    const ids = [1, 2, 3].map((n) => `${deviceId}-q${n}`);
    for (const id of ids) {
      await registry.create({ deviceId: id });
      extraDevices.push(id);
      await registry.updateTwin(id, { tags: { conformance: tag } }, '*');
    }
    const query = registry.createQuery(`SELECT * FROM devices WHERE tags.conformance = '${tag}'`, 2);
    const found = [];
    let pages = 0;
    while (query.hasMoreResults && pages < 10) {
      const { result } = await query.nextAsTwin();
      pages += 1;
      result.forEach((twin) => found.push(twin.deviceId));
    }
    check(JSON.stringify(found.sort()) === JSON.stringify(ids.sort()), `found ${JSON.stringify(found)}`);
    check(pages === 2, `pages ${pages}, expected 2 of at most 2 twins`);
  });

  await scenario('bad-key', async () => {
    const wrongKey = crypto.randomBytes(32).toString('base64');
    const forged = Registry.fromConnectionString(
      connectionString.replace(/SharedAccessKey=[^;]*/, `SharedAccessKey=${wrongKey}`));
    await expectRejection(forged.get(deviceId), 'UnauthorizedError');
  });

  await scenario('delete', async () => {
    const { httpResponse } = await registry.delete(deviceId);
    check(httpResponse.statusCode === 204, `status ${httpResponse.statusCode}, expected 204`);
  });

  await scenario('get-deleted', async () => {
    await expectRejection(registry.get(deviceId), 'DeviceNotFoundError');
  });

  await scenario('delete-missing', async () => {
    await expectRejection(registry.delete(deviceId), 'DeviceNotFoundError');
  });
}

const timer = setTimeout(() => {
  console.log('FAIL timeout: the scenarios did not finish within 60 s');
  process.exit(1);
}, 60000);

main()
  .catch((err) => {
    fail('unexpected', err);
  })
  .finally(async () => {
    for (const id of [deviceId, ...extraDevices]) {
      try {
        await registry.delete(id);
      } catch (_) {
        // already deleted, or never created
      }
    }
    clearTimeout(timer);
    finish();
  });
