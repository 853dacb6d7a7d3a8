//! fleetmesh's deterministic fleet simulator: many members, each made of the real sans-IO
//! cores of `fleetmesh-actors`, on a simulated clock and network, with faults from a
//! schedule and invariants checked as the run goes.
//!
//! No actix, tokio, libp2p or socket is involved, and no clock is read but to report wall
//! time: the same scenario and seed give the same run on any machine (one ChaCha8 RNG
//! draws every delay, loss and chaos fault; events run in (time, sequence) order).
//!
//! ## What runs
//!
//! Each member runs the heartbeat emitter and membership view ([`fleetmesh_actors::
//! heartbeat`], [`fleetmesh_actors::membership`], with the ring of watchers, their probes
//! and the phi accrual detector), the
//! region governor with its Raft core ([`fleetmesh_actors::governor`]), and the spike
//! path ([`flow`]: the encoder and its reservations, the journal, the sync core that says
//! when to replay, the region intake that applies and acknowledges), wired as the node's
//! heartbeat, region and spike actors wire them (see [`engine`]). The governor's saves and
//! the journal go to the member's simulated disk; a crash keeps exactly that disk, and a
//! restart is a new incarnation restored from it.
//!
//! ## The network model, and what it leaves out
//!
//! - Every message takes `base + uniform(0, jitter)` ms on its link (one class within a
//!   region, one across regions) and is lost with probability `loss`.
//! - **Heartbeats** go on the region's gossip topic. The model is *direct fan-out*: each
//!   heartbeat reaches every reachable running peer of the region once, after one link
//!   delay, and that first copy is what the membership view handles (gossipsub drops
//!   later copies by message id before the application sees them). Each receiver is
//!   charged `min(mesh_degree, reachable peers)` copies, in messages and bytes (the
//!   encoded size of the real wire frame): the duplicates a gossipsub mesh of degree D
//!   delivers. Left out: multi-hop propagation delay through the mesh, mesh maintenance
//!   (GRAFT/PRUNE, peer scoring), IHAVE/IWANT gossip to non-mesh peers, and the loss of
//!   a copy being repaired by another copy. Loss drops the heartbeat for that receiver.
//! - **Raft messages** go point to point (request-response) and are charged once, with
//!   their encoded size plus a fixed framing overhead; so do **replay batches** (their
//!   encoded request) and their answers (a fixed 72 bytes).
//! - **Spikes** and a master's **acknowledgements** go on the region topic like
//!   heartbeats (one copy handled per receiver, `mesh_degree` copies charged, the encoded
//!   frame's size). A member's own spikes reach its own intake directly.
//! - **Liveness probes** and their answers go point to point too, one link delay each,
//!   charged once each (a fixed 72 bytes: the framing of a Raft message plus a few
//!   bytes). A running, unpaused member answers at once (the node's network driver
//!   answers without asking its actors); a paused one answers what queued when it
//!   resumes, late.
//! - **Connections**: each member is connected to every running peer of its region it
//!   can reach. A crash closes its connections at once (peers see `Disconnected` after a
//!   link delay); a pause keeps them; a cut link is noticed closed after
//!   `cut_detect_ms` (the transport's ping timeout), and reopens on heal.
//! - **Pauses**: a paused member handles nothing; messages to it queue and are handled in
//!   arrival order when it resumes; its timers fire then, late.
//! - **Clock skew** shifts the wall-clock milliseconds a member's cores are handed (the
//!   heartbeat's send date); detection and consensus run on monotonic time and are not
//!   affected.
//! - No traffic crosses regions yet (the fleet topic and consultation are not simulated),
//!   so `cross_region` latency is unused so far. What masters do with the spikes they
//!   apply (the fleet brain, policy, alerts) is not simulated. Signature checks and other
//!   crypto are neither run nor charged as CPU. The number of connected peers a member
//!   reports in its sync state is not modelled (it only names that state).
//!
//! ## Invariants ([`check`])
//!
//! Never two masters of one region in one term; no running, connected, unpaused member
//! declared dead; every crashed member declared dead by every running, connected peer of
//! its region within a bound; spikes applied in order and at most once by each master,
//! never dropped from a journal before a master applied them, and all applied by the end
//! of a run that ends quiet ([`check::Spikes`]). The first violation stops the run and is
//! reported with the seed and the simulated time.

pub mod chaos;
pub mod check;
pub mod engine;
pub mod flow;
pub mod net;
pub mod queue;
pub mod scenario;
pub mod stats;

pub use engine::Sim;
pub use scenario::Scenario;
pub use stats::Report;
