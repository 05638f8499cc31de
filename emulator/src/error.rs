//! `HubError`, the hub's one error type, and the one table that maps each error to the wire:
//! HTTP status, the hub's symbolic `ErrorCode` and its six-digit number, and the MQTT CONNACK code. The bodies
//! are written by `crate::wire::errors`.

/// An error the hub reports to a caller. The text is safe to show: it never contains keys or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    ArgumentInvalid(String),
    #[error("{0}")]
    ArgumentNull(String),
    #[error("{0}")]
    FormatError(String),
    #[error("{0}")]
    InvalidProtocolVersion(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("Device {0} not found")]
    DeviceNotFound(String),
    #[error("Device {0} is disabled")]
    DeviceDisabled(String),
    #[error("A device with ID '{0}' is already registered.")]
    DeviceAlreadyExists(String),
    /// The device exists but has no module of this id: device id and module id.
    #[error("Module {1} on device {0} not found")]
    ModuleNotFound(String, String),
    #[error("A module with ID '{1}' is already registered on device '{0}'.")]
    ModuleAlreadyExists(String, String),
    /// The device already has its limit of modules.
    #[error("{0}")]
    TooManyModules(String),
    /// A bulk registry call with more items than the hub takes in one call.
    #[error("{0}")]
    TooManyDevices(String),
    /// A bulk registry call naming one identity twice.
    #[error("{0}")]
    DeviceDefinedMultipleTimes(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("Job {0} not found")]
    JobNotFound(String),
    #[error("Configuration {0} not registered.")]
    ConfigurationNotFound(String),
    #[error("A configuration with ID '{0}' already exists.")]
    ConfigurationAlreadyExists(String),
    /// The hub already holds its limit of configurations.
    #[error("{0}")]
    ConfigurationCountLimitExceeded(String),
    /// A configuration's content the hub does not take (paths, sections, values).
    #[error("{0}")]
    InvalidConfigurationContent(String),
    #[error("A job with ID '{0}' already exists.")]
    JobAlreadyExists(String),
    /// The throttling profile refused the operation (`--throttle`).
    #[error("{0}")]
    Throttled(String),
    /// Creating a job while the hub already has its limit of active (queued, scheduled or running) jobs.
    #[error("{0}")]
    TooManyActiveJobs(String),
    #[error("{0}")]
    MessageTooLarge(String),
    /// A device's cloud-to-device queue is full (50 messages).
    #[error("{0}")]
    QueueFull(String),
    /// No cloud-to-device or feedback message is held with the lock token given.
    #[error("{0}")]
    MessageLockLost(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Direct method: the device is not connected (or not subscribed to methods) within the connect timeout.
    #[error("{message}")]
    DeviceNotOnline { message: String, connect_timeout_secs: Option<u64> },
    /// Direct method: the device's queue is full; it is connected but not reading what the hub sends it.
    #[error("{0}")]
    DeviceBusy(String),
    /// Direct method: the device did not answer within the response timeout.
    #[error("Timed out waiting for the response from device.")]
    GatewayTimeout,
    #[error("{0}")]
    ServerError(String),
    #[error("{0}")]
    ServiceUnavailable(String),
}

/// Which of the hub's two JSON error bodies an error uses (wire-spec C.0.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"Message":"ErrorCode:<Code>;<text>","ExceptionMessage":"Tracking ID:..."}`: registry, twins, jobs.
    Legacy,
    /// `{"Message":"{\"errorCode\":404103,...}","ExceptionMessage":""}`: direct-method failures.
    Json,
}

/// How one error appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// HTTP status code.
    pub status: u16,
    /// Symbolic name, as in `ErrorCode:<name>;` and the `iothub-errorcode` header.
    pub code: &'static str,
    /// Six-digit numeric code (HTTP status followed by three digits).
    pub number: u32,
    /// MQTT 3.1.1 CONNACK return code when this error refuses a connection.
    pub connack: u8,
    /// The body shape on HTTP.
    pub envelope: Envelope,
}

impl HubError {
    /// The wire form of this error. This is the only place that decides statuses and codes
    /// (sources: wire-spec C.0.6 error-code table).
    pub fn wire(&self) -> WireError {
        const fn w(status: u16, code: &'static str, number: u32, connack: u8) -> WireError {
            WireError { status, code, number, connack, envelope: Envelope::Legacy }
        }
        const fn j(status: u16, code: &'static str, number: u32) -> WireError {
            WireError { status, code, number, connack: 3, envelope: Envelope::Json }
        }
        match self {
            Self::ArgumentInvalid(_) => w(400, "ArgumentInvalid", 400004, 3),
            Self::ArgumentNull(_) => w(400, "ArgumentNull", 400005, 3),
            Self::FormatError(_) => w(400, "IotHubFormatError", 400006, 3),
            Self::InvalidProtocolVersion(_) => w(400, "InvalidProtocolVersion", 400001, 1),
            Self::Unauthorized => w(401, "IotHubUnauthorizedAccess", 401002, 5),
            Self::DeviceNotFound(_) => w(404, "DeviceNotFound", 404001, 5),
            // A disabled device is refused like a bad credential (wire-spec H.5).
            Self::DeviceDisabled(_) => w(401, "IotHubUnauthorizedAccess", 401002, 5),
            Self::DeviceAlreadyExists(_) => w(409, "DeviceAlreadyExists", 409001, 3),
            Self::ModuleNotFound(..) => w(404, "ModuleNotFound", 404010, 5),
            Self::ModuleAlreadyExists(..) => w(409, "ModuleAlreadyExistsOnDevice", 409301, 3),
            // The hub's quota error for a registry limit.
            Self::TooManyModules(_) => w(403, "IotHubQuotaExceeded", 403002, 3),
            Self::TooManyDevices(_) => w(413, "TooManyDevices", 413002, 3),
            Self::DeviceDefinedMultipleTimes(_) => w(400, "DeviceDefinedMultipleTimes", 400011, 3),
            Self::PreconditionFailed(_) => w(412, "PreconditionFailed", 412001, 3),
            Self::JobNotFound(_) => w(404, "JobNotFound", 404002, 3),
            // Configuration codes: ConfigurationNotFound's number is the .NET SDK's (v2 `IotHubServiceErrorCode`);
            // the hub's numbers for the other three are not published, so these are the emulator's, in the
            // hub's envelope and with the hub's names and statuses (docs/research/configurations.md).
            Self::ConfigurationNotFound(_) => w(404, "ConfigurationNotFound", 404301, 3),
            Self::ConfigurationAlreadyExists(_) => w(409, "ConfigurationAlreadyExists", 409302, 3),
            Self::ConfigurationCountLimitExceeded(_) => w(413, "ConfigurationCountLimitExceeded", 413003, 3),
            Self::InvalidConfigurationContent(_) => w(400, "InvalidConfigurationContent", 400027, 3),
            // Decisions on wire-spec C.6.1: a duplicate id is JobAlreadyExists, too many active jobs the
            // throttling code the docs list for it.
            Self::JobAlreadyExists(_) => w(409, "JobAlreadyExists", 409104, 3),
            Self::TooManyActiveJobs(_) => w(429, "ThrottlingMaxActiveJobCountExceeded", 429004, 3),
            Self::Throttled(_) => w(429, "ThrottlingException", 429001, 3),
            Self::MessageTooLarge(_) => w(413, "MessageTooLarge", 413001, 3),
            Self::QueueFull(_) => w(403, "DeviceMaximumQueueDepthExceeded", 403004, 3),
            Self::MessageLockLost(_) => w(412, "DeviceMessageLockLost", 412002, 3),
            // What the hub answers for a path or method it does not serve is not documented; these two codes are
            // the emulator's own, in the hub's envelope so every client still parses them.
            Self::NotFound(_) => w(404, "NotFound", 404000, 3),
            Self::MethodNotAllowed(_) => w(405, "MethodNotAllowed", 405000, 3),
            Self::DeviceNotOnline { .. } => j(404, "DeviceNotOnline", 404103),
            // The hub documents no code for a device that stops reading; this is its throttling answer, so callers
            // back off and retry as they would for any 429.
            Self::DeviceBusy(_) => w(429, "ThrottlingException", 429001, 3),
            Self::GatewayTimeout => j(504, "GatewayTimeout", 504101),
            Self::ServerError(_) => w(500, "ServerError", 500001, 3),
            Self::ServiceUnavailable(_) => w(503, "ServiceUnavailable", 503001, 3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_start_with_the_http_status() {
        let all = [
            HubError::ArgumentInvalid(String::new()),
            HubError::ArgumentNull(String::new()),
            HubError::FormatError(String::new()),
            HubError::InvalidProtocolVersion(String::new()),
            HubError::Unauthorized,
            HubError::DeviceNotFound(String::new()),
            HubError::DeviceDisabled(String::new()),
            HubError::DeviceAlreadyExists(String::new()),
            HubError::ModuleNotFound(String::new(), String::new()),
            HubError::ModuleAlreadyExists(String::new(), String::new()),
            HubError::TooManyModules(String::new()),
            HubError::TooManyDevices(String::new()),
            HubError::DeviceDefinedMultipleTimes(String::new()),
            HubError::PreconditionFailed(String::new()),
            HubError::JobNotFound(String::new()),
            HubError::ConfigurationNotFound(String::new()),
            HubError::ConfigurationAlreadyExists(String::new()),
            HubError::ConfigurationCountLimitExceeded(String::new()),
            HubError::InvalidConfigurationContent(String::new()),
            HubError::JobAlreadyExists(String::new()),
            HubError::TooManyActiveJobs(String::new()),
            HubError::Throttled(String::new()),
            HubError::MessageTooLarge(String::new()),
            HubError::QueueFull(String::new()),
            HubError::MessageLockLost(String::new()),
            HubError::NotFound(String::new()),
            HubError::MethodNotAllowed(String::new()),
            HubError::ServerError(String::new()),
            HubError::ServiceUnavailable(String::new()),
            HubError::DeviceNotOnline { message: String::new(), connect_timeout_secs: None },
            HubError::DeviceBusy(String::new()),
            HubError::GatewayTimeout,
        ];
        for error in all {
            let wire = error.wire();
            assert_eq!(wire.number / 1000, u32::from(wire.status), "{error:?}");
        }
    }
}
