//! The file probe: notify's raw watcher (inotify) plus full scans, reading file states
//! (lstat, sha256 of contents under a size cap) for the file-detector actor.
//!
//! One checker thread owns all file reading, so a storm of events cannot starve the async
//! runtime. Events are drained in batches and each path is read once per batch. A content
//! change is read when the writer closes the file (`CLOSE_WRITE`), not on every `write()`,
//! so one save is one spike; files still open for writing are caught by the periodic
//! verification. Symlinks are recorded, never followed (no loops). A full event queue
//! (ours or the kernel's) triggers a rescan and a coverage spike; hitting the kernel's
//! watch limit is reported as degraded coverage, and that subtree is then scanned every
//! `watch.fallback_scan_s` instead. Hashing is rate-limited (`watch.hash_rate_mib_s`), so a
//! storm of large files cannot take a whole core from the node.
//! Every path is resolved under `watch.root`; subjects are host paths (`/etc/hosts`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use actix::Recipient;
use fleetmesh_actors::accounts::Files as AccountFiles;
use fleetmesh_actors::actor::accounts::AccountsRead;
use fleetmesh_actors::actor::deliver_blocking;
use fleetmesh_actors::actor::files::{Coverage, FileInput};
use fleetmesh_actors::files::{Cause, EntryKind, Input, Scan, State};
use fleetmesh_actors::spike::{Change, Digest, FieldChange, Kind, Layer, Observation, Severity};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use sha2::{Digest as _, Sha256};

/// Directory depth beyond which a scan does not descend.
const MAX_DEPTH: usize = 64;

/// Bytes are read for hashing in chunks of this size.
const CHUNK: usize = 64 * 1024;

/// The hashing rate limit, counted in KiB (started KiB: a 10-byte file costs one).
pub type Limiter = governor::DefaultDirectRateLimiter;

/// A limit of `mib_per_s` MiB hashed per second (bursts of one second), or none for 0.
pub fn hash_limiter(mib_per_s: u32) -> Option<Arc<Limiter>> {
    let kib = std::num::NonZeroU32::new(mib_per_s.saturating_mul(1024))?;
    Some(Arc::new(governor::RateLimiter::direct(
        governor::Quota::per_second(kib),
    )))
}

/// Waits until `limiter` allows `bytes` more to be hashed.
fn take(limiter: &Limiter, bytes: usize) {
    use governor::clock::Clock as _;
    let Some(kib) = std::num::NonZeroU32::new(bytes.div_ceil(1024) as u32) else {
        return;
    };
    // A chunk (64 KiB) always fits in a burst of at least 1 MiB.
    while let Ok(Err(not_until)) = limiter.check_n(kib) {
        std::thread::sleep(
            not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
        );
    }
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    /// Host paths (`/etc`), resolved under `root`.
    pub paths: Vec<String>,
    pub max_hash_bytes: u64,
    /// Bytes hashed per second at most, shared by every reading; `None`: unlimited.
    pub hash_rate: Option<Arc<Limiter>>,
    pub verify_every: Duration,
    /// How often a subtree that could not be watched is scanned instead.
    pub fallback_every: Duration,
    /// Events waiting for the checker; beyond this the probe rescans instead.
    pub queue: usize,
}

impl Config {
    /// The real path of host path `subject`.
    pub fn real(&self, subject: &str) -> PathBuf {
        self.root.join(subject.trim_start_matches('/'))
    }

    /// The host path of real path `p`, if it is under the root.
    pub fn subject(&self, p: &Path) -> Option<String> {
        let rel = p.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()))
    }
}

/// Reads one path's state: `None` if it does not exist.
pub fn read_state(path: &Path, config: &Config) -> Option<State> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(State {
                kind: EntryKind::Unreadable {
                    reason: e.to_string(),
                },
                size: 0,
                mode: 0,
                uid: 0,
                gid: 0,
                digest: None,
            });
        }
    };
    let ft = meta.file_type();
    let mut kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink {
            target: std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    } else {
        EntryKind::Other
    };
    let mut digest = None;
    if ft.is_file() && meta.len() <= config.max_hash_bytes {
        match hash(path, config.hash_rate.as_deref()) {
            Ok(d) => digest = Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                kind = EntryKind::Unreadable {
                    reason: e.to_string(),
                }
            }
        }
    }
    Some(State {
        kind,
        size: meta.len(),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        digest,
    })
}

fn hash(path: &Path, limiter: Option<&Limiter>) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(l) = limiter {
            take(l, n);
        }
        h.update(&buf[..n]);
    }
    Ok(Digest(h.finalize().into()))
}

/// Reads every watched path, recursively, without following symlinks.
pub fn scan(config: &Config) -> BTreeMap<String, State> {
    scan_counting(config, &AtomicU64::new(0))
}

/// [`scan`], adding one to `read` per entry read (progress for whoever watches).
pub fn scan_counting(config: &Config, read: &AtomicU64) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for p in &config.paths {
        walk(config, &config.real(p), 0, &mut out, read);
    }
    out
}

/// The start-up verification: [`scan_counting`], handing each top-level entry of every
/// watched path (and what is under it) to `part` as soon as it is read, so that changes
/// made while the node was down are published as they are found.
pub fn startup_scan(
    config: &Config,
    read: &AtomicU64,
    mut part: impl FnMut(String, BTreeMap<String, State>),
) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for p in &config.paths {
        let root = config.real(p);
        let Some(state) = read_state(&root, config) else {
            continue;
        };
        read.fetch_add(1, Ordering::Relaxed);
        let is_dir = state.kind == EntryKind::Dir;
        if let Some(subject) = config.subject(&root) {
            out.insert(subject, state);
        }
        if !is_dir {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            let mut states = BTreeMap::new();
            walk(config, &c, 1, &mut states, read);
            if let Some(subject) = config.subject(&c) {
                part(subject, states.clone());
            }
            out.append(&mut states);
        }
    }
    out
}

fn walk(
    config: &Config,
    path: &Path,
    depth: usize,
    out: &mut BTreeMap<String, State>,
    read: &AtomicU64,
) {
    let Some(state) = read_state(path, config) else {
        return;
    };
    read.fetch_add(1, Ordering::Relaxed);
    let is_dir = state.kind == EntryKind::Dir;
    if let Some(subject) = config.subject(path) {
        out.insert(subject, state);
    }
    if !is_dir || depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for c in children {
        walk(config, &c, depth + 1, out, read);
    }
}

/// Where the probe's readings go.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub files: Recipient<FileInput>,
    pub coverage: Recipient<Coverage>,
    pub accounts: Recipient<AccountsRead>,
}

/// Account files, as host paths; a change to any of them re-reads them all.
const ACCOUNT_FILES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/shadow"];

fn is_account_file(subject: &str) -> bool {
    ACCOUNT_FILES.contains(&subject)
        || subject == "/etc/sudoers"
        || subject.starts_with("/etc/sudoers.d/")
}

/// Reads the account files (lossily: binary junk cannot stop the detector). sudoers.d is
/// read in name order, skipping the names sudo itself skips (ending in `~`, containing `.`).
pub fn read_accounts(config: &Config) -> AccountFiles {
    let read = |subject: &str| {
        std::fs::read(config.real(subject))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let mut sudoers = Vec::new();
    if let Some(t) = read("/etc/sudoers") {
        sudoers.push(("/etc/sudoers".to_string(), t));
    }
    if let Ok(dir) = std::fs::read_dir(config.real("/etc/sudoers.d")) {
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.ends_with('~') && !n.contains('.'))
            .collect();
        names.sort();
        for n in names {
            let subject = format!("/etc/sudoers.d/{n}");
            if let Some(t) = read(&subject) {
                sudoers.push((subject, t));
            }
        }
    }
    AccountFiles {
        passwd: read("/etc/passwd"),
        group: read("/etc/group"),
        shadow: read("/etc/shadow"),
        sudoers,
    }
}

/// The running probe; dropping it stops the watcher and, once its queue is drained, the
/// checker thread.
#[derive(Debug)]
pub struct Probe {
    _watcher: notify::RecommendedWatcher,
    /// The start-up verification's progress.
    pub progress: Arc<Progress>,
}

/// How far the start-up verification has come, for `/readyz`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries read so far.
    pub read: AtomicU64,
    /// Set once the start-up verification has been handed to the actor.
    pub done: AtomicBool,
}

/// Why a path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Written and closed, removed, renamed, or created as a directory or link.
    Content,
    /// Attributes changed.
    Metadata,
    /// A regular file was created: read when its writer closes it, or at once if it
    /// arrived complete (a hard link).
    Created,
}

impl Trigger {
    fn cause(self) -> Cause {
        match self {
            Trigger::Content => Cause::Content,
            Trigger::Metadata | Trigger::Created => Cause::Metadata,
        }
    }
}

fn classify(event: &Event) -> Option<Trigger> {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Trigger::Content),
        // `Both` repeats a rename already reported as `From` and `To`; read twice, the old
        // path would look like an event without a change.
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(RenameMode::Both))
        | EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(Trigger::Metadata),
        EventKind::Create(CreateKind::File) => Some(Trigger::Created),
        _ => Some(Trigger::Content),
    }
}

fn coverage(subject: &str, what: &str, severity: Severity) -> Observation {
    let mut o = Observation::new(Kind::Coverage, Change::Modified, subject, Layer::Realtime);
    o.severity = severity;
    o.fields.insert("coverage".into(), FieldChange::fact(what));
    o
}

/// Starts watching: the watches are placed first, then the start-up verification runs
/// against the persisted baseline, then events are read until the probe is dropped.
/// Starts the probe; `progress` follows its start-up verification.
pub fn start(mut config: Config, sinks: Sinks, progress: Arc<Progress>) -> anyhow::Result<Probe> {
    // Events carry absolute, resolved paths; so must the root they are matched against.
    config.root = std::fs::canonicalize(&config.root)
        .map_err(|e| anyhow::anyhow!("watch.root {}: {e}", config.root.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<notify::Result<Event>>(config.queue);
    let overflow = Arc::new(AtomicBool::new(false));
    let flag = overflow.clone();
    let handler = move |res: notify::Result<Event>| forward(&tx, &flag, res);
    let mut watcher = notify::recommended_watcher(handler)?;
    let mut unwatched = Vec::new();
    for p in &config.paths {
        let real = config.real(p);
        if !real.exists() {
            tracing::warn!(path = %p, real = %real.display(), "watched path does not exist");
            deliver_blocking(
                &sinks.coverage,
                Coverage(coverage(p, "path_missing", Severity::Low)),
            );
            continue;
        }
        if let Err(e) = watcher.watch(&real, RecursiveMode::Recursive) {
            let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
            tracing::warn!(path = %p, error = %e, "cannot watch; periodic verification only");
            let what = if limit {
                "watch_limit_reached"
            } else {
                "watch_failed"
            };
            let mut o = coverage(p, what, Severity::Medium);
            o.fields.insert(
                "fallback".into(),
                FieldChange::fact(format!(
                    "scanned every {} s",
                    config.fallback_every.as_secs()
                )),
            );
            deliver_blocking(&sinks.coverage, Coverage(o));
            unwatched.push(p.clone());
        }
    }
    let shared = progress.clone();
    std::thread::Builder::new()
        .name("file-probe".into())
        .spawn(move || check_loop(config, unwatched, rx, overflow, sinks, shared))?;
    Ok(Probe {
        _watcher: watcher,
        progress,
    })
}

fn forward(
    tx: &SyncSender<notify::Result<Event>>,
    overflow: &AtomicBool,
    res: notify::Result<Event>,
) {
    // Events the checker ignores take no room in the queue. Above all the opens and reads
    // of a scan's own hashing: queued, a tree larger than the queue would overflow it at
    // each scan, and each overflow starts another scan.
    if let Ok(ev) = &res
        && !ev.need_rescan()
        && classify(ev).is_none()
    {
        return;
    }
    match tx.try_send(res) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => overflow.store(true, Ordering::Relaxed),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn check_loop(
    config: Config,
    unwatched: Vec<String>,
    rx: Receiver<notify::Result<Event>>,
    overflow: Arc<AtomicBool>,
    sinks: Sinks,
    progress: Arc<Progress>,
) {
    let Sinks {
        files,
        coverage: cover,
        accounts,
    } = sinks;
    let full_scan = |scan_kind: Scan| {
        let t = Instant::now();
        let states = if scan_kind == Scan::Startup {
            startup_scan(&config, &progress.read, |root, states| {
                deliver_blocking(&files, FileInput(Input::StartupPart { root, states }));
            })
        } else {
            scan_counting(&config, &progress.read)
        };
        tracing::info!(
            entries = states.len(),
            ms = t.elapsed().as_millis() as u64,
            ?scan_kind,
            "file verification"
        );
        deliver_blocking(
            &files,
            FileInput(Input::Scanned {
                states,
                scan: scan_kind,
            }),
        );
        deliver_blocking(
            &accounts,
            AccountsRead {
                files: read_accounts(&config),
                layer: Layer::Hash,
                startup: scan_kind == Scan::Startup,
            },
        );
    };
    full_scan(Scan::Startup);
    progress.done.store(true, Ordering::Release);
    let mut next_verify = Instant::now() + config.verify_every;
    // Subtrees without a watch are scanned on their own, shorter, period.
    let fallback_at = |now: Instant| (!unwatched.is_empty()).then(|| now + config.fallback_every);
    let mut next_fallback = fallback_at(Instant::now());
    loop {
        let wait = next_fallback
            .map_or(next_verify, |f| f.min(next_verify))
            .saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) if Instant::now() >= next_verify => {
                full_scan(Scan::Periodic);
                next_verify = Instant::now() + config.verify_every;
                next_fallback = fallback_at(Instant::now());
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                for root in &unwatched {
                    let mut states = BTreeMap::new();
                    walk(
                        &config,
                        &config.real(root),
                        0,
                        &mut states,
                        &AtomicU64::new(0),
                    );
                    deliver_blocking(
                        &files,
                        FileInput(Input::Subtree {
                            root: root.clone(),
                            states,
                        }),
                    );
                }
                next_fallback = fallback_at(Instant::now());
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Drain what is queued: one read per path per batch.
        let mut batch: Vec<(PathBuf, Trigger)> = Vec::new();
        // Where each path sits in the batch: a storm's batch can hold a whole queue.
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut rescan = false;
        for ev in std::iter::once(first).chain(rx.try_iter()) {
            match ev {
                Ok(ev) => {
                    rescan |= ev.need_rescan();
                    let Some(trigger) = classify(&ev) else {
                        continue;
                    };
                    for p in ev.paths {
                        match index.get(&p) {
                            // Seen in this batch: a content event outranks the others.
                            Some(&i) if trigger == Trigger::Content => batch[i].1 = trigger,
                            Some(_) => {}
                            None => {
                                index.insert(p.clone(), batch.len());
                                batch.push((p, trigger));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch error");
                    rescan = true;
                }
            }
        }
        if overflow.swap(false, Ordering::Relaxed) || rescan {
            tracing::warn!("file events overflowed; rescanning");
            deliver_blocking(
                &cover,
                Coverage(coverage("/", "event_queue_overflow_rescan", Severity::Low)),
            );
            full_scan(Scan::Overflow);
            next_verify = Instant::now() + config.verify_every;
            continue;
        }
        let mut accounts_touched = false;
        for (path, trigger) in batch {
            let Some(subject) = config.subject(&path) else {
                continue;
            };
            accounts_touched |= is_account_file(&subject);
            // A created regular file is read when its writer closes it, so that one save
            // is one spike, whatever the race between the writer and this thread. A hard
            // link arrives complete and sees no close: read it now.
            if trigger == Trigger::Created
                && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.nlink() < 2)
            {
                continue;
            }
            let state = read_state(&path, &config);
            match &state {
                // A directory that appeared (mkdir, moved in) brings its contents along:
                // the watch never saw those files arrive, so read them now.
                Some(st) if trigger == Trigger::Content && st.kind == EntryKind::Dir => {
                    let mut inside = BTreeMap::new();
                    walk(&config, &path, 0, &mut inside, &AtomicU64::new(0));
                    for (sub, st) in inside {
                        deliver_blocking(
                            &files,
                            FileInput(Input::Checked {
                                path: sub,
                                state: Some(st),
                                cause: Cause::Metadata,
                            }),
                        );
                    }
                    continue;
                }
                _ => {}
            }
            deliver_blocking(
                &files,
                FileInput(Input::Checked {
                    path: subject,
                    state,
                    cause: trigger.cause(),
                }),
            );
        }
        if accounts_touched {
            deliver_blocking(
                &accounts,
                AccountsRead {
                    files: read_accounts(&config),
                    layer: Layer::Realtime,
                    startup: false,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &Path, mib_per_s: u32) -> Config {
        Config {
            root: root.to_path_buf(),
            paths: vec!["/etc".into()],
            max_hash_bytes: 64 << 20,
            hash_rate: hash_limiter(mib_per_s),
            verify_every: Duration::from_secs(600),
            fallback_every: Duration::from_secs(60),
            queue: 16,
        }
    }

    #[test]
    fn the_startup_scan_hands_over_each_top_level_entry_and_reads_as_a_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("app/conf.d")).expect("dirs");
        std::fs::write(etc.join("hosts"), "h").expect("write");
        std::fs::write(etc.join("app/a.conf"), "a").expect("write");
        std::fs::write(etc.join("app/conf.d/b.conf"), "b").expect("write");
        let c = config(dir.path(), 0);
        let mut parts: Vec<(String, Vec<String>)> = Vec::new();
        let read = AtomicU64::new(0);
        let all = startup_scan(&c, &read, |root, states| {
            parts.push((root, states.keys().cloned().collect()));
        });
        assert_eq!(all, scan(&c));
        assert_eq!(read.load(Ordering::Relaxed), all.len() as u64);
        assert_eq!(
            parts,
            [
                (
                    "/etc/app".to_string(),
                    vec![
                        "/etc/app".to_string(),
                        "/etc/app/a.conf".into(),
                        "/etc/app/conf.d".into(),
                        "/etc/app/conf.d/b.conf".into()
                    ]
                ),
                ("/etc/hosts".to_string(), vec!["/etc/hosts".to_string()]),
            ]
        );
    }

    #[test]
    fn hashing_waits_for_the_rate_limit_and_small_files_cost_little() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![1u8; 5 << 19]).expect("write"); // 2.5 MiB
        let limited = config(dir.path(), 1);
        let t = Instant::now();
        let state = read_state(&big, &limited).expect("exists");
        // A burst of 1 MiB, then 1.5 MiB at 1 MiB/s.
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            state,
            read_state(&big, &config(dir.path(), 0)).expect("exists")
        );
        assert!(state.digest.is_some());
        assert!(hash_limiter(0).is_none());

        // 500 small files fit in one second's burst of a 1 MiB/s limit.
        let small = config(dir.path(), 1);
        for i in 0..500 {
            let p = dir.path().join(format!("s{i}"));
            std::fs::write(&p, b"x=1\n").expect("write");
            let st = read_state(&p, &small).expect("exists");
            assert_eq!(st.size, 4);
        }
        let limiter = small.hash_rate.as_deref().expect("limited");
        let left = std::num::NonZeroU32::new(500).expect("nonzero");
        assert!(
            matches!(limiter.check_n(left), Ok(Ok(()))),
            "each small file took one KiB of the 1024 KiB burst"
        );
    }
}
