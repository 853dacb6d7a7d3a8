//! What each fuzz target checks about one input, in one place: the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` call these functions, and so does the corpus replay that runs in
//! `cargo test` on a stable toolchain (`fuzz/corpus/<target>/*`, plus arbitrary bytes).
//!
//! Each check feeds the bytes to the same entry point the node uses on input from the
//! network, the disk or the operator, and returns [`Verdict::Accepted`] or
//! [`Verdict::Refused`] with the error's text. A panic, here or in the code under test, is
//! a bug: the checks assert what must hold of an accepted input (it survives being encoded
//! again) and of a refusal (a typed error that says something).
//!
//! This module decides nothing for the node and is not part of its API; it is public only
//! so that the fuzz crate can reach it.

use fleetmesh_actors::journal;
use fleetmesh_actors::policy::{self, ALL_KINDS, Facts};
use fleetmesh_actors::region::{self, Command, Region, Role};
use fleetmesh_actors::spike::Change;
use fleetmesh_actors::{node, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What became of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The input was taken in.
    Accepted,
    /// The input was refused with this error.
    Refused(String),
}

/// A fuzz target: its name (the folder of its corpus) and its check.
pub type Target = (&'static str, fn(&[u8]) -> Verdict);

/// Every target, by name.
pub const TARGETS: [Target; 5] = [
    ("wire_envelope", wire_envelope),
    ("journal_record", journal_record),
    ("raft_message", raft_message),
    ("policy_file", policy_file),
    ("settings_file", settings_file),
];

fn refused(text: String) -> Verdict {
    assert!(!text.trim().is_empty(), "a refusal must say why");
    Verdict::Refused(text)
}

/// A frame as the network driver receives it: a gossip [`wire::Body`], a request-response
/// [`wire::Request`] or [`wire::Response`] (the same bytes tried as each). Accepted when
/// any of them decodes.
pub fn wire_envelope(data: &[u8]) -> Verdict {
    let results = [
        decode_as::<wire::Body>(data, |b| {
            let _ = b.kind();
            if let wire::Body::Approval(a) = b {
                // What the driver checks before believing an approval.
                let _ = crate::net::driver::signature_ok(a);
                let _ = a.id();
            }
        }),
        decode_as::<wire::Request>(data, |_| ()),
        decode_as::<wire::Response>(data, |_| ()),
    ];
    if results.iter().any(Result::is_ok) {
        return Verdict::Accepted;
    }
    let first = results
        .into_iter()
        .find_map(Result::err)
        .unwrap_or_default();
    refused(first)
}

/// Decodes `data` as a `T`; an accepted message must encode again, and its encoding must be
/// a fixed point (what a node relays or journals means what it received).
fn decode_as<T: Serialize + DeserializeOwned>(
    data: &[u8],
    inspect: impl FnOnce(&T),
) -> Result<(), String> {
    match wire::decode::<T>(data) {
        Ok(msg) => {
            inspect(&msg);
            let once = match wire::encode(&msg) {
                Ok(b) => b,
                // The decoded form may be larger than the frame it came in (e.g. bytes
                // sent as a compact binary and encoded as a sequence): refused on the way
                // out, counted, never a panic.
                Err(wire::Error::TooLarge { .. }) => return Ok(()),
                Err(e) => panic!("a decoded message does not encode again: {e}"),
            };
            let again: T = wire::decode(&once).expect("a re-encoded message decodes");
            let twice = wire::encode(&again).expect("a re-encoded message encodes again");
            assert!(
                once == twice,
                "decoding then encoding is not stable: {once:02x?} then {twice:02x?}"
            );
            Ok(())
        }
        Err(e) => {
            assert_ne!(e.reason(), "encode", "decoding reported an encoding error");
            Err(e.to_string())
        }
    }
}

/// A journal segment as the node reads it at start ([`journal::scan`]): the bytes as a
/// segment, and the bytes as the payload of one well-formed record (so that the spike
/// decoder is reached past the checksum). Accepted when the segment reads to its end.
pub fn journal_record(data: &[u8]) -> Verdict {
    let whole = scan_checked(data);
    // The same bytes behind a valid header: the payload decoder sees arbitrary input.
    let mut framed = Vec::with_capacity(data.len() + journal::HEADER);
    if data.len() <= journal::MAX_RECORD {
        let len = u32::try_from(data.len()).expect("bounded by MAX_RECORD");
        framed.extend_from_slice(&len.to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        framed.extend_from_slice(data);
        scan_checked(&framed);
    }
    match whole.torn {
        None => Verdict::Accepted,
        Some(t) => refused(t.reason),
    }
}

/// Scans `data` and checks what recovery relies on: the valid prefix is where reading
/// stopped, and its spikes, framed again, read back as the same records.
fn scan_checked(data: &[u8]) -> journal::Scanned {
    let s = journal::scan(data);
    assert!(s.valid <= data.len(), "valid prefix beyond the data");
    match &s.torn {
        None => assert_eq!(s.valid, data.len(), "untorn but not read to the end"),
        Some(t) => {
            assert_eq!(t.offset, s.valid, "cut where reading stopped");
            assert!(!t.reason.is_empty(), "a torn record says why");
        }
    }
    let mut again = Vec::new();
    for spike in &s.spikes {
        journal::frame(spike, &mut again).expect("a spike read from a record frames again");
    }
    let rescanned = journal::scan(&again);
    assert!(
        rescanned.torn.is_none(),
        "re-framed records read back whole"
    );
    assert_eq!(rescanned.spikes.len(), s.spikes.len());
    let mut third = Vec::new();
    for spike in &rescanned.spikes {
        journal::frame(spike, &mut third).expect("frames");
    }
    assert!(again == third, "framing a read spike is not stable");
    s
}

/// Raft ids of the test region's members.
const MEMBERS: [u64; 3] = [1, 2, 3];
/// Steps and ticks taken from one input, at most.
const MAX_OPS: usize = 64;
/// Delivery rounds after one input, at most (each delivers every queued message).
const MAX_ROUNDS: usize = 16;

/// A region of three voters with an elected master that committed one command; the
/// member at `MEMBERS[i]` is `members[i]`.
struct Cluster {
    members: Vec<Region>,
    refused: u64,
}

impl Cluster {
    fn new() -> Self {
        let config = region::Config {
            seed: 7,
            ..region::Config::default()
        };
        let members = MEMBERS
            .iter()
            .map(|&id| Region::new(id, &MEMBERS, &config).expect("a valid region"))
            .collect();
        let mut c = Cluster {
            members,
            refused: 0,
        };
        c.exchange(&mut |_, _| ());
        c
    }

    /// The cluster of every input: elected, with one command committed everywhere.
    /// `seen` is shown every message delivered on the way.
    fn elected(seen: &mut dyn FnMut(u64, &[u8])) -> Self {
        let mut c = Cluster::new();
        for _ in 0..100 {
            if c.leader().is_some() {
                break;
            }
            c.tick_all(seen);
        }
        let leader = c.leader().expect("three honest members elect a master");
        let cmd = Command::Alive {
            peer: node::Id::from("seed-peer"),
            incarnation: 1,
        };
        c.members[leader]
            .propose(&cmd)
            .expect("a fresh master accepts a command");
        c.exchange(seen);
        for _ in 0..4 {
            c.tick_all(seen);
        }
        assert!(
            c.members.iter().all(|m| m.state().alive.len() == 1),
            "the command is committed everywhere"
        );
        c
    }

    fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.status().role == Role::Leader)
    }

    fn tick_all(&mut self, seen: &mut dyn FnMut(u64, &[u8])) {
        for m in &mut self.members {
            m.tick();
        }
        self.exchange(seen);
    }

    /// Polls every member and delivers what they send, for a bounded number of rounds.
    fn exchange(&mut self, seen: &mut dyn FnMut(u64, &[u8])) {
        for _ in 0..MAX_ROUNDS {
            let mut queue = Vec::new();
            for m in &mut self.members {
                queue.extend(m.poll().messages);
            }
            if queue.is_empty() {
                return;
            }
            for (to, bytes) in queue {
                let Some(i) = MEMBERS.iter().position(|&id| id == to) else {
                    continue;
                };
                seen(to, &bytes);
                if self.members[i].step(&bytes).is_err() {
                    self.refused += 1;
                }
            }
        }
    }
}

/// Raft messages as the region actor receives them: the input is a member choice and a
/// sequence of operations on an elected three-voter region, each either "step these bytes
/// into the chosen member" or "tick every member"; after each, every member's output is
/// delivered. Accepted when every stepped message was.
///
/// Layout: byte 0 picks the member (`% 3`: 0 the master, 1 and 2 the followers); then
/// records, `[op]` with `op % 2 == 1` a tick of every member `op / 2 % 8 + 1` times, else
/// `[op][len: u16 LE][len bytes]` a message.
pub fn raft_message(data: &[u8]) -> Verdict {
    let Some((&pick, mut rest)) = data.split_first() else {
        return refused("no member chosen".into());
    };
    let mut c = Cluster::elected(&mut |_, _| ());
    let leader = c.leader().expect("elected");
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    let target = order[usize::from(pick % 3)];
    let mut first_refusal = None;
    let mut ops = 0;
    while let Some((&op, tail)) = rest.split_first() {
        if ops == MAX_OPS {
            break;
        }
        ops += 1;
        if op % 2 == 1 {
            for _ in 0..=(op / 2 % 8) {
                c.tick_all(&mut |_, _| ());
            }
            rest = tail;
            continue;
        }
        let (len, tail) = match tail {
            [lo, hi, tail @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), tail),
            _ => break,
        };
        let (msg, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        if let Err(e) = c.members[target].step(msg) {
            let text = e.to_string();
            assert!(!text.is_empty());
            first_refusal.get_or_insert(text);
        }
        c.exchange(&mut |_, _| ());
    }
    match first_refusal {
        None => Verdict::Accepted,
        Some(e) => refused(e),
    }
}

/// A policy file as the node loads it (text; not UTF-8 is refused, as reading the file
/// refuses it). An accepted policy judges a spike of every kind and change.
pub fn policy_file(data: &[u8]) -> Verdict {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => return refused(format!("not UTF-8: {e}")),
    };
    match policy::parse("fuzz.toml", text) {
        Ok(p) => {
            let subjects = [
                "",
                "/etc/passwd",
                "deploy",
                "1234:/usr/sbin/nginx",
                "listen tcp 0.0.0.0:8080",
                "listen tcp6 [::1]:65535",
            ];
            for kind in ALL_KINDS {
                for change in [
                    Change::Added,
                    Change::Removed,
                    Change::Modified,
                    Change::Sample,
                ] {
                    for subject in subjects {
                        let facts = Facts {
                            kind,
                            change,
                            subject,
                            port: policy::listen_port(subject),
                            exe: subject.split_once(':').map(|(_, e)| e),
                        };
                        let v = p.evaluate_facts(&facts);
                        assert!(!v.reason.is_empty(), "a verdict says why");
                    }
                }
            }
            Verdict::Accepted
        }
        Err(e) => {
            assert!(e.line <= text.lines().count() + 1, "{e}: line past the end");
            refused(e.to_string())
        }
    }
}

/// A settings file as `fleetmesh node --config FILE` loads it (over the compiled-in
/// defaults, no environment, no flags).
pub fn settings_file(data: &[u8]) -> Verdict {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => return refused(format!("not UTF-8: {e}")),
    };
    match crate::settings::load_text(text) {
        Ok(_) => Verdict::Accepted,
        Err(e) => refused(e.to_string()),
    }
}

/// Representative valid inputs per target: the seeds of the corpora, and what the replay
/// expects every check to accept.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for frame in seed_frames() {
        out.push(("wire_envelope", frame));
    }
    let mut segment = Vec::new();
    for s in seed_spikes() {
        let mut one = Vec::new();
        journal::frame(&s, &mut one).expect("frames");
        segment.extend_from_slice(&one);
        out.push(("journal_record", one));
    }
    out.push(("journal_record", segment));
    for seed in raft_seeds() {
        out.push(("raft_message", seed));
    }
    for text in [
        include_str!("../config/policy/web.toml"),
        include_str!("../config/policy/database.toml"),
        include_str!("../config/policy/baseline.toml"),
        "",
        "[defaults]\nprocess = \"violation\"\n",
        "[[rules]]\nname = \"ports\"\ndecision = \"consult\"\nkinds = [\"network\"]\nports = [22, \"8000-8099\"]\nexes = [\"/usr/*/sshd\"]\n",
    ] {
        out.push(("policy_file", text.as_bytes().to_vec()));
    }
    for text in [
        "",
        "[node]\nname = \"web-1\"\nregion = \"eu-1\"\nrole = \"web\"\n",
        "[net]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = []\n[api]\nlisten = \"127.0.0.1:0\"\n",
        "[heartbeat]\ninterval_ms = 500\n[journal]\nfsync = \"never\"\n",
    ] {
        out.push(("settings_file", text.as_bytes().to_vec()));
    }
    out
}

fn seed_spikes() -> Vec<fleetmesh_actors::spike::Spike> {
    use fleetmesh_actors::spike::{Digest, FieldChange, Kind, Layer, Severity, Spike, Value};
    let file = Spike {
        origin: node::Id::from("12D3KooWorigin"),
        seq: 41,
        at_unix_ms: 1_700_000_000_000,
        kind: Kind::File,
        change: Change::Modified,
        subject: "/etc/nginx/nginx.conf".into(),
        before: Some(Digest([1; 32])),
        after: Some(Digest([2; 32])),
        severity: Severity::Medium,
        layers: vec![Layer::Realtime, Layer::Hash],
        label: "config_change".into(),
        fields: Default::default(),
    };
    let user = Spike {
        seq: 42,
        kind: Kind::User,
        change: Change::Added,
        subject: "deploy".into(),
        before: None,
        after: None,
        fields: [
            (
                "uid".to_string(),
                FieldChange {
                    before: None,
                    after: Some(Value::Int(1001)),
                },
            ),
            (
                "groups".to_string(),
                FieldChange {
                    before: Some(Value::List(vec!["users".into()])),
                    after: Some(Value::List(vec!["users".into(), "sudo".into()])),
                },
            ),
        ]
        .into_iter()
        .collect(),
        ..file.clone()
    };
    let metric = Spike {
        seq: 43,
        kind: Kind::Metric,
        change: Change::Sample,
        subject: "cpu".into(),
        before: None,
        after: None,
        fields: [(
            "value".to_string(),
            FieldChange {
                before: Some(Value::Float(0.25)),
                after: Some(Value::Float(0.75)),
            },
        )]
        .into_iter()
        .collect(),
        ..file.clone()
    };
    vec![file, user, metric]
}

fn seed_frames() -> Vec<Vec<u8>> {
    use fleetmesh_actors::fleet::{Answer, Approval, Pattern};
    use fleetmesh_actors::heartbeat::{Beat, Health};
    use fleetmesh_actors::policy::Decision;
    let info = node::Info {
        name: "web-1".into(),
        region: "eu-1".into(),
        role: "web".into(),
        incarnation: 3,
    };
    let spikes = seed_spikes();
    let approval = Approval::new(
        Pattern::of(&spikes[0], "web"),
        "eu-1",
        5,
        node::Id::from("12D3KooWmaster"),
        "operator alice".into(),
        1_700_000_000_000,
    );
    let bodies = [
        wire::Body::Heartbeat(Box::new(Beat {
            info: info.clone(),
            seq: 9,
            uptime_ms: 12_000,
            sent_unix_ms: 1_700_000_000_000,
            health: Health {
                peers_alive: 2,
                peers_suspect: 1,
                peers_dead: 0,
                load1: Some(0.5),
            },
            suspects: vec![node::Id::from("12D3KooWother")],
            sync: None,
            founders: vec![1, 2, 3],
            eligible: true,
            proposal: vec![1, 2, 3],
            expect: 3,
            every_ms: 2000,
            dead: vec![],
        })),
        wire::Body::Spikes(spikes.clone()),
        wire::Body::Acks(wire::Acks {
            region: "eu-1".into(),
            term: 5,
            marks: vec![(node::Id::from("12D3KooWorigin"), 40)],
        }),
        wire::Body::Approval(Box::new(approval)),
    ];
    let requests = [
        wire::Request::Hello(info.clone()),
        wire::Request::Raft {
            region: "eu-1".into(),
            message: vec![8, 3, 16, 2, 24, 1, 32, 5],
        },
        wire::Request::Replay {
            region: "eu-1".into(),
            first: 40,
            spikes: spikes.clone(),
        },
        wire::Request::Digest {
            region: "eu-1".into(),
        },
        wire::Request::Consult {
            region: "eu-1".into(),
            role: "web".into(),
            spike: Box::new(spikes[1].clone()),
            recheck: true,
        },
        wire::Request::GetSbom { offset: 49_152 },
        wire::Request::GetMetrics {
            since: 1_700_000_000_000,
        },
        wire::Request::AlertRecords {
            region: "eu-1".into(),
            since: 5,
            state: Some("resolved".into()),
            limit: 100,
        },
        wire::Request::Twin(Box::new(fleetmesh_actors::twin::Report {
            region: "eu-1".into(),
            twin: fleetmesh_actors::twin::Twin::default(),
            drift_since: [("file:/etc/a".to_string(), 5)].into(),
        })),
    ];
    let responses = [
        wire::Response::Hello(info),
        wire::Response::Accepted,
        wire::Response::TwinTaken([("file:/etc/a".to_string(), 5)].into()),
        wire::Response::Sbom {
            total: 3,
            chunk: b"{}\n".to_vec(),
        },
        wire::Response::Acked {
            region: "eu-1".into(),
            term: 5,
            mark: 43,
        },
        wire::Response::Verdict(Answer {
            region: "eu-1".into(),
            term: 5,
            policy: "0123456789abcdef".into(),
            decision: Decision::Consult,
            rule: "fleet:held".into(),
            reason: "gathering".into(),
            held: true,
            recheck_after_ms: Some(30_000),
        }),
        wire::Response::AlertRecords(Vec::new()),
        wire::Response::Metrics(vec![fleetmesh_actors::series::Series {
            metric: "cpu.busy_pct".into(),
            points: vec![(1_700_000_000_000, 12.5)],
        }]),
        wire::Response::Refused("not the master".into()),
        wire::Response::Busy {
            retry_after_ms: 25,
            why: "64 requests in flight".into(),
        },
    ];
    let mut out = Vec::new();
    out.extend(bodies.iter().map(|b| wire::encode(b).expect("encodes")));
    out.extend(requests.iter().map(|r| wire::encode(r).expect("encodes")));
    out.extend(responses.iter().map(|r| wire::encode(r).expect("encodes")));
    out
}

/// Inputs that step into a member messages an honest peer sent it while the region
/// elected its master and committed a command, each followed by a tick.
fn raft_seeds() -> Vec<Vec<u8>> {
    let mut sent: Vec<(u64, Vec<u8>)> = Vec::new();
    let c = Cluster::elected(&mut |to, bytes| sent.push((to, bytes.to_vec())));
    let leader = c.leader().expect("elected");
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    let mut seeds = Vec::new();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for (to, bytes) in sent {
        let Some(member) = MEMBERS.iter().position(|&id| id == to) else {
            continue;
        };
        let Some(pick) = order.iter().position(|&i| i == member) else {
            continue;
        };
        // One seed per (member, message type): the type is the first field's value.
        if !kinds_seen.insert((pick, bytes.get(1).copied())) {
            continue;
        }
        let len = u16::try_from(bytes.len()).expect("small message");
        let mut seed = vec![u8::try_from(pick).expect("0..3"), 0];
        seed.extend_from_slice(&len.to_le_bytes());
        seed.extend_from_slice(&bytes);
        seed.push(1);
        seeds.push(seed);
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    /// Replays every committed corpus file through its target's check: no panic, and
    /// each verdict is an acceptance or a refusal that says why.
    #[test]
    fn committed_corpora_replay_without_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, check) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
            let (mut files, mut accepted) = (0, 0);
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file reads");
                if check(&data) == Verdict::Accepted {
                    accepted += 1;
                }
                files += 1;
            }
            assert!(files > 0, "corpus {name} is empty");
            assert!(accepted > 0, "no input of corpus {name} is accepted");
        }
    }

    #[test]
    fn every_seed_is_accepted() {
        let seeds = seeds();
        for (name, _) in TARGETS {
            assert!(seeds.iter().any(|(n, _)| *n == name), "no seed for {name}");
        }
        for (name, data) in seeds {
            let (_, check) = TARGETS
                .iter()
                .find(|(n, _)| *n == name)
                .expect("seed of a known target");
            assert_eq!(check(&data), Verdict::Accepted, "{name} seed {data:02x?}");
        }
    }

    /// Writes the seeds into `fuzz/corpus/<target>/seed-<n>` (run on purpose:
    /// `FLEETMESH_WRITE_SEEDS=1 cargo test -p fleetmesh --lib write_seeds -- --ignored`).
    #[test]
    #[ignore]
    fn write_seeds() {
        if std::env::var_os("FLEETMESH_WRITE_SEEDS").is_none() {
            return;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (n, (name, data)) in seeds().into_iter().enumerate() {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(format!("seed-{n:02}")), data).expect("seed written");
        }
    }

    #[test]
    fn a_torn_journal_tail_is_refused_with_its_reason() {
        let (_, mut segment) = seeds()
            .into_iter()
            .find(|(n, _)| *n == "journal_record")
            .expect("a journal seed");
        segment.truncate(segment.len() - 1);
        assert!(matches!(journal_record(&segment), Verdict::Refused(r) if r.contains("present")));
    }

    #[test]
    fn a_forged_raft_message_is_refused_not_fatal() {
        // A vote request addressed to member 9, which is not in the region.
        let msg = [8u8, 5, 16, 9, 24, 2, 32, 1];
        let mut input = vec![1, 0, msg.len() as u8, 0];
        input.extend_from_slice(&msg);
        assert!(matches!(raft_message(&input), Verdict::Refused(_)));
        assert!(matches!(raft_message(&[]), Verdict::Refused(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for (_, check) in TARGETS {
                let _ = check(&data);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[\\[\\]a-z_=\"., 0-9\n-]{0,200}") {
            let _ = policy_file(text.as_bytes());
            let _ = settings_file(text.as_bytes());
        }
    }
}
