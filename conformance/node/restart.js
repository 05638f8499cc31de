'use strict';
// Restart conformance with Microsoft's unmodified Node SDKs: a device connected with `azure-iot-device-mqtt`
// while the hub stops (SIGTERM) and starts again on the same data dir finds, without any help from its code,
// that it is connected again: what was acknowledged before is there, methods reach it, desired changes reach
// it, its reported patches land. An Event Hubs consumer that checkpointed before the restart resumes after it and
// reads exactly what was sent since: nothing twice, nothing lost.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner), IOTHUB_EVENTHUB_CONNECTION_STRING, NODE_EXTRA_CA_CERTS=<ca.pem>, and someone to restart the hub: the
// script prints "READY" once its writes are acknowledged and waits for a line on stdin, which must come after
// the hub is back (scripts/sdk-conformance.sh does this). Prints "PASS <name>" / "FAIL <name>: <why>", then
// "N passed, M failed"; exits 0 only when nothing failed.

const crypto = require('crypto');
const readline = require('readline');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { EventHubConsumerClient } = require('@azure/event-hubs');
const { ownerConnection, check, scenario, fail, finish, sleep, withTimeout } = require('./harness');

const { connectionString, hostName } = ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const deviceId = `conf-node-restart-${crypto.randomBytes(5).toString('hex')}`;
// A device that is away during the restart: a cloud-to-device message queued for it before must reach it after.
const awayId = `${deviceId}-away`;
let client;
// The consumer's checkpoint: the partition of the device's telemetry and the last sequence number read.
let checkpoint;

function waitForStdinLine() {
  return new Promise((resolve) => {
    const lines = readline.createInterface({ input: process.stdin });
    lines.once('line', () => {
      lines.close();
      resolve();
    });
    lines.once('close', resolve);
  });
}

function sendTelemetry(body) {
  const message = new Message(JSON.stringify(body));
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  return new Promise((resolve, reject) => client.sendEvent(message, (err) => (err ? reject(err) : resolve())));
}

// Reads the device's telemetry from `position` on (all partitions, or `partitionId`) until `count` arrived.
async function readTelemetry(position, count, partitionId) {
  const consumer = new EventHubConsumerClient('$Default', process.env.IOTHUB_EVENTHUB_CONNECTION_STRING);
  const events = [];
  let subscription;
  try {
    await withTimeout(new Promise((resolve, reject) => {
      const handlers = {
        processEvents: async (batch, context) => {
          for (const event of batch) {
            if (event.systemProperties['iothub-connection-device-id'] === deviceId) {
              events.push({ body: event.body, sequenceNumber: event.sequenceNumber, partitionId: context.partitionId });
            }
          }
          if (events.length >= count) resolve();
        },
        processError: async (err) => reject(err),
      };
      const options = { startPosition: position, maxWaitTimeInSeconds: 1 };
      subscription = partitionId === undefined
        ? consumer.subscribe(handlers, options)
        : consumer.subscribe(partitionId, handlers, options);
    }), 30000, 'reading telemetry');
    // A moment more: anything beyond `count` would be a message read twice.
    await sleep(1500);
    return events;
  } finally {
    if (subscription) await subscription.close();
    await consumer.close();
  }
}

function updateReported(twin, patch) {
  return new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
}

// Invokes `ping` until the device answers (it may still be reconnecting), for at most `seconds`.
async function pingUntilAnswered(seconds) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    try {
      const { result } = await service.invokeDeviceMethod(deviceId, {
        methodName: 'ping',
        payload: { n: 2 },
        responseTimeoutInSeconds: 5,
        connectTimeoutInSeconds: 5,
      });
      return result;
    } catch (err) {
      last = err;
      await sleep(250);
    }
  }
  throw new Error(`the device did not answer within ${seconds} s: ${last && last.message}`);
}

async function main() {
  const { responseBody } = await registry.create({ deviceId });
  const key = responseBody.authentication.symmetricKey.primaryKey;
  client = DeviceClient.fromConnectionString(`HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  await client.open();
  client.onDeviceMethod('ping', (request, response) => {
    response.send(200, { pong: request.payload.n }, (err) => {
      if (err) console.error(`ping response failed: ${err.message}`);
    });
  });
  const twin = await client.getTwin();
  const desired = [];
  twin.on('properties.desired', (delta) => desired.push(delta));

  await scenario('before-restart-writes-acknowledged', async () => {
    await registry.updateTwin(deviceId, { tags: { site: 'lab' }, properties: { desired: { before: 1 } } }, '*');
    await updateReported(twin, { beforeRestart: true });
    const result = await pingUntilAnswered(10);
    check(result.status === 200, `ping status ${result.status}`);
    await registry.create({ deviceId: awayId });
    await service.open();
    const queued = new Message('queued before the restart');
    queued.messageId = `${awayId}-m1`;
    await service.send(awayId, queued);
    await service.close();
  });

  await scenario('before-restart-telemetry-read-and-checkpointed', async () => {
    for (const n of [1, 2, 3]) await sendTelemetry({ n });
    const events = await readTelemetry({ offset: '-1' }, 3);
    check(JSON.stringify(events.map((e) => e.body)) === JSON.stringify([{ n: 1 }, { n: 2 }, { n: 3 }]),
      `read ${JSON.stringify(events)}`);
    checkpoint = events[2];
  });

  console.log('READY');
  await waitForStdinLine();

  await scenario('acknowledged-writes-survive-the-restart', async () => {
    const { responseBody: after } = await registry.getTwin(deviceId);
    check(after.tags.site === 'lab', `tags ${JSON.stringify(after.tags)}`);
    check(after.properties.desired.before === 1, `desired ${JSON.stringify(after.properties.desired)}`);
    check(after.properties.reported.beforeRestart === true, `reported ${JSON.stringify(after.properties.reported)}`);
  });

  await scenario('device-reconnects-by-itself-and-answers-methods', async () => {
    const result = await pingUntilAnswered(40);
    check(result.status === 200 && result.payload.pong === 2, `ping ${JSON.stringify(result)}`);
  });

  await scenario('desired-change-after-the-restart-reaches-the-device', async () => {
    await registry.updateTwin(deviceId, { properties: { desired: { after: 2 } } }, '*');
    for (let waited = 0; waited < 100 && !desired.some((d) => d.after === 2); waited++) await sleep(100);
    check(desired.some((d) => d.after === 2), `desired patches seen: ${JSON.stringify(desired)}`);
  });

  await scenario('c2d-message-queued-before-the-restart-arrives-after', async () => {
    const { responseBody: away } = await registry.get(awayId);
    const key = away.authentication.symmetricKey.primaryKey;
    const late = DeviceClient.fromConnectionString(`HostName=${hostName};DeviceId=${awayId};SharedAccessKey=${key}`, Mqtt);
    await late.open();
    try {
      const received = new Promise((resolve) => late.on('message', (message) => late.complete(message, () => resolve(message))));
      const message = await Promise.race([received, sleep(15000).then(() => null)]);
      check(message !== null, 'no message within 15 s');
      check(message.messageId === `${awayId}-m1` && message.data.toString() === 'queued before the restart',
        `message ${message.messageId}: ${message.data}`);
    } finally {
      await late.close();
    }
  });

  await scenario('event-hubs-consumer-resumes-from-its-checkpoint', async () => {
    check(checkpoint, 'no checkpoint was taken before the restart');
    for (const n of [4, 5]) await sendTelemetry({ n });
    const events = await readTelemetry(
      { sequenceNumber: checkpoint.sequenceNumber, isInclusive: false }, 2, checkpoint.partitionId);
    check(JSON.stringify(events.map((e) => e.body)) === JSON.stringify([{ n: 4 }, { n: 5 }]),
      `after the checkpoint: ${JSON.stringify(events)}`);
    check(events[0].sequenceNumber > checkpoint.sequenceNumber, 'sequence numbers went on after the restart');
  });

  await scenario('reported-patch-after-the-restart-lands', async () => {
    await updateReported(twin, { afterRestart: true });
    const { responseBody: after } = await registry.getTwin(deviceId);
    check(after.properties.reported.afterRestart === true, `reported ${JSON.stringify(after.properties.reported)}`);
  });
}

main()
  .catch((err) => fail('unexpected', err))
  .finally(async () => {
    if (client) {
      try { await client.close(); } catch (_) { /* already closed */ }
    }
    for (const id of [deviceId, awayId]) {
      try { await registry.delete(id); } catch (_) { /* already gone */ }
    }
    finish();
  });
