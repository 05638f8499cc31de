//! Cloud-to-device messages and their feedback on the wire, for the MQTT and HTTPS sides: the property bag a
//! device gets with a message over MQTT (wire-spec B.7), the headers it gets over HTTPS, the feedback message
//! body (`application/vnd.microsoft.iothub.feedback.json`) and the purge answer. (AMQP sections are mapped in
//! `crate::amqp`, beside the AMQP types.)

pub use iothub_proto::messages::{FEEDBACK_CONTENT_TYPE, PurgeMessageQueueResult};
use iothub_proto::messages::{FeedbackRecord, devicebound_to as to};

use crate::clock::format_time;
use crate::domain::c2d::{FeedbackBatch, Queued};

/// The system properties a device sees, by their full names, in the order the hub writes them.
fn system_properties<'a>(message: &'a Queued, to: &'a str, expiry: &'a Option<String>) -> Vec<(&'static str, &'a str)> {
    let m = &message.message;
    let mut system = Vec::with_capacity(7);
    if let Some(id) = &m.message_id {
        system.push(("messageId", id.as_str()));
    }
    system.push(("to", to));
    for (name, value) in [
        ("correlationId", &m.correlation_id),
        ("userId", &m.user_id),
        ("contentType", &m.content_type),
        ("contentEncoding", &m.content_encoding),
    ] {
        if let Some(value) = value {
            system.push((name, value.as_str()));
        }
    }
    if let Some(expiry) = expiry {
        system.push(("absoluteExpiryTime", expiry.as_str()));
    }
    system
}

/// The MQTT topic of a message for `device_id`: `devices/<id>/messages/devicebound/<property bag>`, the bag
/// holding `$.mid`, `$.to`, `$.cid`, `$.uid`, `$.ct`, `$.ce`, `$.exp` where set, `iothub-ack`, then the
/// application properties.
pub fn mqtt_topic(device_id: &str, message: &Queued) -> String {
    let to = to(device_id);
    let expiry = message.message.expiry.map(format_time);
    let ack = [("iothub-ack", message.message.ack.as_str())];
    let application = ack.into_iter().chain(message.message.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let bag = iothub_proto::property_bag::encode(system_properties(message, &to, &expiry), application);
    iothub_proto::topics::cloud_to_device(device_id, &bag)
}

/// The response headers of `GET /devices/{id}/messages/devicebound` for a message locked with `token`: the lock
/// as a quoted `ETag` (the Node SDK drops the first and last character), `iothub-*` system properties and
/// `iothub-app-<name>` application properties.
pub fn http_headers(device_id: &str, message: &Queued, token: &str) -> Vec<(String, String)> {
    let m = &message.message;
    let mut headers = vec![
        ("ETag".to_owned(), format!("\"{token}\"")),
        ("iothub-to".to_owned(), to(device_id)),
        ("iothub-sequencenumber".to_owned(), message.sequence.to_string()),
        ("iothub-enqueuedtime".to_owned(), format_time(message.enqueued)),
        ("iothub-deliverycount".to_owned(), message.delivery_count.saturating_sub(1).to_string()),
        ("iothub-ack".to_owned(), m.ack.as_str().to_owned()),
    ];
    let optional = [
        ("iothub-messageid", &m.message_id),
        ("iothub-correlationid", &m.correlation_id),
        ("iothub-userid", &m.user_id),
        ("Content-Type", &m.content_type),
        ("Content-Encoding", &m.content_encoding),
    ];
    headers.extend(optional.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value.clone()?))));
    if let Some(expiry) = m.expiry {
        headers.push(("iothub-expiry".to_owned(), format_time(expiry)));
    }
    headers.extend(m.properties.iter().map(|(k, v)| (format!("iothub-app-{k}"), v.clone())));
    headers
}

/// The body of a feedback message: a JSON array of its records.
pub fn feedback_body(batch: &FeedbackBatch) -> Vec<u8> {
    let records: Vec<FeedbackRecord> = batch
        .records
        .iter()
        .map(|r| FeedbackRecord {
            original_message_id: r.original_message_id.clone(),
            description: r.status.description().to_owned(),
            device_generation_id: r.device_generation_id.clone(),
            device_id: r.device_id.clone(),
            enqueued_time_utc: format_time(r.enqueued_time),
            status_code: r.status.as_str().to_owned(),
        })
        .collect();
    serde_json::to_vec(&records).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::c2d::{Ack, FeedbackRecord, FeedbackStatus, Message};

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn queued() -> Queued {
        Queued {
            sequence: 7,
            message: Message {
                message_id: Some("m 1".into()),
                correlation_id: Some("c/1".into()),
                content_type: Some("application/json".into()),
                ack: Ack::Full,
                properties: vec![("zeta".into(), "1".into()), ("alpha".into(), "a&b".into())],
                body: b"{}".to_vec(),
                ..Message::default()
            },
            enqueued: t(0),
            expires: t(3600),
            delivery_count: 1,
            lock: None,
        }
    }

    #[test]
    fn the_mqtt_topic_carries_the_properties_percent_encoded_without_a_slash() {
        let topic = mqtt_topic("dev-1", &queued());
        assert_eq!(
            topic,
            "devices/dev-1/messages/devicebound/%24.mid=m%201&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2Fdevicebound&\
             %24.cid=c%2F1&%24.ct=application%2Fjson&iothub-ack=full&zeta=1&alpha=a%26b"
        );
        let bag = topic.split('/').nth(4).expect("the bag is one level");
        let (system, application) = iothub_proto::property_bag::decode(bag);
        assert_eq!(system["correlationId"], "c/1");
        assert_eq!(application["alpha"], "a&b");
    }

    #[test]
    fn http_headers_quote_the_lock_and_prefix_application_properties() {
        let headers = http_headers("d1", &queued(), "lock-1");
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("ETag"), Some("\"lock-1\""));
        assert_eq!(get("iothub-messageid"), Some("m 1"));
        assert_eq!(get("iothub-app-zeta"), Some("1"));
        assert_eq!(get("iothub-deliverycount"), Some("0"));
    }

    #[test]
    fn feedback_records_are_written_as_the_hub_writes_them() {
        let batch = FeedbackBatch {
            token: "t".into(),
            records: vec![FeedbackRecord {
                sequence: 1,
                original_message_id: "m1".into(),
                device_id: "d1".into(),
                device_generation_id: "g1".into(),
                enqueued_time: t(0),
                status: FeedbackStatus::Rejected,
            }],
            locked_until: t(60),
        };
        assert_eq!(
            String::from_utf8(feedback_body(&batch)).expect("UTF-8"),
            r#"[{"originalMessageId":"m1","description":"Message rejected","deviceGenerationId":"g1","deviceId":"d1","enqueuedTimeUtc":"2027-01-15T08:00:00.0000000Z","statusCode":"Rejected"}]"#
        );
    }
}
