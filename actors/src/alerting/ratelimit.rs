//! Per-receiver budgets: at most `per_minute` notifications to one receiver in any 60 s.
//!
//! The last unit of the budget is kept for one summary notification ("the budget is
//! spent, N notifications held back"), at most one per minute, so that a receiver is told
//! when it is not told everything. What is held back is not lost: the engine retries it
//! when the budget frees ([`Limiter::free_at`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

pub const WINDOW_MS: u64 = 60_000;
pub const DEFAULT_PER_MINUTE: u32 = 10;

#[derive(Debug, Default)]
struct Usage {
    /// Send times within the last window, oldest first (at most the budget).
    sent: VecDeque<u64>,
    last_summary: Option<u64>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Limiter {
    default: u32,
    per_receiver: BTreeMap<String, u32>,
    usage: HashMap<String, Usage>,
}

impl Limiter {
    /// Budgets below 2 are taken as 2 (one notification and the summary).
    pub fn new(default: u32, per_receiver: BTreeMap<String, u32>) -> Limiter {
        Limiter {
            default: default.max(2),
            per_receiver: per_receiver
                .into_iter()
                .map(|(k, v)| (k, v.max(2)))
                .collect(),
            usage: HashMap::new(),
        }
    }

    pub fn budget(&self, receiver: &str) -> u32 {
        self.per_receiver
            .get(receiver)
            .copied()
            .unwrap_or(self.default)
    }

    fn usage(&mut self, receiver: &str, now: u64) -> &mut Usage {
        let u = self.usage.entry(receiver.to_string()).or_default();
        // Sends "in the future" mean the wall clock was set back: they no longer count.
        u.sent.retain(|&t| t <= now);
        while u
            .sent
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= WINDOW_MS)
        {
            u.sent.pop_front();
        }
        u
    }

    /// Takes one unit for a regular notification, if the budget (less the summary's unit)
    /// allows it.
    pub fn take(&mut self, receiver: &str, now: u64) -> bool {
        let regular = self.budget(receiver) as usize - 1;
        let u = self.usage(receiver, now);
        if u.sent.len() < regular {
            u.sent.push_back(now);
            true
        } else {
            false
        }
    }

    /// Takes the summary's unit, if no summary was sent to `receiver` in the last window.
    pub fn take_summary(&mut self, receiver: &str, now: u64) -> bool {
        let budget = self.budget(receiver) as usize;
        let u = self.usage(receiver, now);
        let recent = u
            .last_summary
            .is_some_and(|t| now.saturating_sub(t) < WINDOW_MS);
        if recent || u.sent.len() >= budget {
            return false;
        }
        u.sent.push_back(now);
        u.last_summary = Some(now);
        true
    }

    /// When [`Limiter::take`] will next succeed for `receiver` (`now` if it would now).
    pub fn free_at(&self, receiver: &str, now: u64) -> u64 {
        let regular = self.budget(receiver) as usize - 1;
        let Some(u) = self.usage.get(receiver) else {
            return now;
        };
        let live: Vec<u64> = u
            .sent
            .iter()
            .copied()
            .filter(|&t| t <= now && now - t < WINDOW_MS)
            .collect();
        if live.len() < regular {
            return now;
        }
        live[live.len() - regular] + WINDOW_MS
    }
}
