//! Properties over random sequences of inputs: no alert is ever notified while a silence
//! matches it, and no receiver gets more than its budget in any minute.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const BUDGET: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Raise {
        host: u8,
        action: u8,
        severity: u8,
    },
    Resolve {
        host: u8,
        action: u8,
    },
    Ack {
        which: usize,
    },
    Silence {
        node: Option<u8>,
        action: Option<u8>,
        start: u64,
        len: u64,
    },
    Expire {
        which: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5u8, 0..3u8, 0..5u8).prop_map(|(host, action, severity)| Op::Raise { host, action, severity }),
        2 => (0..5u8, 0..3u8).prop_map(|(host, action)| Op::Resolve { host, action }),
        1 => any::<usize>().prop_map(|which| Op::Ack { which }),
        2 => (proptest::option::of(0..5u8), proptest::option::of(0..3u8), 0..60_000u64, 1..200_000u64)
            .prop_map(|(node, action, start, len)| Op::Silence { node, action, start, len }),
        1 => any::<usize>().prop_map(|which| Op::Expire { which }),
        4 => (0..120_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

const ACTIONS: [&str; 3] = ["anomaly", "node_dead", "service_down"];
const SEVERITIES: [Severity; 5] = [
    Severity::Info,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

struct World {
    e: Engine,
    now: u64,
    silences: BTreeMap<String, Silence>,
    ids: Vec<String>,
    sent: BTreeMap<String, Vec<u64>>,
}

impl World {
    fn poll(&mut self, now: u64) -> Result<(), TestCaseError> {
        self.now = self.now.max(now);
        for n in self.e.poll(self.now) {
            for a in &n.alerts {
                for s in self.silences.values() {
                    prop_assert!(
                        !s.mutes(&a.labels, self.now),
                        "alert {} notified at {} while silence {} matches it",
                        a.key,
                        self.now,
                        s.id
                    );
                }
            }
            if n.is_escalation() {
                for a in &n.alerts {
                    prop_assert_eq!(&a.status, &Status::Firing, "only firing alerts escalate");
                }
            }
            let times = self.sent.entry(n.receiver.clone()).or_default();
            times.push(self.now);
            let in_window = times.iter().filter(|&&t| self.now - t < 60_000).count();
            prop_assert!(
                in_window <= BUDGET,
                "{} got {in_window} in a minute",
                n.receiver
            );
        }
        Ok(())
    }

    fn advance(&mut self, ms: u64) -> Result<(), TestCaseError> {
        let target = self.now + ms;
        let mut guard = 0;
        while let Some(t) = self.e.poll_timeout().filter(|&t| t <= target) {
            guard += 1;
            prop_assert!(guard < 10_000, "poll_timeout does not move on");
            self.poll(t)?;
        }
        self.poll(target)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn silences_always_mute_and_budgets_always_hold(
        ops in proptest::collection::vec(op(), 1..80),
        wait in 0..20_000u64,
    ) {
        let e = engine(&format!(
            "rate_per_minute = {BUDGET}\n[route]\ngroup_wait_ms = {wait}\ngroup_interval_ms = 30000\n\
             repeat_interval_ms = 90000\ngroup_by = [\"node\"]\n\
             [[route.routes]]\nmatchers = [\"severity =~ high|critical\"]\nreceiver = \"oncall\"\ncontinue = true\n\
             [[inhibit]]\nsource_matchers = [\"alertname = node_dead\"]\n\
             target_matchers = [\"alertname = service_down\"]\nequal = [\"node\"]\n\
             [[escalations]]\nname = \"crit\"\nack_timeout_ms = 100000\n\
             steps = [{{ receiver = \"oncall\", after_ms = 0 }}, {{ receiver = \"lead\", after_ms = 40000 }}]\nrepeat = 3"
        ));
        let mut w = World { e, now: 1, silences: BTreeMap::new(), ids: Vec::new(), sent: BTreeMap::new() };
        for op in ops {
            let now = w.now;
            match op {
                Op::Raise { host, action, severity } => {
                    let a = alert(&format!("w{host}"), ACTIONS[action as usize], "x", SEVERITIES[severity as usize]);
                    if let Ok(id) = w.e.raise(a, now) {
                        w.ids.push(id);
                    }
                }
                Op::Resolve { host, action } => {
                    w.e.resolve(&format!("w{host}|{}|x", ACTIONS[action as usize]), now);
                }
                Op::Ack { which } => {
                    if !w.ids.is_empty() {
                        let id = w.ids[which % w.ids.len()].clone();
                        let _ = w.e.ack(&id, "ana", "", now);
                    }
                }
                Op::Silence { node, action, start, len } => {
                    let mut matchers = Vec::new();
                    if let Some(n) = node {
                        matchers.push(Matcher::parse(&format!("node = w{n}")).expect("ok"));
                    }
                    if let Some(a) = action {
                        matchers.push(Matcher::parse(&format!("alertname = {}", ACTIONS[a as usize])).expect("ok"));
                    }
                    let s = Silence {
                        id: String::new(),
                        matchers,
                        starts_at_unix_ms: now + start,
                        ends_at_unix_ms: now + start + len,
                        created_by: "ana".into(),
                        comment: String::new(),
                        updated_at_unix_ms: 0,
                    };
                    if let Ok(id) = w.e.add_silence(s, now) {
                        let kept = w.e.silence(&id).expect("kept").clone();
                        w.silences.insert(id, kept);
                    }
                }
                Op::Expire { which } => {
                    if !w.silences.is_empty() {
                        let id = w.silences.keys().nth(which % w.silences.len()).expect("some").clone();
                        if let Ok(s) = w.e.expire_silence(&id, now) {
                            w.silences.insert(id, s);
                        }
                    }
                }
                Op::Advance { ms } => w.advance(ms)?,
            }
            w.poll(now)?;
        }
        w.advance(1_000_000)?;
    }
}
