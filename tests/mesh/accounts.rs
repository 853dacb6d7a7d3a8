//! Users and groups on real nodes: edits of passwd/group copies under a temporary root
//! become one user or group spike each, labelled by the node's role.

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually, get};

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
const GROUP: &str = "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n";
const SHADOW: &str = "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:0:99999:7:::\n";

fn node(role: &str, tmp: &std::path::Path) -> (Node, std::path::PathBuf) {
    let data = tmp.join(role);
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.join("group"), GROUP).expect("group");
    std::fs::write(etc.join("shadow"), SHADOW).expect("shadow");
    let mut spec = Spec::new(role, "eu");
    spec.role = role.into();
    spec.dir = Some(data);
    (Node::start(spec), etc)
}

/// (kind, change, subject, label) of the node's user and group spikes.
async fn accounts(node: &Node) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for kind in ["user", "group"] {
        let list: Vec<Value> = get(&node.url(&format!("/api/v1/spikes?kind={kind}"))).await;
        for s in list {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            out.push((f("kind"), f("change"), f("subject"), f("label")));
        }
    }
    out
}

fn row(kind: &str, change: &str, subject: &str, label: &str) -> (String, String, String, String) {
    (kind.into(), change.into(), subject.into(), label.into())
}

async fn expect(node: &Node, want: &[(String, String, String, String)]) {
    eventually("account spikes", CONVERGE, || async {
        let got = accounts(node).await;
        if got.as_slice() == want {
            Ok(())
        } else {
            Err(format!("{got:?}, expected {want:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_are_one_spike_each_and_labelled_by_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (web, etc) = node("web", tmp.path());

    let mut want = Vec::new();
    let with = |extra: &str| format!("{PASSWD}{extra}");
    std::fs::write(
        etc.join("passwd"),
        with("deploy:x:1001:1001::/home/deploy:/bin/sh\n"),
    )
    .expect("add");
    want.push(row("user", "added", "deploy", "deployment_user"));
    expect(&web, &want).await;

    std::fs::write(
        etc.join("passwd"),
        with("deploy:x:1001:1001::/home/deploy:/bin/sh\nmallory:x:1002:1002::/home/m:/bin/sh\n"),
    )
    .expect("add another");
    want.push(row("user", "added", "mallory", "unexpected_user"));
    expect(&web, &want).await;

    std::fs::write(
        etc.join("passwd"),
        with("deploy:x:1001:1001::/home/deploy:/bin/bash\n"),
    )
    .expect("edit");
    want.push(row("user", "modified", "deploy", "user_modified"));
    want.push(row("user", "removed", "mallory", "user_removed"));
    expect(&web, &want).await;

    std::fs::write(
        etc.join("group"),
        GROUP.replace("sudo:x:27:alice", "sudo:x:27:alice,deploy"),
    )
    .expect("group");
    want.push(row("group", "modified", "sudo", "group_modified"));
    expect(&web, &want).await;

    // The precise before/after of the shell change.
    let users: Vec<Value> = get(&web.url("/api/v1/spikes?kind=user")).await;
    let modified = users
        .iter()
        .find(|s| s["change"] == "modified")
        .expect("modified spike");
    assert_eq!(modified["fields"]["shell"]["before"], "/bin/sh");
    assert_eq!(modified["fields"]["shell"]["after"], "/bin/bash");

    // The same addition on a baseline server is a policy violation.
    let (baseline, etc) = node("baseline", tmp.path());
    std::fs::write(
        etc.join("passwd"),
        with("deploy:x:1001:1001::/home/deploy:/bin/sh\n"),
    )
    .expect("add");
    expect(
        &baseline,
        &[row("user", "added", "deploy", "policy_violation")],
    )
    .await;
    let spikes: Vec<Value> = get(&baseline.url("/api/v1/spikes?kind=user")).await;
    assert_eq!(spikes[0]["severity"], "high");
}
