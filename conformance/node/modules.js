'use strict';
// Module conformance with Microsoft's unmodified Node SDKs (versions pinned in package-lock.json):
// `azure-iot-device` `ModuleClient` over MQTT and MQTT over WebSockets beside a `Client` for the module's own
// device, and `azure-iothub` (`Registry.addModule/getModule/getModulesOnDevice/updateModule/removeModule/
// getModuleTwin/updateModuleTwin`, `Client.invokeDeviceMethod(deviceId, moduleId, ...)`, queries over
// `devices.modules`).
//
// Needs IOTHUB_CONNECTION_STRING (hub owner) and, for the emulator, NODE_EXTRA_CA_CERTS=<ca.pem>; with
// IOTHUB_EVENTHUB_CONNECTION_STRING a module's telemetry is read back from the Event Hubs-compatible endpoint. Prints
// "PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exit code 0 only when nothing failed.
// The devices it creates (and so their modules) have random ids and are deleted at the end.

const crypto = require('crypto');
const { Client: DeviceClient, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const harness = require('./harness');

const { check, run, sleep } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(5).toString('hex');
const created = [];
const clients = [];

const scenario = (name, body) => harness.scenario(name, body, 30000);
const createDevice = harness.deviceMaker(registry, hostName, 'conf-node-mod', suffix, created);

// Registers a module with hub-generated keys (as the SDK's own e2e tests do) and returns its connection string.
async function addModule(deviceId, moduleId) {
  await registry.addModule({
    deviceId,
    moduleId,
    authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } },
  });
  const { responseBody } = await registry.getModule(deviceId, moduleId);
  const key = responseBody.authentication.symmetricKey.primaryKey;
  return `HostName=${hostName};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${key}`;
}

async function openModule(moduleConnectionString, transport) {
  const client = ModuleClient.fromConnectionString(moduleConnectionString, transport);
  clients.push(client);
  await client.open();
  return client;
}

// Invokes `whoami` on the device (moduleId undefined) or on one of its modules, until it is answered.
async function whoami(deviceId, moduleId) {
  const params = { methodName: 'whoami', payload: { asked: moduleId || deviceId }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 5 };
  const { result } = moduleId === undefined
    ? await service.invokeDeviceMethod(deviceId, params)
    : await service.invokeDeviceMethod(deviceId, moduleId, params);
  return result;
}

async function expectError(promise, what) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error(`${what} succeeded`);
}

async function main() {
  const device = await createDevice('edge');
  const deviceId = device.deviceId;
  let moduleConnectionString;
  let deviceClient;
  let moduleClient;
  const moduleDesired = [];
  const deviceDesired = [];

  await scenario('module-identity-create-get-list', async () => {
    moduleConnectionString = await addModule(deviceId, 'filter');
    const { responseBody: module } = await registry.getModule(deviceId, 'filter');
    check(module.moduleId === 'filter' && module.deviceId === deviceId, `ids ${module.deviceId}/${module.moduleId}`);
    check(Buffer.from(module.authentication.symmetricKey.primaryKey, 'base64').length === 32, 'a generated key');
    check(typeof module.etag === 'string' && module.generationId, 'etag and generationId');
    check(module.connectionState === 'Disconnected', `connectionState ${module.connectionState}`);
    await addModule(deviceId, 'second');
    const { responseBody: modules } = await registry.getModulesOnDevice(deviceId);
    check(JSON.stringify(modules.map((m) => m.moduleId)) === JSON.stringify(['filter', 'second']),
      `modules ${JSON.stringify(modules.map((m) => m.moduleId))}`);
  });

  await scenario('module-identity-duplicate-and-missing', async () => {
    const duplicate = await expectError(registry.addModule({ deviceId, moduleId: 'filter' }), 'a second addModule');
    check(duplicate.response && duplicate.response.statusCode === 409, `duplicate: ${duplicate.name} ${duplicate.message}`);
    const missing = await expectError(registry.getModule(deviceId, 'nosuchmodule'), 'getModule of a missing module');
    check(missing.response && missing.response.statusCode === 404, `missing: ${missing.name} ${missing.message}`);
  });

  await scenario('module-identity-update-keys', async () => {
    const { responseBody: module } = await registry.getModule(deviceId, 'second');
    const keys = module.authentication.symmetricKey;
    const swapped = { ...module, authentication: { ...module.authentication, symmetricKey: { primaryKey: keys.secondaryKey, secondaryKey: keys.primaryKey } } };
    const { responseBody: updated } = await registry.updateModule(swapped);
    check(updated.authentication.symmetricKey.primaryKey === keys.secondaryKey, 'the keys are swapped');
    check(updated.etag !== module.etag, 'the etag moved on');
    const stale = await expectError(registry.updateModule({ ...swapped, etag: module.etag }), 'an update with a stale etag');
    check(stale.response && stale.response.statusCode === 412, `stale: ${stale.name} ${stale.message}`);
  });

  await scenario('device-and-module-connected-together', async () => {
    deviceClient = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
    clients.push(deviceClient);
    await deviceClient.open();
    deviceClient.onDeviceMethod('whoami', (request, response) => response.send(200, { who: 'device', asked: request.payload.asked }));
    moduleClient = await openModule(moduleConnectionString, Mqtt);
    moduleClient.onMethod('whoami', (request, response) => response.send(200, { who: 'module', asked: request.payload.asked }));
    const { responseBody: module } = await registry.getModule(deviceId, 'filter');
    check(module.connectionState === 'Connected', `module connectionState ${module.connectionState}`);
    const { responseBody: dev } = await registry.get(deviceId);
    check(dev.connectionState === 'Connected', `device connectionState ${dev.connectionState}`);
  });

  await scenario('module-method-round-trip-while-the-device-answers-its-own', async () => {
    const toModule = await whoami(deviceId, 'filter');
    check(toModule.status === 200 && toModule.payload.who === 'module', `module answered ${JSON.stringify(toModule)}`);
    const toDevice = await whoami(deviceId);
    check(toDevice.status === 200 && toDevice.payload.who === 'device', `device answered ${JSON.stringify(toDevice)}`);
    const offline = await expectError(whoami(deviceId, 'second'), 'a method on a module that is not connected');
    check(/404103|DeviceNotOnline|not online|Timed out/i.test(`${offline.message} ${offline.responseBody || ''}`), `offline: ${offline.message}`);
  });

  await scenario('module-desired-change-reaches-only-that-module', async () => {
    const moduleTwin = await moduleClient.getTwin();
    moduleTwin.on('properties.desired', (delta) => moduleDesired.push(delta));
    const deviceTwin = await deviceClient.getTwin();
    deviceTwin.on('properties.desired', (delta) => deviceDesired.push(delta));
    const { responseBody: twin } = await registry.getModuleTwin(deviceId, 'filter');
    check(twin.moduleId === 'filter' && twin.deviceId === deviceId, `module twin ids ${twin.deviceId}/${twin.moduleId}`);
    await registry.updateModuleTwin(deviceId, 'filter', { properties: { desired: { threshold: 42 } } }, twin.etag);
    for (let waited = 0; waited < 100 && !moduleDesired.some((d) => d.threshold === 42); waited++) await sleep(100);
    check(moduleDesired.some((d) => d.threshold === 42), `module saw ${JSON.stringify(moduleDesired)}`);
    await sleep(500);
    check(!deviceDesired.some((d) => d.threshold !== undefined), `the device saw ${JSON.stringify(deviceDesired)}`);
    const { responseBody: deviceTwinDoc } = await registry.getTwin(deviceId);
    check(deviceTwinDoc.properties.desired.threshold === undefined, 'the device twin is untouched');
  });

  await scenario('module-reported-properties-read-by-the-service', async () => {
    const moduleTwin = await moduleClient.getTwin();
    await new Promise((resolve, reject) =>
      moduleTwin.properties.reported.update({ filtered: 7, state: 'running' }, (err) => (err ? reject(err) : resolve())));
    const { responseBody: twin } = await registry.getModuleTwin(deviceId, 'filter');
    check(twin.properties.reported.filtered === 7 && twin.properties.reported.state === 'running',
      `reported ${JSON.stringify(twin.properties.reported)}`);
    const { responseBody: deviceTwinDoc } = await registry.getTwin(deviceId);
    check(deviceTwinDoc.properties.reported.filtered === undefined, 'the device twin is untouched');
  });

  await scenario('module-telemetry-read-back-with-its-module-id', async () => {
    const ehConnectionString = process.env.IOTHUB_EVENTHUB_CONNECTION_STRING;
    const message = new Message(JSON.stringify({ filtered: 1 }));
    message.messageId = `module-${suffix}`;
    if (!ehConnectionString) {
      // Without the Event Hub-compatible connection string the message can only be checked as acknowledged.
      await moduleClient.sendEvent(message);
      return;
    }
    const consumer = new EventHubConsumerClient('$Default', ehConnectionString);
    try {
      const { partitionIds } = await consumer.getEventHubProperties();
      const startPosition = {};
      for (const id of partitionIds) {
        const partition = await consumer.getPartitionProperties(id);
        startPosition[id] = partition.isEmpty ? earliestEventPosition
          : { sequenceNumber: partition.lastEnqueuedSequenceNumber, isInclusive: false };
      }
      const received = new Promise((resolve, reject) => {
        consumer.subscribe({
          processEvents: async (events) => {
            const ours = events.find((e) => e.messageId === message.messageId);
            if (ours) resolve(ours);
          },
          processError: async (err) => reject(err),
        }, { startPosition, maxWaitTimeInSeconds: 1 });
      });
      await moduleClient.sendEvent(message);
      const event = await harness.withTimeout(received, 20000, 'reading the module message back');
      const sys = event.systemProperties;
      check(sys['iothub-connection-device-id'] === deviceId, `device id ${sys['iothub-connection-device-id']}`);
      check(sys['iothub-connection-module-id'] === 'filter', `module id ${sys['iothub-connection-module-id']}`);
      const { responseBody: module } = await registry.getModule(deviceId, 'filter');
      check(sys['iothub-connection-auth-generation-id'] === module.generationId,
        `generation id ${sys['iothub-connection-auth-generation-id']}, the module's ${module.generationId}`);
      check(/"scope":"module"/.test(sys['iothub-connection-auth-method']), `auth method ${sys['iothub-connection-auth-method']}`);
      check(event.body && event.body.filtered === 1, `body ${JSON.stringify(event.body)}`);
    } finally {
      await consumer.close();
    }
  });

  await scenario('module-over-websockets-answers-methods', async () => {
    const wsString = await addModule(deviceId, 'overws');
    const wsClient = await openModule(wsString, MqttWs);
    wsClient.onMethod('whoami', (request, response) => response.send(200, { who: 'ws-module' }));
    const result = await whoami(deviceId, 'overws');
    check(result.status === 200 && result.payload.who === 'ws-module', `answered ${JSON.stringify(result)}`);
  });

  await scenario('module-cannot-connect-with-its-devices-key', async () => {
    const deviceKey = /SharedAccessKey=([^;]+)/.exec(device.connectionString)[1];
    const impostor = ModuleClient.fromConnectionString(
      `HostName=${hostName};DeviceId=${deviceId};ModuleId=filter;SharedAccessKey=${deviceKey}`, Mqtt);
    const refused = await expectError(impostor.open(), 'a module connection signed with the device key');
    check(/unauthori|not authorized|refused/i.test(`${refused.name} ${refused.message}`), `refused with ${refused.name}: ${refused.message}`);
    try { await impostor.close(); } catch (_) { /* never opened */ }
  });

  await scenario('devices-modules-query-across-pages', async () => {
    for (const extra of ['q1', 'q2', 'q3']) await addModule(deviceId, extra);
    const { responseBody: expected } = await registry.getModulesOnDevice(deviceId);
    const query = registry.createQuery(`SELECT * FROM devices.modules WHERE deviceId = '${deviceId}'`, 2);
    const seen = [];
    let pages = 0;
    do {
      const { result } = await query.nextAsTwin();
      pages += 1;
      for (const twin of result) seen.push(twin.moduleId);
    } while (query.hasMoreResults && pages < 20);
    check(pages >= 3, `only ${pages} pages`);
    check(JSON.stringify(seen) === JSON.stringify(expected.map((m) => m.moduleId)), `query ${JSON.stringify(seen)}`);
    const reported = registry.createQuery(`SELECT * FROM devices.modules WHERE properties.reported.state = 'running' AND deviceId = '${deviceId}'`);
    const { result } = await reported.nextAsTwin();
    check(result.length === 1 && result[0].moduleId === 'filter', `reported query ${JSON.stringify(result.map((t) => t.moduleId))}`);
  });

  await scenario('removing-modules-and-their-device', async () => {
    await registry.removeModule(deviceId, 'q3');
    const gone = await expectError(registry.getModule(deviceId, 'q3'), 'getModule after removeModule');
    check(gone.response && gone.response.statusCode === 404, `after remove: ${gone.message}`);
    const other = await createDevice('gone');
    await addModule(other.deviceId, 'm');
    await registry.delete(other.deviceId);
    const cascaded = await expectError(registry.getModule(other.deviceId, 'm'), 'getModule after its device was deleted');
    check(cascaded.response && cascaded.response.statusCode === 404, `after the device went: ${cascaded.message}`);
  });
}

run(main, { seconds: 240, clients, service, registry, created });
