//! Silences: matchers that mute alerts between a start and an end.
//!
//! [`Silence`] is the record the engine keeps (and the region log will carry, with
//! rmp-serde). [`am`] holds Alertmanager's v2 JSON shapes: what `POST /api/v1/silences`
//! accepts and what `GET /api/v1/silences` answers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::labels::{Labels, Matcher, all_match};

/// Where a silence is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started yet.
    Pending,
    Active,
    /// Ended (or expired by hand).
    Expired,
}

/// Matchers one silence may have.
pub const MAX_MATCHERS: usize = 16;
/// Bytes of text one silence may carry: matchers, creator and comment together.
pub const MAX_TEXT: usize = 2048;

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Opaque and URL-safe; empty when asked to create one (the engine names it).
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_unix_ms: u64,
    pub ends_at_unix_ms: u64,
    pub created_by: String,
    pub comment: String,
    /// The last time it was created, changed or expired.
    pub updated_at_unix_ms: u64,
}

/// A region's silences as its master publishes them on the fleet topic, so that a silence
/// made anywhere holds everywhere. Other regions admit it only with the master's proof of
/// authority ([`crate::trust`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub region: String,
    pub term: u64,
    pub master: crate::node::Id,
    /// Every silence of the region's log (at most [`crate::region::MAX_SILENCES`]).
    pub silences: Vec<Silence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Box<crate::trust::Proof>>,
}

/// Why a silence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error(
        "a silence must have a matcher that does not match an empty label: it would silence every alert"
    )]
    MatchesEverything,
    #[error("a silence must end after it starts")]
    EndsBeforeStart,
    #[error("a silence must end in the future")]
    AlreadyEnded,
    #[error("no silence {0}")]
    NotFound(String),
    #[error("silence {0} has already expired")]
    AlreadyExpired(String),
    #[error(
        "a silence may have at most {MAX_MATCHERS} matchers and {MAX_TEXT} bytes of text (matchers, createdBy and comment together): every member keeps it in the region's log"
    )]
    TooLarge,
    #[error("bad time {0:?}: expected an RFC 3339 date-time")]
    BadTime(String),
    #[error(transparent)]
    Matcher(#[from] super::labels::MatcherError),
}

impl Silence {
    pub fn state(&self, now_unix_ms: u64) -> State {
        if now_unix_ms >= self.ends_at_unix_ms {
            State::Expired
        } else if now_unix_ms < self.starts_at_unix_ms {
            State::Pending
        } else {
            State::Active
        }
    }

    /// Whether it mutes `labels` at `now`.
    pub fn mutes(&self, labels: &Labels, now_unix_ms: u64) -> bool {
        self.state(now_unix_ms) == State::Active && all_match(&self.matchers, labels)
    }

    /// Checks a silence about to be created or changed at `now`.
    pub fn check(&self, now_unix_ms: u64) -> Result<(), Error> {
        if self.matchers.is_empty() {
            return Err(Error::NoMatchers);
        }
        if self.matchers.iter().all(|m| m.matches_value("")) {
            return Err(Error::MatchesEverything);
        }
        if self.ends_at_unix_ms <= self.starts_at_unix_ms {
            return Err(Error::EndsBeforeStart);
        }
        if self.ends_at_unix_ms <= now_unix_ms {
            return Err(Error::AlreadyEnded);
        }
        let text = self.created_by.len()
            + self.comment.len()
            + self
                .matchers
                .iter()
                .map(|m| m.name.len() + m.value.len())
                .sum::<usize>();
        if self.matchers.len() > MAX_MATCHERS || text > MAX_TEXT {
            return Err(Error::TooLarge);
        }
        Ok(())
    }

    /// A new id: derived from the content and the time of creation (two identical
    /// silences created in the same millisecond are one).
    pub fn derive_id(&self, now_unix_ms: u64) -> String {
        let mut h = Sha256::new();
        for m in &self.matchers {
            h.update(m.to_string().as_bytes());
            h.update([0]);
        }
        h.update(self.starts_at_unix_ms.to_be_bytes());
        h.update(self.ends_at_unix_ms.to_be_bytes());
        h.update(self.created_by.as_bytes());
        h.update([0]);
        h.update(self.comment.as_bytes());
        h.update(now_unix_ms.to_be_bytes());
        super::hex(&h.finalize()[..16])
    }
}

/// Alertmanager's v2 API shapes.
pub mod am {
    use serde::{Deserialize, Serialize};

    use super::super::labels::{Matcher as Labelled, Op};
    use super::super::rfc3339;
    use super::{Error, Silence, State};

    /// One matcher as Alertmanager writes it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Matcher {
        pub name: String,
        pub value: String,
        pub is_regex: bool,
        #[serde(default = "yes")]
        pub is_equal: bool,
    }

    fn yes() -> bool {
        true
    }

    /// What `POST /api/v1/silences` accepts. With an `id`, it changes that silence.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Postable {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub id: Option<String>,
        pub matchers: Vec<Matcher>,
        pub starts_at: String,
        pub ends_at: String,
        pub created_by: String,
        #[serde(default)]
        pub comment: String,
    }

    /// What `POST /api/v1/silences` answers: `{"silenceID": "..."}`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Created {
        #[serde(rename = "silenceID")]
        pub silence_id: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Status {
        pub state: State,
    }

    /// What `GET /api/v1/silences` answers, one per silence.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Gettable {
        pub id: String,
        pub status: Status,
        pub updated_at: String,
        pub matchers: Vec<Matcher>,
        pub starts_at: String,
        pub ends_at: String,
        pub created_by: String,
        pub comment: String,
    }

    impl Postable {
        /// The silence it describes (not yet checked: see `Silence::check`).
        pub fn into_silence(self) -> Result<Silence, Error> {
            let time = |s: &str| rfc3339::parse(s).ok_or_else(|| Error::BadTime(s.to_string()));
            let matchers = self
                .matchers
                .iter()
                .map(|m| {
                    let op = match (m.is_regex, m.is_equal) {
                        (false, true) => Op::Eq,
                        (false, false) => Op::NotEq,
                        (true, true) => Op::Re,
                        (true, false) => Op::NotRe,
                    };
                    Labelled::new(&m.name, op, &m.value)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Silence {
                id: self.id.unwrap_or_default(),
                matchers,
                starts_at_unix_ms: time(&self.starts_at)?,
                ends_at_unix_ms: time(&self.ends_at)?,
                created_by: self.created_by,
                comment: self.comment,
                updated_at_unix_ms: 0,
            })
        }
    }

    impl Gettable {
        pub fn of(s: &Silence, now_unix_ms: u64) -> Gettable {
            Gettable {
                id: s.id.clone(),
                status: Status {
                    state: s.state(now_unix_ms),
                },
                updated_at: rfc3339::format(s.updated_at_unix_ms),
                matchers: s
                    .matchers
                    .iter()
                    .map(|m| Matcher {
                        name: m.name.clone(),
                        value: m.value.clone(),
                        is_regex: matches!(m.op, Op::Re | Op::NotRe),
                        is_equal: matches!(m.op, Op::Eq | Op::Re),
                    })
                    .collect(),
                starts_at: rfc3339::format(s.starts_at_unix_ms),
                ends_at: rfc3339::format(s.ends_at_unix_ms),
                created_by: s.created_by.clone(),
                comment: s.comment.clone(),
            }
        }
    }
}
