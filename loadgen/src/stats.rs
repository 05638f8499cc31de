//! Latencies in HDR histograms (microseconds, 3 significant digits) and the report lines: one for people, one
//! `RESULT key=value ...` line that `scripts/bench.sh` reads.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency histogram; merged across tasks at the end of a run. Its counts (about 150 KB) are allocated on the
/// first record, so the many devices that record nothing cost nothing.
#[derive(Default)]
pub struct Latencies(Option<Histogram<u64>>);

/// Latencies are kept from 1 µs to a minute, at 3 significant digits.
fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).ok()
}

impl Latencies {
    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, 60_000_000);
        if self.0.is_none() {
            self.0 = histogram();
        }
        if let Some(histogram) = &mut self.0 {
            let _ = histogram.record(micros);
        }
    }

    /// Folds in another task's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        let Some(theirs) = &other.0 else { return };
        if self.0.is_none() {
            self.0 = histogram();
        }
        if let Some(mine) = &mut self.0 {
            let _ = mine.add(theirs);
        }
    }

    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, Histogram::len)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.0.as_ref().map_or(0.0, |h| h.value_at_quantile(quantile) as f64 / 1000.0)
    }

    fn max_ms(&self) -> f64 {
        self.0.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0)
    }

    /// Prints the human line and the machine line of scenario `name` over `elapsed`, with `extra` fields.
    pub fn report(&self, name: &str, elapsed: Duration, extra: &[(&str, String)]) {
        let (ops, seconds) = (self.count(), elapsed.as_secs_f64());
        let rate = ops as f64 / seconds.max(1e-9);
        let (p50, p90, p99, max) = (self.ms(0.5), self.ms(0.9), self.ms(0.99), self.max_ms());
        println!(
            "{name}: {ops} ops in {seconds:.2} s = {rate:.0}/s; latency p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
        );
        let mut line = format!(
            "RESULT scenario={name} ops={ops} seconds={seconds:.3} rate={rate:.0} p50_ms={p50:.3} p90_ms={p90:.3} p99_ms={p99:.3} max_ms={max:.3}"
        );
        for (key, value) in extra {
            line.push_str(&format!(" {key}={value}"));
        }
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut a = Latencies::default();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        let mut b = Latencies::default();
        b.record(Duration::from_secs(1));
        a.merge(&b);
        assert_eq!(a.count(), 101);
        assert!((a.ms(0.5) - 51.0).abs() < 0.1, "{}", a.ms(0.5));
        assert!(a.max_ms() >= 999.0);
        assert_eq!(Latencies::default().count(), 0);
    }
}
