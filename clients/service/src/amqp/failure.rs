//! What AMQP failures mean to a user: a rejected message becomes [`Error::Hub`] with the code the SDKs report
//! for its condition, a link or connection the hub ended for lack of authorization the hub's unauthorized
//! error, anything else a transport error.

use fe2o3_amqp::link::{DetachError, LinkStateError, SendError, SessionStopReason};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::primitives::Symbol;

use crate::error::Error;

/// The hub's answer to a token or policy that does not allow sending.
pub(crate) fn unauthorized(message: String) -> Error {
    Error::Hub { status: 401, code: "IotHubUnauthorizedAccess".into(), message, number: None }
}

/// The wire name of a condition, e.g. `amqp:not-found`.
pub(crate) fn condition_text(condition: &ErrorCondition) -> String {
    let symbol = match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e),
        ErrorCondition::ConnectionError(e) => Symbol::from(e),
        ErrorCondition::SessionError(e) => Symbol::from(e),
        ErrorCondition::LinkError(e) => Symbol::from(e),
        ErrorCondition::Custom(s) => s.clone(),
        #[allow(unreachable_patterns)] // `TransactionError` exists only with fe2o3's `transaction` feature
        _ => return format!("{condition:?}"),
    };
    symbol.as_str().to_owned()
}

/// The status and code the SDKs report for a rejection's condition; other conditions keep their wire name.
fn status_and_code(condition: &ErrorCondition) -> (u16, String) {
    match condition {
        ErrorCondition::AmqpError(AmqpError::NotFound) => (404, "DeviceNotFound".into()),
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded) => (403, "DeviceMaximumQueueDepthExceeded".into()),
        ErrorCondition::LinkError(LinkError::MessageSizeExceeded) => (413, "MessageTooLarge".into()),
        ErrorCondition::AmqpError(AmqpError::InvalidField | AmqpError::DecodeError) => (400, "ArgumentInvalid".into()),
        ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess) => (401, "IotHubUnauthorizedAccess".into()),
        ErrorCondition::Custom(symbol) if symbol.as_str() == "com.microsoft:device-container-throttled" => {
            (429, "ThrottlingException".into())
        }
        ErrorCondition::AmqpError(AmqpError::InternalError) => (500, condition_text(condition)),
        other => (400, condition_text(other)),
    }
}

/// The error a rejected message becomes.
pub(crate) fn rejection(error: Option<&definitions::Error>) -> Error {
    match error {
        Some(error) => {
            let (status, code) = status_and_code(&error.condition);
            let message = error.description.clone().unwrap_or_else(|| condition_text(&error.condition));
            Error::Hub { status, code, message, number: None }
        }
        None => Error::Hub {
            status: 400,
            code: "Rejected".into(),
            message: "The hub rejected the message without saying why".into(),
            number: None,
        },
    }
}

/// The error the peer gave when it ended a link, its session or the connection.
pub(crate) fn state_cause(error: &LinkStateError) -> Option<&definitions::Error> {
    match error {
        LinkStateError::RemoteDetachedWithError(e) | LinkStateError::RemoteClosedWithError(e) => Some(e),
        LinkStateError::SessionStopped(reason) => session_cause(reason),
        _ => None,
    }
}

fn session_cause(reason: &SessionStopReason) -> Option<&definitions::Error> {
    match reason {
        SessionStopReason::RemoteEndedWithError(e) => Some(e),
        SessionStopReason::ConnectionStopped(fe2o3_amqp::connection::ConnectionStopReason::RemoteClosedWithError(
            e,
        )) => Some(e),
        _ => None,
    }
}

/// The peer's error behind a failed send, if it gave one.
pub(crate) fn send_cause(error: &SendError) -> Option<&definitions::Error> {
    match error {
        SendError::LinkStateError(state) => state_cause(state),
        SendError::Detached(DetachError::RemoteDetachedWithError(e) | DetachError::RemoteClosedWithError(e)) => Some(e),
        SendError::Detached(DetachError::SessionStopped(reason)) => session_cause(reason),
        _ => None,
    }
}

/// A link that failed while doing `what`: the hub's unauthorized error when that is why the hub ended it, else
/// a transport error.
pub(crate) fn link_error(what: &str, detail: &str, cause: Option<&definitions::Error>) -> Error {
    match cause {
        Some(cause) if cause.condition == ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess) => {
            unauthorized(cause.description.clone().unwrap_or_else(|| "The hub refused the link".into()))
        }
        Some(cause) => Error::Transport(format!(
            "{what}: the hub ended the link ({}: {})",
            condition_text(&cause.condition),
            cause.description.as_deref().unwrap_or("no description")
        )),
        None => Error::Transport(format!("{what}: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(condition: impl Into<ErrorCondition>) -> Error {
        rejection(Some(&definitions::Error::new(condition, Some("why".to_owned()), None)))
    }

    #[test]
    fn rejections_carry_the_codes_the_sdks_report() {
        let cases = [
            (rejected(AmqpError::NotFound), 404, "DeviceNotFound"),
            (rejected(AmqpError::ResourceLimitExceeded), 403, "DeviceMaximumQueueDepthExceeded"),
            (rejected(LinkError::MessageSizeExceeded), 413, "MessageTooLarge"),
            (rejected(AmqpError::InvalidField), 400, "ArgumentInvalid"),
            (rejected(AmqpError::DecodeError), 400, "ArgumentInvalid"),
            (rejected(AmqpError::UnauthorizedAccess), 401, "IotHubUnauthorizedAccess"),
            (rejected(AmqpError::NotAllowed), 400, "amqp:not-allowed"),
            (rejected(ErrorCondition::Custom(Symbol::from("com.example:odd"))), 400, "com.example:odd"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (Some(status), Some(code)), "{error}");
            assert!(matches!(&error, Error::Hub { message, .. } if message == "why"));
        }
        assert_eq!(rejection(None).code(), Some("Rejected"));
    }

    #[test]
    fn an_unauthorized_detach_is_the_hubs_unauthorized_error() {
        let cause = definitions::Error::new(AmqpError::UnauthorizedAccess, Some("expired".to_owned()), None);
        let state = LinkStateError::RemoteClosedWithError(cause.clone());
        let error = link_error("send", "x", state_cause(&state));
        assert_eq!((error.status(), error.code()), (Some(401), Some("IotHubUnauthorizedAccess")));
        let other = definitions::Error::new(AmqpError::InternalError, None, None);
        let error = link_error("send", "x", Some(&other));
        assert!(matches!(&error, Error::Transport(text) if text.contains("amqp:internal-error")), "{error}");
        assert!(matches!(link_error("open", "refused", None), Error::Transport(text) if text == "open: refused"));
    }
}
