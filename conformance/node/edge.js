'use strict';
// IoT Edge devices and their children with Microsoft's unmodified `azure-iothub` (pinned in package-lock.json):
// an Edge device's generated scope, a leaf child and a nested Edge child set by scope, a scope no Edge device owns
// refused, the system modules, the hierarchy in queries, and children freed when their parent is deleted.
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
const gatewayId = `conf-edge-gw-${suffix}`;
const nestedId = `conf-edge-nested-${suffix}`;
const leafId = `conf-edge-leaf-${suffix}`;
const created = [];

async function create(device) {
  const { responseBody } = await registry.create(device);
  created.push(device.deviceId);
  return responseBody;
}

async function queryAll(text) {
  const query = registry.createQuery(text, 100);
  const rows = [];
  while (query.hasMoreResults) {
    const { result } = await query.next();
    rows.push(...result);
  }
  return rows;
}

async function main() {
  let gatewayScope;

  await scenario('edge-device-gets-its-scope', async () => {
    const gateway = await create({ deviceId: gatewayId, capabilities: { iotEdge: true } });
    gatewayScope = gateway.deviceScope;
    check(gatewayScope === `ms-azure-iot-edge://${gatewayId}-${gateway.generationId}`, `deviceScope ${gatewayScope}`);
    check(gateway.capabilities && gateway.capabilities.iotEdge === true, 'iotEdge');
  });

  await scenario('edge-device-has-system-modules', async () => {
    const { responseBody } = await registry.getModulesOnDevice(gatewayId);
    const ids = responseBody.map((m) => m.moduleId).sort();
    check(JSON.stringify(ids) === JSON.stringify(['$edgeAgent', '$edgeHub']), `modules ${ids}`);
  });

  await scenario('leaf-child-by-device-scope', async () => {
    const leaf = await create({ deviceId: leafId, deviceScope: gatewayScope });
    check(leaf.deviceScope === gatewayScope, `deviceScope ${leaf.deviceScope}`);
    check(JSON.stringify(leaf.parentScopes) === JSON.stringify([gatewayScope]), `parentScopes ${leaf.parentScopes}`);
    const { responseBody: twin } = await registry.getTwin(leafId);
    check(twin.deviceScope === gatewayScope, `twin deviceScope ${twin.deviceScope}`);
  });

  await scenario('nested-edge-child-by-parent-scopes', async () => {
    const nested = await create({ deviceId: nestedId, capabilities: { iotEdge: true }, parentScopes: [gatewayScope] });
    check(nested.deviceScope && nested.deviceScope !== gatewayScope, `own deviceScope ${nested.deviceScope}`);
    check(JSON.stringify(nested.parentScopes) === JSON.stringify([gatewayScope]), `parentScopes ${nested.parentScopes}`);
  });

  await scenario('a-scope-no-edge-device-owns-is-refused', async () => {
    const id = `conf-edge-stray-${suffix}`;
    try {
      await registry.create({ deviceId: id, deviceScope: `ms-azure-iot-edge://nobody-${suffix}-1` });
      created.push(id);
    } catch (err) {
      check(err.name === 'ArgumentError', `expected ArgumentError (400), got ${err.name}: ${err.message}`);
      return;
    }
    throw new Error('a made-up scope was accepted');
  });

  await scenario('queries-see-the-hierarchy', async () => {
    const children = await queryAll(`SELECT deviceId FROM devices WHERE ARRAY_CONTAINS(parentScopes, '${gatewayScope}')`);
    const ids = children.map((c) => c.deviceId).sort();
    check(JSON.stringify(ids) === JSON.stringify([nestedId, leafId].sort()), `children ${ids}`);
    const edges = await queryAll(`SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND deviceId = '${gatewayId}'`);
    check(edges.length === 1, `edge rows ${JSON.stringify(edges)}`);
  });

  await scenario('children-freed-when-the-parent-is-deleted', async () => {
    await registry.delete(gatewayId);
    created.splice(created.indexOf(gatewayId), 1);
    const { responseBody: leaf } = await registry.get(leafId);
    check(!leaf.deviceScope, `leaf deviceScope ${leaf.deviceScope}`);
    const { responseBody: nested } = await registry.get(nestedId);
    check(!nested.parentScopes || nested.parentScopes.length === 0, `nested parentScopes ${nested.parentScopes}`);
  });

  for (const id of created) {
    try {
      await registry.delete(id);
    } catch (_) {
      // best effort
    }
  }
  finish();
}

main().catch((err) => {
  console.log(`FAIL edge-suite: ${err.message}`);
  finish();
});
