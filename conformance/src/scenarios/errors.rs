//! Bad input: wrong keys, expired tokens, unknown devices and job requests the hub must refuse. Each records
//! the status and code, which must be the same on every target.

use iothub_service::Etag;
use iothub_service::proto::twin::Twin;
use reqwest::Method;
use serde_json::{Value, json};

use super::{failure, lock_door};
use crate::raw::{self, unix_now};
use crate::run::Run;

pub(super) async fn bad_credentials(run: &Run) -> anyhow::Result<()> {
    let target = &run.target;
    let (id, cs) = run.create_device("creds").await?;
    let wrong_key = iothub_emulator::domain::registry::generate_key();
    let good_key = raw::policy_key(target)?;
    let path = format!("/devices/{id}");
    let wrong = raw::policy_token(target, &wrong_key, unix_now() + 600)?;
    run.observe("service, wrong key", raw::service_call(target, Method::GET, &path, &wrong, None).await?);
    let expired = raw::policy_token(target, &good_key, unix_now() - 60)?;
    run.observe("service, expired token", raw::service_call(target, Method::GET, &path, &expired, None).await?);
    run.observe("service, no token", raw::service_call(target, Method::GET, &path, "", None).await?);

    let device_key: iothub_proto::DeviceConnectionString = cs.parse()?;
    let wrong = raw::device_token(target, &id, &wrong_key, unix_now() + 600)?;
    run.observe("mqtt, wrong key (CONNACK)", raw::mqtt_connack(target, &id, &wrong).await?);
    let expired = raw::device_token(target, &id, &device_key.key, unix_now() - 60)?;
    run.observe("mqtt, expired token (CONNACK)", raw::mqtt_connack(target, &id, &expired).await?);
    let good = raw::device_token(target, &id, &device_key.key, unix_now() + 600)?;
    run.observe("mqtt, good token (CONNACK)", raw::mqtt_connack(target, &id, &good).await?);
    let bad_client = cs.replace(&device_key.key, &wrong_key);
    let refused = match run.device(&bad_client)?.connect().await {
        Ok(_) => json!("connected"),
        Err(error) => json!({"permanent": error.is_permanent(), "error": format!("{error:?}")}),
    };
    run.observe("device client, wrong key", refused);
    Ok(())
}

pub(super) async fn unknown_device(run: &Run) -> anyhow::Result<()> {
    let id = run.id("nobody");
    let service = run.service();
    run.observe("get device", failure(service.registry().get_device(&id).await));
    run.observe("get twin", failure(service.twins().get_twin(&id).await));
    run.observe(
        "patch twin",
        failure(service.twins().update_twin(&id, &Twin::tags_patch(Default::default()), Etag::Any).await),
    );
    run.observe("delete device", failure(service.registry().delete_device(&id, Etag::Any).await));
    run.observe("invoke method", failure(service.methods().invoke(&id, &lock_door(Value::Null, 5)).await));
    Ok(())
}

pub(super) async fn invalid_job_bodies(run: &Run) -> anyhow::Result<()> {
    let target = &run.target;
    let token = raw::policy_token(target, &raw::policy_key(target)?, unix_now() + 600)?;
    let method = json!({"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15});
    let good = |job_id: &str| {
        json!({"jobId": job_id, "type": "scheduleDeviceMethod", "cloudToDeviceMethod": method,
            "queryCondition": "deviceId IN ['nobody']", "maxExecutionTimeInSeconds": 60})
    };
    let cases: Vec<(&str, String, Value)> = vec![
        ("unknown type", run.id("j1"), json!({"type": "firmwareUpdate"})),
        ("no queryCondition", run.id("j2"), json!({"queryCondition": null})),
        ("method job without the method", run.id("j3"), json!({"cloudToDeviceMethod": null})),
        (
            "response timeout below 5 s",
            run.id("j4"),
            json!({"cloudToDeviceMethod": {"methodName": "lockDoor", "responseTimeoutInSeconds": 1}}),
        ),
        (
            "twin job without the patch",
            run.id("j5"),
            json!({"type": "scheduleUpdateTwin", "cloudToDeviceMethod": null}),
        ),
        ("jobId differs from the path", run.id("j6"), json!({"jobId": "another-id"})),
        ("bad start time", run.id("j7"), json!({"startTime": "yesterday"})),
    ];
    for (label, job_id, change) in cases {
        let mut body = good(&job_id);
        if let (Value::Object(body), Value::Object(change)) = (&mut body, change) {
            body.extend(change);
        }
        let answer = raw::service_call(target, Method::PUT, &format!("/jobs/v2/{job_id}"), &token, Some(&body)).await?;
        run.observe(label, answer);
    }
    let body = good("bad id!");
    run.observe(
        "job id with bad characters",
        raw::service_call(target, Method::PUT, "/jobs/v2/bad%20id%21", &token, Some(&body)).await?,
    );
    Ok(())
}
