//! Real nodes for tests: each is a `fleetmesh node` process on 127.0.0.1 with ephemeral
//! ports, its own temporary data dir, stopped (SIGTERM, then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetmesh::api::{NodeView, PeerEntry};
use fleetmesh::node::RuntimeFile;

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetmesh");

/// Heartbeats in tests: fast, so that convergence takes seconds.
pub const INTERVAL_MS: &str = "200";

/// How long any convergence may take before a test fails (a bound, not a timing claim).
pub const CONVERGE: Duration = Duration::from_secs(45);

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub child: Child,
    pub runtime: RuntimeFile,
    _tmp: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    pub region: String,
    pub role: String,
    pub bootstrap: Vec<String>,
    pub psk: Option<PathBuf>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Reuse this data dir (restarts) instead of a fresh temporary one.
    pub dir: Option<PathBuf>,
    /// Run inside this network namespace (see [`Netns`]).
    pub netns: Option<String>,
}

impl Spec {
    pub fn new(name: &str, region: &str) -> Self {
        Spec {
            name: name.into(),
            region: region.into(),
            role: "web".into(),
            ..Spec::default()
        }
    }
}

/// The command for `spec`, with test defaults (loopback, ephemeral ports).
pub fn command(spec: &Spec, dir: &Path) -> Command {
    std::fs::create_dir_all(dir.join("root/etc")).expect("watch root");
    let mut cmd = match &spec.netns {
        // `ip netns exec` execs the program: the child's pid is the node's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("node")
        .args(["--name", &spec.name])
        .args(["--region", &spec.region])
        .args(["--role", &spec.role])
        .arg("--data-dir")
        .arg(dir)
        .args(&spec.extra_args)
        .env("FLEETMESH__HEARTBEAT__INTERVAL_MS", INTERVAL_MS)
        // Tests share two cores with heavy neighbours (the storm test): 2 s of pause
        // accepted, so that a starved scheduler is not taken for a failure.
        .env("FLEETMESH__HEARTBEAT__ACCEPTABLE_PAUSE_MS", "2000")
        .env("FLEETMESH__HEARTBEAT__DEAD_AFTER", "25")
        // Never the real /etc: each node watches its own temporary root.
        .env("FLEETMESH__WATCH__ROOT", dir.join("root"))
        .env_remove("RUST_LOG")
        .env("FLEETMESH__LOG__FILTER", "info,libp2p=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // Loopback and ephemeral ports, unless the test chose its own.
    if !spec.extra_args.iter().any(|a| a == "--listen") {
        cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
    }
    if !spec.extra_args.iter().any(|a| a == "--api-listen") {
        cmd.args(["--api-listen", "127.0.0.1:0"]);
    }
    for b in &spec.bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    if let Some(psk) = &spec.psk {
        cmd.arg("--psk-file").arg(psk);
    }
    // A node in a namespace serves its API on the namespace's control address, which is
    // not loopback: the tests read it without a token (they take no action there).
    if spec.netns.is_some() {
        cmd.env("FLEETMESH__API__OPEN_READS", "true");
    }
    // A test region founds with whoever is up (a lone test node is a dev node), unless
    // the test sets its own bootstrap_expect.
    cmd.env("FLEETMESH__REGION__BOOTSTRAP_EXPECT", "1");
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd
}

impl Node {
    /// Starts a node and waits until it has written its runtime file.
    pub fn start(spec: Spec) -> Node {
        let (tmp, dir) = match &spec.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        std::fs::create_dir_all(&dir).expect("data dir");
        let log = std::fs::File::create(dir.join("node.log")).expect("log file");
        let mut child = command(&spec, &dir)
            .stderr(Stdio::from(log))
            .spawn()
            .expect("fleetmesh starts");
        let path = dir.join("node.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let runtime = loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(rt) = serde_json::from_str::<RuntimeFile>(&text)
                && rt.pid == child.id()
            {
                break rt;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                panic!(
                    "node {} exited with {status} before ready:\n{log}",
                    spec.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became ready",
                spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Node {
            name: spec.name,
            dir,
            child,
            runtime,
            _tmp: tmp,
        }
    }

    pub fn peer_id(&self) -> &str {
        &self.runtime.peer_id
    }

    /// The p2p address, with or without the `/p2p/<id>` suffix.
    pub fn addr(&self, with_id: bool) -> String {
        let a = self.runtime.listen[0].clone();
        if with_id {
            format!("{a}/p2p/{}", self.runtime.peer_id)
        } else {
            a
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.runtime.api)
    }

    pub async fn node(&self) -> NodeView {
        get(&self.url("/api/v1/node")).await
    }

    pub async fn peers(&self) -> Vec<PeerEntry> {
        get(&self.url("/api/v1/peers")).await
    }

    /// This node's entry for peer `id`, if it lists one.
    pub async fn peer(&self, id: &str) -> Option<PeerEntry> {
        self.peers().await.into_iter().find(|p| p.peer_id == id)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// The node's resident set size in KiB, if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_of(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (a crash), and reap the process.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// POSTs `body` as JSON to `url`: the status and the answer (null if not JSON).
pub async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = answer.status().as_u16();
    (
        status,
        answer.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// The name of the region's master as `node` knows it.
pub async fn master_name(node: &Node) -> Option<String> {
    let r: serde_json::Value = get(&node.url("/api/v1/region")).await;
    r["master"]["name"].as_str().map(str::to_string)
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub async fn get<T: serde::de::DeserializeOwned>(url: &str) -> T {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: bad JSON: {e}"))
}

/// Reads a counter or gauge from Prometheus text, summing the series that match `labels`.
/// The resident set size (`VmRSS`) of process `pid` in KiB, if it is running.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(labels)
                || (labels.is_empty() && l.starts_with(&format!("{name} ")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it returns `Ok`, failing with its last complaint after `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + bound;
    loop {
        let complaint = match check().await {
            Ok(()) => return,
            Err(c) => c,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {bound:?}: {complaint}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` until it returns a value, failing with its last complaint after `bound`.
pub async fn wait_for<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + bound;
    loop {
        let complaint = match check().await {
            Ok(v) => return v,
            Err(c) => c,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {bound:?}: {complaint}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a fresh fleet key with the real CLI and returns its path.
pub fn psk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new(BIN)
        .arg("psk")
        .arg("--out")
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("psk runs");
    assert!(st.success());
    path
}

/// A network namespace joined to this one by two veth pairs on private /30s: the data
/// link (`outer` on this side, `inner` inside), which `cut` takes down and `heal` brings
/// back, and a control link that stays up, so that the test still reaches the API of a
/// node inside (listening on `control`) while it is cut off from its peers. Removed when
/// dropped. Needs root and iproute2.
pub struct Netns {
    pub name: String,
    pub outer: String,
    pub inner: String,
    pub control: String,
    link: String,
    /// This side's ends of the two pairs.
    outer_links: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates namespace number `n` (0..=63 keeps the names and subnets apart).
    pub fn create(n: u8) -> Result<Netns, String> {
        let pid = std::process::id() % 10_000;
        let name = format!("fmtest{pid}n{n}");
        let (outer_if, inner_if) = (format!("fmo{pid}n{n}"), format!("fmi{pid}n{n}"));
        let (outer, inner) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let (ctl_out, ctl_in) = (format!("fmc{pid}n{n}"), format!("fmd{pid}n{n}"));
        let control = format!("10.232.{n}.2");
        remove_stale_links(&[&format!("10.231.{n}.1/"), &format!("10.232.{n}.1/")]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            outer: outer.clone(),
            inner: inner.clone(),
            control: control.clone(),
            link: inner_if.clone(),
            outer_links: [outer_if.clone(), ctl_out.clone()],
        };
        ip(&[
            "link", "add", &ctl_out, "type", "veth", "peer", "name", &ctl_in, "netns", &name,
        ])?;
        ip(&["addr", "add", &format!("10.232.{n}.1/30"), "dev", &ctl_out])?;
        ip(&["link", "set", &ctl_out, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{control}/30"),
            "dev",
            &ctl_in,
        ])?;
        ip(&["-n", &name, "link", "set", &ctl_in, "up"])?;
        ip(&[
            "link", "add", &outer_if, "type", "veth", "peer", "name", &inner_if, "netns", &name,
        ])?;
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &outer_if])?;
        ip(&["link", "set", &outer_if, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inner}/30"),
            "dev",
            &inner_if,
        ])?;
        ip(&["-n", &name, "link", "set", &inner_if, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Takes the inner link down: nothing passes either way.
    pub fn cut(&self) {
        self.set_link("down");
    }

    pub fn heal(&self) {
        self.set_link("up");
    }

    /// Sets the data link `state`, retrying a failed `ip` a few times; the panic names
    /// every error and shows the namespace's links.
    fn set_link(&self, state: &str) {
        let mut errors = Vec::new();
        for _ in 0..5 {
            match ip(&["-n", &self.name, "link", "set", &self.link, state]) {
                Ok(()) => return,
                Err(e) => errors.push(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let links = Command::new("ip")
            .args(["-n", &self.name, "-br", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("cannot set the link {state}: {errors:?}; links in the namespace:\n{links}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both, even while a process still holds
        // the namespace open.
        for l in &self.outer_links {
            let _ = ip(&["link", "del", l]);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Deletes links of this namespace that hold one of `prefixes` (addresses as `ip -br addr`
/// prints them): left over by a test run that was killed before it could clean up.
fn remove_stale_links(prefixes: &[&str]) {
    let Ok(out) = Command::new("ip").args(["-br", "addr"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut cols = line.split_whitespace();
        let Some(name) = cols.next() else { continue };
        if cols.any(|a| prefixes.iter().any(|p| a.starts_with(p))) {
            let link = name.split('@').next().unwrap_or(name);
            // `fm<o|c><pid>n<n>`: left alone while the test process that made it runs.
            let owner = link
                .get(3..)
                .and_then(|rest| rest.split('n').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                continue;
            }
            let _ = ip(&["link", "del", link]);
        }
    }
}

/// A JSON object of strings (assignments, name bindings) as a map; anything else is empty.
pub fn string_map(v: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every node of `nodes` but the one at `but` (the survivors of a kill).
pub fn others(nodes: &[Node], but: usize) -> Vec<&Node> {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != but)
        .map(|(_, n)| n)
        .collect()
}

/// Five nodes in two regions: `eu` (e0, e1, e2) and `us` (u0, u1), all bootstrapping
/// from e0.
pub fn two_regions() -> Vec<Node> {
    two_regions_with(&[])
}

/// [`two_regions`], each node started with `env` as well.
pub fn two_regions_with(env: &[(String, String)]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (name, region) in [
        ("e0", "eu"),
        ("e1", "eu"),
        ("e2", "eu"),
        ("u0", "us"),
        ("u1", "us"),
    ] {
        let mut spec = Spec::new(name, region);
        spec.env = env.to_vec();
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
    }
    nodes
}

/// The first alert `node` lists (`GET /api/v1/alerts`) that `pick` selects, once it
/// does; `what` names it in the failure.
pub async fn alert_where(
    node: &Node,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(&format!("{}: {what}", node.name), CONVERGE, || async {
        let v: serde_json::Value = get(&node.url("/api/v1/alerts?limit=1000")).await;
        v["alerts"]
            .as_array()
            .and_then(|l| l.iter().find(|a| pick(a)).cloned())
            .ok_or_else(|| v["alerts"].to_string())
    })
    .await
}

/// The census `node` serves, once it shows `regions` with a master each and `members`
/// members in all, every one alive.
pub async fn settled(node: &Node, regions: usize, members: usize) -> serde_json::Value {
    wait_for("a census of every region and member", CONVERGE, || async {
        let c: serde_json::Value = get(&node.url("/api/v1/census")).await;
        let list = c["regions"].as_array().cloned().unwrap_or_default();
        let masters = list.iter().filter(|r| !r["master"].is_null()).count();
        let alive: usize = list
            .iter()
            .flat_map(|r| r["members"].as_array().cloned().unwrap_or_default())
            .filter(|m| m["status"] == "alive")
            .count();
        if list.len() == regions && masters == regions && alive == members {
            Ok(c)
        } else {
            Err(format!(
                "{} regions, {masters} masters, {alive} alive: {c}",
                list.len()
            ))
        }
    })
    .await
}

/// A rogue libp2p peer built from the node's own network code (same transport and
/// gossipsub settings, no fleet key), with its own `keypair`, claiming `region`, dialing
/// each of `dial`.
pub fn rogue_swarm(
    keypair: &libp2p::identity::Keypair,
    region: &str,
    dial: &[&Node],
) -> libp2p::Swarm<fleetmesh::net::Behaviour> {
    let mut swarm = fleetmesh::net::build_swarm(&fleetmesh::net::Config {
        keypair: keypair.clone(),
        psk: None,
        region: region.into(),
        mdns: false,
        idle_timeout: Duration::from_secs(60),
    })
    .expect("rogue swarm");
    for n in dial {
        swarm
            .dial(n.addr(true).parse::<libp2p::Multiaddr>().expect("addr"))
            .expect("dial");
    }
    swarm
}

/// Publishes `frames` on the fleet topic from `swarm`, each once some peer takes it
/// (bounded by [`CONVERGE`]), then keeps the swarm's connections serviced in the
/// background while the nodes decide (abort the handle to drop it).
pub async fn rogue_publish(
    mut swarm: libp2p::Swarm<fleetmesh::net::Behaviour>,
    frames: Vec<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    let fleet = fleetmesh::net::fleet_topic();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut published = 0;
    while published < frames.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rogue peer could not publish"
        );
        tokio::select! {
            _ = swarm.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if swarm.behaviour_mut().gossipsub.publish(fleet.clone(), frames[published].clone()).is_ok() {
                    published += 1;
                }
            }
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })
}
