'use strict';
// Cloud-to-device conformance with Microsoft's unmodified Node SDKs (versions pinned in package-lock.json):
// `azure-iothub` `Client.send` over AMQP (and AMQP over WebSockets) with and without `ack`, `getFeedbackReceiver`;
// `azure-iot-device` receiving with `client.on('message')` over MQTT and over HTTPS (`azure-iot-device-http`),
// settling with complete / reject / abandon.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner) and, for the emulator, NODE_EXTRA_CA_CERTS=<ca.pem>. Prints
// "PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exit code 0 only when nothing failed.
// The devices it creates have random ids and are deleted at the end.

const crypto = require('crypto');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { Client: ServiceClient, Registry, AmqpWs } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const harness = require('./harness');
const { check, run, withTimeout } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(5).toString('hex');
const created = [];
const clients = [];

const scenario = (name, body) => harness.scenario(name, body, 40000);

const createDevice = harness.deviceMaker(registry, hostName, 'conf-node-c2d', suffix, created);

// Feedback records as they arrive on the one feedback receiver, and waiters for a record matching a predicate.
const feedback = [];
const waiters = [];
function onFeedback(records) {
  for (const record of records) {
    feedback.push(record);
    for (const waiter of waiters.slice()) {
      if (waiter.match(record)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(record);
      }
    }
  }
}
function feedbackFor(messageId, ms = 15000) {
  const seen = feedback.find((r) => r.originalMessageId === messageId);
  if (seen) return Promise.resolve(seen);
  return withTimeout(new Promise((resolve) => waiters.push({ match: (r) => r.originalMessageId === messageId, resolve })),
    ms, `feedback for ${messageId}`);
}

// Resolves with the next message `client` receives, settled by `settle(client, message)`.
function nextMessage(client, settle) {
  return new Promise((resolve) => {
    const handler = (message) => {
      client.removeListener('message', handler);
      settle(client, message);
      resolve(message);
    };
    client.on('message', handler);
  });
}

const complete = (client, message) => client.complete(message, () => {});

function outgoing(id, ack, body = `{"id":"${id}"}`) {
  const message = new Message(body);
  message.messageId = id;
  if (ack) message.ack = ack;
  return message;
}

async function main() {
  await service.open();
  const receiver = await new Promise((resolve, reject) => service.getFeedbackReceiver((err, r) => (err ? reject(err) : resolve(r))));
  receiver.on('message', (message) => onFeedback(JSON.parse(message.data.toString())));
  const mqttDevice = await createDevice('mqtt');
  const httpDevice = await createDevice('http');
  const offline = await createDevice('offline');
  const full = await createDevice('full');

  await scenario('mqtt-device-gets-properties-and-success-feedback', async () => {
    const client = DeviceClient.fromConnectionString(mqttDevice.connectionString, Mqtt);
    clients.push(client);
    await client.open();
    const received = nextMessage(client, complete);
    const message = outgoing(`mqtt-${suffix}`, 'full', '{"lock":true}');
    message.correlationId = 'corr-1';
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('zulu', '1');
    message.properties.add('alpha', 'a&b/c');
    await service.send(mqttDevice.deviceId, message);
    const got = await withTimeout(received, 15000, 'the device receives it');
    check(got.messageId === message.messageId, `messageId ${got.messageId}`);
    check(got.correlationId === 'corr-1', `correlationId ${got.correlationId}`);
    check(got.data.toString() === '{"lock":true}', `body ${got.data}`);
    check(got.properties.getValue('zulu') === '1' && got.properties.getValue('alpha') === 'a&b/c',
      `properties ${JSON.stringify(got.properties.propertyList)}`);
    const record = await feedbackFor(message.messageId);
    check(record.statusCode === 'Success' && record.deviceId === mqttDevice.deviceId, `feedback ${JSON.stringify(record)}`);
    check(typeof record.deviceGenerationId === 'string' && record.enqueuedTimeUtc, `feedback ${JSON.stringify(record)}`);
  });

  await scenario('amqp-over-websockets-send', async () => {
    const wsService = ServiceClient.fromConnectionString(connectionString, AmqpWs);
    await wsService.open();
    const client = clients[0];
    const received = nextMessage(client, complete);
    await wsService.send(mqttDevice.deviceId, outgoing(`ws-${suffix}`));
    const got = await withTimeout(received, 15000, 'the device receives it');
    check(got.messageId === `ws-${suffix}`, `messageId ${got.messageId}`);
    await wsService.close();
  });

  await scenario('http-device-abandons-then-completes-and-rejects', async () => {
    const client = DeviceClient.fromConnectionString(httpDevice.connectionString, Http);
    clients.push(client);
    await client.open();
    await service.send(httpDevice.deviceId, outgoing(`http-a-${suffix}`, 'full'));
    const first = await withTimeout(nextMessage(client, (c, m) => c.abandon(m, () => {})), 15000, 'first delivery');
    check(first.messageId === `http-a-${suffix}`, `messageId ${first.messageId}`);
    const again = await withTimeout(nextMessage(client, complete), 15000, 'redelivery after abandon');
    check(again.messageId === first.messageId, `redelivered ${again.messageId}`);
    check((await feedbackFor(first.messageId)).statusCode === 'Success', 'Success feedback after complete');
    await service.send(httpDevice.deviceId, outgoing(`http-r-${suffix}`, 'negative'));
    const refused = await withTimeout(nextMessage(client, (c, m) => c.reject(m, () => {})), 15000, 'delivery to reject');
    check(refused.messageId === `http-r-${suffix}`, `messageId ${refused.messageId}`);
    check((await feedbackFor(refused.messageId)).statusCode === 'Rejected', 'Rejected feedback');
    await client.close();
  });

  await scenario('expired-message-negative-feedback', async () => {
    const message = outgoing(`expire-${suffix}`, 'negative');
    message.expiryTimeUtc = Date.now() + 2000;
    await service.send(offline.deviceId, message);
    const record = await feedbackFor(message.messageId);
    check(record.statusCode === 'Expired', `feedback ${JSON.stringify(record)}`);
  });

  await scenario('51st-queued-message-refused', async () => {
    for (let i = 0; i < 50; i++) {
      await service.send(full.deviceId, outgoing(`q${i}-${suffix}`));
    }
    try {
      await service.send(full.deviceId, outgoing(`q50-${suffix}`));
    } catch (err) {
      check(err.name === 'DeviceMaximumQueueDepthExceededError', `error ${err.name}: ${err.message}`);
      const { responseBody } = await registry.get(full.deviceId);
      check(responseBody.cloudToDeviceMessageCount === 50, `cloudToDeviceMessageCount ${responseBody.cloudToDeviceMessageCount}`);
      return;
    }
    throw new Error('the 51st message was accepted');
  });

  await scenario('unknown-device-refused', async () => {
    try {
      await service.send(`conf-node-c2d-nobody-${suffix}`, outgoing('nobody'));
    } catch (err) {
      check(err.name === 'DeviceNotFoundError', `error ${err.name}: ${err.message}`);
      return;
    }
    throw new Error('a message to an unknown device was accepted');
  });
}

run(main, { seconds: 240, clients, service, registry, created });
