'use strict';
// The tutorial in shared/seeds (simDevice.js + scheduleJobService.js) with Microsoft's unmodified Node SDKs
// (pinned in package-lock.json): a device answering lockDoor over MQTT, a scheduleDeviceMethod job and a
// scheduleTwinUpdate job over `deviceId IN [...]` scheduled back to back, both watched with getJob until done;
// then the twin seen with Registry.getTwin, the per-device records from `devices.jobs`, and what else a back end
// does with JobClient: promise-style scheduling, a future job cancelled, and the job query.
//
// Needs IOTHUB_CONNECTION_STRING (hub owner, used to register the device) and optionally
// IOTHUB_JOBS_CONNECTION_STRING (the tutorial's registryReadWrite policy; the owner string otherwise); for the
// emulator NODE_EXTRA_CA_CERTS=<ca.pem>. Prints "PASS <name>" / "FAIL <name>: <why>" lines, then
// "N passed, M failed"; exit code 0 only when nothing failed. The device it registers is deleted at the end.

const crypto = require('crypto');
const { Client } = require('azure-iot-device');
const { Mqtt: Protocol } = require('azure-iot-device-mqtt');
const { JobClient, Registry } = require('azure-iothub');
const { ownerConnection, check, scenario, fail, finish } = require('./harness');

const { connectionString: ownerString, hostName } = ownerConnection();
const connectionString = process.env.IOTHUB_JOBS_CONNECTION_STRING || ownerString;
const registry = Registry.fromConnectionString(ownerString);
const jobClient = JobClient.fromConnectionString(connectionString);
const suffix = crypto.randomBytes(5).toString('hex');
const deviceId = `conf-node-jobs-${suffix}`;
const queryCondition = `deviceId IN ['${deviceId}']`;
let client;
let registered = false;

// The tutorial's monitorJob, polling more often than its 5 s so the run stays short.
function monitorJob(jobId) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const interval = setInterval(() => {
      jobClient.getJob(jobId, (err, result) => {
        if (err) {
          clearInterval(interval);
          reject(new Error(`Could not get job status: ${err.message}`));
          return;
        }
        seen.push(result.status);
        if (result.status === 'completed' || result.status === 'failed' || result.status === 'cancelled') {
          clearInterval(interval);
          resolve({ result, seen });
        }
      });
    }, 200);
  });
}

// A page of a query through the callback form (the promise form of next() ignores the continuation token).
function nextPage(query) {
  return new Promise((resolve, reject) => {
    query.next((err, results, response) => (err ? reject(err) : resolve({ results, response })));
  });
}

async function main() {
  let lockDoorCalls = 0;
  const methodJobId = crypto.randomUUID();
  const twinJobId = crypto.randomUUID();

  await scenario('register-and-connect-simDevice', async () => {
    const { responseBody } = await registry.create({ deviceId });
    registered = true;
    const key = responseBody.authentication.symmetricKey.primaryKey;
    client = Client.fromConnectionString(`HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}`, Protocol);
    await new Promise((resolve, reject) => {
      client.open((err) => {
        if (err) {
          reject(new Error(`Could not connect to IotHub client: ${err.message}`));
          return;
        }
        // The tutorial's onLockDoor: answer 200 with no payload.
        client.onDeviceMethod('lockDoor', (request, response) => {
          lockDoorCalls += 1;
          response.send(200, (sendErr) => {
            if (sendErr) console.error(`An error occurred when sending a method response: ${sendErr}`);
          });
        });
        resolve();
      });
    });
    // onDeviceMethod subscribes lazily; the job has no connect timeout, so let the SUBSCRIBE land first.
    await new Promise((resolve) => setTimeout(resolve, 500));
  });

  await scenario('tutorial-jobs-scheduled-and-completed', async () => {
    const startTime = new Date();
    const maxExecutionTimeInSeconds = 300;
    const methodParams = { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 15 };
    const twinPatch = { etag: '*', properties: { desired: { building: '43', floor: 3 } } };
    const schedule = (fn, jobId, what) => new Promise((resolve, reject) => {
      jobClient[fn](jobId, queryCondition, what, startTime, maxExecutionTimeInSeconds, (err) => {
        if (err) reject(new Error(`Could not schedule ${fn} job: ${err.message}`));
        else resolve();
      });
    });
    // As in scheduleJobService.js: both jobs scheduled back to back, each watched until it is done.
    const [methodJob, twinJob] = await Promise.all([
      schedule('scheduleDeviceMethod', methodJobId, methodParams).then(() => monitorJob(methodJobId)),
      schedule('scheduleTwinUpdate', twinJobId, twinPatch).then(() => monitorJob(twinJobId)),
    ]);
    for (const [job, type] of [[methodJob.result, 'scheduleDeviceMethod'], [twinJob.result, 'scheduleUpdateTwin']]) {
      check(job.status === 'completed', `${type} ended ${job.status}: ${job.failureReason || ''}`);
      check(job.type === type, `type ${job.type}`);
      const stats = job.deviceJobStatistics;
      check(stats.deviceCount === 1 && stats.succeededCount === 1 && stats.failedCount === 0,
        `${type} statistics ${JSON.stringify(stats)}`);
    }
    check(lockDoorCalls === 1, `lockDoor ran ${lockDoorCalls} times`);
  });

  await scenario('twin-shows-the-desired-update', async () => {
    const { responseBody: twin } = await registry.getTwin(deviceId);
    check(twin.properties.desired.building === '43', `building ${twin.properties.desired.building}`);
    check(twin.properties.desired.floor === 3, `floor ${twin.properties.desired.floor}`);
  });

  await scenario('device-job-records', async () => {
    const query = registry.createQuery(`SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = '${deviceId}'`);
    const { results: records } = await nextPage(query);
    const method = records.find((r) => r.jobId === methodJobId);
    const twin = records.find((r) => r.jobId === twinJobId);
    check(method && twin, `records ${JSON.stringify(records)}`);
    check(method.status === 'completed' && method.outcome.deviceMethodResponse.status === 200,
      `method record ${JSON.stringify(method)}`);
    check(twin.jobType === 'scheduleUpdateTwin' && twin.status === 'completed', `twin record ${JSON.stringify(twin)}`);
  });

  await scenario('promise-style-job-without-start-time', async () => {
    // The promise form sends "startTime": null and no maxExecutionTimeInSeconds: run now, default limit.
    const jobId = crypto.randomUUID();
    const { jobStatus: result } = await jobClient.scheduleTwinUpdate(jobId, queryCondition, { tags: { site: 'conformance' } });
    check(result.status === 'queued', `created ${result.status}`);
    const { result: job } = await monitorJob(jobId);
    check(job.status === 'completed' && job.maxExecutionTimeInSeconds === 3600, `job ${JSON.stringify(job)}`);
    const { responseBody: twin } = await registry.getTwin(deviceId);
    check(twin.tags.site === 'conformance', `tags ${JSON.stringify(twin.tags)}`);
  });

  await scenario('future-job-scheduled-then-cancelled', async () => {
    const jobId = crypto.randomUUID();
    const start = new Date(Date.now() + 3600 * 1000);
    const { jobStatus: result } = await jobClient.scheduleDeviceMethod(jobId, queryCondition,
      { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 15 }, start, 300);
    check(result.status === 'queued', `created ${result.status}`);
    // The promise forms resolve { jobStatus, response }.
    let { jobStatus: waiting } = await jobClient.getJob(jobId);
    for (let i = 0; i < 20 && waiting.status === 'queued'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      ({ jobStatus: waiting } = await jobClient.getJob(jobId));
    }
    check(waiting.status === 'scheduled', `waiting job is ${waiting.status}`);
    const { jobStatus: cancelled } = await jobClient.cancelJob(jobId);
    check(cancelled.status === 'cancelled', `cancelled job is ${cancelled.status}`);
    const { jobStatus: after } = await jobClient.getJob(jobId);
    check(after.status === 'cancelled', `after cancel ${after.status}`);
    check(lockDoorCalls === 1, 'a cancelled job never calls the device');
  });

  await scenario('job-query-by-type-and-status', async () => {
    const query = jobClient.createQuery('scheduleDeviceMethod', 'completed', 1);
    const ids = [];
    do {
      const { results: page } = await nextPage(query);
      check(page.length <= 1, `page of ${page.length} with pageSize 1`);
      ids.push(...page.map((j) => j.jobId));
      check(page.every((j) => j.type === 'scheduleDeviceMethod' && j.status === 'completed'), 'filters applied');
    } while (query.hasMoreResults);
    check(ids.includes(methodJobId), `completed method jobs ${JSON.stringify(ids)}`);
  });

  await scenario('unknown-job-is-an-error', async () => {
    try {
      await jobClient.getJob(crypto.randomUUID());
    } catch (err) {
      check(err.response && err.response.statusCode === 404, `status ${err.response && err.response.statusCode}`);
      check(String(err.responseBody).includes('JobNotFound'), `body ${err.responseBody}`);
      return;
    }
    throw new Error('getJob of an unknown job succeeded');
  });
}

main()
  .catch((err) => {
    fail('unexpected', err);
  })
  .finally(async () => {
    if (client) {
      try { await client.close(); } catch (_) { /* already closed */ }
    }
    if (registered) {
      try { await registry.delete(deviceId); } catch (_) { /* already gone */ }
    }
    finish();
  });
