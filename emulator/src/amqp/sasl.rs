//! SASL on an AMQP connection: MSSBCBS (Python's uamqp: the client proves itself later on `$cbs`), PLAIN (a SAS
//! token as the password, as Event Hubs clients and devices send it) and ANONYMOUS (then `$cbs`). Clients without
//! SASL at all (Node's rhea) never get here.

use std::sync::{Arc, Mutex};

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

use crate::auth::Claim;
use crate::hub::Hub;

/// The mechanisms offered, in the order clients should prefer them.
const MECHANISMS: [&str; 3] = ["MSSBCBS", "PLAIN", "ANONYMOUS"];

/// What the SASL exchange established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SaslIdentity {
    /// MSSBCBS or ANONYMOUS: the client authorizes its links with tokens on `$cbs`.
    Cbs,
    /// PLAIN with a SAS token as the password: what the token grants, for the whole connection.
    Token(Claim),
}

/// The SASL side of one connection. fe2o3 clones the acceptor and drops the clone, so the outcome comes back
/// through a shared slot: build one per connection and read it after the handshake.
#[derive(Clone)]
pub(super) struct Sasl {
    hub: Arc<Hub>,
    outcome: Arc<Mutex<Option<SaslIdentity>>>,
}

impl Sasl {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Self { hub, outcome: Arc::default() }
    }

    /// What the exchange established, once it succeeded.
    pub(super) fn identity(&self) -> Option<SaslIdentity> {
        self.outcome.lock().ok()?.take()
    }

    fn outcome(code: SaslCode) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome { code, additional_data: None })
    }

    /// PLAIN (RFC 4616: `[authzid] NUL authcid NUL password`): the password must be a SAS token the hub accepts,
    /// for its own resource. The user name (`<policy>@sas.root.<hub>`, `<device>@sas.<hub>`) only says who.
    fn plain(&self, response: &[u8]) -> Option<SaslIdentity> {
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, _user, password) = (parts.next()?, parts.next()?, parts.next()?);
        let password = std::str::from_utf8(password).ok()?;
        let resource = iothub_proto::SasToken::parse(password).ok()?.resource;
        let claim = self.hub.verify_claim(password, &resource).ok()?;
        Some(SaslIdentity::Token(claim))
    }
}

impl SaslAcceptor for Sasl {
    fn mechanisms(&self) -> Array<Symbol> {
        MECHANISMS.into_iter().map(Symbol::from).collect()
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let response = init.initial_response.map(|b| b.into_vec()).unwrap_or_default();
        let identity = match init.mechanism.as_str() {
            "MSSBCBS" | "ANONYMOUS" => Some(SaslIdentity::Cbs),
            "PLAIN" => self.plain(&response),
            _ => None,
        };
        let Some(identity) = identity else {
            tracing::debug!(mechanism = init.mechanism.as_str(), "SASL refused");
            return Self::outcome(SaslCode::Auth);
        };
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(identity);
        }
        Self::outcome(SaslCode::Ok)
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // None of the offered mechanisms sends challenges.
        Self::outcome(SaslCode::Sys)
    }
}
