'use strict';
// Devices over AMQP with Microsoft's unmodified Node SDK (`azure-iot-device` + `azure-iot-device-amqp`, pinned in
// package-lock.json): the tutorial's simDevice with only its transport line changed (`Amqp`, and `AmqpWs` over
// WebSockets on 443), scheduleJobService's two jobs over both devices, telemetry read back from the Event
// Hubs-compatible endpoint (`@azure/event-hubs`), cloud-to-device messages completed, rejected and abandoned, and
// the twin (get, reported patch, desired notification), all on the service side with `azure-iothub`.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner), IOTHUB_EVENTHUB_CONNECTION_STRING for the read-back, and for the
// emulator NODE_EXTRA_CA_CERTS=<ca.pem>. Prints "PASS <name>" / "FAIL <name>: <why>", then "N passed, M failed";
// exits 0 only when nothing failed. Its devices are deleted at the end.

const crypto = require('crypto');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Client: ServiceClient, JobClient, Registry } = require('azure-iothub');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const harness = require('./harness');
const { check, withTimeout } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const jobClient = JobClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(4).toString('hex');
const created = [];
const clients = [];
const createDevice = harness.deviceMaker(registry, hostName, 'conf-node-amqp', suffix, created);
const scenario = (name, body) => harness.scenario(name, body, 60000);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await sleep(100);
  }
  throw new Error(`${what} (waited ${ms} ms)`);
}

// The tutorial's simDevice, its transport line the only change: answers lockDoor with 200 and remembers the
// desired properties it is told about.
async function simDevice(device, transport) {
  const client = DeviceClient.fromConnectionString(device.connectionString, transport);
  clients.push(client);
  const app = { lockDoor: 0, desired: {} };
  await client.open();
  client.onDeviceMethod('lockDoor', (request, response) => {
    app.lockDoor += 1;
    response.send(200, (err) => {
      if (err) console.error(`An error occurred when sending a method response: ${err}`);
    });
  });
  const twin = await client.getTwin();
  twin.on('properties.desired', (delta) => Object.assign(app.desired, delta));
  return { client, twin, app };
}

// The emulator's test-suite controls (/emulator/...), signed like the service SDK signs (owner policy).
const emulator = harness.emulatorControls(connectionString);

const connectionState = async (id) => (await registry.getTwin(id)).responseBody.connectionState;

// The tutorial's monitorJob, as a promise (getJob's promise form answers `{ jobStatus }`).
async function monitorJob(jobId) {
  let job;
  await until(async () => {
    ({ jobStatus: job } = await jobClient.getJob(jobId));
    return ['completed', 'failed', 'cancelled'].includes(job.status);
  }, 40000, `job ${jobId} to end`);
  return job;
}

async function main() {
  const tcp = await createDevice('tcp');
  const ws = await createDevice('ws');
  let tcpDevice;
  let wsDevice;

  await scenario('simDevice-connects-over-amqp-and-amqp-websockets', async () => {
    tcpDevice = await simDevice(tcp, Amqp);
    wsDevice = await simDevice(ws, AmqpWs);
    for (const id of [tcp.deviceId, ws.deviceId]) {
      const { responseBody: twin } = await registry.getTwin(id);
      check(twin.connectionState === 'Connected', `${id} is ${twin.connectionState}`);
    }
  });

  await scenario('tutorial-jobs-over-amqp-devices', async () => {
    const condition = `deviceId IN ['${tcp.deviceId}', '${ws.deviceId}']`;
    const methodJobId = crypto.randomUUID();
    const twinJobId = crypto.randomUUID();
    const start = new Date();
    await jobClient.scheduleDeviceMethod(methodJobId, condition,
      { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 15 }, start, 300);
    await jobClient.scheduleTwinUpdate(twinJobId, condition,
      { etag: '*', properties: { desired: { building: '43', floor: 3 } } }, start, 300);
    for (const [jobId, what] of [[methodJobId, 'method'], [twinJobId, 'twin']]) {
      const job = await monitorJob(jobId);
      const stats = job.deviceJobStatistics;
      check(job.status === 'completed' && stats.succeededCount === 2 && stats.failedCount === 0,
        `${what} job ${job.status} ${JSON.stringify(stats)}`);
    }
    check(tcpDevice.app.lockDoor === 1 && wsDevice.app.lockDoor === 1,
      `lockDoor ran ${tcpDevice.app.lockDoor} and ${wsDevice.app.lockDoor} times`);
    await until(() => tcpDevice.app.desired.floor === 3 && wsDevice.app.desired.floor === 3, 10000,
      'both devices told floor 3');
    check(tcpDevice.app.desired.building === '43' && wsDevice.app.desired.building === '43', 'building 43');
  });

  await scenario('direct-method-with-payload-over-amqp', async () => {
    tcpDevice.client.onDeviceMethod('echo', (request, response) => response.send(201, { got: request.payload }));
    await sleep(300);
    const { result } = await service.invokeDeviceMethod(tcp.deviceId,
      { methodName: 'echo', payload: { door: 'front', n: 1 }, responseTimeoutInSeconds: 10 });
    check(result.status === 201 && result.payload.got.door === 'front' && result.payload.got.n === 1,
      `answer ${JSON.stringify(result)}`);
  });

  await scenario('telemetry-read-back-from-the-event-hubs-endpoint', async () => {
    const ehConnectionString = process.env.IOTHUB_EVENTHUB_CONNECTION_STRING;
    const message = new Message(JSON.stringify({ temperature: 21.5 }));
    message.messageId = `amqp-${suffix}`;
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('temperatureAlert', 'true');
    if (!ehConnectionString) {
      await tcpDevice.client.sendEvent(message);
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
      await tcpDevice.client.sendEvent(message);
      const event = await withTimeout(received, 20000, 'reading the message back');
      const sys = event.systemProperties;
      check(sys['iothub-connection-device-id'] === tcp.deviceId, `device id ${sys['iothub-connection-device-id']}`);
      check(event.properties.temperatureAlert === 'true', `properties ${JSON.stringify(event.properties)}`);
      check(event.contentType === 'application/json', `content type ${event.contentType}`);
      check(event.body && event.body.temperature === 21.5, `body ${JSON.stringify(event.body)}`);
    } finally {
      await consumer.close();
    }
  });

  await scenario('c2d-complete-reject-abandon-over-amqp', async () => {
    const client = tcpDevice.client;
    const seen = [];
    const actions = { 'c2d-complete': 'complete', 'c2d-reject': 'reject', 'c2d-abandon': 'abandon' };
    let abandoned = false;
    client.on('message', (message) => {
      seen.push(message.messageId);
      let action = actions[message.messageId];
      if (action === 'abandon' && abandoned) action = 'complete';
      if (action === 'abandon') abandoned = true;
      client[action](message, () => {});
    });
    const send = async (id) => {
      const message = new Message(`{"id":"${id}"}`);
      message.messageId = id;
      await service.send(tcp.deviceId, message);
    };
    // One at a time: rhea may merge back-to-back settlements of different outcomes into one disposition.
    for (const id of ['c2d-complete', 'c2d-reject', 'c2d-abandon']) {
      const before = seen.length;
      await send(id);
      await until(() => seen.length > before, 15000, `${id} delivered`);
      await sleep(300);
    }
    await until(() => seen.filter((id) => id === 'c2d-abandon').length === 2, 15000, 'the abandoned message again');
    await until(async () => (await registry.get(tcp.deviceId)).responseBody.cloudToDeviceMessageCount === 0, 10000,
      'the queue to empty');
    check(seen.filter((id) => id === 'c2d-reject').length === 1, `the rejected one came once: ${seen}`);
  });

  await scenario('twin-get-reported-patch-and-desired-notification', async () => {
    const twin = await tcpDevice.client.getTwin();
    check(twin.properties.desired.building === '43', `desired ${JSON.stringify(twin.properties.desired)}`);
    await new Promise((resolve, reject) => twin.properties.reported.update({ door: 'locked', firmware: '1.2' },
      (err) => (err ? reject(err) : resolve())));
    const { responseBody: seen } = await registry.getTwin(tcp.deviceId);
    check(seen.properties.reported.door === 'locked' && seen.properties.reported.firmware === '1.2',
      `reported ${JSON.stringify(seen.properties.reported)}`);
    await registry.updateTwin(tcp.deviceId, { properties: { desired: { floor: 5 } } }, '*');
    await until(() => tcpDevice.app.desired.floor === 5, 10000, 'the desired change to arrive');
  });

  await scenario('amqp-device-rides-out-a-forced-disconnect', async () => {
    // The hub detaches the device's links with amqp:link:detach-forced and refuses it for 5 s; the SDK retries.
    await emulator('POST', '/emulator/faults', { kind: 'disconnect', deviceId: tcp.deviceId, durationSeconds: 5 });
    try {
      await until(async () => (await connectionState(tcp.deviceId)) === 'Disconnected', 5000, 'dropped');
      await until(async () => (await connectionState(tcp.deviceId)) === 'Connected', 40000, 'back by itself');
      const { result } = await service.invokeDeviceMethod(tcp.deviceId,
        { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 });
      check(result.status === 200, `lockDoor after the reconnect: ${JSON.stringify(result)}`);
    } finally {
      await emulator('DELETE', '/emulator/faults');
    }
  });

  await scenario('amqp-device-goes-disconnected-when-it-closes', async () => {
    await wsDevice.client.close();
    await until(async () => (await registry.getTwin(ws.deviceId)).responseBody.connectionState === 'Disconnected',
      10000, 'Disconnected after close');
  });
}

harness.run(main, { seconds: 300, clients, service, registry, created });
