//! Starting and stopping a node: identity, actors, the network driver and the API, wired
//! together inside one actix system, until SIGINT or SIGTERM.
//!
//! Once the node is reachable it writes `<data_dir>/node.json` (peer id, API and p2p
//! addresses, pid) so that scripts and tests find it without parsing logs; the file is
//! removed on a clean stop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use anyhow::Context as _;
use fleetmesh_actors::actor::accounts::AccountsActor;
use fleetmesh_actors::actor::alert::AlertActor;
use fleetmesh_actors::actor::anomaly::AnomalyActor;
use fleetmesh_actors::actor::audit::AuditActor;
use fleetmesh_actors::actor::files::{FileActor, Flush};
use fleetmesh_actors::actor::fleet::{self as fleet_actor, FleetActor, Signer};
use fleetmesh_actors::actor::heartbeat::Subscribe;
use fleetmesh_actors::actor::heartbeat::{self as hb, HeartbeatActor};
use fleetmesh_actors::actor::policy::{Consulting, PolicyActor, SetAlerts, SetConsulting};
use fleetmesh_actors::actor::polled::DetectorActor;
use fleetmesh_actors::actor::push::SetPush;
use fleetmesh_actors::actor::region::{Connect, ConnectFleet, RegionActor, Write};
use fleetmesh_actors::actor::service::ServiceActor;
use fleetmesh_actors::actor::spikes::{
    Baseline, LinkChanged, ReportSync, SetAnomaly, SetIntake, SetPolicy, SpikeActor, Storage,
};
use fleetmesh_actors::actor::twin::TwinActor;
use fleetmesh_actors::actor::{SetDrops, Stop};
use fleetmesh_actors::service::{Hysteresis, Probes};
use fleetmesh_actors::{accounts, delta, encoder, files, hostmetrics, netconf, node, procs};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::durable::{RegionFile, write_durable};
use crate::metrics::Metrics;
use crate::settings::Resolved;
use crate::{api, identity, net, probe};

/// What `<data_dir>/node.json` holds while a node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeFile {
    pub peer_id: String,
    pub name: String,
    pub region: String,
    pub api: String,
    pub listen: Vec<String>,
    pub pid: u32,
}

pub fn runtime_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

/// Everything the API needs to answer.
#[derive(Debug, Clone)]
pub struct Shared {
    pub peer_id: String,
    pub info: node::Info,
    pub started: Instant,
    pub heartbeat: Addr<HeartbeatActor>,
    pub region: Addr<RegionActor>,
    pub spikes: Addr<SpikeActor>,
    /// The encoder's latest spikes (read without asking it).
    pub recent: Arc<fleetmesh_actors::actor::spikes::Recent>,
    pub files: Addr<FileActor>,
    /// What the file detector published last (read without asking it).
    pub files_status: watch::Receiver<fleetmesh_actors::actor::files::Status>,
    /// The encoder's sync report as last computed (read without asking it).
    pub sync: watch::Receiver<Option<fleetmesh_actors::sync::Report>>,
    pub audits: Addr<AuditActor>,
    pub policy: Addr<PolicyActor>,
    pub fleet: Addr<FleetActor>,
    pub alerts: Addr<AlertActor>,
    /// The alert history on disk; `None` when it could not be opened (said at start).
    pub alert_history: Option<Arc<crate::alert::history::Store>>,
    /// `None` when `anomaly.enabled` is false.
    pub anomaly: Option<Addr<AnomalyActor>>,
    pub twin: Addr<TwinActor>,
    /// Trust across regions: the admin key and what this node verified.
    pub trust: Trust,
    /// The desired-state files refused as they stand (each keeps its last good version).
    pub desired_refused: watch::Receiver<Vec<String>>,
    /// Requests to other nodes whose answers the API waits for.
    pub asks: tokio::sync::mpsc::Sender<net::driver::Ask>,
    pub net: watch::Receiver<net::driver::State>,
    pub metrics: Arc<Metrics>,
    /// The live event stream (`GET /api/v1/events`).
    pub events: Arc<crate::events::Hub>,
    /// The start-up verification's progress (`GET /readyz`).
    pub verification: Arc<probe::files::Progress>,
    /// Set once the node is ready: its start-up verification and first readings are
    /// handed over (`GET /readyz`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs a node with `settings` until SIGINT or SIGTERM. Must run inside an actix system.
pub async fn run(settings: Resolved) -> anyhow::Result<()> {
    let s = &settings.raw;
    std::fs::create_dir_all(&s.node.data_dir)
        .with_context(|| format!("cannot create node.data_dir {}", s.node.data_dir.display()))?;
    let keypair = identity::load_or_create(&settings.identity_file)?;
    let peer_id = keypair.public().to_peer_id();
    let psk = settings
        .psk_file
        .as_deref()
        .map(identity::read_psk)
        .transpose()?;
    let incarnation = next_incarnation(&s.node.data_dir)?;
    let info = node::Info {
        name: settings.name.clone(),
        region: s.node.region.clone(),
        role: s.node.role.clone(),
        incarnation,
    };
    tracing::info!(
        %peer_id, name = %info.name, region = %info.region, role = %info.role, incarnation,
        private_network = psk.is_some(), "starting node"
    );

    let metrics = Arc::new(Metrics::new());
    // Before any actor starts: an early return must not leave actors behind.
    let probe_runner = probe::service::runner()?;
    let alert_sinks = crate::alert::sinks(&settings.alert_sinks, &console_url(&settings))?;
    let p = &s.policy;
    let judge = crate::policy::judge(
        &p.dir,
        &info.role,
        p.ring,
        fleetmesh_actors::actor::unix_ms(),
    )?;
    let (outbox_tx, outbox_rx) = tokio::sync::mpsc::channel(s.net.outbox_capacity);
    let (direct_tx, direct_rx) = tokio::sync::mpsc::channel(s.net.outbox_capacity);
    let heartbeat = HeartbeatActor::new(
        hb::Config {
            emitter: settings.emitter(),
            membership: settings.membership(),
            census: fleetmesh_actors::census::Config {
                every_ms: s.heartbeat.census_ms,
                ..Default::default()
            },
        },
        node::Id::from(peer_id.to_base58()),
        info.clone(),
        outbox_tx.clone(),
        direct_tx.clone(),
        Arc::new({
            let root = s.metrics.proc_root.clone();
            move || load1(&root)
        }),
    )
    .start();

    let data_dir = s.node.data_dir.clone();
    let seq_path = data_dir.join("spike-seq");
    let j = &s.journal;
    let (journal, recovered) = crate::journal::Journal::open(
        crate::journal::Config {
            dir: data_dir.join("journal"),
            fsync: j.fsync,
            segment_bytes: j.segment_bytes,
            retain_bytes: j.retain_bytes,
        },
        s.spikes.ring,
    )?;
    if !recovered.cut.is_empty() {
        tracing::warn!(
            cut = recovered.cut.len(),
            "journal recovered: torn or damaged records were cut off (see above)"
        );
    }
    // Before anything is appended: the saved file baseline and accounts snapshot may lag
    // the journal (a crash).
    let baseline_path = data_dir.join("baseline.rmp");
    let (baseline_seq, baseline) = load_baseline(&baseline_path, &journal);
    let accounts_path = data_dir.join("accounts.rmp");
    let (accounts_seq, accounts_snapshot) = load_accounts(&accounts_path, &journal);
    // Never reuse a number the journal already holds, even if the reservation file is older.
    let durable_seq = read_seq(&seq_path)?.max(recovered.last_seq.unwrap_or(0));
    let journal = Arc::new(std::sync::Mutex::new(journal));
    let (append, compact, read) = (journal.clone(), journal.clone(), journal.clone());
    let replay_direct = direct_tx.clone();
    let alerts_direct = direct_tx.clone();
    let twin_direct = direct_tx.clone();
    let spike_outbox = outbox_tx.clone();
    let last_seq = recovered.last_seq.unwrap_or(0);
    // The encoder fsyncs (journal, sequence reservations): it gets a thread of its own, so
    // that a slow disk never holds up the other actors.
    let encoder_thread = actix::Arbiter::new();
    let ring = s.spikes.ring;
    let vocabulary = settings.vocabulary.clone();
    let (origin, role, region) = (
        node::Id::from(peer_id.to_base58()),
        info.role.clone(),
        info.region.clone(),
    );
    let recent = recovered.recent;
    let sync_config = fleetmesh_actors::sync::Config {
        replay_after_ms: j.replay_after_ms,
        retry_ms: j.replay_retry_ms,
        ..fleetmesh_actors::sync::Config::default()
    };
    let (recent_tx, recent_rx) = tokio::sync::oneshot::channel();
    let spikes = SpikeActor::start_in_arbiter(&encoder_thread.handle(), move |_| {
        let actor = SpikeActor::new(
            encoder::Encoder::new(
                encoder::Config {
                    origin,
                    role,
                    block: encoder::BLOCK,
                },
                vocabulary,
                durable_seq,
            ),
            region,
            Storage {
                reserve: Box::new(move |until| {
                    write_durable(&seq_path, until.to_string().as_bytes())
                }),
                journal: Box::new(move |batch| {
                    append
                        .lock()
                        .map_err(|_| std::io::Error::other("journal lock poisoned"))?
                        .append(batch)
                        .map_err(std::io::Error::other)
                }),
                ack: Box::new(move |upto| {
                    compact
                        .lock()
                        .map_err(|_| std::io::Error::other("journal lock poisoned"))?
                        .ack(upto)
                        .map_err(std::io::Error::other)
                }),
                read: Box::new(move |after, max| {
                    read.lock()
                        .map_err(|_| std::io::Error::other("journal lock poisoned"))?
                        .read_after(after, max)
                        .map_err(std::io::Error::other)
                }),
                last_seq,
                recent,
            },
            ring,
            spike_outbox,
            replay_direct,
            sync_config,
        );
        let _ = recent_tx.send(actor.recent());
        actor
    });
    let recent = recent_rx.await.context("the spike encoder did not start")?;
    // Before any observation: the journal keeps what the saved states do not reflect
    // (folded in memory above) until each detector has saved again.
    for (source, seq) in [
        (fleetmesh_actors::sync::Source::Files, baseline_seq),
        (fleetmesh_actors::sync::Source::Accounts, accounts_seq),
    ] {
        spikes.do_send(Baseline::Loaded { source, seq });
    }
    // Judgement (policy decisions, consultations, the master's fleet view) on a thread
    // of its own: a storm of changes to judge must not starve the detectors or the API.
    let judge_thread = actix::Arbiter::new();
    let (read_policy, reload) = (
        crate::policy::reader(p.dir.clone(), info.role.clone()),
        Duration::from_millis(p.reload_ms),
    );
    let policy = PolicyActor::start_in_arbiter(&judge_thread.handle(), move |_| {
        PolicyActor::new(judge, read_policy, reload)
    });
    spikes.do_send(SetPolicy(policy.clone().recipient()));
    let f = &s.fleet;
    let fleet_config = fleetmesh_actors::fleet::Config {
        correlation: fleetmesh_actors::correlate::Config {
            window_ms: f.window_s * 1000,
            thresholds: f.thresholds.clone(),
            default_threshold: f.threshold,
            min_share: f.min_share,
        },
        upgrade_ms: f.upgrade_s * 1000,
        package_managers: s.probes.process_always.clone(),
        learn_per_minute: f.learn_per_minute,
        ..fleetmesh_actors::fleet::Config::default()
    };
    let package_logs = fleet_config.package_logs.clone();
    let signing = keypair.clone();
    let (read_all, own, fleet_gossip) = (
        crate::policy::all_reader(p.dir.clone()),
        node::Id::from(peer_id.to_base58()),
        outbox_tx.clone(),
    );
    let public_key = keypair.public().encode_protobuf();
    let fleet = FleetActor::start_in_arbiter(&judge_thread.handle(), move |_| {
        FleetActor::new(
            fleet_config,
            read_all,
            reload,
            own,
            Signer {
                public_key,
                sign: Box::new(move |bytes| signing.sign(bytes).unwrap_or_default()),
            },
            fleet_gossip,
        )
    });
    policy.do_send(SetConsulting(Consulting {
        role: info.role.clone(),
        own: node::Id::from(peer_id.to_base58()),
        direct: direct_tx.clone(),
        local: fleet.clone().recipient(),
        timeout: Duration::from_millis(f.consult_timeout_ms),
        queue: f.consult_queue,
        fallback: f.autonomous_default,
        runs: crate::policy::package_runs(&s.watch.root, &package_logs),
        changed_at: crate::policy::changed_at(s.watch.root.clone()),
    }));
    // Notifications not yet delivered when the node last stopped: delivered now.
    let (saved_alerts, save_alerts) = alert_queue(&data_dir);
    let alerts = AlertActor::new(
        fleetmesh_actors::alert::Config {
            ring: s.alerts.ring,
            seed: incarnation ^ u64::from(std::process::id()),
        },
        fleetmesh_actors::alerting::Engine::new(settings.alerting.clone())
            .map_err(|e| anyhow::anyhow!("alerts.{e}"))?,
        alert_sinks,
    )
    .with_saved(saved_alerts, save_alerts);
    // Every alert record as it last changed, resolved ones included, kept on disk;
    // opened (checked, brought within its bounds) on a blocking thread.
    let alert_history = {
        let path = data_dir.join("alerts").join("history.redb");
        let bounds = fleetmesh_actors::alerting::history::Bounds::new(
            s.alerts.history_days,
            s.alerts.history_bytes,
        );
        let now = fleetmesh_actors::actor::unix_ms();
        tokio::task::spawn_blocking(move || {
            crate::alert::history::Store::open(&path, bounds, now)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the alert history was not opened: no history this run");
            None
        })
        .map(Arc::new)
    };
    let alerts = match &alert_history {
        Some(store) => {
            crate::alert::history::spawn_gc(store.clone());
            alerts.with_history(crate::alert::history::saver(store.clone()))
        }
        None => alerts,
    }
    .start();
    // Before any spike can reach the policy actor: the probes start later, in serve().
    policy.do_send(SetAlerts {
        to: alerts.clone().recipient(),
        cleared: alerts.clone().recipient(),
        node: info.clone(),
    });
    // This node's metrics against its role peers: its own samples come from the encoder,
    // the region's from the network driver.
    let anomaly = s.anomaly.enabled.then(|| {
        let a = AnomalyActor::new(
            fleetmesh_actors::anomaly::Detector::new(
                settings.anomaly.clone(),
                node::Id::from(peer_id.to_base58()),
                info.role.clone(),
            ),
            spikes.clone().recipient(),
        )
        .start();
        spikes.do_send(SetAnomaly(a.clone().recipient()));
        a
    });
    let files = FileActor::new(
        baseline,
        spikes.clone().recipient(),
        spikes.clone().recipient(),
        spikes.clone().recipient(),
        Arc::new(move |bytes: &[u8]| write_durable(&baseline_path, bytes)),
    );
    let files_status = files.status();
    let files = files.start();

    let accounts = AccountsActor::new(
        accounts_snapshot,
        spikes.clone().recipient(),
        spikes.clone().recipient(),
        spikes.clone().recipient(),
        Arc::new(move |bytes: &[u8]| write_durable(&accounts_path, bytes)),
    )
    .start();

    let netconf =
        DetectorActor::new(netconf::Detector::default(), spikes.clone().recipient()).start();
    let procs = DetectorActor::new(
        procs::Detector::new(procs::Config {
            report: s.probes.process_report,
            trusted: s.probes.process_trusted.clone(),
            always: s.probes.process_always.clone(),
        }),
        spikes.clone().recipient(),
    )
    .start();
    let host = DetectorActor::new(
        hostmetrics::Sampler::new(delta::Encoder::new(
            settings.metric_default,
            settings.metric_rules.clone(),
        )),
        spikes.clone().recipient(),
    )
    .start();
    let services = ServiceActor::new(
        Probes::new(settings.services.clone(), Hysteresis::default()),
        probe_runner,
        spikes.clone().recipient(),
    )
    .start();

    let audits = AuditActor::new(
        fleetmesh_actors::audit::Auditor::new(fleetmesh_actors::audit::Config::new(
            Duration::from_secs(s.audit.interval_s),
            s.audit.unanswered_after,
        )),
        info.region.clone(),
        direct_tx.clone(),
        spikes.clone().recipient(),
    )
    .start();

    // The region's consensus, on a thread of its own: its ticks must not wait behind a
    // storm of file events, or followers would take a busy master for a dead one.
    let region_path = data_dir.join("region.rmp");
    let (mut region_file, stored) = RegionFile::open(&region_path).with_context(|| {
        format!(
            "region consensus state {} is unreadable; move it away to rejoin the region as a new member",
            region_path.display()
        )
    })?;
    let region_thread = actix::Arbiter::new();
    let region_config = settings.governor(
        node::Id::from(peer_id.to_base58()),
        &info,
        settings.services.iter().map(|p| p.name.clone()).collect(),
    );
    let (gossip, acked, role) = (
        outbox_tx.clone(),
        spikes.clone().recipient(),
        info.role.clone(),
    );
    let region = RegionActor::start_in_arbiter(&region_thread.handle(), move |_| {
        RegionActor::new(
            region_config,
            role,
            stored,
            Box::new(move |w| match w {
                Write::Whole(d) => region_file.write_whole(d),
                Write::Append(deltas) => region_file.append(deltas),
            }),
            direct_tx,
            gossip,
            Some(acked),
        )
    });
    // Trust across regions: this node's voters endorse its master, the master's proof
    // goes out with its region's fleet messages, and other regions' are checked.
    let trust = Trust {
        keys: net::trust::Keys::new(&s.fleet.admin_key)
            .map_err(|e| anyhow::anyhow!("fleet.admin_key: {e}"))?,
        registry: Arc::default(),
        proof: watch::channel(None),
    };
    {
        let signing = keypair.clone();
        region.do_send(fleetmesh_actors::actor::region::Trusting {
            verify: Arc::new(trust.keys.clone()),
            sign: Arc::new(move |bytes| signing.sign(bytes).unwrap_or_default()),
            proof: trust.proof.0.clone(),
        });
    }
    let twin = TwinActor::new(
        fleetmesh_actors::twin::Config::default(),
        fleetmesh_actors::twin::Identity {
            peer: peer_id.to_base58(),
            name: info.name.clone(),
            region: info.region.clone(),
            role: info.role.clone(),
            incarnation: info.incarnation,
        },
    )
    .start();
    twin.do_send(fleetmesh_actors::actor::twin::Connect {
        direct: Some(twin_direct),
        alerts: Some(alerts.clone().recipient()),
        cleared: Some(alerts.clone().recipient()),
        census: Some(heartbeat.clone().recipient()),
    });
    spikes.do_send(fleetmesh_actors::actor::spikes::SetTwin(
        twin.clone().recipient(),
    ));
    // Events, pushed: the region's members from the membership view to the region (and
    // the anomaly detector); the master of record from the region to the judges, the
    // encoder and the heartbeats; the encoder's sync report to the heartbeats and gauges.
    let reincarnate_dir = data_dir.clone();
    let _ = region
        .send(Connect {
            view: vec![
                policy.clone().recipient(),
                fleet.clone().recipient(),
                heartbeat.clone().recipient(),
                alerts.clone().recipient(),
                twin.clone().recipient(),
            ],
            facts: Some(heartbeat.clone().recipient()),
            master_known: Some(spikes.clone().recipient()),
            alerts: Some(alerts.clone().recipient()),
            replicated: Some(alerts.clone().recipient()),
            cleared: Some(alerts.clone().recipient()),
            reincarnate: Some((
                Box::new(move || next_incarnation(&reincarnate_dir).map_err(std::io::Error::other)),
                vec![heartbeat.clone().recipient()],
            )),
        })
        .await;
    let _ = heartbeat.send(Subscribe(region.clone().recipient())).await;
    if let Some(a) = &anomaly {
        let _ = heartbeat.send(Subscribe(a.clone().recipient())).await;
    }
    let gauges = metrics.clone();
    let (sync_tx, sync) = watch::channel(None);
    spikes.do_send(ReportSync {
        heartbeat: heartbeat.clone().recipient(),
        latest: Box::new(move |report| {
            sync_tx.send_replace(Some(report.clone()));
        }),
        gauges: Box::new(move |report| {
            gauges.sync_backlog.set(report.backlog);
            gauges
                .sync_oldest_unacked_ms
                .set(report.oldest_unacked_ms.unwrap_or(0));
            gauges.sync_acked.set(report.acked);
        }),
    });
    spikes.do_send(SetDrops(metrics.drop_counter()));
    // The live event stream: the actors that own a fact push it as it changes.
    let events = Arc::new(crate::events::Hub::default());
    {
        let (push, pushed) = tokio::sync::broadcast::channel(crate::events::PUSH_CAPACITY);
        tokio::spawn(crate::events::run(events.clone(), pushed));
        spikes.do_send(SetPush(push.clone()));
        policy.do_send(SetPush(push.clone()));
        alerts.do_send(SetPush(push.clone()));
        heartbeat.do_send(SetPush(push.clone()));
        region.do_send(SetPush(push.clone()));
        fleet.do_send(SetPush(push));
    }
    heartbeat.do_send(SetDrops(metrics.drop_counter()));
    region.do_send(SetDrops(metrics.drop_counter()));
    twin.do_send(SetDrops(metrics.drop_counter()));
    spikes.do_send(SetIntake(region.clone().recipient()));
    // Silences and acknowledgements go through the region's log; alerts to the master,
    // which notifies for the region.
    alerts.do_send(fleetmesh_actors::actor::alert::SetReplicate(
        region.clone().recipient(),
    ));
    // What the master notified, and its alerts about the region, too: a new master holds
    // them and tells nothing again.
    alerts.do_send(fleetmesh_actors::actor::alert::SetToLog(
        region.clone().recipient(),
    ));
    alerts.do_send(fleetmesh_actors::actor::alert::SetCensus(
        heartbeat.clone().recipient(),
    ));
    alerts.do_send(fleetmesh_actors::actor::alert::SetDirect {
        direct: alerts_direct,
        region: info.region.clone(),
    });
    region.do_send(ConnectFleet {
        intake: Some(fleet.clone().recipient()),
        learners: vec![policy.clone().recipient(), fleet.clone().recipient()],
    });
    fleet.do_send(fleet_actor::Connect {
        region: Some(region.clone().recipient()),
        alerts: Some(alerts.clone().recipient()),
    });

    let swarm = net::build_swarm(&net::Config {
        keypair,
        psk,
        region: info.region.clone(),
        mdns: s.net.mdns,
        idle_timeout: Duration::from_millis(s.net.idle_timeout_ms),
    });
    let actors = Actors {
        heartbeat: heartbeat.clone(),
        spikes: spikes.clone(),
        files: files.clone(),
        recent,
        files_status,
        sync,
        accounts: accounts.clone(),
        netconf: netconf.clone(),
        procs: procs.clone(),
        host: host.clone(),
        region: region.clone(),
        events,
        services: services.clone(),
        audits: audits.clone(),
        policy: policy.clone(),
        fleet: fleet.clone(),
        alerts: alerts.clone(),
        alert_history,
        anomaly: anomaly.clone(),
        twin: twin.clone(),
        trust,
    };
    let outcome = match swarm {
        Ok(swarm) => {
            serve(
                &settings, swarm, info, actors, outbox_rx, direct_rx, metrics,
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    // Whatever happened, the actors stop and are gone before the runtime is: an actor
    // dropped after it panics on its timers. The baseline is saved first, unless the
    // encoder died: then the last changes were never published, and the next start must
    // find them again against the older baseline.
    if spikes.connected() {
        let _ = files.send(Flush).await;
    }
    stop(&files).await;
    stop(&accounts).await;
    stop(&netconf).await;
    stop(&procs).await;
    stop(&host).await;
    stop(&services).await;
    stop(&audits).await;
    if let Some(a) = &anomaly {
        stop(a).await;
    }
    stop(&region).await;
    region_thread.stop();
    stop(&spikes).await;
    encoder_thread.stop();
    stop(&policy).await;
    stop(&fleet).await;
    judge_thread.stop();
    stop(&twin).await;
    stop(&alerts).await;
    stop(&heartbeat).await;
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// The node's actors, as the API and the network need them.
#[derive(Debug, Clone)]
struct Actors {
    heartbeat: Addr<HeartbeatActor>,
    spikes: Addr<SpikeActor>,
    files: Addr<FileActor>,
    recent: Arc<fleetmesh_actors::actor::spikes::Recent>,
    files_status: watch::Receiver<fleetmesh_actors::actor::files::Status>,
    sync: watch::Receiver<Option<fleetmesh_actors::sync::Report>>,
    accounts: Addr<AccountsActor>,
    netconf: Addr<DetectorActor<netconf::Detector>>,
    procs: Addr<DetectorActor<procs::Detector>>,
    host: Addr<DetectorActor<hostmetrics::Sampler>>,
    region: Addr<RegionActor>,
    events: Arc<crate::events::Hub>,
    services: Addr<ServiceActor>,
    audits: Addr<AuditActor>,
    policy: Addr<PolicyActor>,
    fleet: Addr<FleetActor>,
    alerts: Addr<AlertActor>,
    alert_history: Option<Arc<crate::alert::history::Store>>,
    anomaly: Option<Addr<AnomalyActor>>,
    twin: Addr<TwinActor>,
    trust: Trust,
}

/// Trust across regions, as the network and the API need it.
#[derive(Debug, Clone)]
pub struct Trust {
    pub keys: net::trust::Keys,
    pub registry: Arc<std::sync::Mutex<fleetmesh_actors::trust::Registry>>,
    /// This node's proof as master (the region actor sends, the network reads).
    pub proof: (watch::Sender<ProofCell>, watch::Receiver<ProofCell>),
}

/// This node's proof as master, while it has one.
pub type ProofCell = Option<Arc<fleetmesh_actors::trust::Proof>>;

async fn stop<A>(addr: &Addr<A>)
where
    A: Actor<Context = actix::Context<A>> + actix::Handler<Stop>,
{
    let _ = addr.send(Stop).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while addr.connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the network driver and the API until a signal; stops both before returning.
async fn serve(
    settings: &Resolved,
    swarm: libp2p::Swarm<net::Behaviour>,
    info: node::Info,
    actors: Actors,
    outbox_rx: tokio::sync::mpsc::Receiver<fleetmesh_actors::outbox::Publish>,
    direct_rx: tokio::sync::mpsc::Receiver<fleetmesh_actors::outbox::Direct>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let peer_id = *swarm.local_peer_id();
    let (asks, asks_rx) = tokio::sync::mpsc::channel(64);
    let (driver, mut net_state) = net::driver::Driver::new(
        swarm,
        info.clone(),
        &settings.listen,
        settings.bootstrap.clone(),
        net::driver::Links {
            budget: net::budget::Config {
                in_flight: settings.raw.net.peer_in_flight,
                per_second: std::num::NonZeroU32::new(settings.raw.net.peer_requests_per_s)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                burst: std::num::NonZeroU32::new(settings.raw.net.peer_burst)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            },
            outbox: outbox_rx,
            direct: direct_rx,
            asks: asks_rx,
            inbound: actors.heartbeat.clone().recipient(),
            census: Some(actors.heartbeat.clone().recipient()),
            region: Some(net::driver::RegionLinks {
                raft: actors.region.clone().recipient(),
                spikes: actors.region.clone().recipient(),
                acks: actors.region.clone().recipient(),
                replay: actors.region.clone().recipient(),
                operator: actors.region.clone().recipient(),
                alerts: actors.alerts.clone().recipient(),
                twins: actors.twin.clone().recipient(),
                twin: actors.twin.clone().recipient(),
                endorse: actors.region.clone().recipient(),
                twin_taken: actors.twin.clone().recipient(),
                alert_records: actors.alerts.clone().recipient(),
                alert_history: actors.alert_history.clone(),
            }),
            audit: Some(net::driver::AuditLinks {
                digest: actors.files.clone().recipient(),
                heard: actors.audits.clone().recipient(),
                answered: actors.audits.clone().recipient(),
            }),
            fleet: Some(net::driver::FleetLinks {
                consult: actors.fleet.clone().recipient(),
                answered: actors.policy.clone().recipient(),
                approvals: actors.policy.clone().recipient(),
                emergency: actors.fleet.clone().recipient(),
                silences: actors.alerts.clone().recipient(),
            }),
            anomaly: actors.anomaly.clone().map(Addr::recipient),
            trust: net::trust::Gate::new(
                &info.region,
                actors.trust.keys.clone(),
                actors.trust.registry.clone(),
                actors.trust.proof.1.clone(),
            ),
            recent: Some(actors.recent.clone()),
        },
        metrics.clone(),
    )?;
    // The encoder's connectivity follows the number of connected peers, as the driver
    // reports it (pushed on change).
    let links = {
        let (spikes, mut net) = (actors.spikes.clone(), net_state.clone());
        tokio::spawn(async move {
            loop {
                let connected = net.borrow_and_update().connected;
                if spikes.try_send(LinkChanged::Connected(connected)).is_err()
                    && !spikes.connected()
                {
                    break;
                }
                if net.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    // The service probes this node runs follow the region's committed assignments
    // (pushed); so do the peers it audits, with their liveness (pushed by the heartbeats).
    probe::service::subscribe(&actors.region, &actors.services).await;
    crate::audit::subscribe(&actors.region, &actors.heartbeat, &actors.audits).await;
    // Dropping stop_tx on any early return stops the driver too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let driver = tokio::spawn(driver.run(stop_rx));

    let verification = Arc::new(probe::files::Progress::default());
    // The desired-state files refused as they stand, for `GET /api/v1/drift`.
    let (desired_refused, refused_rx) = watch::channel(Vec::new());
    let ready_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shared = Shared {
        peer_id: peer_id.to_base58(),
        info: info.clone(),
        started: Instant::now(),
        heartbeat: actors.heartbeat,
        region: actors.region.clone(),
        spikes: actors.spikes.clone(),
        files: actors.files.clone(),
        files_status: actors.files_status.clone(),
        recent: actors.recent.clone(),
        sync: actors.sync.clone(),
        audits: actors.audits.clone(),
        policy: actors.policy.clone(),
        fleet: actors.fleet.clone(),
        alerts: actors.alerts.clone(),
        alert_history: actors.alert_history.clone(),
        anomaly: actors.anomaly.clone(),
        twin: actors.twin.clone(),
        trust: actors.trust.clone(),
        desired_refused: refused_rx,
        asks,
        net: net_state.clone(),
        metrics,
        events: actors.events.clone(),
        verification: verification.clone(),
        ready: ready_flag.clone(),
    };
    let (server, api_addr) = api::start(
        settings.api_listen,
        settings.api_access.clone(),
        settings.api_tls.clone(),
        shared,
    )?;
    // Served at once: liveness answers while the start-up verification runs, and
    // `/readyz` says how far it has come.
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);
    let w = &settings.raw.watch;
    let probe = probe::files::start(
        probe::files::Config {
            root: w.root.clone(),
            paths: w.paths.clone(),
            max_hash_bytes: w.max_hash_bytes,
            hash_rate: probe::files::hash_limiter(w.hash_rate_mib_s),
            verify_every: Duration::from_secs(w.verify_interval_s),
            fallback_every: Duration::from_secs(w.fallback_scan_s),
            queue: w.event_queue,
        },
        probe::files::Sinks {
            files: actors.files.clone().recipient(),
            coverage: actors.files.clone().recipient(),
            accounts: actors.accounts.clone().recipient(),
        },
        verification,
    )?;
    let p = &settings.raw.probes;
    let net_probe = probe::poll::start(
        "net-probe",
        Duration::from_millis(p.network_poll_ms),
        {
            let mut reader = probe::netconf::Reader::default();
            // The twin's listening ports follow each reading (unchanged ones cost nothing
            // downstream: the twin keeps a section only when it differs).
            let twin = actors.twin.clone().recipient();
            move || {
                let snap = reader.read();
                let ports = snap.listeners.iter().map(|l| l.port).collect();
                let _ = twin.try_send(fleetmesh_actors::actor::twin::Observe(
                    fleetmesh_actors::twin::Input::Ports(ports),
                ));
                snap
            }
        },
        actors.netconf.clone().recipient(),
    )?;
    let proc_probe = probe::poll::start(
        "proc-probe",
        Duration::from_millis(p.process_poll_ms),
        {
            let mut reader = probe::procs::Reader::default();
            move || reader.read()
        },
        actors.procs.clone().recipient(),
    )?;
    let (tmpfs, proc_root) = (
        settings.raw.metrics.tmpfs,
        settings.raw.metrics.proc_root.clone(),
    );
    let host_probe = probe::poll::start(
        "metrics-probe",
        Duration::from_millis(settings.raw.metrics.interval_ms),
        move || probe::hostmetrics::read(tmpfs, &proc_root),
        actors.host.clone().recipient(),
    )?;
    // The twin: what the probes read and the desired state, handed to the twin actor.
    let twin_feed = tokio::spawn(crate::twin::run(crate::twin::Feed {
        root: w.root.clone(),
        watched: w.paths.clone(),
        role: info.role.clone(),
        name: info.name.clone(),
        desired: crate::desired::Loader::new(settings.raw.desired.dir.clone()),
        reload: Duration::from_millis(settings.raw.desired.reload_ms),
        twin: actors.twin.clone(),
        files: actors.files.clone(),
        policy: actors.policy.clone(),
        refused: desired_refused,
        sync: actors.sync.clone(),
    }));
    // Ready means the start-up verification and the first network and process readings
    // have been handed over: changes made while the node was down are reported before
    // anything new is, and nothing new is mistaken for the baseline.
    let t = Instant::now();
    let ready =
        |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::Acquire);
    while !(ready(&probe.progress.done) && ready(&net_probe.started) && ready(&proc_probe.started))
    {
        if t.elapsed() > Duration::from_secs(300) {
            tracing::warn!("start-up file verification still running after 300 s; carrying on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready_flag.store(true, std::sync::atomic::Ordering::Release);

    // Publish the runtime file once the p2p listeners are up.
    let listening = tokio::time::timeout(
        Duration::from_secs(10),
        net_state.wait_for(|st| !st.listen_addrs.is_empty()),
    )
    .await;
    let result = match listening {
        Ok(Ok(st)) => {
            let listen: Vec<String> = st.listen_addrs.iter().map(|a| a.to_string()).collect();
            drop(st);
            let encoder = actors.spikes.clone();
            tokio::select! {
                r = announce_and_wait(settings, &peer_id, &info, api_addr, listen) => r,
                _ = async {
                    while encoder.connected() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } => {
                    let _ = std::fs::remove_file(runtime_file(&settings.raw.node.data_dir));
                    Err(anyhow::anyhow!(
                    "the spike encoder stopped: it could not make the spike sequence durable \
                     in {} (see the log above); stopping so that no change is published \
                     with a number that could be reused",
                    settings.raw.node.data_dir.join("spike-seq").display()
                ))
                }
            }
        }
        _ => Err(anyhow::anyhow!(
            "no p2p listener came up within 10 s (net.listen)"
        )),
    };
    tracing::info!("stopping");
    drop(probe);
    drop(net_probe);
    drop(proc_probe);
    drop(host_probe);
    twin_feed.abort();
    links.abort();
    let _ = stop_tx.send(true);
    server_handle.stop(true).await;
    let _ = driver.await;
    let _ = server_task.await;
    result
}

/// Writes `node.json`, waits for SIGINT or SIGTERM, removes `node.json`.
async fn announce_and_wait(
    settings: &Resolved,
    peer_id: &libp2p::PeerId,
    info: &node::Info,
    api_addr: std::net::SocketAddr,
    listen: Vec<String>,
) -> anyhow::Result<()> {
    let runtime = RuntimeFile {
        peer_id: peer_id.to_base58(),
        name: info.name.clone(),
        region: info.region.clone(),
        api: api_addr.to_string(),
        listen: listen.clone(),
        pid: std::process::id(),
    };
    let runtime_path = runtime_file(&settings.raw.node.data_dir);
    write_durable(&runtime_path, &serde_json::to_vec_pretty(&runtime)?)
        .with_context(|| format!("cannot write {}", runtime_path.display()))?;
    tracing::info!(api = %api_addr, listen = ?listen, "node ready");
    let waited = wait_for_signal().await;
    let _ = std::fs::remove_file(&runtime_path);
    waited
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Each start is a new incarnation, higher than any before it in this data dir.
fn next_incarnation(data_dir: &Path) -> anyhow::Result<u64> {
    let path = data_dir.join("incarnation");
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "unreadable incarnation file; starting over from the clock");
            0
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // The wall clock keeps incarnations increasing even if the file is lost.
    let next = (previous + 1).max(fleetmesh_actors::actor::unix_ms());
    write_durable(&path, next.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(next)
}

/// The last durable spike-sequence reservation (0 on a first start).
fn read_seq(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().with_context(|| {
            format!(
                "{} is not a number; spike sequence numbers must never repeat, so the node \
                 will not guess (restore the file or remove it knowingly)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The saved file baseline (empty on a first start, or if unreadable), brought up to date
/// with the file spikes the journal holds above the position it was saved at: a crash
/// between a change's journaling and the next save must not make the start-up
/// verification report that change again. A baseline saved without its position (an
/// older version) is folded with the whole journal, which is harmless: spikes it already
/// reflects change nothing. Returns the position the saved file reflects (what the journal
/// must keep above until the next save) and the baseline.
fn load_baseline(
    path: &Path,
    journal: &crate::journal::Journal,
) -> (u64, BTreeMap<String, files::State>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (0, BTreeMap::new());
    };
    let saved = match rmp_serde::from_slice::<files::Saved>(&bytes) {
        Ok(saved) => saved,
        Err(e) => match rmp_serde::from_slice(&bytes) {
            Ok(baseline) => files::Saved { seq: 0, baseline },
            Err(_) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "file baseline unreadable; starting over (changes made while down are not reported this time)");
                return (0, BTreeMap::new());
            }
        },
    };
    let (after, mut baseline) = (saved.seq, saved.baseline);
    let mut folded = files::Folded::default();
    if let Err(e) = journal.each_after(after, |s| folded.apply(&mut baseline, after, s)) {
        tracing::warn!(error = %e,
            "cannot read the journal to bring the file baseline up to date; the last changes before a crash may be reported again");
    }
    if folded.applied > 0 {
        tracing::info!(
            saved_at = after,
            spikes = folded.applied,
            last = folded.last,
            "file baseline brought up to date from the journal"
        );
    }
    (after, baseline)
}

/// The saved accounts snapshot (`None` on a first start, or if unreadable: the first
/// reading then only records), brought up to date with the user and group spikes the
/// journal holds above the position it was saved at, for the same reason as the file
/// baseline ([`load_baseline`]). A snapshot of an older version (saved without its
/// position) is folded with the whole journal. Returns the position the saved file
/// reflects and the snapshot.
fn load_accounts(
    path: &Path,
    journal: &crate::journal::Journal,
) -> (u64, Option<accounts::Snapshot>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (0, None);
    };
    let saved = match rmp_serde::from_slice::<accounts::Saved>(&bytes) {
        Ok(saved) => saved,
        Err(e) => match rmp_serde::from_slice(&bytes) {
            Ok(snapshot) => accounts::Saved { seq: 0, snapshot },
            Err(_) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "accounts snapshot unreadable; starting over (changes made while down are not reported this time)");
                return (0, None);
            }
        },
    };
    let (after, mut snapshot) = (saved.seq, saved.snapshot);
    let mut folded = accounts::Folded::default();
    if let Err(e) = journal.each_after(after, |s| folded.apply(&mut snapshot, after, s)) {
        tracing::warn!(error = %e,
            "cannot read the journal to bring the accounts snapshot up to date; the last changes before a crash may be reported again");
    }
    if folded.applied > 0 {
        tracing::info!(
            saved_at = after,
            spikes = folded.applied,
            last = folded.last,
            "accounts snapshot brought up to date from the journal"
        );
    }
    (after, Some(snapshot))
}

/// The one-minute load average under `proc_root`, for the heartbeat's health summary.
fn load1(proc_root: &Path) -> Option<f32> {
    std::fs::read_to_string(proc_root.join("loadavg"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The receivers' undelivered notifications a previous run saved
/// (`<data_dir>/alerts/queue.rmp`), and how to save them. A file that cannot be read is
/// set aside (`queue.rmp.bad`) and said, never silently dropped.
fn alert_queue(
    data_dir: &Path,
) -> (
    Vec<(String, fleetmesh_actors::alerting::Notification)>,
    fleetmesh_actors::actor::alert::SaveQueue,
) {
    let dir = data_dir.join("alerts");
    let path = dir.join("queue.rmp");
    let restored = match std::fs::read(&path) {
        Ok(bytes) => match rmp_serde::from_slice(&bytes) {
            Ok(list) => {
                let list: Vec<(String, fleetmesh_actors::alerting::Notification)> = list;
                if !list.is_empty() {
                    tracing::info!(notifications = list.len(), path = %path.display(), "undelivered notifications of the last run are delivered now");
                }
                list
            }
            Err(e) => {
                let bad = path.with_extension("rmp.bad");
                let _ = std::fs::rename(&path, &bad);
                tracing::error!(error = %e, path = %bad.display(), "the saved notifications cannot be read: set aside, not delivered");
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "the saved notifications cannot be read");
            Vec::new()
        }
    };
    let save: fleetmesh_actors::actor::alert::SaveQueue = Box::new(move |bytes: &[u8]| {
        std::fs::create_dir_all(&dir)?;
        write_durable(&path, bytes)
    });
    (restored, save)
}

/// Where this node's console is, as alerts pushed elsewhere name it: the API's address,
/// or the host's name when the API listens on every address.
fn console_url(settings: &Resolved) -> String {
    let scheme = if settings.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let addr = settings.api_listen;
    let host = if addr.ip().is_unspecified() {
        settings.name.clone()
    } else {
        addr.ip().to_string()
    };
    let host = if addr.ip().is_ipv6() && !addr.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    format!("{scheme}://{host}:{}/", addr.port())
}
