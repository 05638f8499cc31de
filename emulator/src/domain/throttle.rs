//! The optional throttling profile (`--throttle s1|s2|s3`): the real hub's per-unit operation rates for one
//! unit of a tier, as token buckets, so users can exercise their back-off code against a local hub.
//!
//! Rates are those of the IoT Hub quotas-and-throttling article (wire-spec E.4, F.6, C.4) for one unit. The
//! article says the throttles "are applied in minute ranges", so each bucket holds one minute's worth: a burst
//! up to a minute's quota passes, and past it operations come back at the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

/// A hub tier, one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    S1,
    S2,
    S3,
}

impl Tier {
    /// Reads `s1`, `s2` or `s3` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "s1" => Some(Self::S1),
            "s2" => Some(Self::S2),
            "s3" => Some(Self::S3),
            _ => None,
        }
    }
}

/// The operation classes the hub throttles separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Identity registry create, read, list, update, delete.
    Registry,
    /// Twin reads, by the service or the device.
    TwinRead,
    /// Twin writes: service patches and replacements, device reported patches.
    TwinUpdate,
    /// Direct methods, metered in 4 KB units of payload.
    DirectMethod,
    /// New device connections.
    DeviceConnect,
    /// Device-to-cloud messages.
    DeviceToCloud,
    /// Queries.
    Query,
    /// Job create, get, cancel, list.
    JobOperation,
    /// One device's part in a job (a method call or a twin update).
    JobDeviceOperation,
    /// Cloud-to-device messages sent by the service.
    CloudToDeviceSend,
    /// Cloud-to-device messages received (and settled) by devices.
    CloudToDeviceReceive,
    /// Configuration create, read, list, update, delete (automatic device management).
    Configuration,
}

impl Operation {
    /// Operations per second for one unit of `tier` (direct methods: 4 KB units per second).
    pub fn rate(self, tier: Tier) -> f64 {
        use Operation as O;
        use Tier::{S1, S2, S3};
        match (self, tier) {
            (O::Registry | O::JobOperation, S1 | S2) => 100.0 / 60.0,
            (O::Registry | O::JobOperation, S3) => 5000.0 / 60.0,
            (O::TwinRead, S1 | S2) => 100.0,
            (O::TwinRead, S3) => 500.0,
            (O::TwinUpdate, S1 | S2) => 50.0,
            (O::TwinUpdate, S3) => 250.0,
            (O::DirectMethod, S1) => 160.0 / 4.0,
            (O::DirectMethod, S2) => 480.0 / 4.0,
            (O::DirectMethod, S3) => 24.0 * 1024.0 / 4.0,
            (O::DeviceConnect, S1) => 100.0,
            (O::DeviceConnect | O::DeviceToCloud, S2) => 120.0,
            (O::DeviceConnect | O::DeviceToCloud, S3) => 6000.0,
            (O::DeviceToCloud, S1) => 100.0,
            (O::Query, S1 | S2) => 20.0 / 60.0,
            (O::Query, S3) => 1000.0 / 60.0,
            (O::JobDeviceOperation, S1 | S2) => 10.0,
            (O::JobDeviceOperation, S3) => 50.0,
            (O::CloudToDeviceSend, S1 | S2) => 100.0 / 60.0,
            (O::CloudToDeviceSend, S3) => 5000.0 / 60.0,
            (O::CloudToDeviceReceive, S1 | S2) => 1000.0 / 60.0,
            (O::CloudToDeviceReceive, S3) => 50_000.0 / 60.0,
            // The quotas article: 20 per minute per unit on every tier.
            (O::Configuration, _) => 20.0 / 60.0,
        }
    }

    /// The name used in the hub's messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Registry => "identity registry operations",
            Self::TwinRead => "twin reads",
            Self::TwinUpdate => "twin updates",
            Self::DirectMethod => "direct methods",
            Self::DeviceConnect => "device connections",
            Self::DeviceToCloud => "device-to-cloud messages",
            Self::Query => "queries",
            Self::JobOperation => "jobs operations",
            Self::JobDeviceOperation => "jobs device operations",
            Self::CloudToDeviceSend => "cloud-to-device sends",
            Self::CloudToDeviceReceive => "cloud-to-device receives",
            Self::Configuration => "configuration operations",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

/// How much of a rate a bucket holds: the hub applies its throttles over minute ranges.
const BURST_SECONDS: f64 = 60.0;

/// The buckets of one hub.
#[derive(Debug)]
pub struct Throttle {
    tier: Tier,
    buckets: Mutex<HashMap<Operation, Bucket>>,
}

impl Throttle {
    /// Full buckets for `tier`.
    pub fn new(tier: Tier) -> Self {
        Self { tier, buckets: Mutex::new(HashMap::new()) }
    }

    /// The tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Takes `cost` units of `operation` at `now`, or says how long until they would be there.
    pub fn try_take(&self, operation: Operation, cost: f64, now: Timestamp) -> Result<(), Duration> {
        let rate = operation.rate(self.tier);
        let capacity = (rate * BURST_SECONDS).max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(operation).or_insert(Bucket { tokens: capacity, at: now });
        let elapsed = now.duration_since(bucket.at).as_secs_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        let cost = cost.min(capacity);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).expect("time")
    }

    #[test]
    fn a_bucket_allows_a_minutes_worth_then_refills_at_the_rate() {
        let throttle = Throttle::new(Tier::S1);
        let allowed = (0..3100).filter(|_| throttle.try_take(Operation::TwinUpdate, 1.0, t(0)).is_ok()).count();
        assert_eq!(allowed, 3000, "S1: 50 twin updates per second, over a minute");
        let wait = throttle.try_take(Operation::TwinUpdate, 1.0, t(0)).expect_err("empty");
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
        assert!(throttle.try_take(Operation::TwinUpdate, 1.0, t(20)).is_ok(), "refilled one after 20 ms");
        assert!(throttle.try_take(Operation::TwinUpdate, 1.0, t(20)).is_err(), "but only one");
        assert!(throttle.try_take(Operation::TwinRead, 1.0, t(20)).is_ok(), "classes are separate");
        let registry = (0..150).filter(|_| throttle.try_take(Operation::Registry, 1.0, t(0)).is_ok()).count();
        assert_eq!(registry, 100, "S1: 100 registry operations a minute");
        assert!(throttle.try_take(Operation::Registry, 1.0, t(100)).is_err(), "not yet after 0.1 s");
        assert!(throttle.try_take(Operation::Registry, 1.0, t(600)).is_ok(), "one more after 0.6 s");
    }

    #[test]
    fn a_method_costs_its_payload_in_4_kb_units_and_a_bucket_never_overflows() {
        let throttle = Throttle::new(Tier::S1);
        // 40 units a second, 2,400 a minute: 24 calls of 100 units (400 KB payloads).
        let big = (0..30).filter(|_| throttle.try_take(Operation::DirectMethod, 100.0, t(0)).is_ok()).count();
        assert_eq!(big, 24);
        assert!(throttle.try_take(Operation::DirectMethod, 1.0, t(3_600_000)).is_ok());
        let after_an_hour = (0..3000).filter(|_| throttle.try_take(Operation::DirectMethod, 1.0, t(3_600_000)).is_ok());
        assert_eq!(after_an_hour.count(), 2399, "an idle hour refills one minute's worth, not sixty");
    }

    #[test]
    fn tiers_scale_and_parse() {
        assert_eq!(Tier::parse("S3"), Some(Tier::S3));
        assert_eq!(Tier::parse("s4"), None);
        assert!(Operation::DeviceConnect.rate(Tier::S3) > Operation::DeviceConnect.rate(Tier::S1));
        assert_eq!(Operation::DirectMethod.rate(Tier::S1), 40.0, "160 KB/s in 4 KB units");
    }
}
