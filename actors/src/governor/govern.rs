//! Governance while this member is master: deaths, returns, name bindings and work moves
//! committed to the log, and the voter set changed one membership change at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Governor, Member, Output, is_live};
use crate::membership::Status as Liveness;
use crate::region::{self, Command};
use crate::{assign, node};

impl Governor {
    pub(super) fn govern(&mut self, now: Instant) {
        if self.leading().is_none() {
            self.dead_since.clear();
            return;
        }
        if self.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        let (commands, mut refused_now) = self.commands();
        // Live peers claiming a name bound to another peer: reported once each, and kept
        // out of the configuration.
        let refused = self.refused();
        for (name, holder, claimant) in &refused {
            if self
                .duplicates_told
                .insert((format!("master:{name}"), claimant.clone()))
            {
                self.out.push_back(Output::DuplicateName {
                    name: name.clone(),
                    holder: holder.clone(),
                    claimant: claimant.clone(),
                    by_master: true,
                });
            }
        }
        // Also those refused by a binding proposed in this round, so that a claimant never
        // gets a learner slot for the round its name's binding takes to commit.
        refused_now.extend(refused.iter().map(|(_, _, c)| region::raft_id(c)));
        let refused = refused_now;
        let Some(core) = &mut self.core else {
            return;
        };
        let mut proposed = false;
        for c in &commands {
            if core.propose(c).is_err() {
                break;
            }
            proposed = true;
        }
        if proposed {
            self.quiet_until = Some(now + self.config.quiet);
        }
        self.reconfigure(now, &refused);
    }

    /// Deaths, returns, name bindings and work moves the current view calls for, and the
    /// Raft ids of the live claimants refused for a name bound to another peer (in the
    /// log, or by a binding among these commands).
    ///
    /// A name the log binds to nobody yet goes to the live claimant that already takes
    /// part in consensus (a founder, when twins found a region together), else the
    /// oldest (incarnation, then peer id): never to whichever the view lists first.
    pub(super) fn commands(&mut self) -> (Vec<Command>, BTreeSet<u64>) {
        // The core's state, borrowed apart from the assignment kept below.
        let Some(state) = self.core.as_ref().map(region::Region::state) else {
            return (Vec::new(), BTreeSet::new());
        };
        let mut commands = Vec::new();
        let mut refused = BTreeSet::new();
        let mut live: BTreeSet<node::Id> = BTreeSet::new();
        let me = (
            self.config.own.clone(),
            self.config.name.clone(),
            self.config.incarnation,
            Liveness::Alive,
        );
        let others = self
            .members
            .iter()
            .map(|m| (m.peer.clone(), m.name.clone(), m.incarnation, m.status));
        let everyone: Vec<(node::Id, String, u64, Liveness)> =
            std::iter::once(me).chain(others).collect();
        let configured: BTreeSet<u64> = self
            .status()
            .map(|s| s.voters.into_iter().chain(s.learners).collect())
            .unwrap_or_default();
        // The claimant each unbound name goes to: (outside consensus, incarnation, peer),
        // lowest first.
        let mut claims: BTreeMap<&str, (bool, u64, &node::Id)> = BTreeMap::new();
        for (peer, name, incarnation, status) in &everyone {
            if !is_live(*status) || state.names.contains_key(name) {
                continue;
            }
            let key = (
                !configured.contains(&region::raft_id(peer)),
                *incarnation,
                peer,
            );
            let best = claims.entry(name.as_str()).or_insert(key);
            if key < *best {
                *best = key;
            }
        }
        for (peer, name, incarnation, status) in everyone.iter().cloned() {
            let bound = state.names.get(&name);
            let holder = bound.or_else(|| claims.get(name.as_str()).map(|c| c.2));
            if holder.is_some_and(|h| *h != peer) {
                // Refused: a duplicate name takes no part in the region.
                if is_live(status) && peer != self.config.own {
                    refused.insert(region::raft_id(&peer));
                }
                continue;
            }
            match status {
                Liveness::Dead => {
                    if state.dead.get(&peer).is_none_or(|d| *d < incarnation) {
                        commands.push(Command::DeclareDead { peer, incarnation });
                    }
                }
                Liveness::Alive | Liveness::Suspect => {
                    live.insert(peer.clone());
                    if bound.is_none() {
                        commands.push(Command::Name {
                            name,
                            peer: peer.clone(),
                        });
                    }
                    if state.alive.get(&peer).is_none_or(|a| *a < incarnation) {
                        commands.push(Command::Alive { peer, incarnation });
                    }
                }
                Liveness::Joining | Liveness::Remote => {}
            }
        }
        // A decommissioning member is still watched (its audit stays an item) but owns
        // nothing: its work moves to the others.
        let workers: BTreeSet<node::Id> = live
            .iter()
            .filter(|p| state.phase(p) != region::Phase::Decommissioning)
            .cloned()
            .collect();
        let items = assign::items(&live, &self.config.probes);
        let target = self.assignment.update(&items, &workers);
        for (item, owner) in assign::moves(&state.assignments, target) {
            commands.push(Command::Assign { item, owner });
        }
        for item in state.assignments.keys() {
            if !target.contains_key(item) {
                commands.push(Command::Unassign { item: item.clone() });
            }
        }
        (commands, refused)
    }

    /// One membership change toward: no refused or long-dead voter, every live member a
    /// learner, `max_voters` voters.
    pub(super) fn reconfigure(&mut self, now: Instant, refused: &BTreeSet<u64>) {
        let own = region::raft_id(&self.config.own);
        // Decommissioning members leave the configuration like refused ones (the master
        // itself excepted: it would have to hand over first).
        let leaving: BTreeSet<u64> = self
            .state()
            .map(|st| {
                st.phases
                    .values()
                    .filter(|r| r.phase == region::Phase::Decommissioning)
                    .map(|r| region::raft_id(&r.peer))
                    .filter(|id| *id != own)
                    .collect()
            })
            .unwrap_or_default();
        let refused: BTreeSet<u64> = refused.union(&leaving).copied().collect();
        let refused = &refused;
        let Some(core) = &mut self.core else {
            return;
        };
        let status = core.status();
        let by_id: BTreeMap<u64, &Member> = self
            .members
            .iter()
            .map(|m| (region::raft_id(&m.peer), m))
            .collect();
        let alive = |id: &u64| *id == status.id || by_id.get(id).is_some_and(|m| is_live(m.status));
        for v in &status.voters {
            if alive(v) {
                self.dead_since.remove(v);
            } else {
                self.dead_since.entry(*v).or_insert(now);
            }
        }
        let members = status.voters.iter().chain(&status.learners);
        let change = if let Some(&gone) = members.clone().find(|id| refused.contains(id)) {
            core.remove_voter(gone)
        } else if let Some((&gone, _)) = self
            .dead_since
            .iter()
            .find(|(_, t)| now.duration_since(**t) >= self.config.replace_after)
        {
            self.dead_since.remove(&gone);
            core.remove_voter(gone)
        } else if let Some((&id, _)) = by_id.iter().find(|(id, m)| {
            m.status == Liveness::Alive
                && !refused.contains(id)
                && !status.voters.contains(id)
                && !status.learners.contains(id)
        }) {
            core.add_learner(id)
        } else if status.voters.len() < self.config.max_voters
            && let Some(id) = status
                .learners
                .iter()
                .filter_map(|id| by_id.get(id).map(|m| (m.incarnation, &m.peer, *id, *m)))
                .filter(|(_, _, id, m)| {
                    m.eligible && m.status == Liveness::Alive && !refused.contains(id)
                })
                .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                .map(|(_, _, id, _)| id)
        {
            core.add_voter(id)
        } else {
            return;
        };
        // A change refused now (one pending, or not leader any more) is retried on the
        // next round.
        let _ = change;
    }
}
