//! The node's Prometheus metrics (prometheus-client), shared by the driver and the API.
//!
//! Counters are updated where things happen (mostly the network driver); gauges that
//! describe the membership view are set from an actor snapshot when `/metrics` is read.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// `region` or `fleet` (bounded: never the raw topic string of a peer's choosing).
    pub topic: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub sink: String,
    /// `delivered`, `failed` (retried), `rejected` (refused for good), `dropped` (queue full).
    pub outcome: String,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub peers: Family<StatusLabels, Gauge>,
    pub connected_peers: Gauge,
    pub messages_in: Family<TopicLabels, Counter>,
    pub messages_out: Family<TopicLabels, Counter>,
    pub decode_errors: Family<ReasonLabels, Counter>,
    /// Other regions' summaries, approvals and emergencies refused because their proof
    /// of authority does not verify, by kind.
    pub trust_refused: Family<ReasonLabels, Counter>,
    pub publish_dropped: Family<ReasonLabels, Counter>,
    /// Bulk requests (consultations, replays, audits) answered busy: their sender was
    /// over its budget here, by which (`in_flight`, `rate`).
    pub bulk_refused: Family<ReasonLabels, Counter>,
    pub connection_errors: Family<DirectionLabels, Counter>,
    pub inbound_dropped: Counter,
    /// Messages dropped on queues where loss is allowed, by queue.
    pub queue_dropped: Family<QueueLabels, Counter>,
    pub heartbeat_lag: Histogram,
    pub heartbeats_late: Gauge<u64, AtomicU64>,
    pub uptime: Gauge<u64, AtomicU64>,
    pub sync_backlog: Gauge<u64, AtomicU64>,
    pub sync_oldest_unacked_ms: Gauge<u64, AtomicU64>,
    pub sync_acked: Gauge<u64, AtomicU64>,
    pub alerts_raised: Family<ActionLabels, Counter>,
    pub alert_sink_queued: Family<SinkLabels, Gauge>,
    pub alert_deliveries: Family<DeliveryLabels, Counter>,
    /// Held while the alert counters catch up with the alert actor's totals, so that two
    /// scrapes at once do not both add the same difference.
    alert_sync: std::sync::Mutex<()>,
    /// Brought up to the anomaly detector's count when `/metrics` is read.
    pub anomalies_raised: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetmesh");
        let m = Metrics {
            peers: Family::default(),
            connected_peers: Gauge::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            decode_errors: Family::default(),
            trust_refused: Family::default(),
            publish_dropped: Family::default(),
            bulk_refused: Family::default(),
            connection_errors: Family::default(),
            inbound_dropped: Counter::default(),
            queue_dropped: Family::default(),
            // 1 ms .. ~16 s: transit lag of heartbeats by the wall clock.
            heartbeat_lag: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0,
            ]),
            heartbeats_late: Gauge::default(),
            uptime: Gauge::default(),
            sync_backlog: Gauge::default(),
            sync_oldest_unacked_ms: Gauge::default(),
            sync_acked: Gauge::default(),
            alerts_raised: Family::default(),
            alert_sink_queued: Family::default(),
            alert_deliveries: Family::default(),
            alert_sync: std::sync::Mutex::new(()),
            anomalies_raised: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "peers",
            "Peers in the membership view, by status",
            m.peers.clone(),
        );
        registry.register(
            "connected_peers",
            "Peers with an open connection",
            m.connected_peers.clone(),
        );
        registry.register(
            "messages_in",
            "Gossip messages received, by topic and kind",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Gossip messages published, by topic and kind",
            m.messages_out.clone(),
        );
        registry.register(
            "decode_errors",
            "Frames refused as undecodable (the sender is penalized), by reason",
            m.decode_errors.clone(),
        );
        registry.register(
            "trust_refused",
            "Other regions' summaries, approvals and emergencies refused: their proof of authority does not verify, by kind",
            m.trust_refused.clone(),
        );
        registry.register(
            "publish_dropped",
            "Messages that could not be published, by reason",
            m.publish_dropped.clone(),
        );
        registry.register(
            "bulk_refused",
            "Bulk requests answered busy because their sender was over its budget, by reason",
            m.bulk_refused.clone(),
        );
        registry.register(
            "connection_errors",
            "Failed connection attempts (handshake, wrong fleet key, refused), by direction",
            m.connection_errors.clone(),
        );
        registry.register(
            "inbound_dropped",
            "Inputs for actors dropped because a mailbox was full",
            m.inbound_dropped.clone(),
        );
        registry.register(
            "queue_dropped",
            "Messages dropped between the node's actors where loss is allowed (heartbeats, \
             member pushes, publications the journal replays), by queue",
            m.queue_dropped.clone(),
        );
        registry.register(
            "heartbeat_lag_seconds",
            "Time from a peer's heartbeat being sent to its arrival here (wall clock)",
            m.heartbeat_lag.clone(),
        );
        registry.register(
            "heartbeats_late",
            "Own heartbeats sent more than one interval late since start (node starved)",
            m.heartbeats_late.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the node started",
            m.uptime.clone(),
        );
        registry.register(
            "sync_backlog",
            "Spikes journaled and not yet acknowledged by the region master",
            m.sync_backlog.clone(),
        );
        registry.register(
            "sync_oldest_unacked_milliseconds",
            "Age of the oldest spike not yet acknowledged by the region master (0: none)",
            m.sync_oldest_unacked_ms.clone(),
        );
        registry.register(
            "sync_acked_seq",
            "The region master's acknowledgement mark for this node's spikes",
            m.sync_acked.clone(),
        );
        registry.register(
            "alerts_raised",
            "Alerts raised, repeats folded into an earlier one included, by action",
            m.alerts_raised.clone(),
        );
        registry.register(
            "alert_sink_queued",
            "Alerts waiting for a sink (in flight included), by sink",
            m.alert_sink_queued.clone(),
        );
        registry.register(
            "alert_deliveries",
            "Alerts by sink and outcome: delivered, failed (each failed attempt; retried), \
             rejected (refused for good), dropped (the sink's queue was full)",
            m.alert_deliveries.clone(),
        );
        registry.register(
            "anomalies_raised",
            "Anomalies raised by this node: a metric far from its same-role peers",
            m.anomalies_raised.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Brings the alert metrics up to the alert actor's totals.
    pub fn set_alerts(&self, status: &fleetmesh_actors::alert::Status) {
        let _held = self
            .alert_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let catch_up = |c: &Counter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        for (action, n) in &status.raised {
            let labels = ActionLabels {
                action: action.clone(),
            };
            catch_up(&self.alerts_raised.get_or_create(&labels), *n);
        }
        for s in &status.sinks {
            let sink = SinkLabels {
                sink: s.name.clone(),
            };
            self.alert_sink_queued
                .get_or_create(&sink)
                .set(i64::try_from(s.queued).unwrap_or(i64::MAX));
            for (outcome, n) in [
                ("delivered", s.delivered),
                ("failed", s.failed),
                ("rejected", s.rejected),
                ("dropped", s.dropped),
            ] {
                let labels = DeliveryLabels {
                    sink: s.name.clone(),
                    outcome: outcome.to_string(),
                };
                catch_up(&self.alert_deliveries.get_or_create(&labels), n);
            }
        }
    }

    pub fn topic(topic: &str, kind: &str) -> TopicLabels {
        TopicLabels {
            topic: topic.to_string(),
            kind: kind.to_string(),
        }
    }

    /// Counts drops on the node's lossy queues ([`fleetmesh_actors::actor::CountDrops`]).
    pub fn drop_counter(self: &Arc<Self>) -> fleetmesh_actors::actor::CountDrops {
        let m = self.clone();
        Arc::new(move |queue, n| {
            m.queue_dropped
                .get_or_create(&QueueLabels {
                    queue: queue.to_string(),
                })
                .inc_by(n);
        })
    }

    pub fn reason(reason: &str) -> ReasonLabels {
        ReasonLabels {
            reason: reason.to_string(),
        }
    }

    /// The registry in the Prometheus / OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_on_lossy_queues_are_exported_by_queue() {
        let m = Arc::new(Metrics::new());
        let count = m.drop_counter();
        count("spike_outbox", 3);
        count("spike_outbox", 2);
        count("region_members", 1);
        let text = m.encode().expect("encoded");
        assert!(
            text.contains(r#"fleetmesh_queue_dropped_total{queue="spike_outbox"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fleetmesh_queue_dropped_total{queue="region_members"} 1"#),
            "{text}"
        );
    }
}
