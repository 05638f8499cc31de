//! Entry points shared by the fuzz targets (`fuzz/`, cargo fuzz) and the property tests in `cargo test`: each
//! takes untrusted input, runs it through the hub's own code, and panics only when an invariant breaks. So
//! what the fuzzers explore for minutes, the proptests re-check on every build, and a crash the fuzzer finds
//! becomes a case here.

use std::sync::{Arc, OnceLock};

use jiff::Timestamp;
use serde_json::Value;

use crate::auth::{self, Policies, Rights};
use crate::domain::query::Query;
use crate::domain::query::eval::matches;
use crate::domain::query::run::{self, Groups};
use crate::domain::query::twin_doc::{LivenessSource, TwinView};
use crate::domain::registry::{Device, DeviceSpec, Liveness, create_device};
use crate::domain::twin::json::object_from_json;
use crate::domain::twin::{Object, SectionKind, TwinWrite, WriteMode, rules};
use crate::wire::jobs::parse_request;
use crate::wire::twin::{parse_reported_patch, parse_write};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A few twins of different shapes to evaluate queries over.
fn sample() -> &'static [Device] {
    static SAMPLE: OnceLock<Vec<Device>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let shapes = [
            serde_json::json!({}),
            serde_json::json!({"location": "x", "floor": 3, "list": [1, "a", null], "nested": {"deep": {"x": true}}}),
            serde_json::json!({"location": null, "floor": 3.5, "name": "o'brien"}),
        ];
        shapes
            .iter()
            .enumerate()
            .filter_map(|(i, tags)| {
                let mut device = create_device(&format!("d{i}"), &DeviceSpec::default(), now(), i as u64 + 1).ok()?;
                let write = TwinWrite { tags: Some(tags.as_object().map(object_from_json)), desired: None };
                device.twin = device.twin.apply_service_write(&write, WriteMode::Merge, now()).ok()?.twin;
                let reported = serde_json::json!({"temp": i * 30, "status": "ok"});
                device.twin = device.twin.apply_reported_patch(&object_from_json(reported.as_object()?), now()).ok()?;
                Some(device)
            })
            .collect()
    })
}

/// Evaluates a parsed query over the sample twins: conditions, `NOT c` never agreeing with `c`, projections and
/// aggregates, all without panicking.
pub fn evaluate_over_sample(query: &Query) {
    let liveness = |_: &str| Liveness::default();
    let mut groups = run::is_aggregate(query).then(|| Groups::new(query));
    for device in sample() {
        let view = TwinView { device, liveness: LivenessSource::Lookup(&liveness) };
        if let Some(condition) = &query.condition {
            let selected = matches(condition, &view);
            let negated = crate::domain::query::Expr::Not(Box::new(condition.clone()));
            assert!(!(selected && matches(&negated, &view)), "`{condition}` and its negation both matched");
            if !selected {
                continue;
            }
        }
        match (&mut groups, &query.select) {
            (Some(groups), _) => groups.add(&view),
            (None, crate::domain::query::ast::Select::Items(items)) => {
                let _ = run::project(items, &view);
            }
            (None, crate::domain::query::ast::Select::All) => {}
        }
    }
    if let Some(groups) = groups {
        let _ = groups.rows();
    }
}

/// Runs an untrusted `Authorization` / CONNECT password through the service and device checks.
pub fn authorize(token: &str) {
    static POLICIES: OnceLock<(Policies, Arc<Device>)> = OnceLock::new();
    let (policies, device) = POLICIES.get_or_init(|| {
        let device = create_device("d1", &DeviceSpec::default(), now(), 1).map(Arc::new);
        (Policies::generate(), device.unwrap_or_else(|_| unreachable!("a valid id")))
    });
    let at = 1_800_000_000;
    let _ = auth::authorize_service(policies, token, "localhost/devices/d1", Rights::REGISTRY_READ, at);
    let _ = auth::authorize_device(policies, "localhost", token, device, at);
}

/// Runs untrusted JSON through every twin write: a service PATCH and PUT, a reported patch, and a twin-job
/// request. Whatever is accepted must leave a twin within the hub's limits.
pub fn twin_writes(data: &[u8]) {
    let Some(device) = sample().get(1) else { return };
    if let Ok(patch) = parse_reported_patch(data)
        && let Ok(twin) = device.twin.apply_reported_patch(&patch, now())
    {
        assert_within_limits(SectionKind::Reported, &twin.reported.properties);
        assert_eq!(twin.reported.version, device.twin.reported.version + 1);
    }
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(write) = parse_write(&body) {
        for mode in [WriteMode::Merge, WriteMode::Replace] {
            if let Ok(change) = device.twin.apply_service_write(&write, mode, now()) {
                assert_within_limits(SectionKind::Tags, &change.twin.tags);
                assert_within_limits(SectionKind::Desired, &change.twin.desired.properties);
                assert!(change.twin.version >= device.twin.version, "a write never moves the version back");
            }
        }
    }
    let _ = parse_request("fuzz-job", &body, now());
}

fn assert_within_limits(kind: SectionKind, section: &Object) {
    assert!(rules::validate(kind, section, false).is_ok(), "an accepted write left an invalid {}", kind.name());
    assert!(rules::check_size(kind, section).is_ok(), "an accepted write left {} over its size limit", kind.name());
}

/// A hub (in memory, real clock) with one device, and that device's primary key.
fn hub_with_device(device_id: &str) -> (Arc<crate::hub::Hub>, String) {
    let device =
        create_device(device_id, &DeviceSpec::default(), Timestamp::now(), 1).expect("a valid fixed device id");
    let key = device.authentication.primary_key.clone().expect("a new device has keys");
    let loaded = crate::store::Loaded { devices: vec![device], ..crate::store::Loaded::default() };
    let hub = Arc::new(crate::hub::Hub::new(
        "localhost".into(),
        Policies::generate(),
        Arc::new(crate::clock::SystemClock),
        crate::store::Store::memory(),
        loaded,
    ));
    (hub, key)
}

fn unix_now() -> u64 {
    u64::try_from(Timestamp::now().as_second()).unwrap_or(0)
}

/// A hub (in memory, real clock) with one device, and the encoded MQTT CONNECT that device logs in with: the
/// start of every session-level fuzz input and test, so they reach the session proper rather than the login.
pub fn hub_with_connected_device(device_id: &str) -> (Arc<crate::hub::Hub>, Vec<u8>) {
    use rumqttc::mqttbytes::v4::{Connect, Packet};
    let (hub, key) = hub_with_device(device_id);
    let expiry = unix_now() + 365 * 24 * 3600;
    let resource = format!("localhost/devices/{device_id}");
    let token = iothub_proto::generate_token(&resource, &key, None, expiry).expect("a generated key signs");
    let mut connect = Connect::new(device_id);
    connect.keep_alive = 600;
    connect.set_login(format!("localhost/{device_id}/?api-version=2021-04-12"), token);
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(connect).write(&mut bytes, 1 << 20).expect("a CONNECT encodes");
    (hub, bytes.to_vec())
}

mod amqp;

pub use self::amqp::{AmqpStart, AmqpTarget, ServerSaid};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON values of twin-patch shapes: objects nested a few levels, with odd keys and values.
    fn json_value() -> impl Strategy<Value = Value> {
        let key =
            prop_oneof![Just("a".to_owned()), Just("$version".to_owned()), Just("b.c".to_owned()), "[a-z$ .]{0,6}"];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn twin_writes_of_any_shape_never_panic(tags in json_value(), desired in json_value(), reported in json_value()) {
            let body = serde_json::json!({"tags": tags, "properties": {"desired": desired}});
            twin_writes(body.to_string().as_bytes());
            twin_writes(reported.to_string().as_bytes());
            let job = serde_json::json!({"type": "scheduleUpdateTwin", "queryCondition": "*", "updateTwin": body});
            twin_writes(job.to_string().as_bytes());
        }

        #[test]
        fn any_bytes_as_twin_writes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            twin_writes(&bytes);
        }

        #[test]
        fn any_text_as_a_token_never_panics(text in "(SharedAccessSignature )?([a-z]{1,4}=[ -~]{0,20}&?){0,6}") {
            authorize(&text);
        }

        #[test]
        fn parsed_queries_evaluate_without_panicking(text in "SELECT (\\*|deviceId|COUNT\\(\\) AS n) FROM devices( WHERE (tags.[a-z]{1,8}|properties.reported.temp|deviceId) (=|!=|<|>=) ('x'|3|null|true)( (AND|OR) NOT tags.floor = 3)?)?( GROUP BY tags.location)?") {
            if let Ok(query) = crate::domain::query::parse_query(&text) {
                evaluate_over_sample(&query);
            }
        }
    }

    /// Inputs the fuzzers found troublesome, kept as regressions (none has crashed the hub so far; the cases
    /// below are the deepest ones the corpus grew).
    #[test]
    fn fuzz_regressions() {
        for body in [
            r#"{"tags":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":1}}}}}}}}}}}}"#,
            r#"{"properties":{"desired":{"$metadata":{"x":1},"$version":9,"a":null}}}"#,
            r#"{"tags":null,"properties":{"desired":null}}"#,
            "[[[[[[[[[[]]]]]]]]]]",
        ] {
            twin_writes(body.as_bytes());
        }
        authorize("SharedAccessSignature sr=&sig=&se=&skn=");
        authorize("SharedAccessSignature sr=localhost%2&sig=%ZZ&se=99999999999999999999");
    }
}
