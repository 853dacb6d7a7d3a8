//! Founding and joining: the founding set proposed and agreed without named voters, the
//! named voters, the bootstrap window, and duplicate names before any log binds them.

use std::time::Instant;

use super::{Governor, Output, is_live};
use crate::membership::Status as Liveness;
use crate::node;
use crate::region::{self, Durable, Region};

impl Governor {
    pub(super) fn own_id(&self) -> u64 {
        region::raft_id(&self.config.own)
    }

    pub(super) fn expect(&self) -> usize {
        let highest = self
            .members
            .iter()
            .map(|m| m.expect)
            .chain(std::iter::once(self.config.bootstrap_expect))
            .max()
            .unwrap_or(1);
        usize::try_from(highest.max(1)).unwrap_or(usize::MAX)
    }

    /// Live eligible members (this node included when eligible), one per name (the
    /// oldest claimant), oldest first.
    pub(super) fn candidates(&self) -> Vec<(u64, &str, &node::Id)> {
        (self.candidates.iter())
            .map(|c| match c {
                None => (
                    self.config.incarnation,
                    self.config.name.as_str(),
                    &self.config.own,
                ),
                Some(i) => {
                    let m = &self.members[*i];
                    (m.incarnation, m.name.as_str(), &m.peer)
                }
            })
            .collect()
    }

    /// Orders the candidates again (see [`Governor::candidates`]): the members or this
    /// node's incarnation changed. Founding asks for them at every tick.
    pub(super) fn order_candidates(&mut self) {
        let me = (self.config.eligible).then_some((
            self.config.incarnation,
            self.config.name.as_str(),
            &self.config.own,
            None,
        ));
        let others = (self.members.iter().enumerate())
            .filter(|(_, m)| m.eligible && m.status == Liveness::Alive)
            .map(|(i, m)| (m.incarnation, m.name.as_str(), &m.peer, Some(i)));
        let mut all: Vec<_> = me.into_iter().chain(others).collect();
        // One per name: the oldest claimant (lowest incarnation, then peer id).
        all.sort_unstable_by(|a, b| (a.1, a.0, a.2).cmp(&(b.1, b.0, b.2)));
        all.dedup_by(|later, first| later.1 == first.1);
        all.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        self.candidates = all.into_iter().map(|c| c.3).collect();
    }

    pub(super) fn founding_progress(&self) -> (usize, usize) {
        if self.config.voters.is_empty() {
            (self.candidates().len(), self.expect())
        } else {
            let seen = self.named_voters().iter().filter(|v| v.is_some()).count();
            (seen, self.config.voters.len())
        }
    }

    /// The peer of each named voter, where seen (alive, or this node).
    pub(super) fn named_voters(&self) -> Vec<Option<node::Id>> {
        let candidates = self.candidates();
        self.config
            .voters
            .iter()
            .map(|n| {
                if *n == self.config.name {
                    return Some(self.config.own.clone());
                }
                candidates
                    .iter()
                    .find(|(_, name, _)| name == n)
                    .map(|(_, _, p)| (*p).clone())
            })
            .collect()
    }

    /// Another live peer holds this node's name: bound to it in the region's log, or
    /// (while this node's log binds no peer to it) another live peer with the name that
    /// belongs to a group while this node does not, that founded the group while this
    /// node did not, or that is the older claimant.
    ///
    /// A node that joined an announced group but whose log binds nothing to its name is
    /// not proof of holding it: a newcomer joins the group of the first live peer it
    /// hears, possibly before the holder of its name is live in its view, and the master
    /// never sends a refused claimant its log, so that log stays empty.
    pub(super) fn own_name_taken(&self) -> Option<(String, node::Id)> {
        let name = &self.config.name;
        if let Some(holder) = self.state().and_then(|s| s.names.get(name)) {
            return (*holder != self.config.own).then(|| (name.clone(), holder.clone()));
        }
        let founders = &self.durable.founders;
        let founder = |peer: &node::Id| founders.contains(&region::raft_id(peer));
        let own_founder = founder(&self.config.own);
        let older = |m: &super::Member| {
            (m.incarnation, &m.peer) < (self.config.incarnation, &self.config.own)
        };
        self.namesakes()
            .filter(|m| is_live(m.status))
            .find(|m| {
                if self.core.is_none() {
                    !m.founders.is_empty() || older(m)
                } else if own_founder != founder(&m.peer) {
                    founder(&m.peer)
                } else {
                    older(m)
                }
            })
            .map(|m| (name.clone(), m.peer.clone()))
    }

    pub(super) fn found_or_join(&mut self, now: Instant) {
        if self.core.is_some() || self.stopped.is_some() || self.own_name_taken().is_some() {
            return;
        }
        let announced = self
            .members
            .iter()
            .filter(|m| is_live(m.status))
            .find(|m| !m.founders.is_empty())
            .map(|m| m.founders.clone());
        let founders = if let Some(f) = announced {
            f
        } else if !self.config.voters.is_empty() {
            let Some(peers) = self.named_voters().into_iter().collect::<Option<Vec<_>>>() else {
                return;
            };
            peers.iter().map(region::raft_id).collect()
        } else {
            match self.agreed_founding(now) {
                Some(f) => f,
                None => return,
            }
        };
        self.join(now, founders);
    }

    /// Without named voters: the founding set once it is agreed and stable.
    pub(super) fn agreed_founding(&mut self, now: Instant) -> Option<Vec<u64>> {
        let candidates = self.candidates();
        let expect = self.expect();
        if candidates.len() < expect {
            self.set_proposal(Vec::new());
            self.agreed_since = None;
            return None;
        }
        let take = expect.max(self.config.max_voters.min(candidates.len()));
        let mut proposal: Vec<u64> = candidates
            .iter()
            .take(take)
            .map(|(_, _, p)| region::raft_id(p))
            .collect();
        proposal.sort_unstable();
        self.set_proposal(proposal.clone());
        let own = self.own_id();
        // Proposed at once, so that peers need not wait for this node's window; but this
        // node founds only after listening `bootstrap` for an existing group.
        if !proposal.contains(&own) || now < self.started + self.config.bootstrap {
            // Not a founder: wait for the founders to announce their group.
            return None;
        }
        // Each founder other than this node proposes the same set.
        let agreeing: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.proposal == proposal)
            .map(|m| region::raft_id(&m.peer))
            .collect();
        let agreed = proposal
            .iter()
            .all(|id| *id == own || agreeing.contains(id));
        if !agreed {
            self.agreed_since = None;
            return None;
        }
        let since = match &self.agreed_since {
            Some((p, t)) if *p == proposal => *t,
            _ => {
                self.agreed_since = Some((proposal.clone(), now));
                now
            }
        };
        // Alone, there is nobody to agree with.
        let alone = proposal == [own];
        (alone || now.duration_since(since) >= self.config.stable).then_some(proposal)
    }

    pub(super) fn set_proposal(&mut self, proposal: Vec<u64>) {
        if self.facts.proposal != proposal {
            self.facts.proposal = proposal;
            self.out.push_back(Output::Facts(self.facts.clone()));
        }
    }

    pub(super) fn join(&mut self, now: Instant, founders: Vec<u64>) {
        let own = self.own_id();
        match Region::new(own, &founders, &self.config.consensus) {
            Ok(mut core) => {
                if founders == [own] {
                    // The only voter: nobody else can be master, no need to wait.
                    let _ = core.campaign();
                }
                self.core = Some(core);
                self.durable = Durable {
                    founders: founders.clone(),
                    ..Durable::default()
                };
                self.facts.founders = founders.clone();
                self.facts.proposal = Vec::new();
                self.replaced();
                self.out.push_back(Output::Save);
                self.out.push_back(Output::Facts(self.facts.clone()));
                self.out.push_back(Output::Joined {
                    founder: founders.contains(&own),
                    founders,
                });
                self.drain(now);
            }
            Err(e) => self.stopped = Some(format!("cannot join the region's consensus: {e}")),
        }
    }
}
