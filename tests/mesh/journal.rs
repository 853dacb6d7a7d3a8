//! The journal on a real node: spikes survive kill -9, a torn last record is cut off at the
//! next start without losing anything before it, and numbering goes on above the journal.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually, get};

/// (seq, subject) of the node's file spikes.
async fn files(node: &Node) -> Vec<(u64, String)> {
    let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=file&limit=10000")).await;
    list.iter()
        .map(|s| {
            (
                s["seq"].as_u64().unwrap_or_default(),
                s["subject"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spikes_survive_kill_9_and_a_torn_record_is_cut_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("j");
    let mut spec = Spec::new("journal", "eu");
    spec.dir = Some(dir.clone());
    let mut node = Node::start(spec.clone());
    let etc = dir.join("root/etc");
    for i in 0..200 {
        std::fs::write(etc.join(format!("c{i}")), format!("v={i}\n")).expect("write");
    }
    eventually("200 file spikes", CONVERGE, || async {
        let n = files(&node).await.len();
        if n == 200 {
            Ok(())
        } else {
            Err(format!("{n} of 200"))
        }
    })
    .await;
    let before = files(&node).await;
    // While spikes keep being written (metrics, the process probe), kill -9.
    node.kill9();

    // A crash in the middle of an append: a record header promising more than is there.
    let journal = dir.join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&journal)
        .expect("journal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .expect("segment");
    f.write_all(&[200, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3])
        .expect("torn bytes");
    drop(f);

    let node = Node::start(spec);
    let after = files(&node).await;
    // Every journaled spike is back with its number. (The baseline is saved every few
    // seconds, so the start-up verification may report some changes again, as made while
    // the node was down, under new numbers: reported twice, never lost.)
    assert!(
        after.len() >= before.len() && after[..before.len()] == before[..],
        "{} spikes before the kill, {} after; the first after: {:?}",
        before.len(),
        after.len(),
        after.first()
    );
    let top = before.iter().map(|(s, _)| *s).max().unwrap_or_default();
    assert!(after[before.len()..].iter().all(|(s, _)| *s > top));
    assert!(
        node.log().contains("cutting off a torn or damaged record"),
        "{}",
        node.log()
    );
    // New spikes are numbered above everything in the journal.
    std::fs::write(etc.join("after"), "x\n").expect("write");
    let deadline = Instant::now() + CONVERGE;
    loop {
        let now = files(&node).await;
        if let Some((seq, _)) = now.iter().find(|(_, s)| s == "/etc/after") {
            assert!(*seq > top, "{seq} <= {top}");
            break;
        }
        assert!(Instant::now() < deadline, "the new change never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
