//! Operator actions: acknowledgements and silences (and their replay from the region log).

use super::Error;
use super::engine::Engine;
use super::escalation;
use super::lifecycle::Ack;
use super::silence::{self, Silence, am};

impl Engine {
    /// Acknowledges alert `id`: its escalation stops until the acknowledgement times out
    /// (the policy's `ack_timeout_ms`, else the engine's), when it fires again. Returns
    /// the acknowledgement, to commit.
    pub fn ack(&mut self, id: &str, by: &str, comment: &str, now: u64) -> Result<Ack, Error> {
        let key = self.ids.get(id).ok_or_else(|| self.unknown(id))?;
        let t = self
            .alerts
            .get_mut(key)
            .ok_or_else(|| Error::UnknownAlert(id.to_string()))?;
        if t.record.is_resolved() {
            return Err(Error::Resolved(id.to_string()));
        }
        let timeout = t
            .escalation
            .as_ref()
            .map(|p| p.policy)
            .or_else(|| escalation::select(&self.policies, &t.record.labels))
            .map_or(self.config.ack_timeout_ms, |i| {
                self.policies[i].ack_timeout_ms
            });
        let ack = Ack {
            by: by.to_string(),
            at_unix_ms: now,
            comment: comment.to_string(),
            until_unix_ms: now.saturating_add(timeout),
        };
        t.record.ack = Some(ack.clone());
        if !t.record.status.is_muted() {
            let status = t.record.derive(Vec::new(), None);
            t.record.set_status(status, now, self.config.history_len);
        }
        self.changes.mark(&t.record.id);
        self.counters.acknowledged += 1;
        Ok(ack)
    }

    /// An operator marks alert `id` resolved (a violation dealt with): as [`Engine::resolve`].
    pub fn resolve_id(&mut self, id: &str, now: u64) -> Result<(), Error> {
        let key = self.ids.get(id).cloned().ok_or_else(|| self.unknown(id))?;
        self.resolve(&key, now)
            .map(|_| ())
            .ok_or_else(|| Error::Resolved(id.to_string()))
    }

    /// The error for an id that is not tracked: resolved if it is a resolved episode still
    /// remembered, else unknown.
    fn unknown(&self, id: &str) -> Error {
        if self.retired.iter().any(|r| r.id == id) {
            Error::Resolved(id.to_string())
        } else {
            Error::UnknownAlert(id.to_string())
        }
    }

    /// Replays a committed acknowledgement (from the region log): applied to alert `id`
    /// now, or when it is raised here.
    pub fn apply_ack(&mut self, id: &str, ack: Ack) {
        match self.ids.get(id).and_then(|k| self.alerts.get_mut(k)) {
            Some(t) if !t.record.is_resolved() => {
                t.record.ack = Some(ack);
                self.changes.mark(id);
            }
            Some(_) => {}
            None => {
                self.pending_acks.insert(id.to_string(), ack);
            }
        }
    }

    /// Creates a silence (empty `id`) or changes silence `id`. Returns its id.
    pub fn add_silence(&mut self, mut s: Silence, now: u64) -> Result<String, Error> {
        s.check(now)?;
        if s.id.is_empty() {
            s.id = s.derive_id(now);
        } else if !self.silences.contains_key(&s.id) {
            return Err(silence::Error::NotFound(s.id).into());
        }
        s.updated_at_unix_ms = now;
        let id = s.id.clone();
        self.silences.insert(id.clone(), s);
        Ok(id)
    }

    /// Replays a committed silence as it is (from the region log).
    pub fn restore_silence(&mut self, s: Silence) {
        self.silences.insert(s.id.clone(), s);
    }

    /// Ends silence `id` now. Returns it as changed, to commit.
    pub fn expire_silence(&mut self, id: &str, now: u64) -> Result<Silence, Error> {
        let s = self
            .silences
            .get_mut(id)
            .ok_or_else(|| silence::Error::NotFound(id.to_string()))?;
        if s.state(now) == silence::State::Expired {
            return Err(silence::Error::AlreadyExpired(id.to_string()).into());
        }
        s.starts_at_unix_ms = s.starts_at_unix_ms.min(now);
        s.ends_at_unix_ms = now;
        s.updated_at_unix_ms = now;
        Ok(s.clone())
    }

    /// The silences in Alertmanager's GET shape.
    pub fn silences(&self, now: u64) -> Vec<am::Gettable> {
        self.silences
            .values()
            .map(|s| am::Gettable::of(s, now))
            .collect()
    }

    pub fn silence(&self, id: &str) -> Option<&Silence> {
        self.silences.get(id)
    }
}
