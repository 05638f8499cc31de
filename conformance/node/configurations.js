'use strict';
// Automatic device management ("configurations") with Microsoft's unmodified Node SDKs (pinned in
// package-lock.json): `azure-iothub` `Registry.addConfiguration/getConfiguration/getConfigurations/
// updateConfiguration/removeConfiguration/applyConfigurationContentOnDevice` on the service side, and a device on
// `azure-iot-device` + `azure-iot-device-mqtt` that sees a configuration's desired properties arrive and reports
// back for a custom metric.
//
// The suite: a device configuration is created and read back (etag, echoed content, system metric queries, the
// list); the hub applies it to the twins its target condition selects (a device tagged through updateTwin while its
// client listens for desired changes, one created with its tags by a bulk create, one untagged that must be left
// alone) and counts them; a higher-priority configuration overrides one path and gives it back when removed; a
// device whose tag changes leaves the target and loses the content; updates go by etag (412 when stale, `*` when
// forced); an Edge deployment is pushed to one device's $edgeAgent/$edgeHub twins; a removed configuration is
// gone (404) and its content leaves the twins.
//
// Runs against whatever hub IOTHUB_CONNECTION_STRING names: the emulator (trust its CA with
// NODE_EXTRA_CA_CERTS=<ca.pem>) or a real Azure IoT Hub. What the hub does in the background (applying content,
// counting metrics) is polled every 200 ms for up to IOTHUB_CONFIG_DEADLINE_SECONDS (default 20; a real hub
// applies configurations on its own schedule, minutes rather than seconds, so give it e.g. 600 there).
// Each scenario prints "PASS <name>" or "FAIL <name>: <why>"; the last line is "N passed, M failed". The devices
// and configurations it creates have random ids and are deleted at the end, also when a scenario fails.

const crypto = require('crypto');
const { isDeepStrictEqual } = require('util');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const harness = require('./harness');

const { check, run, sleep } = harness;

const { connectionString, hostName } = harness.ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(4).toString('hex');
const created = [];
const clients = [];

const deadlineMs = Number(process.env.IOTHUB_CONFIG_DEADLINE_SECONDS || 20) * 1000;
// A scenario polls at most three times for the background work. An SDK error fails it with the request and the
// hub's answer, not only the SDK's one-line message.
const scenario = (name, body) => harness.scenario(name, async () => {
  try {
    await body();
  } catch (err) {
    if (err && err.response) {
      const req = err.response.req || {};
      throw new Error(`${err.name} on ${req.method} ${req.path}: ${err.response.statusCode} ${err.responseBody || err.message}`);
    }
    throw err;
  }
}, 3 * deadlineMs + 20000);
const createDevice = harness.deviceMaker(registry, hostName, 'conf-node-cfg', suffix, created);

// Configuration ids: lowercase letters, digits and -+%_*!' only.
const lowId = `conf-node-low-${suffix}`;
const highId = `conf-node-high-${suffix}`;
const configurationIds = [lowId, highId];
// The desired property both configurations write, the tag that selects their devices and the target condition.
const prop = `conf${suffix}`;
const tag = 'confsuite';
const targetCondition = `tags.${tag}='${suffix}'`;

// Calls `probe` every 200 ms until it returns nothing (done) or the deadline passes; a string it returns says what
// is still missing and ends up in the failure.
async function eventually(what, probe) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const missing = await probe();
    if (!missing) return;
    if (Date.now() > end) throw new Error(`${what} not within ${deadlineMs} ms: ${missing}`);
    await sleep(200);
  }
}

function statusOf(err) {
  return err && err.response ? err.response.statusCode : undefined;
}

// Awaits `call` (a function returning the SDK's promise) and checks it fails with HTTP `status`.
async function expectStatus(call, status, what) {
  try {
    await call();
  } catch (err) {
    check(statusOf(err) === status,
      `${what}: expected ${status}, got ${statusOf(err)} ${err.name}: ${err.responseBody || err.message}`);
    return err;
  }
  throw new Error(`${what}: succeeded, expected ${status}`);
}

async function getConfiguration(id) {
  const { responseBody } = await registry.getConfiguration(id);
  return responseBody;
}

async function getTwin(deviceId) {
  const { responseBody } = await registry.getTwin(deviceId);
  return responseBody;
}

// What a twin shows of this suite: its desired `conf<suffix>` and its `configurations` member.
function applied(twin) {
  return { desired: twin.properties.desired[prop], configurations: twin.configurations || {} };
}

function show(twin) {
  return JSON.stringify(applied(twin));
}

// Waits until the configuration's live counts are `expected` ({targetedCount, appliedCount} and custom metrics).
async function countsBecome(id, expected) {
  let config;
  await eventually(`${id} counts ${JSON.stringify(expected)}`, async () => {
    config = await getConfiguration(id);
    const system = (config.systemMetrics && config.systemMetrics.results) || {};
    const custom = (config.metrics && config.metrics.results) || {};
    for (const [name, value] of Object.entries(expected)) {
      const actual = name === 'targetedCount' || name === 'appliedCount' ? system[name] : custom[name];
      if (actual !== value) return `systemMetrics.results ${JSON.stringify(system)} metrics.results ${JSON.stringify(custom)}`;
    }
    return undefined;
  });
  return config;
}

const lowContent = { deviceContent: { [`properties.desired.${prop}`]: { interval: 10, mode: 'eco' } } };
// The custom metric is scoped to this run's tag so devices of a shared hub that also report mode 'eco' are not counted.
const ecoQuery = `SELECT deviceId FROM devices WHERE tags.${tag}='${suffix}' AND properties.reported.mode='eco'`;

// A minimal IoT Edge deployment: the runtime and the two system modules, no other module.
const edgeAgentDesired = {
  schemaVersion: '1.1',
  runtime: { type: 'docker', settings: { minDockerVersion: 'v1.25', loggingOptions: '' } },
  systemModules: {
    edgeAgent: { type: 'docker', settings: { image: 'mcr.microsoft.com/azureiotedge-agent:1.4', createOptions: '{}' } },
    edgeHub: {
      type: 'docker',
      status: 'running',
      restartPolicy: 'always',
      settings: {
        image: 'mcr.microsoft.com/azureiotedge-hub:1.4',
        createOptions: '{"HostConfig":{"PortBindings":{"443/tcp":[{"HostPort":"443"}],"5671/tcp":[{"HostPort":"5671"}],"8883/tcp":[{"HostPort":"8883"}]}}}',
      },
    },
  },
  modules: {},
};
const edgeHubDesired = { schemaVersion: '1.1', routes: {}, storeAndForwardConfiguration: { timeToLiveSecs: 7200 } };

async function scenarios() {
  let deviceA; // created plain, tagged by updateTwin while its MQTT client listens
  let deviceB; // created with its tag by a bulk create
  let deviceC; // never tagged
  let deviceTwin; // deviceA's device-side twin
  const desiredPatches = []; // what deviceA's 'properties.desired' listener received

  await scenario('add-get-list', async () => {
    const { responseBody: added } = await registry.addConfiguration({
      id: lowId,
      content: lowContent,
      targetCondition,
      priority: 10,
      labels: { suite: 'node-configurations', tier: 'low' },
      metrics: { queries: { eco: ecoQuery } },
    });
    check(added.id === lowId, `added id ${added.id}`);
    check(added.etag === 'MQ==', `added etag ${added.etag}`);

    const config = await getConfiguration(lowId);
    check(config.id === lowId, `id ${config.id}`);
    check(config.etag === 'MQ==', `etag ${config.etag}`);
    check(isDeepStrictEqual(config.content.deviceContent, lowContent.deviceContent),
      `content ${JSON.stringify(config.content)}`);
    check(config.targetCondition === targetCondition, `targetCondition ${config.targetCondition}`);
    check(config.priority === 10, `priority ${config.priority}`);
    check(config.labels && config.labels.suite === 'node-configurations' && config.labels.tier === 'low',
      `labels ${JSON.stringify(config.labels)}`);
    check(config.metrics && config.metrics.queries && config.metrics.queries.eco === ecoQuery,
      `metrics ${JSON.stringify(config.metrics)}`);
    check(typeof config.createdTimeUtc === 'string' && !Number.isNaN(Date.parse(config.createdTimeUtc)),
      `createdTimeUtc ${config.createdTimeUtc}`);
    const queries = (config.systemMetrics && config.systemMetrics.queries) || {};
    check(String(queries.appliedCount).includes(`configurations.[[${lowId}]].status = 'Applied'`),
      `systemMetrics.queries.appliedCount ${queries.appliedCount}`);
    check(String(queries.targetedCount).includes(targetCondition),
      `systemMetrics.queries.targetedCount ${queries.targetedCount}`);

    const { responseBody: list } = await registry.getConfigurations();
    check(Array.isArray(list), `list ${JSON.stringify(list)}`);
    const listed = list.find((c) => c.id === lowId);
    check(listed && listed.etag === 'MQ==' && listed.priority === 10, `${lowId} in the list: ${JSON.stringify(listed)}`);
  });

  await scenario('applied-to-targeted-twins', async () => {
    deviceA = await createDevice('a');
    deviceC = await createDevice('untagged');
    deviceB = { deviceId: `conf-node-cfg-b-${suffix}` };
    const { responseBody: bulk } = await registry.addDevices([{ deviceId: deviceB.deviceId, tags: { [tag]: suffix } }]);
    created.push(deviceB.deviceId);
    check(bulk.isSuccessful === true, `bulk create with tags: ${JSON.stringify(bulk)}`);

    // deviceA's client listens for desired changes before the tag that brings the configuration is set.
    const client = DeviceClient.fromConnectionString(deviceA.connectionString, Mqtt);
    clients.push(client);
    await client.open();
    deviceTwin = await client.getTwin();
    deviceTwin.on('properties.desired', (patch) => desiredPatches.push(JSON.parse(JSON.stringify(patch))));
    // The listener subscribes lazily; let the SUBSCRIBE land before the change.
    await sleep(500);
    await registry.updateTwin(deviceA.deviceId, { tags: { [tag]: suffix } }, '*');

    for (const { deviceId } of [deviceA, deviceB]) {
      await eventually(`${lowId} applied to ${deviceId}`, async () => {
        const twin = await getTwin(deviceId);
        const { desired, configurations } = applied(twin);
        const ok = desired && desired.interval === 10 && desired.mode === 'eco'
          && configurations[lowId] && configurations[lowId].status === 'Applied';
        return ok ? undefined : show(twin);
      });
    }
    const untagged = await getTwin(deviceC.deviceId);
    check(untagged.properties.desired[prop] === undefined, `untagged desired ${show(untagged)}`);
    check(!(untagged.configurations && untagged.configurations[lowId]), `untagged configurations ${show(untagged)}`);

    await eventually('deviceA notified of the desired change', async () => {
      const got = desiredPatches.some((p) => p[prop] && p[prop].interval === 10 && p[prop].mode === 'eco');
      return got ? undefined : `patches ${JSON.stringify(desiredPatches)}`;
    });
    check(deviceTwin.properties.desired[prop].interval === 10, `device-side desired ${JSON.stringify(deviceTwin.properties.desired)}`);

    // The device acts on it and reports its mode, which the custom metric counts.
    await new Promise((resolve, reject) => {
      deviceTwin.properties.reported.update({ mode: 'eco' }, (err) => (err ? reject(err) : resolve()));
    });
    await countsBecome(lowId, { targetedCount: 2, appliedCount: 2, eco: 1 });
  });

  await scenario('precedence', async () => {
    await registry.addConfiguration({
      id: highId,
      content: { deviceContent: { [`properties.desired.${prop}.interval`]: 30 } },
      targetCondition,
      priority: 20,
      labels: { suite: 'node-configurations', tier: 'high' },
    });
    for (const { deviceId } of [deviceA, deviceB]) {
      await eventually(`${highId} wins interval on ${deviceId}`, async () => {
        const twin = await getTwin(deviceId);
        const { desired, configurations } = applied(twin);
        const ok = desired && desired.interval === 30 && desired.mode === 'eco'
          && configurations[highId] && configurations[highId].status === 'Applied';
        return ok ? undefined : show(twin);
      });
    }
    await eventually('deviceA notified of interval 30', async () => (
      desiredPatches.some((p) => p[prop] && p[prop].interval === 30) ? undefined : `patches ${JSON.stringify(desiredPatches)}`));

    await registry.removeConfiguration(highId);
    for (const { deviceId } of [deviceA, deviceB]) {
      await eventually(`interval back to 10 on ${deviceId}`, async () => {
        const twin = await getTwin(deviceId);
        const { desired, configurations } = applied(twin);
        const ok = desired && desired.interval === 10 && desired.mode === 'eco' && !configurations[highId]
          && configurations[lowId] && configurations[lowId].status === 'Applied';
        return ok ? undefined : show(twin);
      });
    }
  });

  await scenario('leave-the-target', async () => {
    await registry.updateTwin(deviceB.deviceId, { tags: { [tag]: `elsewhere-${suffix}` } }, '*');
    await eventually(`${deviceB.deviceId} loses ${lowId}`, async () => {
      const twin = await getTwin(deviceB.deviceId);
      const { desired, configurations } = applied(twin);
      return desired === undefined && !configurations[lowId] ? undefined : show(twin);
    });
    const stays = await getTwin(deviceA.deviceId);
    check(applied(stays).desired && applied(stays).desired.interval === 10, `deviceA keeps it: ${show(stays)}`);
    await countsBecome(lowId, { targetedCount: 1, appliedCount: 1, eco: 1 });
  });

  await scenario('update-with-etags', async () => {
    const original = await getConfiguration(lowId);
    check(original.etag === 'MQ==', `etag before any update ${original.etag}`);
    const changed = Object.assign({}, original, { priority: 15, labels: { suite: 'node-configurations', tier: 'middle' } });
    const { responseBody: updated } = await registry.updateConfiguration(changed);
    check(updated.etag === 'Mg==', `etag after the update ${updated.etag}`);
    check(updated.priority === 15, `priority ${updated.priority}`);
    const read = await getConfiguration(lowId);
    check(read.etag === 'Mg==' && read.priority === 15 && read.labels.tier === 'middle',
      `read back ${JSON.stringify({ etag: read.etag, priority: read.priority, labels: read.labels })}`);
    check(read.createdTimeUtc === original.createdTimeUtc, `createdTimeUtc ${original.createdTimeUtc} -> ${read.createdTimeUtc}`);

    const stale = Object.assign({}, original, { priority: 16 });
    await expectStatus(() => registry.updateConfiguration(stale, false), 412, 'update with the stale etag');
    check((await getConfiguration(lowId)).priority === 15, 'the stale update changed nothing');

    const { responseBody: forced } = await registry.updateConfiguration(Object.assign({}, stale), true);
    check(forced.priority === 16, `forced priority ${forced.priority}`);
    check(forced.etag === 'Mw==', `etag after the forced update ${forced.etag}`);
  });

  await scenario('apply-content-on-edge-device', async () => {
    const edgeId = `conf-node-cfg-edge-${suffix}`;
    await registry.create({ deviceId: edgeId, capabilities: { iotEdge: true } });
    created.push(edgeId);
    await registry.applyConfigurationContentOnDevice(edgeId, {
      modulesContent: {
        $edgeAgent: { 'properties.desired': edgeAgentDesired },
        $edgeHub: { 'properties.desired': edgeHubDesired },
      },
    });
    const { responseBody: agent } = await registry.getModuleTwin(edgeId, '$edgeAgent');
    const agentDesired = agent.properties.desired;
    check(agentDesired.schemaVersion === '1.1', `$edgeAgent schemaVersion ${agentDesired.schemaVersion}`);
    check(isDeepStrictEqual(agentDesired.runtime, edgeAgentDesired.runtime), `$edgeAgent runtime ${JSON.stringify(agentDesired.runtime)}`);
    check(isDeepStrictEqual(agentDesired.systemModules, edgeAgentDesired.systemModules),
      `$edgeAgent systemModules ${JSON.stringify(agentDesired.systemModules)}`);
    const { responseBody: hub } = await registry.getModuleTwin(edgeId, '$edgeHub');
    const hubDesired = hub.properties.desired;
    check(hubDesired.schemaVersion === '1.1', `$edgeHub schemaVersion ${hubDesired.schemaVersion}`);
    check(hubDesired.storeAndForwardConfiguration && hubDesired.storeAndForwardConfiguration.timeToLiveSecs === 7200,
      `$edgeHub storeAndForwardConfiguration ${JSON.stringify(hubDesired.storeAndForwardConfiguration)}`);
  });

  await scenario('remove-and-not-found', async () => {
    await registry.removeConfiguration(lowId);
    await expectStatus(() => registry.getConfiguration(lowId), 404, 'getConfiguration after removeConfiguration');
    const { responseBody: list } = await registry.getConfigurations();
    check(!list.some((c) => c.id === lowId), `${lowId} still listed`);
    await eventually(`${lowId}'s content leaves ${deviceA.deviceId}`, async () => {
      const twin = await getTwin(deviceA.deviceId);
      const { desired, configurations } = applied(twin);
      return desired === undefined && !configurations[lowId] ? undefined : show(twin);
    });
  });
}

async function main() {
  try {
    await scenarios();
  } finally {
    for (const id of configurationIds) {
      try {
        await registry.removeConfiguration(id);
      } catch (_) {
        // already gone
      }
    }
  }
}

run(main, { seconds: Math.max(120, 10 * deadlineMs / 1000), clients, registry, created });
