//! `policy-local`: the latency of one local policy decision.
//!
//! The shipped role policies (config/policy/{web,baseline,database}.toml) decide a mix of
//! spikes: user additions that match an early or a late rule, file changes matched by
//! globs (`/etc/nginx/**`) or by no rule (the default), new listeners by port, processes by
//! executable, metric samples. Each decision is timed alone with `Instant` around it, so
//! the figures include one clock read (`timer_ns` reports its cost). Two figures: the
//! evaluation itself (`evaluate_*`, no allocation), and the judge's full decision as the
//! policy actor makes it (`p50_us`/`p99_us`: evaluation, the kept record, the counts).
//! Single thread.
//!
//! Usage: cargo bench --bench policy_local -- [--decisions N]
//! Last line: RESULT {json}

mod common;

use common::{arg, percentile};
use std::hint::black_box;
use std::time::Instant;

use fleetmesh_actors::node;
use fleetmesh_actors::policy::judge::Judge;
use fleetmesh_actors::spike::{Change, FieldChange, Kind, Severity, Spike};

fn spike(kind: Kind, change: Change, subject: &str) -> Spike {
    let mut s = Spike {
        origin: node::Id::from("12D3KooWBenchOriginPeerIdPlaceholderValue0000"),
        seq: 0,
        at_unix_ms: 1_700_000_000_000,
        kind,
        change,
        subject: subject.into(),
        before: None,
        after: None,
        severity: Severity::Info,
        layers: Vec::new(),
        label: "label".into(),
        fields: Default::default(),
    };
    if kind == Kind::Process
        && let Some((_, exe)) = subject.split_once(':')
    {
        s.fields.insert("exe".into(), FieldChange::fact(exe));
    }
    s
}

fn spikes() -> Vec<Spike> {
    let mut out = Vec::new();
    for i in 0..16 {
        out.push(spike(Kind::User, Change::Added, &format!("deploy{i}")));
        out.push(spike(Kind::User, Change::Added, &format!("user{i}")));
        out.push(spike(
            Kind::File,
            Change::Modified,
            &format!("/etc/nginx/conf.d/{i}.conf"),
        ));
        out.push(spike(
            Kind::File,
            Change::Modified,
            &format!("/etc/app/{i}/settings.ini"),
        ));
        out.push(spike(Kind::File, Change::Modified, "/etc/passwd"));
        out.push(spike(
            Kind::Network,
            Change::Added,
            &format!("listen tcp 0.0.0.0:{}", 8000 + i * 10),
        ));
        out.push(spike(
            Kind::Network,
            Change::Added,
            &format!("listen tcp6 [::]:{}", 9000 + i),
        ));
        out.push(spike(
            Kind::Process,
            Change::Added,
            &format!("{}:/usr/bin/nc", 100 + i),
        ));
        out.push(spike(
            Kind::Process,
            Change::Added,
            &format!("{}:/opt/app/bin/worker", 200 + i),
        ));
        out.push(spike(Kind::Metric, Change::Sample, "cpu.busy_pct"));
    }
    out
}

fn judge(role: &str) -> Judge {
    let path = format!("{}/config/policy/{role}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("shipped policy");
    Judge::new(&format!("{role}.toml"), &text, 10_000, 0).expect("valid policy")
}

fn main() {
    let n = arg("--decisions", 300_000) as usize;
    let mut judges: Vec<Judge> = ["web", "baseline", "database"]
        .into_iter()
        .map(judge)
        .collect();
    let spikes = spikes();
    let timer = {
        let mut t = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let s = Instant::now();
            t.push(s.elapsed().as_nanos() as u64);
        }
        t.sort_unstable();
        percentile(&t, 50.0)
    };
    // Warm-up.
    for i in 0..20_000 {
        let j = &mut judges[i % 3];
        black_box(j.decide(&spikes[i % spikes.len()], 1));
    }
    let mut eval = Vec::with_capacity(n);
    let mut decide = Vec::with_capacity(n);
    for i in 0..n {
        let s = &spikes[(i * 7) % spikes.len()];
        let j = &mut judges[i % 3];
        let t = Instant::now();
        black_box(j.policy().evaluate(black_box(s)));
        eval.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        black_box(j.decide(black_box(s), 1));
        decide.push(t.elapsed().as_nanos() as u64);
    }
    eval.sort_unstable();
    decide.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let counts = judges.iter().fold((0, 0, 0), |a, j| {
        let c = j.counts();
        (a.0 + c.approved, a.1 + c.violation, a.2 + c.consult)
    });
    println!(
        "RESULT {{\"scenario\":\"policy-local\",\"samples\":{n},\"p50_us\":{:.3},\"p99_us\":{:.3},\"max_us\":{:.3},\"evaluate_p50_us\":{:.3},\"evaluate_p99_us\":{:.3},\"evaluate_max_us\":{:.3},\"timer_ns\":{timer},\"approved\":{},\"violation\":{},\"consult\":{}}}",
        us(percentile(&decide, 50.0)),
        us(percentile(&decide, 99.0)),
        us(decide.last().copied().unwrap_or(0)),
        us(percentile(&eval, 50.0)),
        us(percentile(&eval, 99.0)),
        us(eval.last().copied().unwrap_or(0)),
        counts.0,
        counts.1,
        counts.2,
    );
}
