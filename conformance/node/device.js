'use strict';
// Device conformance with Microsoft's unmodified Node SDKs (versions pinned in package-lock.json):
// `azure-iot-device` + `azure-iot-device-mqtt` on the device side (MQTT over TLS, and MQTT over WebSockets),
// `azure-iothub` (`Client.invokeDeviceMethod`, `Registry.getTwin/updateTwin`) on the service side.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner) and, for the emulator, NODE_EXTRA_CA_CERTS=<ca.pem>. Prints
// "PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exit code 0 only when nothing failed.
// The devices it creates have random ids and are deleted at the end.

const crypto = require('crypto');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const harness = require('./harness');
const { check, run } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(5).toString('hex');
const created = [];
const clients = [];

// Device scenarios get 30 s each.
const scenario = (name, body) => harness.scenario(name, body, 30000);

const createDevice = harness.deviceMaker(registry, hostName, 'conf-node', suffix, created);

async function connect(device, transport) {
  const client = DeviceClient.fromConnectionString(device.connectionString, transport);
  clients.push(client);
  await client.open();
  return client;
}

// What echoOrder handlers received, as the device's JSON.stringify saw it.
const echoed = [];

/// Registers echoOrder, which answers 200 with exactly the payload it was sent.
function answerEchoOrder(client) {
  client.onDeviceMethod('echoOrder', (request, response) => {
    echoed.push(JSON.stringify(request.payload));
    response.send(200, request.payload, (err) => {
      if (err) console.error(`echoOrder response failed: ${err.message}`);
    });
  });
}

/// Registers lockDoor, which answers 200 with what it was sent and where it ran.
function answerLockDoor(client, deviceId) {
  client.onDeviceMethod('lockDoor', (request, response) => {
    response.send(200, { locked: true, echo: request.payload, deviceId }, (err) => {
      if (err) console.error(`lockDoor response failed: ${err.message}`);
    });
  });
}

async function main() {
  const mqttDevice = await createDevice('mqtt');
  const wsDevice = await createDevice('ws');
  const offlineDevice = await createDevice('offline');
  let client;
  let twin;

  await scenario('connect-mqtt', async () => {
    client = await connect(mqttDevice, Mqtt);
    answerLockDoor(client, mqttDevice.deviceId);
    answerEchoOrder(client);
  });

  await scenario('direct-method-round-trip', async () => {
    // Give the lazy SUBSCRIBE of onDeviceMethod a moment, as a real back end would with connectTimeout.
    const { result } = await service.invokeDeviceMethod(mqttDevice.deviceId, {
      methodName: 'lockDoor',
      payload: { door: 'front', pin: 1234 },
      responseTimeoutInSeconds: 10,
      connectTimeoutInSeconds: 5,
    });
    check(result.status === 200, `status ${result.status}`);
    check(result.payload.locked === true, `payload ${JSON.stringify(result.payload)}`);
    check(result.payload.echo.door === 'front' && result.payload.echo.pin === 1234, 'payload reached the device intact');
  });

  await scenario('method-payload-keeps-its-key-order', async () => {
    // Keys deliberately not in alphabetical order, nested ones too: a hub that sorts them fails this.
    const payload = { nonce: crypto.randomBytes(4).toString('hex'), n: 42, list: [3, 1, { z: 1, a: 2 }], flag: true };
    const sent = JSON.stringify(payload);
    const { result } = await service.invokeDeviceMethod(mqttDevice.deviceId, {
      methodName: 'echoOrder',
      payload,
      responseTimeoutInSeconds: 10,
      connectTimeoutInSeconds: 5,
    });
    check(echoed[echoed.length - 1] === sent, `the device received ${echoed[echoed.length - 1]}, sent ${sent}`);
    check(JSON.stringify(result.payload) === sent, `the service got back ${JSON.stringify(result.payload)}, sent ${sent}`);
  });

  await scenario('reported-properties-read-by-service', async () => {
    twin = await client.getTwin();
    check(typeof twin.properties.desired.$version === 'number', 'device twin has desired.$version');
    const patch = { battery: 87, firmware: { version: '1.2.3' } };
    await new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
    const { responseBody } = await registry.getTwin(mqttDevice.deviceId);
    check(responseBody.properties.reported.battery === 87, `reported ${JSON.stringify(responseBody.properties.reported)}`);
    check(responseBody.properties.reported.firmware.version === '1.2.3', 'nested reported property');
  });

  await scenario('desired-change-reaches-device', async () => {
    let delivered = false;
    const received = new Promise((resolve) => {
      twin.on('properties.desired', (delta) => {
        if (delta.building === '43') {
          delivered = true;
          resolve(delta);
        }
      });
    });
    // The SDK subscribes lazily when the listener is added, and the hub keeps no notification for a device that
    // has not subscribed yet: write until one arrives, as a back end reconciling a device would.
    for (let attempt = 0; attempt < 20 && !delivered; attempt++) {
      const { responseBody } = await registry.updateTwin(mqttDevice.deviceId,
        { properties: { desired: { building: '43', floor: 3, attempt } } }, '*');
      check(responseBody.properties.desired.building === '43', 'service sees its own write');
      await Promise.race([received, new Promise((resolve) => setTimeout(resolve, 500))]);
    }
    const delta = await received;
    check(delta.floor === 3, `delta ${JSON.stringify(delta)}`);
    check(typeof delta.$version === 'number', 'the notification carries $version');
  });

  await scenario('telemetry-accepted', async () => {
    const message = new Message(JSON.stringify({ temperature: 21.5 }));
    message.properties.add('alert', 'false');
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    await client.sendEvent(message);
  });

  await scenario('offline-device-gets-404103', async () => {
    try {
      await service.invokeDeviceMethod(offlineDevice.deviceId, { methodName: 'lockDoor', responseTimeoutInSeconds: 5 });
    } catch (err) {
      const body = String(err.responseBody || '');
      check(err.response && err.response.statusCode === 404, `status ${err.response && err.response.statusCode}`);
      check(body.includes('404103'), `body ${body}`);
      return;
    }
    throw new Error('the call succeeded against a device that never connected');
  });

  await scenario('mqtt-over-websockets-method', async () => {
    const wsClient = await connect(wsDevice, MqttWs);
    answerLockDoor(wsClient, wsDevice.deviceId);
    const { result } = await service.invokeDeviceMethod(wsDevice.deviceId, {
      methodName: 'lockDoor',
      payload: null,
      responseTimeoutInSeconds: 10,
      connectTimeoutInSeconds: 5,
    });
    check(result.status === 200 && result.payload.deviceId === wsDevice.deviceId, `result ${JSON.stringify(result)}`);
    check(result.payload.echo === null, 'a null payload arrives as null');
  });
}

run(main, { seconds: 120, clients, registry, created });
