'use strict';
// Fault conformance with Microsoft's unmodified Node SDKs (pinned in package-lock.json): the emulator's test-suite
// faults (POST /emulator/faults) break the hub the way a real one breaks, and apps written as the tutorial writes
// them (simDevice.js on `azure-iot-device` + `azure-iot-device-mqtt`, scheduleJobService.js on `azure-iothub`)
// ride it out with nothing but the SDKs' own retry:
//   a. a device dropped and refused for ~10 s (`disconnect`) reconnects by itself, answers methods again, and
//      learns the desired change made while it was away;
//   b. a 30 s hub-wide `outage`: the service REST API answers 503 (the SDK's ServiceUnavailableError), health
//      says "outage", the AMQP service side is away (a cloud-to-device send is retried by the SDK until it ends,
//      an Event Hubs reader is detached and reads on after it), and afterwards the device reconnects by itself,
//      answers methods and gets desired patches;
//   c. a device-method job over 3 devices, two of which never get their calls (`methodsUndelivered`), completes
//      with those two devices' records failed (GatewayTimeout) and the third's completed (200).
//
// What the Node device SDK does on reconnect (azure-iot-device/dist/internal_client.js, the transport's
// 'disconnect' handler; azure-iot-device-mqtt/dist/mqtt.js): when the MQTT connection closes the transport reports
// a NotConnectedError, which the default ExponentialBackOffWithJitter policy retries (so does the
// ServiceUnavailableError of a CONNACK 3 refusal, azure-iot-mqtt-base/dist/mqtt_translate_error.js); the client then
// re-enables what the app uses (`_enableMethods` when a method handler is registered, and
// `twin.enableTwinDesiredPropertiesUpdates` when a desired-properties listener is), each a RetryOperation (backoff
// 0.1 s doubling up to 10 s, for up to 240 s) whose first step connects the transport again. It does NOT read the
// twin again (azure-iot-device/dist/twin.js: only `get()` reads it; re-enabling only subscribes to the PATCH
// topic), and the hub sends desired patches only to connected devices, so a change made while the device was away
// never arrives as a patch. What a real app does, and what this one does, is read its twin again on the client's
// 'connect' event (emitted on every successful MQTT connection, the first included): `twin.get()` merges the whole
// desired section and fires the 'properties.desired' listeners with it.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner: the emulator controls need the iothubowner policy),
// IOTHUB_EVENTHUB_CONNECTION_STRING (the Event Hubs-compatible endpoint) and, for the emulator,
// NODE_EXTRA_CA_CERTS=<ca.pem>. The outage is hub-wide: nothing else may use the hub meanwhile. Prints
// "PASS <name>" / "FAIL <name>: <why>", then "N passed, M failed"; exits 0 only when nothing failed. Removes every
// fault (DELETE /emulator/faults) and deletes its devices at the end, whatever happened.

const crypto = require('crypto');
const { EventHubConsumerClient } = require('@azure/event-hubs');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Client: ServiceClient, JobClient, Registry } = require('azure-iothub');
const { emulatorControls, ownerConnection, check, scenario, deviceMaker, fail, run, sleep, withTimeout } = require('./harness');

const { connectionString, hostName } = ownerConnection();
const registry = Registry.fromConnectionString(connectionString);
const service = ServiceClient.fromConnectionString(connectionString);
const jobClient = JobClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(4).toString('hex');
const created = [];
const clients = [];
const createDevice = deviceMaker(registry, hostName, 'node-faults', suffix, created);

// Polls `condition` every 100 ms until it holds; fails after `ms` with `what`.
async function until(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await sleep(100);
  }
  throw new Error(`${what} (waited ${ms} ms)`);
}

// The emulator-only controls under /emulator/, authorized like the service SDK authorizes itself: a SAS token of
// the owner policy for the hub host name.
const emulator = emulatorControls(connectionString);

async function health() {
  const response = await fetch(`https://${hostName}/emulator/health`);
  return response.json();
}

async function addFault(fault) {
  const added = await emulator('POST', '/emulator/faults', fault);
  check(added.id && added.kind === fault.kind, `fault ${JSON.stringify(added)}`);
  return added;
}

// The tutorial's simDevice, grown into what a real app does about connectivity: answers lockDoor (200, as the
// tutorial does), keeps the desired properties it was told about, and reads its twin again whenever the SDK
// has connected again. `app` records what happened to it.
async function startDevice(label) {
  const { deviceId, connectionString: deviceString } = await createDevice(label);
  const client = DeviceClient.fromConnectionString(deviceString, Mqtt);
  clients.push(client);
  const app = { deviceId, client, connects: [], lockDoorCalls: 0, patches: [], readBack: [], reading: false, desired: {}, twinReads: 0, errors: [] };
  client.on('error', (err) => app.errors.push(`error: ${err.message}`));
  // Emitted only when the SDK gives up (a retry policy that says no, or re-enabling failed for 240 s).
  client.on('disconnect', (result) => app.errors.push(`gave up: ${result && result.transportObj ? result.transportObj.message : result}`));
  client.on('connect', () => {
    app.connects.push(Date.now());
    if (app.twin) {
      app.reading = true;
      app.twin.get()
        .then(() => { app.twinReads += 1; })
        .catch((err) => app.errors.push(`twin.get after reconnecting: ${err.message}`))
        .finally(() => { app.reading = false; });
    }
  });
  await client.open();
  client.onDeviceMethod('lockDoor', (request, response) => {
    app.lockDoorCalls += 1;
    response.send(200, { locked: true, by: deviceId }, (err) => {
      if (err) app.errors.push(`lockDoor response: ${err.message}`);
    });
  });
  app.twin = await client.getTwin();
  // `twin.get()` fires this listener too, with the whole desired section: kept apart from the hub's patches.
  app.twin.on('properties.desired', (delta) => {
    (app.reading ? app.readBack : app.patches).push(delta);
    Object.assign(app.desired, delta);
  });
  // onDeviceMethod and the desired listener subscribe lazily: let the SUBSCRIBEs land.
  await sleep(500);
  return app;
}

// Invokes lockDoor until the device answers (it may still be re-subscribing), for at most `seconds`.
async function lockDoorUntilAnswered(deviceId, seconds) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    try {
      const { result } = await service.invokeDeviceMethod(deviceId, {
        methodName: 'lockDoor',
        payload: { reason: 'conformance' },
        responseTimeoutInSeconds: 5,
        connectTimeoutInSeconds: 2,
      });
      return result;
    } catch (err) {
      last = err;
      await sleep(250);
    }
  }
  throw new Error(`${deviceId} did not answer lockDoor within ${seconds} s: ${last && last.message}`);
}

async function connectionState(deviceId) {
  const { responseBody } = await registry.get(deviceId);
  return responseBody.connectionState;
}

// A page of a query through the callback form (the promise form of next() ignores the continuation token).
function nextPage(query) {
  return new Promise((resolve, reject) => {
    query.next((err, results, response) => (err ? reject(err) : resolve({ results, response })));
  });
}

// The tutorial's monitorJob: polls getJob until the job is done.
async function monitorJob(jobId, ms) {
  let job;
  await until(async () => {
    ({ jobStatus: job } = await jobClient.getJob(jobId));
    return ['completed', 'failed', 'cancelled'].includes(job.status);
  }, ms, `job ${jobId} did not finish`);
  return job;
}

async function main() {
  await scenario('forced-disconnect-device-reconnects-by-itself-and-catches-up', async () => {
    const app = await startDevice('away');
    const { deviceId } = app;
    check(app.connects.length === 1, `connects before the fault: ${app.connects.length}`);
    const fault = await addFault({ kind: 'disconnect', deviceId, durationSeconds: 10 });
    const faultEnds = Date.parse(fault.endTime);
    check(faultEnds - Date.parse(fault.startTime) === 10000, `fault ${JSON.stringify(fault)}`);
    await until(async () => (await connectionState(deviceId)) === 'Disconnected', 5000, 'the hub never saw the device go');
    const listed = await emulator('GET', '/emulator/faults');
    check(listed.some((f) => f.id === fault.id && f.deviceId === deviceId), `faults ${JSON.stringify(listed)}`);

    // While it is refused (the SDK keeps retrying, getting CONNACK 3): the service changes its desired properties,
    // and a method call finds it offline.
    await sleep(2000);
    check(Date.now() < faultEnds - 2000, 'the fault is still in force');
    await registry.updateTwin(deviceId, { properties: { desired: { whileAway: 'closed', floor: 3 } } }, '*');
    try {
      await service.invokeDeviceMethod(deviceId, { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 1 });
      throw new Error('a method call reached a device the hub refuses');
    } catch (err) {
      check(err.response && err.response.statusCode === 404, `offline call: ${err.name} ${err.message}`);
      check(String(err.responseBody).includes('404103'), `offline call body ${err.responseBody}`);
    }
    check(await connectionState(deviceId) === 'Disconnected', 'the device got back in while refused');
    check(app.connects.length === 1, `the device connected ${app.connects.length - 1} times while refused`);

    // The fault ends by itself; the SDK's own retry brings the device back (its backoff is at most 10 s).
    await until(() => app.connects.length > 1, (faultEnds - Date.now()) + 20000, 'the SDK did not reconnect within 20 s of the fault\'s end');
    const reconnectedAfter = app.connects[1] - faultEnds;
    console.log(`INFO disconnect: the SDK reconnected ${reconnectedAfter} ms after the fault ended`);
    check(reconnectedAfter >= -200, `reconnected ${reconnectedAfter} ms before the fault ended`);
    const result = await lockDoorUntilAnswered(deviceId, 10);
    check(result.status === 200 && result.payload.by === deviceId, `lockDoor ${JSON.stringify(result)}`);
    // The app's twin read on 'connect' brings the change made while it was away.
    await until(() => app.twinReads > 0, 10000, `the app's twin read after reconnecting did not finish: ${app.errors}`);
    check(app.desired.whileAway === 'closed' && app.desired.floor === 3, `the app sees desired ${JSON.stringify(app.desired)}`);
    check(app.twin.properties.desired.whileAway === 'closed', `twin.properties.desired ${JSON.stringify(app.twin.properties.desired)}`);
    check(app.readBack.some((d) => d.whileAway === 'closed'), `the twin read did not bring it: ${JSON.stringify(app.readBack)}`);
    const asPatch = app.patches.some((d) => d.whileAway === 'closed');
    console.log(`INFO disconnect: the change made while away ${asPatch ? 'also arrived as a desired patch' : 'arrived only through the app\'s twin read'}`);
    check(app.errors.length === 0, `app errors: ${app.errors.join('; ')}`);

    const calls = await emulator('GET', `/emulator/devices/${deviceId}/methodCalls`);
    check(calls[0].status === 200 && calls[0].response.by === deviceId
      && calls.slice(1).some((c) => c.errorCode === 'DeviceNotOnline'), `method calls ${JSON.stringify(calls)}`);
    const faults = await emulator('GET', '/emulator/faults');
    check(!faults.some((f) => f.id === fault.id), `the ended fault is still listed: ${JSON.stringify(faults)}`);
  }, 60000);

  await scenario('30s-outage-503-then-device-reconnects-by-itself', async () => {
    const app = await startDevice('outage');
    const { deviceId } = app;
    const before = await health();
    check(before.status === 'healthy', `health before ${JSON.stringify(before)}`);
    // The back end's AMQP connections are open before the outage: cloud-to-device sends, and a telemetry reader on
    // the Event Hubs-compatible endpoint (its retry delay shortened from the SDK's 30 s to keep the run short). It
    // starts from a time, not the latest event: a receiver attached again after the outage starts there too.
    await service.open();
    await service.send(deviceId, 'before the outage');
    const events = [];
    const readerErrors = [];
    const consumer = new EventHubConsumerClient('$Default', process.env.IOTHUB_EVENTHUB_CONNECTION_STRING,
      { retryOptions: { retryDelayInMs: 2000 } });
    const subscription = consumer.subscribe({
      processEvents: async (received) => { events.push(...received); },
      processError: async (err) => { readerErrors.push(err); },
    }, { startPosition: { enqueuedOn: new Date() }, maxWaitTimeInSeconds: 1 });
    await sleep(2000);
    const fault = await addFault({ kind: 'outage', durationSeconds: 30 });
    try {
      const outageEnds = Date.parse(fault.endTime);
      check(!fault.deviceId, `outage ${JSON.stringify(fault)}`);

      // The service REST API is away: the SDK surfaces the 503 as its ServiceUnavailableError.
      const during = await health();
      check(during.status === 'outage' && during.activeFaults >= 1, `health during ${JSON.stringify(during)}`);
      for (const [what, call] of [
        ['registry.getTwin', () => registry.getTwin(deviceId)],
        ['registry.updateTwin', () => registry.updateTwin(deviceId, { properties: { desired: { during: 1 } } }, '*')],
        ['jobClient.getJob', () => jobClient.getJob(crypto.randomUUID())],
      ]) {
        try {
          await call();
          throw new Error(`${what} succeeded during the outage`);
        } catch (err) {
          check(err.name === 'ServiceUnavailableError', `${what}: ${err.name} ${err.message}`);
          check(err.response && err.response.statusCode === 503, `${what} status ${err.response && err.response.statusCode}`);
          const retryAfter = Number(err.response.headers['retry-after']);
          check(retryAfter >= 1 && retryAfter <= 30, `${what} Retry-After ${err.response.headers['retry-after']}`);
        }
      }
      // The AMQP service side is away too: its sender is detached (detach-forced, the SDK's retryable
      // ServiceUnavailableError), so a send made now is retried by the SDK and lands only once the outage ends.
      const sendDuring = service.send(deviceId, 'during the outage')
        .then(() => ({ at: Date.now() }), (err) => ({ at: Date.now(), err }));
      // The controls still answer, so a test can see (and end) the outage.
      const listed = await emulator('GET', '/emulator/faults');
      check(listed.some((f) => f.id === fault.id && f.kind === 'outage'), `faults ${JSON.stringify(listed)}`);
      // A reported patch the app makes meanwhile is retried by the SDK until it lands.
      const reported = new Promise((resolve, reject) => {
        app.twin.properties.reported.update({ duringOutage: true }, (err) => (err ? reject(err) : resolve()));
      });
      reported.catch(() => {});

      await until(async () => (await health()).status === 'healthy', (outageEnds - Date.now()) + 3000, 'the outage did not end');
      const ended = Date.now();
      check(ended >= outageEnds - 200, `health healthy ${outageEnds - ended} ms before the outage's end`);
      await until(() => app.connects.length > 1, 60000, 'the SDK did not reconnect within 60 s of the outage\'s end');
      const reconnectedAfter = app.connects[1] - outageEnds;
      console.log(`INFO outage: the SDK reconnected ${reconnectedAfter} ms after the outage ended`);
      check(reconnectedAfter >= -200, `the device got back in ${-reconnectedAfter} ms before the outage ended`);

      const result = await lockDoorUntilAnswered(deviceId, 10);
      check(result.status === 200 && result.payload.by === deviceId, `lockDoor ${JSON.stringify(result)}`);
      await registry.updateTwin(deviceId, { properties: { desired: { afterOutage: 'open' } } }, '*');
      await until(() => app.patches.some((p) => p.afterOutage === 'open'), 10000,
        `the desired change after the outage did not reach the device: ${JSON.stringify(app.patches)}`);
      // The reader rode the outage out with the SDK's own retry and reads what the device sends after it.
      const marker = `after-outage-${crypto.randomUUID()}`;
      await app.client.sendEvent(new Message(JSON.stringify({ marker })));
      await until(() => events.some((e) => e.body && e.body.marker === marker), 60000,
        `the telemetry sent after the outage was not read: ${readerErrors.map((e) => e.message).join('; ')}`);
      console.log(`INFO outage: the Event Hubs reader saw ${readerErrors.length} errors and read on`);
      await withTimeout(reported, 20000, 'the reported patch made during the outage');
      const sent = await withTimeout(sendDuring, 60000, 'the cloud-to-device send made during the outage');
      check(!sent.err, `the send made during the outage failed: ${sent.err && `${sent.err.name} ${sent.err.message}`}`);
      check(sent.at >= outageEnds - 200, `the send made during the outage landed ${outageEnds - sent.at} ms before it ended`);
      console.log(`INFO outage: the cloud-to-device send made during it landed ${sent.at - outageEnds} ms after it ended`);
      const { responseBody: identity } = await registry.get(deviceId);
      check(identity.cloudToDeviceMessageCount === 2, `queued ${identity.cloudToDeviceMessageCount}, not 2`);
      const { responseBody: twin } = await registry.getTwin(deviceId);
      check(twin.properties.reported.duringOutage === true, `reported ${JSON.stringify(twin.properties.reported)}`);
      check(app.errors.length === 0, `app errors: ${app.errors.join('; ')}`);
      check(reconnectedAfter < 60000, `reconnected ${reconnectedAfter} ms after the outage`);
    } finally {
      // Ends it early if a check failed, so what follows is not refused.
      await emulator('DELETE', `/emulator/faults/${fault.id}`).catch(() => {});
      await subscription.close().catch(() => {});
      await consumer.close().catch(() => {});
    }
  }, 150000);

  await scenario('job-with-undelivered-methods-fails-those-devices-GatewayTimeout', async () => {
    const apps = [];
    for (const label of ['door1', 'door2', 'door3']) apps.push(await startDevice(label));
    const [ok, lost1, lost2] = apps;
    const faults = [];
    for (const app of [lost1, lost2]) {
      faults.push(await addFault({ kind: 'methodsUndelivered', deviceId: app.deviceId, durationSeconds: 60 }));
    }
    try {
      // Meanwhile a direct call to an undelivered device: 504 / 504101 after its response timeout.
      const callStarted = Date.now();
      const direct = service.invokeDeviceMethod(lost1.deviceId, { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 5 })
        .then(() => new Error('a held-back direct call was answered'), (err) => err);
      const jobId = crypto.randomUUID();
      const queryCondition = `deviceId IN [${apps.map((a) => `'${a.deviceId}'`).join(', ')}]`;
      const started = Date.now();
      const { jobStatus: queued } = await jobClient.scheduleDeviceMethod(jobId, queryCondition,
        { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 5 }, new Date(), 60);
      check(queued.status === 'queued', `created ${queued.status}`);
      const job = await monitorJob(jobId, 30000);
      const took = Date.now() - started;
      check(job.status === 'completed', `job ended ${job.status}: ${job.failureReason || ''}`);
      const stats = job.deviceJobStatistics;
      check(stats.deviceCount === 3 && stats.succeededCount === 1 && stats.failedCount === 2,
        `statistics ${JSON.stringify(stats)}`);
      check(took >= 4500, `the job finished ${took} ms after it started, before the 5 s response timeout`);

      const query = registry.createQuery(`SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${jobId}'`);
      const { results: records } = await nextPage(query);
      check(records.length === 3, `records ${JSON.stringify(records)}`);
      const byDevice = Object.fromEntries(records.map((r) => [r.deviceId, r]));
      const good = byDevice[ok.deviceId];
      check(good && good.status === 'completed' && good.jobType === 'scheduleDeviceMethod'
        && good.outcome.deviceMethodResponse.status === 200
        && good.outcome.deviceMethodResponse.payload.by === ok.deviceId, `${ok.deviceId} record ${JSON.stringify(good)}`);
      for (const app of [lost1, lost2]) {
        const record = byDevice[app.deviceId];
        check(record && record.status === 'failed' && record.error && record.error.code === 'GatewayTimeout',
          `${app.deviceId} record ${JSON.stringify(record)}`);
      }
      check(ok.lockDoorCalls === 1 && lost1.lockDoorCalls === 0 && lost2.lockDoorCalls === 0,
        `lockDoor ran ${apps.map((a) => a.lockDoorCalls)} times`);

      const err = await direct;
      check(err.name === 'GatewayTimeoutError' && err.response && err.response.statusCode === 504,
        `direct call: ${err.name} ${err.message}`);
      check(String(err.responseBody).includes('504101'), `direct call body ${err.responseBody}`);
      check(Date.now() - callStarted >= 4500, `direct call answered after ${Date.now() - callStarted} ms`);

      // The hub's record of the calls: the job's (and the direct one on lost1) timed out, never answered.
      for (const [app, count] of [[lost1, 2], [lost2, 1]]) {
        const calls = await emulator('GET', `/emulator/devices/${app.deviceId}/methodCalls`);
        check(calls.length === count && calls.every((c) => c.methodName === 'lockDoor' && c.errorCode === 'GatewayTimeout'
          && c.status === undefined && c.durationMs >= 4500), `${app.deviceId} method calls ${JSON.stringify(calls)}`);
      }
      const okCalls = await emulator('GET', `/emulator/devices/${ok.deviceId}/methodCalls`);
      check(okCalls.length === 1 && okCalls[0].status === 200 && !okCalls[0].errorCode, `${ok.deviceId} method calls ${JSON.stringify(okCalls)}`);
    } finally {
      for (const fault of faults) await emulator('DELETE', `/emulator/faults/${fault.id}`).catch(() => {});
    }
    // Once the fault is gone the calls get through again.
    const result = await lockDoorUntilAnswered(lost1.deviceId, 10);
    check(result.status === 200, `lockDoor after the fault ${JSON.stringify(result)}`);
  }, 60000);
}

async function mainThenClearFaults() {
  try {
    await main();
  } finally {
    // Whatever happened: no fault of this script outlives it.
    try {
      await emulator('DELETE', '/emulator/faults');
    } catch (err) {
      fail('cleanup', `could not remove the faults: ${err.message}`);
    }
  }
}

run(mainThenClearFaults, { seconds: 300, clients, service, registry, created });
