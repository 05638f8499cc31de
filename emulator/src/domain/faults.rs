//! Faults a test injects on purpose: what each one does, whom it targets and when it ends.
//!
//! A cloud hub cannot be made to drop a device, time out a method or throttle a twin on demand; the emulator
//! can, so device code's recovery paths get tested. Every fault is time-bounded (it ends by itself) and may be
//! removed early. This module only keeps the set and answers "is this in force now?"; the hub applies them.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The longest a fault may last (a day): long enough for any test, short enough that a forgotten one ends.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The longest delay a late-delivery or latency fault may add (the longest method response timeout).
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(300);

/// The most faults in force at once.
pub const MAX_ACTIVE_FAULTS: usize = 1000;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Drops the identity's connection now and refuses its reconnects (CONNACK 3) until the fault ends.
    Disconnect,
    /// The hub is away: every device connection is closed, new ones are refused (CONNACK 3), and the service
    /// API answers 503 ServiceUnavailable.
    Outage,
    /// Method calls are not handed to the identity: callers get 504101 GatewayTimeout after their timeout.
    MethodsUndelivered,
    /// Method calls reach the identity `delay` late (the caller's response timeout still counts from the call).
    MethodsLate { delay: Duration },
    /// The identity's twin requests (GET, reported patch) are answered with this status: 429 or 500.
    TwinErrors { status: u16 },
    /// The PUBACKs of the identity's telemetry are held back until the fault ends (the messages are kept).
    WithholdTelemetryAcks,
    /// Everything the hub sends the identity goes out `delay` late.
    Latency { delay: Duration },
}

impl FaultKind {
    /// The kind's name on the wire and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::Outage => "outage",
            Self::MethodsUndelivered => "methodsUndelivered",
            Self::MethodsLate { .. } => "methodsLate",
            Self::TwinErrors { .. } => "twinErrors",
            Self::WithholdTelemetryAcks => "withholdTelemetryAcks",
            Self::Latency { .. } => "latency",
        }
    }

    /// True for the one fault that covers the whole hub rather than one identity.
    pub const fn is_hub_wide(self) -> bool {
        matches!(self, Self::Outage)
    }
}

/// A fault asked for: what, on whom (an identity key, `None` for a hub-wide fault) and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    pub target: Option<String>,
    pub duration: Duration,
}

/// A fault in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub id: u64,
    pub kind: FaultKind,
    pub target: Option<String>,
    pub started: Timestamp,
    pub ends: Timestamp,
}

impl Fault {
    fn in_force(&self, now: Timestamp) -> bool {
        now < self.ends
    }

    fn covers(&self, key: &str, now: Timestamp) -> bool {
        self.in_force(now) && self.target.as_deref() == Some(key)
    }
}

/// Why a fault was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("a {0} fault needs a deviceId")]
    NeedsTarget(&'static str),
    #[error("an {0} fault covers the whole hub and takes no deviceId")]
    HubWide(&'static str),
    #[error("durationSeconds must be between 1 and {} (a day)", MAX_FAULT_DURATION.as_secs())]
    Duration,
    #[error("delayMs must be between 1 and {}", MAX_FAULT_DELAY.as_millis())]
    Delay,
    #[error("a twinErrors fault answers with status 429 or 500, not {0}")]
    TwinStatus(u16),
    #[error("{MAX_ACTIVE_FAULTS} faults are in force already; remove some first")]
    TooMany,
}

/// How method calls to an identity are delivered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodDelivery {
    Normal,
    Undelivered,
    Late(Duration),
}

/// The faults in force, in the order they were added.
#[derive(Debug, Default)]
pub struct FaultSet {
    faults: Vec<Fault>,
    next_id: u64,
}

impl FaultSet {
    /// Checks `spec` and adds it, starting `now`.
    pub fn add(&mut self, spec: FaultSpec, now: Timestamp) -> Result<Fault, FaultError> {
        let name = spec.kind.name();
        match (spec.kind.is_hub_wide(), spec.target.is_some()) {
            (true, true) => return Err(FaultError::HubWide(name)),
            (false, false) => return Err(FaultError::NeedsTarget(name)),
            _ => {}
        }
        if spec.duration.is_zero() || spec.duration > MAX_FAULT_DURATION {
            return Err(FaultError::Duration);
        }
        match spec.kind {
            FaultKind::MethodsLate { delay } | FaultKind::Latency { delay }
                if delay.is_zero() || delay > MAX_FAULT_DELAY =>
            {
                return Err(FaultError::Delay);
            }
            FaultKind::TwinErrors { status } if status != 429 && status != 500 => {
                return Err(FaultError::TwinStatus(status));
            }
            _ => {}
        }
        self.expire(now);
        if self.faults.len() >= MAX_ACTIVE_FAULTS {
            return Err(FaultError::TooMany);
        }
        self.next_id += 1;
        let ends = SignedDuration::try_from(spec.duration)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
        let fault = Fault { id: self.next_id, kind: spec.kind, target: spec.target, started: now, ends };
        self.faults.push(fault.clone());
        Ok(fault)
    }

    /// Removes one fault before its end.
    pub fn remove(&mut self, id: u64) -> Option<Fault> {
        let at = self.faults.iter().position(|f| f.id == id)?;
        Some(self.faults.remove(at))
    }

    /// Removes every fault.
    pub fn clear(&mut self) -> Vec<Fault> {
        std::mem::take(&mut self.faults)
    }

    /// Removes the faults that have ended by `now` and returns them.
    pub fn expire(&mut self, now: Timestamp) -> Vec<Fault> {
        let (ended, in_force) = std::mem::take(&mut self.faults).into_iter().partition(|f| !f.in_force(now));
        self.faults = in_force;
        ended
    }

    /// The faults in force at `now`.
    pub fn active(&self, now: Timestamp) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| f.in_force(now))
    }

    /// True when no fault is kept (ended ones not yet expired count as kept).
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// The hub outage in force, if any.
    pub fn outage(&self, now: Timestamp) -> Option<&Fault> {
        self.active(now).find(|f| f.kind == FaultKind::Outage)
    }

    /// Until when a new connection of `key` is refused (an outage or a disconnect fault on it), if it is.
    pub fn connect_refused_until(&self, key: &str, now: Timestamp) -> Option<Timestamp> {
        self.active(now)
            .filter(|f| f.kind == FaultKind::Outage || (f.kind == FaultKind::Disconnect && f.covers(key, now)))
            .map(|f| f.ends)
            .max()
    }

    fn on(&self, key: &str, now: Timestamp) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| f.covers(key, now))
    }

    /// How method calls to `key` are delivered: not at all wins over late; the longest delay wins.
    pub fn method_delivery(&self, key: &str, now: Timestamp) -> MethodDelivery {
        let mut delivery = MethodDelivery::Normal;
        for fault in self.on(key, now) {
            match (fault.kind, delivery) {
                (FaultKind::MethodsUndelivered, _) => return MethodDelivery::Undelivered,
                (FaultKind::MethodsLate { delay }, MethodDelivery::Late(longest)) if longest >= delay => {}
                (FaultKind::MethodsLate { delay }, _) => delivery = MethodDelivery::Late(delay),
                _ => {}
            }
        }
        delivery
    }

    /// The status `key`'s twin requests are answered with, if a fault says so (the latest fault wins).
    pub fn twin_status(&self, key: &str, now: Timestamp) -> Option<u16> {
        self.on(key, now)
            .filter_map(|f| match f.kind {
                FaultKind::TwinErrors { status } => Some(status),
                _ => None,
            })
            .last()
    }

    /// Until when `key`'s telemetry PUBACKs are held back, if they are.
    pub fn acks_withheld_until(&self, key: &str, now: Timestamp) -> Option<Timestamp> {
        self.on(key, now).filter(|f| f.kind == FaultKind::WithholdTelemetryAcks).map(|f| f.ends).max()
    }

    /// The extra delay on what the hub sends `key`, if any (faults add up).
    pub fn latency(&self, key: &str, now: Timestamp) -> Option<Duration> {
        let total: Duration = self
            .on(key, now)
            .filter_map(|f| match f.kind {
                FaultKind::Latency { delay } => Some(delay),
                _ => None,
            })
            .sum();
        (!total.is_zero()).then_some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000 + seconds).expect("time")
    }

    fn on(kind: FaultKind, key: &str, seconds: u64) -> FaultSpec {
        FaultSpec { kind, target: Some(key.into()), duration: Duration::from_secs(seconds) }
    }

    #[test]
    fn a_fault_is_in_force_until_its_end_and_then_expires() {
        let mut set = FaultSet::default();
        let fault = set.add(on(FaultKind::Disconnect, "d1", 30), t(0)).expect("added");
        assert_eq!(fault.ends, t(30));
        assert_eq!(set.connect_refused_until("d1", t(29)), Some(t(30)));
        assert_eq!(set.connect_refused_until("d2", t(29)), None, "only the target");
        assert_eq!(set.connect_refused_until("d1", t(30)), None, "ended");
        assert_eq!(set.expire(t(30)), vec![fault]);
        assert!(set.is_empty());
    }

    #[test]
    fn an_outage_refuses_everyone_and_is_hub_wide_only() {
        let mut set = FaultSet::default();
        let refused = set.add(on(FaultKind::Outage, "d1", 30), t(0)).expect_err("no target");
        assert_eq!(refused, FaultError::HubWide("outage"));
        set.add(FaultSpec { kind: FaultKind::Outage, target: None, duration: Duration::from_secs(30) }, t(0))
            .expect("outage");
        assert_eq!(set.connect_refused_until("anyone", t(1)), Some(t(30)));
        assert!(set.outage(t(1)).is_some());
        let refused = set.add(FaultSpec { target: None, ..on(FaultKind::Disconnect, "", 1) }, t(0));
        assert_eq!(refused, Err(FaultError::NeedsTarget("disconnect")));
    }

    #[test]
    fn bounds_are_checked() {
        let mut set = FaultSet::default();
        assert_eq!(set.add(on(FaultKind::Disconnect, "d", 0), t(0)), Err(FaultError::Duration));
        assert_eq!(set.add(on(FaultKind::Disconnect, "d", 86_401), t(0)), Err(FaultError::Duration));
        let late = FaultKind::MethodsLate { delay: Duration::from_secs(301) };
        assert_eq!(set.add(on(late, "d", 10), t(0)), Err(FaultError::Delay));
        let twin = FaultKind::TwinErrors { status: 404 };
        assert_eq!(set.add(on(twin, "d", 10), t(0)), Err(FaultError::TwinStatus(404)));
        for _ in 0..MAX_ACTIVE_FAULTS {
            set.add(on(FaultKind::Disconnect, "d", 10), t(0)).expect("room");
        }
        assert_eq!(set.add(on(FaultKind::Disconnect, "d", 10), t(0)), Err(FaultError::TooMany));
        assert!(set.add(on(FaultKind::Disconnect, "d", 10), t(10)).is_ok(), "ended faults make room");
    }

    #[test]
    fn undelivered_wins_over_late_and_the_longest_delay_wins() {
        let mut set = FaultSet::default();
        assert_eq!(set.method_delivery("d", t(0)), MethodDelivery::Normal);
        set.add(on(FaultKind::MethodsLate { delay: Duration::from_secs(5) }, "d", 60), t(0)).expect("late");
        set.add(on(FaultKind::MethodsLate { delay: Duration::from_secs(2) }, "d", 60), t(0)).expect("late");
        assert_eq!(set.method_delivery("d", t(1)), MethodDelivery::Late(Duration::from_secs(5)));
        let undelivered = set.add(on(FaultKind::MethodsUndelivered, "d", 60), t(0)).expect("undelivered");
        assert_eq!(set.method_delivery("d", t(1)), MethodDelivery::Undelivered);
        set.remove(undelivered.id).expect("removed");
        assert_eq!(set.method_delivery("d", t(1)), MethodDelivery::Late(Duration::from_secs(5)));
    }

    #[test]
    fn twin_acks_and_latency_faults_answer_for_their_target() {
        let mut set = FaultSet::default();
        set.add(on(FaultKind::TwinErrors { status: 429 }, "d", 60), t(0)).expect("429");
        set.add(on(FaultKind::TwinErrors { status: 500 }, "d", 60), t(0)).expect("500");
        assert_eq!(set.twin_status("d", t(1)), Some(500), "the latest wins");
        assert_eq!(set.twin_status("d/m", t(1)), None, "a module is its own identity");
        set.add(on(FaultKind::WithholdTelemetryAcks, "d", 20), t(0)).expect("acks");
        assert_eq!(set.acks_withheld_until("d", t(1)), Some(t(20)));
        set.add(on(FaultKind::Latency { delay: Duration::from_millis(100) }, "d", 60), t(0)).expect("latency");
        set.add(on(FaultKind::Latency { delay: Duration::from_millis(50) }, "d", 60), t(0)).expect("latency");
        assert_eq!(set.latency("d", t(1)), Some(Duration::from_millis(150)));
        assert_eq!(set.latency("d", t(60)), None);
        assert_eq!(set.clear().len(), 5);
    }
}
