//! The alert history on disk (`<data_dir>/alerts/history.redb`): every alert record this
//! node's lifecycle engine held, as it last changed, resolved ones included, so that
//! `GET /api/v1/alerts` lists them after a restart. Bounded by `alerts.history_days` and
//! `alerts.history_bytes` (see [`Store::gc`]).
//!
//! Two tables: `records` (alert id -> last change in Unix ms, rmp-serde of the record)
//! and `by_change` ((last change, id) -> the record's encoded bytes), so that "changed
//! after `since`, newest first" is one range scan, and a bounds pass reads only the index.
//!
//! What changed and what is over the bounds is decided in
//! `fleetmesh_actors::alerting::history`; here records are only written, read and
//! removed. Every method blocks on the disk: the alert actor and the API call them on a
//! blocking thread, never on an actor's. A file that cannot be opened or read is set
//! aside (`history.redb.bad`), said at ERROR, and a new one started.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fleetmesh_actors::actor::alert::SaveHistory;

use fleetmesh_actors::alerting::Record;
use fleetmesh_actors::alerting::history::{Bounds, Kept, last_change, over_bounds};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("records");
const BY_CHANGE: TableDefinition<(u64, &str), u64> = TableDefinition::new("by_change");

/// Memory the store may use to cache pages.
const CACHE_BYTES: usize = 4 << 20;

/// What went wrong with the history file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("alert history {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("alert history {path}: record {id} cannot be encoded: {reason}")]
    Encode {
        path: PathBuf,
        id: String,
        reason: String,
    },
    #[error("alert history: the write did not finish: {0}")]
    Interrupted(String),
}

/// What a bounds pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub records: usize,
    pub bytes: u64,
}

/// The history file, open.
pub struct Store {
    db: Database,
    path: PathBuf,
    bounds: Bounds,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or starts) the history at `path`, checks that every record in it reads,
    /// and brings it within `bounds` at `now`. A file that is not a readable history is
    /// moved aside to `<path>.bad` (said at ERROR) and a new one started; `None` (said
    /// at ERROR) when no history can be kept this run (the file is held by another
    /// process, or cannot be created): the node goes on without one.
    pub fn open(path: &Path, bounds: Bounds, now: u64) -> Option<Store> {
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::error!(error = %e, path = %dir.display(), "the alert history's folder cannot be made: no history this run");
            return None;
        }
        match Store::try_open(path, bounds, now) {
            Ok(store) => Some(store),
            Err(Opening::Elsewhere(e)) => {
                tracing::error!(error = %e, path = %path.display(), "the alert history cannot be opened: no history this run");
                None
            }
            Err(Opening::Unreadable(e)) => {
                let bad = bad_path(path);
                match std::fs::rename(path, &bad) {
                    Ok(()) => {
                        tracing::error!(error = %e, path = %path.display(), moved_to = %bad.display(), "the alert history cannot be read: set aside, a new one is started")
                    }
                    Err(r) => {
                        tracing::error!(error = %e, path = %path.display(), "the alert history cannot be read, nor set aside ({r}): no history this run");
                        return None;
                    }
                }
                match Store::try_open(path, bounds, now) {
                    Ok(store) => Some(store),
                    Err(Opening::Elsewhere(e) | Opening::Unreadable(e)) => {
                        tracing::error!(error = %e, path = %path.display(), "a new alert history cannot be started: no history this run");
                        None
                    }
                }
            }
        }
    }

    fn try_open(path: &Path, bounds: Bounds, now: u64) -> Result<Store, Opening> {
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            Database::builder().set_cache_size(CACHE_BYTES).create(path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(Opening::Elsewhere(
                    "held by another process (is another node running on this data dir?)".into(),
                ));
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
                if e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(Opening::Elsewhere(e.to_string()));
            }
            Ok(Err(e)) => return Err(Opening::Unreadable(e.to_string())),
            Err(_) => return Err(Opening::Unreadable("the store panicked reading it".into())),
        };
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            bounds,
        };
        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| store.check()));
        match checked {
            Ok(Ok(0)) => {}
            Ok(Ok(dropped)) => {
                tracing::warn!(dropped, path = %path.display(), "alert history records that do not read are dropped");
            }
            Ok(Err(e)) => return Err(Opening::Unreadable(e.to_string())),
            Err(_) => return Err(Opening::Unreadable("the store panicked reading it".into())),
        }
        match store.gc(now) {
            Ok(r) if r.records > 0 => {
                // Only at start is the file alone: the space freed is given back then.
                if let Err(e) = store.db.compact() {
                    tracing::warn!(error = %e, path = %path.display(), "the alert history is not compacted");
                }
                tracing::info!(
                    removed = r.records,
                    bytes = r.bytes,
                    "alert history brought within its bounds"
                );
            }
            Ok(_) => {}
            Err(e) => return Err(Opening::Unreadable(e.to_string())),
        }
        Ok(store)
    }

    /// Makes both tables, reads every record, and removes those that do not decode or
    /// whose index entry is missing, and index entries of no record (answers how many
    /// records). An error: the file does not read.
    fn check(&self) -> Result<usize, Error> {
        let w = self.db.begin_write().map_err(|e| self.db_error(e))?;
        let mut dropped = Vec::new();
        let mut stray = Vec::new();
        {
            let records = w.open_table(RECORDS).map_err(|e| self.db_error(e))?;
            let index = w.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
            for item in index.iter().map_err(|e| self.db_error(e))? {
                let (key, _) = item.map_err(|e| self.db_error(e))?;
                let (at, id) = key.value();
                let held = records.get(id).map_err(|e| self.db_error(e))?;
                if held.is_none_or(|v| v.value().0 != at) {
                    stray.push((at, id.to_string()));
                }
            }
            for item in records.iter().map_err(|e| self.db_error(e))? {
                let (id, value) = item.map_err(|e| self.db_error(e))?;
                let (at, bytes) = value.value();
                let id = id.value().to_string();
                let sound = rmp_serde::from_slice::<Record>(bytes).is_ok_and(|r| r.id == id)
                    && index
                        .get((at, id.as_str()))
                        .map_err(|e| self.db_error(e))?
                        .is_some();
                if !sound {
                    dropped.push((at, id));
                }
            }
        }
        {
            let mut records = w.open_table(RECORDS).map_err(|e| self.db_error(e))?;
            let mut index = w.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
            for (at, id) in &dropped {
                records.remove(id.as_str()).map_err(|e| self.db_error(e))?;
                index
                    .remove((*at, id.as_str()))
                    .map_err(|e| self.db_error(e))?;
            }
            for (at, id) in &stray {
                index
                    .remove((*at, id.as_str()))
                    .map_err(|e| self.db_error(e))?;
            }
        }
        w.commit().map_err(|e| self.db_error(e))?;
        Ok(dropped.len())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records` in one transaction, each replacing the kept copy of its id
    /// unless that one changed later (a late batch never undoes a newer one).
    pub fn upsert(&self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = w.open_table(RECORDS).map_err(|e| self.db_error(e))?;
            let mut index = w.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
            for r in records {
                let at = last_change(r);
                let bytes = rmp_serde::to_vec_named(r).map_err(|e| Error::Encode {
                    path: self.path.clone(),
                    id: r.id.clone(),
                    reason: e.to_string(),
                })?;
                let before = table
                    .get(r.id.as_str())
                    .map_err(|e| self.db_error(e))?
                    .map(|v| v.value().0);
                if before.is_some_and(|b| b > at) {
                    continue;
                }
                if let Some(b) = before {
                    index
                        .remove((b, r.id.as_str()))
                        .map_err(|e| self.db_error(e))?;
                }
                table
                    .insert(r.id.as_str(), (at, bytes.as_slice()))
                    .map_err(|e| self.db_error(e))?;
                index
                    .insert((at, r.id.as_str()), bytes.len() as u64)
                    .map_err(|e| self.db_error(e))?;
            }
        }
        w.commit().map_err(|e| self.db_error(e))
    }

    /// The kept record `id`.
    pub fn get(&self, id: &str) -> Result<Option<Record>, Error> {
        let r = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = r.open_table(RECORDS).map_err(|e| self.db_error(e))?;
        let Some(value) = table.get(id).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        Ok(self.decode(id, value.value().1))
    }

    /// Kept records that last changed after `since` (Unix ms), newest first, only those
    /// whose state is `state` if given, at most `limit`.
    pub fn since(
        &self,
        since: u64,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        let r = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = r.open_table(RECORDS).map_err(|e| self.db_error(e))?;
        let index = r.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        let from = since.saturating_add(1);
        for item in index
            .range((from, "")..)
            .map_err(|e| self.db_error(e))?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| self.db_error(e))?;
            let (_, id) = key.value();
            let Some(value) = table.get(id).map_err(|e| self.db_error(e))? else {
                continue;
            };
            let Some(record) = self.decode(id, value.value().1) else {
                continue;
            };
            if state.is_none_or(|s| record.status.name() == s) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Kept records and their encoded bytes in all.
    pub fn usage(&self) -> Result<(usize, u64), Error> {
        let kept = self.kept()?;
        Ok((kept.len(), kept.iter().map(|k| k.bytes).sum()))
    }

    /// Removes every record that last changed `alerts.history_days` or longer before
    /// `now`, then the oldest until the rest add up to at most `alerts.history_bytes`.
    pub fn gc(&self, now: u64) -> Result<Removed, Error> {
        let kept = self.kept()?;
        let gone = over_bounds(&kept, self.bounds, now);
        if gone.is_empty() {
            return Ok(Removed::default());
        }
        let mut removed = Removed::default();
        let w = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = w.open_table(RECORDS).map_err(|e| self.db_error(e))?;
            let mut index = w.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
            // `over_bounds` answers the oldest first, a prefix of `kept`.
            for k in kept.iter().take(gone.len()) {
                index
                    .remove((k.last_change_unix_ms, k.id.as_str()))
                    .map_err(|e| self.db_error(e))?;
                // A record written again since the index was read stays, as it is now.
                let now_at = table
                    .get(k.id.as_str())
                    .map_err(|e| self.db_error(e))?
                    .map(|v| v.value().0);
                if now_at == Some(k.last_change_unix_ms) {
                    table.remove(k.id.as_str()).map_err(|e| self.db_error(e))?;
                    removed.records += 1;
                    removed.bytes += k.bytes;
                }
            }
        }
        w.commit().map_err(|e| self.db_error(e))?;
        Ok(removed)
    }

    /// The index, oldest first.
    fn kept(&self) -> Result<Vec<Kept>, Error> {
        let r = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let index = r.open_table(BY_CHANGE).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for item in index.iter().map_err(|e| self.db_error(e))? {
            let (key, bytes) = item.map_err(|e| self.db_error(e))?;
            let (at, id) = key.value();
            out.push(Kept {
                last_change_unix_ms: at,
                id: id.to_string(),
                bytes: bytes.value(),
            });
        }
        Ok(out)
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Option<Record> {
        match rmp_serde::from_slice(bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), %id, "an alert history record does not read: skipped");
                None
            }
        }
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> Error {
        Error::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }
}

/// This node's alert records after `since` (in `state` if given, at most `limit` from
/// each source): those its lifecycle holds (`held`, the alert actor's answer) and those its
/// history on disk keeps (`store`, read on a blocking thread; a failed read adds none).
/// `None` when the alert actor does not answer.
pub async fn held_and_kept(
    held: impl Future<Output = Option<Vec<Record>>>,
    store: Option<std::sync::Arc<Store>>,
    since: u64,
    state: Option<String>,
    limit: usize,
) -> Option<Vec<Record>> {
    let mut records = held.await?;
    if let Some(store) = store {
        let kept =
            tokio::task::spawn_blocking(move || store.since(since, state.as_deref(), limit)).await;
        if let Ok(Ok(kept)) = kept {
            records.extend(kept);
        }
    }
    Some(records)
}

/// How often a bounds pass runs while the node runs (besides one at start).
const GC_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The alert actor's way to the store: a batch is written on a blocking thread (the
/// actor starts the next one when it is done); at the actor's stop, at once. A failed
/// write is said at ERROR (the first, then one in a hundred): the records stay in memory
/// for the API, and the next change of each is written again.
pub fn saver(store: std::sync::Arc<Store>) -> SaveHistory {
    let failures = std::sync::Arc::new(AtomicU64::new(0));
    let (on_thread, now_store, now_failures) = (store.clone(), store, failures.clone());
    SaveHistory {
        write: Box::new(move |batch: Vec<Record>| {
            let (store, failures) = (on_thread.clone(), failures.clone());
            Box::pin(async move {
                let n = batch.len();
                let done = tokio::task::spawn_blocking(move || store.upsert(&batch))
                    .await
                    .unwrap_or_else(|e| Err(Error::Interrupted(e.to_string())));
                if let Err(e) = done {
                    failed(&failures, n, &e);
                }
            })
        }),
        write_now: Box::new(move |batch: Vec<Record>| {
            if let Err(e) = now_store.upsert(&batch) {
                failed(&now_failures, batch.len(), &e);
            }
        }),
    }
}

fn failed(failures: &AtomicU64, records: usize, e: &Error) {
    let n = failures.fetch_add(1, Ordering::Relaxed);
    if n.is_multiple_of(100) {
        tracing::error!(error = %e, records, failures = n + 1, "alert records not written to the history");
    }
}

/// Runs a bounds pass every [`GC_EVERY`] on a blocking thread, one at a time, for as
/// long as the node runs.
pub fn spawn_gc(store: std::sync::Arc<Store>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(GC_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the pass at start is done by `Store::open`.
        every.tick().await;
        loop {
            every.tick().await;
            let store = store.clone();
            let now = fleetmesh_actors::actor::unix_ms();
            match tokio::task::spawn_blocking(move || store.gc(now)).await {
                Ok(Ok(r)) if r.records > 0 => {
                    tracing::info!(
                        removed = r.records,
                        bytes = r.bytes,
                        "old alert history removed"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the alert history's bounds pass failed"),
                Err(e) => {
                    tracing::error!(error = %e, "the alert history's bounds pass did not finish")
                }
            }
        }
    });
}

/// Why a history could not be opened.
enum Opening {
    /// Not this file's fault (another process holds it, no permission): left as it is.
    Elsewhere(String),
    /// The file is not a readable history: set aside.
    Unreadable(String),
}

/// Where an unreadable history is set aside: `history.redb.bad`.
pub fn bad_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bad");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::alerting::lifecycle::Status;

    const DAY: u64 = 86_400_000;

    fn record(key: &str, start: u64, changed: u64, resolved: bool) -> Record {
        let mut r = Record::new(
            key.into(),
            [("alertname".to_string(), "policy_violation".to_string())]
                .into_iter()
                .collect(),
            Default::default(),
            start,
            start,
        );
        if resolved {
            r.ends_at_unix_ms = Some(changed);
            r.set_status(
                Status::Resolved {
                    at_unix_ms: changed,
                },
                changed,
                20,
            );
        } else {
            r.updated_at_unix_ms = changed;
        }
        r
    }

    #[test]
    fn records_are_kept_listed_newest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts/history.redb");
        let bounds = Bounds::new(7, 64 << 20);
        let now = 100 * DAY;
        let a = record("w1|a", now - 3000, now - 2000, true);
        let b = record("w1|b", now - 1500, now - 1000, false);
        {
            let store = Store::open(&path, bounds, now).expect("opened");
            store.upsert(&[a.clone(), b.clone()]).expect("written");
            // A late copy of an older state changes nothing.
            let older = record("w1|a", now - 3000, now - 2500, false);
            assert_eq!(older.id, a.id);
            store.upsert(&[older]).expect("written");
            assert_eq!(store.get(&a.id).expect("read"), Some(a.clone()));
        }
        let store = Store::open(&path, bounds, now).expect("reopened");
        let all = store.since(0, None, 10).expect("listed");
        assert_eq!(all, [b.clone(), a.clone()]);
        let resolved = store.since(0, Some("resolved"), 10).expect("listed");
        assert_eq!(resolved, std::slice::from_ref(&a));
        assert_eq!(
            resolved[0]
                .history
                .iter()
                .map(|t| t.status.name())
                .collect::<Vec<_>>(),
            ["firing", "resolved"]
        );
        assert_eq!(
            store.since(now - 1500, None, 10).expect("listed"),
            std::slice::from_ref(&b)
        );
        assert_eq!(store.since(0, None, 1).expect("listed"), [b]);
        assert_eq!(store.get("nope").expect("read"), None);
    }

    #[test]
    fn a_bounds_pass_removes_old_records_then_the_oldest_over_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.redb");
        let now = 100 * DAY;
        let store = Store::open(&path, Bounds::new(7, 64 << 20), now).expect("opened");
        let old = record("old", now - 9 * DAY, now - 8 * DAY, true);
        let list: Vec<Record> = (0..10)
            .map(|i| record(&format!("k{i}"), now - 100 + i, now - 50 + i, true))
            .collect();
        store.upsert(std::slice::from_ref(&old)).expect("written");
        store.upsert(&list).expect("written");
        let (n, bytes) = store.usage().expect("usage");
        assert_eq!(n, 11);
        let removed = store.gc(now).expect("gc");
        assert_eq!(removed.records, 1, "older than 7 days");
        assert_eq!(store.get(&old.id).expect("read"), None);
        drop(store);
        // Reopened with room for about half: the oldest go, at start.
        let each = bytes / 11;
        let store = Store::open(&path, Bounds::new(7, each * 5 + each / 2), now).expect("opened");
        let (n, kept_bytes) = store.usage().expect("usage");
        assert_eq!(n, 5);
        assert!(kept_bytes <= each * 5 + each / 2);
        let ids: Vec<String> = store
            .since(0, None, 100)
            .expect("listed")
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(ids, ["k9", "k8", "k7", "k6", "k5"]);
    }

    #[test]
    fn an_unreadable_file_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.redb");
        std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
        let now = 100 * DAY;
        let store = Store::open(&path, Bounds::new(7, 1 << 20), now).expect("a new one");
        assert!(bad_path(&path).exists(), "set aside");
        assert_eq!(
            std::fs::read(bad_path(&path)).expect("kept"),
            vec![0x5a; 8192]
        );
        let r = record("k", now - 10, now - 5, true);
        store.upsert(std::slice::from_ref(&r)).expect("written");
        assert_eq!(store.get(&r.id).expect("read"), Some(r));
    }

    #[test]
    fn a_record_that_does_not_decode_is_dropped_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.redb");
        let now = 100 * DAY;
        let good = record("good", now - 10, now - 5, true);
        {
            let store = Store::open(&path, Bounds::new(7, 1 << 20), now).expect("opened");
            store.upsert(std::slice::from_ref(&good)).expect("written");
            let w = store.db.begin_write().expect("write");
            {
                let mut t = w.open_table(RECORDS).expect("table");
                t.insert("bad", (now - 1, &b"\xc1not a record"[..]))
                    .expect("inserted");
                let mut i = w.open_table(BY_CHANGE).expect("table");
                i.insert((now - 1, "bad"), 14).expect("inserted");
            }
            w.commit().expect("committed");
            // Read around while open.
            assert_eq!(
                store.since(0, None, 10).expect("listed"),
                std::slice::from_ref(&good)
            );
        }
        {
            // An index entry of no record (a crash cannot leave one; a bug could).
            let store = Store::open(&path, Bounds::new(7, 1 << 20), now).expect("reopened");
            let w = store.db.begin_write().expect("write");
            {
                let mut i = w.open_table(BY_CHANGE).expect("table");
                i.insert((now - 2, "gone"), 100).expect("inserted");
            }
            w.commit().expect("committed");
        }
        let store = Store::open(&path, Bounds::new(7, 1 << 20), now).expect("reopened");
        let size = rmp_serde::to_vec_named(&good).expect("encoded").len() as u64;
        assert_eq!(
            store.usage().expect("usage"),
            (1, size),
            "the stray entry is gone"
        );
        assert!(
            !bad_path(&path).exists(),
            "one bad record does not set the file aside"
        );
    }
}
