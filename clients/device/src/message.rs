//! Device-to-cloud telemetry messages: a body, application properties, and the system properties the hub
//! routes on (content type and encoding, message and correlation ids).

use iothub_proto::property_bag;

/// A telemetry message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The payload, as sent.
    pub body: Vec<u8>,
    /// Application properties, in order.
    pub properties: Vec<(String, String)>,
    /// `$.ct`: e.g. `application/json`, which message routing needs to query the body.
    pub content_type: Option<String>,
    /// `$.ce`: e.g. `utf-8`.
    pub content_encoding: Option<String>,
    /// `$.mid`: an id the back end sees with the message.
    pub message_id: Option<String>,
    /// `$.cid`: ties the message to a request.
    pub correlation_id: Option<String>,
}

impl Message {
    /// A message with `body` and nothing else.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    /// A JSON message: the value serialised, content type `application/json`, encoding `utf-8` (what message
    /// routing needs to query the body).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            body: serde_json::to_vec(value)?,
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            ..Self::default()
        })
    }

    /// Adds an application property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the content encoding.
    pub fn content_encoding(mut self, encoding: impl Into<String>) -> Self {
        self.content_encoding = Some(encoding.into());
        self
    }

    /// Sets the message id.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The topic's property bag.
    pub(crate) fn property_bag(&self) -> String {
        let system = [
            ("messageId", &self.message_id),
            ("correlationId", &self.correlation_id),
            ("contentType", &self.content_type),
            ("contentEncoding", &self.content_encoding),
        ];
        property_bag::encode(
            system.iter().filter_map(|(name, value)| value.as_deref().map(|v| (*name, v))),
            self.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_bag_carries_system_and_application_properties() {
        let message =
            Message::json(&serde_json::json!({"t": 21})).expect("json").property("alert", "true").message_id("m1");
        assert_eq!(message.property_bag(), "%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=true");
        assert_eq!(Message::new("x").property_bag(), "");
    }
}
