//! Dashboard sign-in: the per-start token the banner prints, and the sessions a sign-in opens.
//!
//! A session id is 32 random bytes in an HttpOnly, SameSite=Strict cookie; the server keeps the ids it gave
//! out (in memory: a restart signs everyone out, as a new token is printed anyway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore as _;

/// The session cookie's name.
pub const COOKIE: &str = "iothub-dashboard";

/// How long a session lasts without being used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; the oldest go first (a script signing in in a loop cannot grow memory).
const MAX_SESSIONS: usize = 1000;

/// 32 random bytes as hex: sign-in tokens and session ids.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time that does not depend on where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A signed-in browser: which policy it acts as, and when it was last used.
#[derive(Debug, Clone)]
struct Session {
    policy: String,
    last_used: Instant,
}

/// The open sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session acting as `policy`; returns its id.
    pub fn open(&self, policy: &str) -> String {
        let id = random_secret();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        open.retain(|_, s| now.duration_since(s.last_used) < IDLE_TIMEOUT);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), Session { policy: policy.to_owned(), last_used: now });
        id
    }

    /// The policy of a live session (and marks it used), or `None` for an unknown or idle one.
    pub fn policy(&self, id: &str) -> Option<String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let session = open.get_mut(id)?;
        if now.duration_since(session.last_used) >= IDLE_TIMEOUT {
            open.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.policy.clone())
    }

    /// Ends a session (sign-out).
    pub fn close(&self, id: &str) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_resolve_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open("iothubowner");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.policy(&id).as_deref(), Some("iothubowner"));
        assert_eq!(sessions.policy("forged"), None);
        sessions.close(&id);
        assert_eq!(sessions.policy(&id), None);
    }

    #[test]
    fn the_session_table_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open("p");
        for _ in 0..MAX_SESSIONS {
            sessions.open("p");
        }
        assert_eq!(sessions.policy(&first), None, "the oldest went");
        assert_eq!(sessions.open.lock().map(|o| o.len()).unwrap_or(0), MAX_SESSIONS);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
    }
}
