//! Who tells the receivers a region's alerts: its master; a node not linked to any network
//! (nobody else could); or a node that has known no master for `autonomous_after`
//! (autonomous: it tells its own alerts, fail-open). While a master is being elected,
//! nobody tells: what is raised meanwhile is told by whoever tells next.
//!
//! Sans-IO: the caller passes the time (Unix ms) and arms a timer from
//! [`Role::poll_timeout`]; [`Role::refresh`] says when this node starts or stops telling.

use crate::node;

/// A change of whether this node tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It starts: every group is looked at again, against the region's notification log
    /// ([`super::Engine::renotify`]).
    Started,
    /// It stops: the master tells from now on.
    Stopped,
    Same,
}

/// This node's part in telling its region's alerts.
#[derive(Debug, Clone)]
pub struct Role {
    autonomous_after: u64,
    master: Option<node::Id>,
    leading: bool,
    /// Linked to the network (it can reach a master).
    linked: bool,
    /// Since when no master is known, if none is.
    masterless_since: Option<u64>,
    /// Whether it told at the last [`Role::refresh`].
    notifying: bool,
}

impl Role {
    /// A node starting at `now`: no master known, not linked yet, so it tells (what a
    /// previous run left undelivered goes out at once).
    pub fn new(autonomous_after_ms: u64, now: u64) -> Role {
        Role {
            autonomous_after: autonomous_after_ms,
            master: None,
            leading: false,
            linked: false,
            masterless_since: Some(now),
            notifying: true,
        }
    }

    /// The node can reach its region's master from now on.
    pub fn link(&mut self, now: u64) {
        self.linked = true;
        if self.master.is_none() {
            self.masterless_since = Some(now);
        }
    }

    /// The region's master as this node knows it, and whether it is this node. Returns
    /// whether the master changed (members send their open alerts to a new one).
    pub fn set_master(&mut self, master: Option<node::Id>, leading: bool, now: u64) -> bool {
        let changed = master != self.master;
        self.leading = leading && master.is_some();
        match (&master, self.masterless_since) {
            (Some(_), _) => self.masterless_since = None,
            (None, None) => self.masterless_since = Some(now),
            (None, Some(_)) => {}
        }
        self.master = master;
        changed
    }

    pub fn master(&self) -> Option<&node::Id> {
        self.master.as_ref()
    }

    /// Whether this node is its region's master.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// Whether this node tells at `now`.
    pub fn notifies(&self, now: u64) -> bool {
        self.leading
            || !self.linked
            || self
                .masterless_since
                .is_some_and(|t| now.saturating_sub(t) >= self.autonomous_after)
    }

    /// When this node would start telling without new input (no master known for the
    /// autonomous bound), if it does not tell yet.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.notifying {
            return None;
        }
        self.masterless_since
            .map(|t| t.saturating_add(self.autonomous_after))
    }

    /// Takes note of whether it tells at `now`.
    pub fn refresh(&mut self, now: u64) -> Change {
        let notifies = self.notifies(now);
        let change = match (self.notifying, notifies) {
            (false, true) => Change::Started,
            (true, false) => Change::Stopped,
            _ => Change::Same,
        };
        self.notifying = notifies;
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: u64 = 10_000;

    fn id(s: &str) -> node::Id {
        node::Id::from(s)
    }

    #[test]
    fn a_node_with_no_network_tells_from_the_start() {
        let mut r = Role::new(AFTER, 0);
        assert!(r.notifies(0));
        assert_eq!(r.refresh(0), Change::Same);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_linked_node_with_no_master_tells_only_after_the_bound() {
        let mut r = Role::new(AFTER, 0);
        r.link(1_000);
        assert_eq!(r.refresh(1_000), Change::Stopped, "a master may answer");
        assert_eq!(r.poll_timeout(), Some(11_000));
        assert_eq!(r.refresh(10_999), Change::Same);
        assert_eq!(r.refresh(11_000), Change::Started, "autonomous: fail-open");
        assert_eq!(r.poll_timeout(), None);
        // A master appears: it tells from now on.
        assert!(r.set_master(Some(id("m")), false, 12_000));
        assert_eq!(r.refresh(12_000), Change::Stopped);
        assert_eq!(r.poll_timeout(), None, "a master is known");
    }

    #[test]
    fn the_master_tells_and_a_lost_master_gives_the_members_the_bound_again() {
        let mut r = Role::new(AFTER, 0);
        r.link(0);
        assert_eq!(r.refresh(0), Change::Stopped);
        assert!(r.set_master(Some(id("me")), true, 500));
        assert_eq!(r.refresh(500), Change::Started);
        assert!(r.leading());
        // It loses the lead to another: it stops.
        assert!(r.set_master(Some(id("other")), false, 2_000));
        assert_eq!(r.refresh(2_000), Change::Stopped);
        // The master is lost (an election): nobody tells for the bound, counted from then.
        assert!(r.set_master(None, false, 3_000));
        assert!(!r.set_master(None, false, 4_000), "no change");
        assert_eq!(r.refresh(12_999), Change::Same);
        assert_eq!(r.poll_timeout(), Some(13_000));
        // A new master within the bound: still not this node's to tell.
        assert!(r.set_master(Some(id("new")), false, 6_000));
        assert_eq!(r.refresh(20_000), Change::Same);
        assert!(!r.notifies(20_000));
    }

    #[test]
    fn leading_needs_a_master() {
        let mut r = Role::new(AFTER, 0);
        r.link(0);
        r.set_master(None, true, 0);
        assert!(!r.leading());
    }
}
