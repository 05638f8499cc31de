//! A fleet of simulated devices: connected with bounded concurrency and a progress line, then served in one
//! task each, all switched between phases together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use crate::amqp_device;
use crate::device::{self, Counters, Identity, Phase, Target, Transport, Work};

/// A connected device, over either transport.
enum Link {
    Mqtt(Box<device::Mqtt>),
    Amqp(Box<amqp_device::AmqpDevice>),
}
use crate::stats::Latencies;

/// A connected fleet.
pub struct Fleet {
    pub connected: usize,
    pub failed: usize,
    /// From the first connection attempt until every device was connected or had failed.
    pub connect_time: Duration,
    /// When the 10,000th device was connected, if there were that many.
    pub time_to_10k: Option<Duration>,
    pub counters: Arc<Counters>,
    pub ids: Vec<String>,
    phase: watch::Sender<Phase>,
    results: mpsc::UnboundedReceiver<Latencies>,
}

/// Connects every identity, `concurrency` attempts at a time, printing progress to stderr each second.
pub async fn connect(target: Arc<Target>, identities: Vec<Identity>, concurrency: usize) -> Fleet {
    let total = identities.len();
    let counters = Arc::new(Counters::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let (results_tx, results) = mpsc::unbounded_channel();
    let started = Instant::now();
    let progress = {
        let connected = connected.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "connecting: {}/{total} after {:.1} s",
                    connected.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut attempts = futures_util::stream::iter(identities.into_iter().enumerate())
        .map(|(index, identity)| {
            let target = target.clone();
            async move {
                let link = match target.transport {
                    Transport::Mqtt => {
                        device::connect(&target, &identity, index).await.map(|m| Link::Mqtt(Box::new(m)))
                    }
                    Transport::Amqp => {
                        amqp_device::connect(&target, &identity, index).await.map(|d| Link::Amqp(Box::new(d)))
                    }
                };
                (link, identity)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let (mut failed, mut time_to_10k, mut ids) = (0, None, Vec::new());
    while let Some((result, identity)) = attempts.next().await {
        match result {
            Ok(link) => {
                let count = connected.fetch_add(1, Ordering::Relaxed) + 1;
                if count == 10_000 {
                    time_to_10k = Some(started.elapsed());
                }
                ids.push(identity.device_id.clone());
                let (counters, phase, results) = (counters.clone(), phase_rx.clone(), results_tx.clone());
                tokio::spawn(async move {
                    let served = match link {
                        Link::Mqtt(mqtt) => {
                            device::serve(*mqtt, identity.device_id.clone(), counters, phase, results).await
                        }
                        Link::Amqp(device) => amqp_device::serve(*device, counters, phase, results).await,
                    };
                    if let Err(error) = served {
                        eprintln!("{}: {error:#}", identity.device_id);
                    }
                });
            }
            Err(error) => {
                failed += 1;
                if failed <= 10 {
                    eprintln!("{} did not connect: {error:#}", identity.device_id);
                }
            }
        }
    }
    progress.abort();
    Fleet {
        connected: connected.load(Ordering::Relaxed),
        failed,
        connect_time: started.elapsed(),
        time_to_10k,
        counters,
        ids,
        phase,
        results,
    }
}

impl Fleet {
    /// Every device does `work` for `duration`, back to back or one every `interval`; returns their merged
    /// latencies and the time taken.
    pub async fn run(&mut self, work: Work, duration: Duration, interval: Option<Duration>) -> (Latencies, Duration) {
        let started = Instant::now();
        let until = tokio::time::Instant::now() + duration;
        self.phase.send_replace(Phase::Running { work, until, interval });
        let mut all = Latencies::default();
        for _ in 0..self.connected {
            match tokio::time::timeout(duration + Duration::from_secs(30), self.results.recv()).await {
                Ok(Some(latencies)) => all.merge(&latencies),
                _ => break,
            }
        }
        self.phase.send_replace(Phase::Serving);
        (all, started.elapsed())
    }
}
