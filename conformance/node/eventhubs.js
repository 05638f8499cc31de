'use strict';
// Conformance of the built-in Event Hubs-compatible endpoint with Microsoft's unmodified Node SDKs (versions
// pinned in package-lock.json): `@azure/event-hubs` `EventHubConsumerClient` (hub and partition properties,
// subscribe from every kind of start position, consumer groups, owner level, AMQP over WebSockets with `ws`,
// `UseDevelopmentEmulator=true`), and the IoT Hub connection string turned into an Event Hubs one the way the
// event-hubs sample `iothubConnectionString.js` does it (rhea-promise, SASL PLAIN, `amqp:link:redirect`).
// Telemetry is sent by `azure-iot-device` over MQTT.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner), IOTHUB_EVENTHUB_CONNECTION_STRING (the Event Hub-compatible
// connection string the emulator prints), IOTHUB_CONSUMER_GROUP_2 (a second declared consumer group) and, for the
// emulator, NODE_EXTRA_CA_CERTS=<ca.pem>. Optional: IOTHUB_EVENTHUB_PLAIN_PORT (the emulator's
// --eventhubs-plain-port: runs eh-development-emulator, skipped otherwise). For an emulator on non-default ports:
// IOTHUB_HTTPS_PORT (devices are then registered through the REST API on that port, since the azure-iothub
// Registry only dials 443; AMQP over WebSockets goes there too) and IOTHUB_DEVICE_GATEWAY=<host:mqtt port>
// (appended to device connection strings as GatewayHostName). Prints "PASS <name>" / "FAIL <name>: <why>" lines,
// then "N passed, M failed"; exit code 0 only when nothing failed. The devices it creates have random ids and are
// deleted at the end.

const crypto = require('crypto');
const https = require('https');
const util = require('util');
const WebSocket = require('ws');
const { Connection, ConnectionEvents, ReceiverEvents, isAmqpError, parseConnectionString } = require('rhea-promise');
const { EventHubConsumerClient, earliestEventPosition, latestEventPosition } = require('@azure/event-hubs');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const harness = require('./harness');
const { check, run } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const ehConnectionString = process.env.IOTHUB_EVENTHUB_CONNECTION_STRING;
const secondGroup = process.env.IOTHUB_CONSUMER_GROUP_2;
if (!ehConnectionString || !secondGroup) {
  console.error('Set IOTHUB_EVENTHUB_CONNECTION_STRING (the Event Hub-compatible connection string the emulator prints) '
    + 'and IOTHUB_CONSUMER_GROUP_2 (a consumer group declared with --consumer-group).');
  process.exit(2);
}
const plainPort = process.env.IOTHUB_EVENTHUB_PLAIN_PORT;
const httpsPort = process.env.IOTHUB_HTTPS_PORT;
const deviceGateway = process.env.IOTHUB_DEVICE_GATEWAY;

const eh = parseConnectionString(ehConnectionString);
// `sb://host[:port]/`: the host and the port (undefined when the connection string names none: 5671).
const endpoint = /^sb:\/\/([^/:]+)(?::(\d+))?\/?$/i.exec(eh.Endpoint || '');
if (!endpoint || !eh.EntityPath) {
  console.error('IOTHUB_EVENTHUB_CONNECTION_STRING has no Endpoint=sb://<host>[:port]/ or no EntityPath');
  process.exit(2);
}
const [, ehHost, ehPort] = endpoint;
const hubName = eh.EntityPath;
const owner = parseConnectionString(connectionString);

const suffix = crypto.randomBytes(5).toString('hex');
const created = [];
const clients = [];
const registry = httpsPort ? restRegistry(hostName, owner.SharedAccessKeyName, owner.SharedAccessKey, httpsPort)
  : Registry.fromConnectionString(connectionString);

// Each scenario gets 30 s unless it says otherwise; what it throws is reported as an Error with a readable message
// (rhea rejects some promises with an event context, not an Error).
const scenario = (name, body, ms = 30000) => harness.scenario(name, () => Promise.resolve().then(body).catch((err) => {
  throw err instanceof Error ? err : new Error(readable(err));
}), ms);

function readable(thing) {
  const inner = thing && (thing.error || thing._context || (thing.connection && thing.connection.error));
  if (inner && (inner.message || inner.description)) return `${inner.condition || inner.code || inner.name}: ${inner.message || inner.description}`;
  return util.inspect(thing, { depth: 1, breakLength: Infinity }).slice(0, 400);
}

const makeDevice = harness.deviceMaker(registry, hostName, 'conf-node-eh', suffix, created);
async function createDevice(label) {
  const device = await makeDevice(label);
  if (deviceGateway) device.connectionString += `;GatewayHostName=${deviceGateway}`;
  return device;
}

// An IoT Hub SAS token (key base64-decoded) for `resource`, valid `minutes`.
function iotHubSasToken(resource, key, keyName, minutes) {
  const sr = encodeURIComponent(resource);
  const se = Math.ceil(Date.now() / 1000 + minutes * 60);
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${keyName}`;
}

// The few registry calls this script makes (create, get, delete), over the REST API on a port other than 443.
function restRegistry(host, keyName, key, port) {
  function call(method, deviceId, body) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const request = https.request({
        host,
        port,
        method,
        path: `/devices/${encodeURIComponent(deviceId)}?api-version=2021-04-12`,
        headers: {
          Authorization: iotHubSasToken(host, key, keyName, 60),
          'Content-Type': 'application/json; charset=utf-8',
          ...(method === 'DELETE' ? { 'If-Match': '*' } : {}),
          ...(payload ? { 'Content-Length': Buffer.byteLength(payload) } : {}),
        },
      }, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if (response.statusCode >= 300) {
            reject(new Error(`${method} /devices/${deviceId}: ${response.statusCode} ${text}`));
          } else {
            resolve({ responseBody: text ? JSON.parse(text) : undefined });
          }
        });
      });
      request.on('error', reject);
      request.end(payload);
    });
  }
  return {
    create: (device) => call('PUT', device.deviceId, device),
    get: (deviceId) => call('GET', deviceId),
    delete: (deviceId) => call('DELETE', deviceId),
  };
}

// A connected MQTT device client for `device` (closed by `run`).
async function connect(device) {
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  clients.push(client);
  await client.open();
  return client;
}

// Sends one telemetry message with a JSON body, the message id `id` and the application property `seq`.
async function sendJson(client, id, body, extra = {}) {
  const message = new Message(JSON.stringify(body));
  message.messageId = id;
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.properties.add('seq', String(extra.seq ?? 0));
  await client.sendEvent(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const deviceOf = (event) => event.systemProperties && event.systemProperties['iothub-connection-device-id'];
const describe = (err) => `${err.code || err.name}: ${err.message}`;

// A consumer client (closed by `run`, and by the scenario that made it).
function consumer(group, cs = ehConnectionString, options = {}) {
  const client = new EventHubConsumerClient(group, cs, options);
  clients.push(client);
  return client;
}

// Subscribes `client` (to one partition when `partitionId` is given) and keeps the events `match` accepts, the
// errors processError was given and the number of batches (empty ones too: one arrives once the receiver is up
// and found nothing within a second). `until(test)` waits for `test()` to hold.
function watch(client, { partitionId, startPosition, ownerLevel, match = () => true }) {
  const state = { events: [], errors: [], batches: 0 };
  const waiters = [];
  const notify = () => {
    for (const waiter of waiters.slice()) {
      if (waiter.test()) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  const handlers = {
    processEvents: async (events, context) => {
      state.batches++;
      for (const event of events) {
        if (match(event)) state.events.push({ event, partitionId: context.partitionId });
      }
      notify();
    },
    processError: async (err) => {
      state.errors.push(err);
      notify();
    },
  };
  const options = { startPosition, maxBatchSize: 100, maxWaitTimeInSeconds: 1 };
  if (ownerLevel !== undefined) options.ownerLevel = ownerLevel;
  const subscription = partitionId === undefined ? client.subscribe(handlers, options)
    : client.subscribe(partitionId, handlers, options);
  state.close = () => subscription.close();
  state.until = (test, ms, what) => {
    if (test()) return Promise.resolve();
    let timer;
    return new Promise((resolve, reject) => {
      const waiter = { test, resolve: () => { clearTimeout(timer); resolve(); } };
      waiters.push(waiter);
      timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        const errors = state.errors.map(describe).join('; ') || 'none';
        const got = state.events.map(({ event }) => event.messageId).join(', ') || 'none';
        reject(new Error(`${what}: not within ${ms} ms (events: ${got}; errors: ${errors})`));
      }, ms);
    });
  };
  return state;
}

// Where each partition ends now: subscribing from there sees exactly what is enqueued afterwards.
async function positionsNow(client) {
  const { partitionIds } = await client.getEventHubProperties();
  const positions = {};
  for (const id of partitionIds) {
    const partition = await client.getPartitionProperties(id);
    positions[id] = partition.isEmpty ? earliestEventPosition
      : { sequenceNumber: partition.lastEnqueuedSequenceNumber, isInclusive: false };
  }
  return positions;
}

// Sends one message from `deviceClient` and receives it on every partition with `client`: the event.
async function roundTrip(client, device, deviceClient, id) {
  const start = await positionsNow(client);
  const watcher = watch(client, { startPosition: start, match: (e) => deviceOf(e) === device.deviceId });
  try {
    await sendJson(deviceClient, id, { id });
    await watcher.until(() => watcher.events.length > 0, 20000, `receiving ${id}`);
    const { event } = watcher.events[0];
    check(event.messageId === id, `messageId ${event.messageId}, sent ${id}`);
    check(event.body && event.body.id === id, `body ${JSON.stringify(event.body)}`);
    check(watcher.errors.length === 0, `processError: ${watcher.errors.map(describe).join('; ')}`);
    return event;
  } finally {
    await watcher.close();
  }
}

// The sample's conversion of an IoT Hub connection string into an Event Hubs one: connect to the hub with SASL
// PLAIN (`<policy>@sas.root.<hub>`, an IoT Hub SAS token for `<HostName>/messages/events`), open a receiver on
// `messages/events/$management` and read the Event Hubs address from the `amqp:link:redirect` it is refused with.
// `port` is 5671 in the sample; the emulator's AMQP port when it runs elsewhere. Returns the connection string
// and the redirect's info.
async function convertIotHubConnectionString(iotHubConnectionString, port) {
  const { HostName, SharedAccessKeyName, SharedAccessKey } = parseConnectionString(iotHubConnectionString);
  const [iotHubName] = HostName.split('.');
  const token = iotHubSasToken(`${HostName}/messages/events`, SharedAccessKey, SharedAccessKeyName, 5);
  const connection = new Connection({
    transport: 'tls',
    host: HostName,
    hostname: HostName,
    username: `${SharedAccessKeyName}@sas.root.${iotHubName}`,
    port,
    reconnect: false,
    password: token,
  });
  // Without listeners a connection-level error would be thrown as an unhandled 'error' event and end the script.
  const broken = new Promise((_, reject) => {
    for (const name of [ConnectionEvents.error, ConnectionEvents.protocolError, ConnectionEvents.connectionError]) {
      connection.on(name, (context) => reject(new Error(`connection ${name}: ${readable(context)}`)));
    }
  });
  broken.catch(() => {});
  try {
    await Promise.race([connection.open(), broken]);
    const receiver = await Promise.race([broken, connection.createReceiver({
      source: { address: `amqps://${HostName}/messages/events/$management` },
    })]);
    return await new Promise((resolve, reject) => {
      broken.catch(reject);
      receiver.on(ReceiverEvents.receiverError, (context) => {
        const error = context.receiver && context.receiver.error;
        if (!isAmqpError(error) || error.condition !== 'amqp:link:redirect' || !error.info) {
          reject(new Error(`expected amqp:link:redirect, got ${JSON.stringify(error)}`));
          return;
        }
        const { hostname, address } = error.info;
        const match = /:\d+\/(.*)\/\$management/i.exec(address);
        if (!hostname || !match) {
          reject(new Error(`redirect info ${JSON.stringify(error.info)}`));
          return;
        }
        // The sample writes no port (the endpoint is on 5671); an emulator on another port needs it.
        const endpointPort = error.info.port && Number(error.info.port) !== 5671 ? `:${error.info.port}` : '';
        resolve({
          connectionString: `Endpoint=sb://${hostname}${endpointPort}/;EntityPath=${match[1]};`
            + `SharedAccessKeyName=${SharedAccessKeyName};SharedAccessKey=${SharedAccessKey}`,
          info: error.info,
        });
      });
    });
  } finally {
    // close() waits for the peer's close, which a broken connection never sends.
    if (connection.isOpen()) await Promise.race([connection.close().catch(() => {}), sleep(2000)]);
  }
}

async function main() {
  const telemetry = await createDevice('telemetry');
  const positionsDevice = await createDevice('positions');
  const groupsDevice = await createDevice('groups');
  const otherDevice = await createDevice('other');
  const telemetryClient = await connect(telemetry);
  const positionsClient = await connect(positionsDevice);
  const groupsClient = await connect(groupsDevice);
  const otherClient = await connect(otherDevice);

  await scenario('eh-properties', async () => {
    const client = consumer('$Default');
    try {
      const hub = await client.getEventHubProperties();
      check(hub.name === hubName, `name ${hub.name}, EntityPath ${hubName}`);
      check(JSON.stringify(hub.partitionIds) === JSON.stringify(['0', '1', '2', '3']),
        `partitionIds ${JSON.stringify(hub.partitionIds)}`);
      check(hub.createdOn instanceof Date && !Number.isNaN(hub.createdOn.getTime()), `createdOn ${hub.createdOn}`);
      const partition = await client.getPartitionProperties('0');
      check(partition.eventHubName === hubName && partition.partitionId === '0', `partition ${JSON.stringify(partition)}`);
      check(typeof partition.lastEnqueuedSequenceNumber === 'number', `lastEnqueuedSequenceNumber ${partition.lastEnqueuedSequenceNumber}`);
      check(typeof partition.beginningSequenceNumber === 'number', `beginningSequenceNumber ${partition.beginningSequenceNumber}`);
      check(typeof partition.lastEnqueuedOffset === 'string' && /^-?\d+$/.test(partition.lastEnqueuedOffset),
        `lastEnqueuedOffset ${JSON.stringify(partition.lastEnqueuedOffset)}`);
      check(typeof partition.isEmpty === 'boolean', `isEmpty ${partition.isEmpty}`);
      check(partition.lastEnqueuedOnUtc instanceof Date, `lastEnqueuedOnUtc ${partition.lastEnqueuedOnUtc}`);
      try {
        await client.getPartitionProperties('4');
      } catch (err) {
        return;
      }
      throw new Error('getPartitionProperties(\'4\') of a 4-partition hub succeeded');
    } finally {
      await client.close();
    }
  });

  await scenario('eh-receive-telemetry', async () => {
    const client = consumer('$Default');
    const { responseBody: registered } = await registry.get(telemetry.deviceId);
    const start = await positionsNow(client);
    const watcher = watch(client, { startPosition: start, match: (e) => deviceOf(e) === telemetry.deviceId });
    try {
      const id = `tele-${suffix}`;
      const before = Date.now();
      const message = new Message(JSON.stringify({ temperature: 21.5, unit: 'C' }));
      message.messageId = id;
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      message.properties.add('alert', 'high');
      await telemetryClient.sendEvent(message);
      await watcher.until(() => watcher.events.length > 0, 20000, 'receiving the telemetry');
      const { event, partitionId } = watcher.events[0];
      const sys = event.systemProperties || {};
      check(event.body && event.body.temperature === 21.5 && event.body.unit === 'C', `body ${JSON.stringify(event.body)}`);
      check(event.properties && event.properties.alert === 'high', `properties ${JSON.stringify(event.properties)}`);
      check(event.messageId === id && sys.messageId === id, `messageId ${event.messageId} / ${sys.messageId}`);
      check(event.contentType === 'application/json' && sys.contentType === 'application/json',
        `contentType ${event.contentType} / ${sys.contentType}`);
      check(sys.contentEncoding === 'utf-8', `contentEncoding ${sys.contentEncoding}`);
      check(sys['iothub-connection-device-id'] === telemetry.deviceId, `device id ${sys['iothub-connection-device-id']}`);
      check(sys['iothub-connection-auth-generation-id'] === registered.generationId,
        `auth generation id ${sys['iothub-connection-auth-generation-id']}, registry ${registered.generationId}`);
      check(sys['iothub-message-source'] === 'Telemetry', `iothub-message-source ${sys['iothub-message-source']}`);
      check(typeof sys['iothub-connection-auth-method'] === 'string', `auth method ${sys['iothub-connection-auth-method']}`);
      const enqueued = sys['iothub-enqueuedtime'];
      check(typeof enqueued === 'number' && enqueued >= before - 5000 && enqueued <= Date.now() + 5000,
        `iothub-enqueuedtime ${enqueued}`);
      check(typeof event.sequenceNumber === 'number' && event.sequenceNumber >= 0, `sequenceNumber ${event.sequenceNumber}`);
      check(typeof event.offset === 'string' && /^\d+$/.test(event.offset), `offset ${JSON.stringify(event.offset)}`);
      check(event.enqueuedTimeUtc instanceof Date && Math.abs(event.enqueuedTimeUtc.getTime() - enqueued) < 5000,
        `enqueuedTimeUtc ${event.enqueuedTimeUtc}`);
      check(event.partitionKey === undefined, `partitionKey ${event.partitionKey}`);
      check(watcher.events.length === 1, `${watcher.events.length} events for one message`);
      // The partition's properties now end at this event.
      const partition = await client.getPartitionProperties(partitionId);
      check(partition.lastEnqueuedSequenceNumber >= event.sequenceNumber && !partition.isEmpty,
        `partition ${partitionId} after it: ${JSON.stringify(partition)}`);
      check(watcher.errors.length === 0, `processError: ${watcher.errors.map(describe).join('; ')}`);
    } finally {
      await watcher.close();
      await client.close();
    }
  });

  await scenario('eh-start-positions', async () => {
    const client = consumer('$Default');
    const mine = (e) => deviceOf(e) === positionsDevice.deviceId;
    const ids = [1, 2, 3, 4].map((n) => `pos${n}-${suffix}`);
    // Reads `partitionId` from `startPosition` until the event with `lastId` arrives: the ids that arrived.
    async function readFrom(partitionId, startPosition, lastId, what) {
      const watcher = watch(client, { partitionId, startPosition, match: mine });
      try {
        await watcher.until(() => watcher.events.some(({ event }) => event.messageId === lastId), 15000, what);
        check(watcher.errors.length === 0, `${what}: processError: ${watcher.errors.map(describe).join('; ')}`);
        return watcher.events.map(({ event }) => event.messageId);
      } finally {
        await watcher.close();
      }
    }
    const expect = (got, want, what) => check(JSON.stringify(got) === JSON.stringify(want),
      `${what}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);

    const start = await positionsNow(client);
    for (let i = 0; i < 3; i++) {
      await sendJson(positionsClient, ids[i], { n: i + 1 }, { seq: i + 1 });
      await sleep(20); // distinct enqueued times
    }
    const all = watch(client, { startPosition: start, match: mine });
    let sent;
    try {
      await all.until(() => all.events.length >= 3, 15000, 'the three messages');
      sent = all.events.slice(0, 3);
    } finally {
      await all.close();
    }
    expect(sent.map(({ event }) => event.messageId), ids.slice(0, 3), 'the three messages in order');
    const partitionId = sent[0].partitionId;
    check(sent.every((s) => s.partitionId === partitionId), `one device's messages on partitions ${sent.map((s) => s.partitionId)}`);
    const [m1, m2, m3] = sent.map(({ event }) => event);
    check(m1.sequenceNumber < m2.sequenceNumber && m2.sequenceNumber < m3.sequenceNumber,
      `sequence numbers ${m1.sequenceNumber}, ${m2.sequenceNumber}, ${m3.sequenceNumber}`);
    check(m1.enqueuedTimeUtc < m2.enqueuedTimeUtc && m2.enqueuedTimeUtc < m3.enqueuedTimeUtc,
      `enqueued times ${m1.enqueuedTimeUtc.toISOString()}, ${m2.enqueuedTimeUtc.toISOString()}, ${m3.enqueuedTimeUtc.toISOString()}`);

    expect(await readFrom(partitionId, { sequenceNumber: m1.sequenceNumber, isInclusive: false }, ids[2], 'sequenceNumber exclusive'),
      ids.slice(1, 3), `after sequence number ${m1.sequenceNumber}`);
    expect(await readFrom(partitionId, { sequenceNumber: m2.sequenceNumber, isInclusive: true }, ids[2], 'sequenceNumber inclusive'),
      ids.slice(1, 3), `from sequence number ${m2.sequenceNumber}`);
    expect(await readFrom(partitionId, { offset: m1.offset }, ids[2], 'offset exclusive'),
      ids.slice(1, 3), `after offset ${m1.offset}`);
    expect(await readFrom(partitionId, { offset: m2.offset, isInclusive: true }, ids[2], 'offset inclusive'),
      ids.slice(1, 3), `from offset ${m2.offset}`);
    expect(await readFrom(partitionId, { enqueuedOn: m2.enqueuedTimeUtc }, ids[2], 'enqueuedOn'),
      ids.slice(2, 3), `after ${m2.enqueuedTimeUtc.toISOString()}`);
    expect(await readFrom(partitionId, { enqueuedOn: new Date(m1.enqueuedTimeUtc.getTime() - 1) }, ids[2], 'enqueuedOn'),
      ids.slice(0, 3), `after ${m1.enqueuedTimeUtc.getTime() - 1} ms`);
    expect(await readFrom(partitionId, earliestEventPosition, ids[2], 'earliest'), ids.slice(0, 3), 'from the start');

    // Latest: nothing already there; once the receiver is up (its first empty batch), the next message.
    const latest = watch(client, { partitionId, startPosition: latestEventPosition, match: mine });
    try {
      await latest.until(() => latest.batches > 0, 15000, 'the latest receiver\'s first batch');
      await sendJson(positionsClient, ids[3], { n: 4 }, { seq: 4 });
      await latest.until(() => latest.events.some(({ event }) => event.messageId === ids[3]), 15000, 'latest');
      expect(latest.events.map(({ event }) => event.messageId), ids.slice(3), 'from latest');
      check(latest.errors.length === 0, `processError: ${latest.errors.map(describe).join('; ')}`);
    } finally {
      await latest.close();
      await client.close();
    }
  }, 90000);

  await scenario('eh-consumer-groups', async () => {
    const first = consumer('$Default');
    const second = consumer(secondGroup);
    const missing = consumer('nosuchgroup');
    const mine = (e) => deviceOf(e) === groupsDevice.deviceId;
    const start = await positionsNow(first);
    const a = watch(first, { startPosition: start, match: mine });
    const b = watch(second, { startPosition: start, match: mine });
    const c = watch(missing, { startPosition: start, match: () => true });
    try {
      const id = `groups-${suffix}`;
      await sendJson(groupsClient, id, { id });
      await a.until(() => a.events.length > 0, 20000, '$Default receiving');
      await b.until(() => b.events.length > 0, 20000, `${secondGroup} receiving`);
      check(a.events[0].event.messageId === id && b.events[0].event.messageId === id,
        `messageIds ${a.events[0].event.messageId} / ${b.events[0].event.messageId}`);
      check(a.events[0].event.sequenceNumber === b.events[0].event.sequenceNumber, 'the same event in both groups');
      check(a.errors.length === 0 && b.errors.length === 0, `processError: ${[...a.errors, ...b.errors].map(describe).join('; ')}`);
      await c.until(() => c.errors.length > 0, 20000, 'an error for the undeclared group nosuchgroup');
      const err = c.errors[0];
      check(err.code === 'MessagingEntityNotFoundError', `undeclared group: ${describe(err)}`);
      check(c.events.length === 0, `the undeclared group received ${c.events.length} events`);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
      await Promise.all([first.close(), second.close(), missing.close()]);
    }
  });

  await scenario('eh-epoch', async () => {
    const low = consumer('$Default');
    const high = consumer('$Default');
    const one = watch(low, { partitionId: '0', startPosition: latestEventPosition, ownerLevel: 1 });
    let two;
    try {
      await one.until(() => one.batches > 0, 15000, 'the owner level 1 receiver up');
      check(one.errors.length === 0, `owner level 1: ${one.errors.map(describe).join('; ')}`);
      two = watch(high, { partitionId: '0', startPosition: latestEventPosition, ownerLevel: 2 });
      await one.until(() => one.errors.length > 0, 15000, 'owner level 1 taken over');
      const err = one.errors[0];
      check(err.code === 'ReceiverDisconnectedError', `owner level 1 got ${describe(err)}`);
      await two.until(() => two.batches > 0, 15000, 'the owner level 2 receiver up');
      check(two.errors.length === 0, `owner level 2: ${two.errors.map(describe).join('; ')}`);
    } finally {
      await one.close();
      if (two) await two.close();
      await low.close();
      await high.close();
    }
  });

  await scenario('eh-websockets', async () => {
    const options = { webSocketOptions: { webSocket: WebSocket } };
    // Over WebSockets the SDK dials the connection string's port, else 443: an Endpoint with a port (an emulator
    // on non-default ports) needs the HTTPS port named.
    if (ehPort || httpsPort) options.customEndpointAddress = `https://${ehHost}:${httpsPort || 443}`;
    const client = consumer('$Default', ehConnectionString, options);
    try {
      const hub = await client.getEventHubProperties();
      check(hub.name === hubName && hub.partitionIds.length === 4, `properties ${JSON.stringify(hub)}`);
      const event = await roundTrip(client, otherDevice, otherClient, `ws-${suffix}`);
      check(deviceOf(event) === otherDevice.deviceId, `device ${deviceOf(event)}`);
    } finally {
      await client.close();
    }
  });

  await scenario('eh-iothub-connection-string', async () => {
    const { connectionString: converted, info } = await convertIotHubConnectionString(connectionString, Number(ehPort || 5671));
    const parsed = parseConnectionString(converted);
    check(parsed.EntityPath === hubName, `EntityPath ${parsed.EntityPath}, expected ${hubName} (redirect ${JSON.stringify(info)})`);
    check(info.hostname === ehHost, `redirect hostname ${info.hostname}, expected ${ehHost}`);
    check(Number(info.port) === Number(ehPort || 5671), `redirect port ${info.port}`);
    const client = consumer('$Default', converted);
    try {
      const event = await roundTrip(client, otherDevice, otherClient, `conv-${suffix}`);
      check(deviceOf(event) === otherDevice.deviceId, `device ${deviceOf(event)}`);
    } finally {
      await client.close();
    }
  });

  if (!plainPort) {
    console.log('SKIP eh-development-emulator: IOTHUB_EVENTHUB_PLAIN_PORT is not set (start the emulator with --eventhubs-plain-port)');
  } else {
    await scenario('eh-development-emulator', async () => {
      const cs = `Endpoint=sb://localhost:${plainPort};SharedAccessKeyName=${eh.SharedAccessKeyName};`
        + `SharedAccessKey=${eh.SharedAccessKey};EntityPath=${hubName};UseDevelopmentEmulator=true`;
      const client = consumer('$Default', cs);
      try {
        const hub = await client.getEventHubProperties();
        check(hub.name === hubName, `name ${hub.name}`);
        const event = await roundTrip(client, otherDevice, otherClient, `plain-${suffix}`);
        check(deviceOf(event) === otherDevice.deviceId, `device ${deviceOf(event)}`);
      } finally {
        await client.close();
      }
    });
  }
}

run(main, { seconds: 360, clients, registry, created });
