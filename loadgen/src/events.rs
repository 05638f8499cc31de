//! Event Hubs-compatible endpoint load: while the fleet sends QoS 1 telemetry (each body carrying its send time),
//! one consumer per partition reads from the latest position, as a back end's processor does, and records the
//! send-to-receive latency of every message it reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iothub_service::{EventHubConsumer, EventPosition};

use crate::c2d::now_nanos;
use crate::stats::Latencies;

/// The send time (nanoseconds since the epoch) a telemetry body starts with: `{"t":<nanos>,...`.
pub fn sent_at(body: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(body).ok()?.strip_prefix("{\"t\":")?;
    let end = text.find([',', '}'])?;
    text[..end].parse().ok()
}

/// Readers of every partition, started at the latest position.
pub struct Readers {
    tasks: tokio::task::JoinSet<Latencies>,
    stop: Arc<AtomicBool>,
}

/// Opens one receiver per partition (from the latest position) and starts reading.
pub async fn start(consumer: &EventHubConsumer) -> anyhow::Result<Readers> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for partition in consumer.partition_ids().await? {
        let mut receiver = consumer.receive(&partition, EventPosition::Latest).await?;
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::default();
            // Reads until told to stop and then idle for a second: what was sent has all arrived.
            loop {
                match tokio::time::timeout(Duration::from_secs(1), receiver.next()).await {
                    Ok(Ok(event)) => {
                        if let Some(sent) = sent_at(&event.body) {
                            let nanos = now_nanos().saturating_sub(sent);
                            latencies.record(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)));
                        }
                    }
                    Ok(Err(_)) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            receiver.close().await;
            latencies
        });
    }
    Ok(Readers { tasks, stop })
}

impl Readers {
    /// Lets the readers drain what is left, then reports what they read over the time since `started`.
    pub async fn finish(mut self, started: Instant, devices: usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Latencies::default();
        let partitions = self.tasks.len();
        while let Some(read) = self.tasks.join_next().await {
            if let Ok(read) = read {
                all.merge(&read);
            }
        }
        // The last second was the readers' idle wait, not reading.
        let elapsed = started.elapsed().saturating_sub(Duration::from_secs(1));
        all.report(
            "eventhubs-read",
            elapsed,
            &[("devices", devices.to_string()), ("partitions", partitions.to_string())],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_from_the_front_of_the_body() {
        assert_eq!(sent_at(br#"{"t":123,"seq":1}"#), Some(123));
        assert_eq!(sent_at(br#"{"t":7}"#), Some(7));
        assert_eq!(sent_at(br#"{"seq":1}"#), None);
    }
}
