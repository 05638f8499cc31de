//! What can go wrong, split by what to do about it: permanent failures (credentials, configuration) are
//! reported and end the client; transient ones are retried.

use std::time::Duration;

/// A device client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection string is not valid.
    #[error("invalid connection string: {0}")]
    ConnectionString(#[from] iothub_proto::ConnectionStringError),
    /// The options cannot work (bad CA PEM, bad host name, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The hub refused the credentials: wrong key, expired token, unknown or disabled device (CONNACK 4 or 5).
    #[error(
        "the hub refused the device's credentials (CONNACK {code}): the key is wrong, or the device is unknown or disabled"
    )]
    Unauthorized {
        /// The CONNACK return code.
        code: u8,
    },
    /// The hub refused the connection for another lasting reason (CONNACK 1 or 2).
    #[error("the hub refused the connection (CONNACK {code}): {reason}")]
    Refused {
        /// The CONNACK return code.
        code: u8,
        /// What the code means.
        reason: &'static str,
    },
    /// The hub's certificate is not trusted for its name: the trust settings are wrong for this hub.
    #[error("the hub's TLS certificate is not trusted: {0}")]
    Certificate(String),
    /// The hub could not be reached or the connection broke; retried by the client.
    #[error("connection to the hub failed: {0}")]
    Connection(String),
    /// A twin request was answered with an error status.
    #[error("the twin request failed with status {status}: {message}")]
    Twin {
        /// The status of the hub's answer (`$iothub/twin/res/<status>`).
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// No answer came in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The client was closed, or gave up after a permanent failure.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Connection(_) | Self::Timeout(_))
    }

    /// The error for a refused CONNACK return code.
    pub(crate) fn from_connack(code: rumqttc::mqttbytes::v4::ConnectReturnCode) -> Self {
        use rumqttc::mqttbytes::v4::ConnectReturnCode as C;
        match code {
            C::BadUserNamePassword => Self::Unauthorized { code: 4 },
            C::NotAuthorized => Self::Unauthorized { code: 5 },
            C::RefusedProtocolVersion => Self::Refused { code: 1, reason: "unacceptable protocol version" },
            C::BadClientId => Self::Refused { code: 2, reason: "client identifier rejected" },
            C::ServiceUnavailable => Self::Connection("the hub is unavailable (CONNACK 3)".into()),
            C::Success => Self::Connection("unexpected successful CONNACK".into()),
        }
    }

    /// The error for an I/O failure while connecting or connected.
    pub(crate) fn from_io(context: &str, error: &std::io::Error) -> Self {
        let certificate = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        if certificate { Self::Certificate(error.to_string()) } else { Self::Connection(format!("{context}: {error}")) }
    }
}
