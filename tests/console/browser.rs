//! A real headless Chromium for the console's tests, driven over WebDriver
//! (chromedriver, started here on a free loopback port; fantoccini as the client).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// The browser tests need these two programs; CI installs them (scripts/test.sh).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// A chromedriver process, stopped when dropped (also when the browser session could not
/// be opened).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One chromedriver and one browser session; the driver is stopped when dropped.
pub struct Browser {
    driver: Driver,
    url: String,
    pub client: Client,
    profile: tempfile::TempDir,
}

/// A free loopback port (bound, then released for the program that takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    pub async fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "the console's browser tests need {CHROMIUM} and chromedriver: run scripts/test.sh (it installs Debian's chromium and chromium-driver)"
        );
        // The WebDriver client's TLS (unused on loopback http) needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (Debian package chromium-driver)");
        let driver = Driver(driver);
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--metrics-recording-only",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(caps.clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            driver,
            url,
            client,
            profile,
        }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy and returns it; fails with the last
    /// value after `bound`.
    pub async fn until(&self, what: &str, bound: Duration, script: &str) -> Value {
        let deadline = Instant::now() + bound;
        loop {
            let v = self.js(script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {bound:?} (last: {v})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The browser's console messages so far (level, message), as chromedriver logged them.
    pub async fn console(&self) -> Vec<(String, String)> {
        let id = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a session");
        let log: Value = reqwest::Client::new()
            .post(format!("{}/session/{id}/se/log", self.url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("log JSON");
        log["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The browser's errors so far, but for the 409s of `GET /api/v1/twins/{node}`:
    /// Chromium logs every answer other than 2xx as an error, and the twin panel expects a
    /// 409 for a node whose twin another master holds (it says so in the page).
    pub async fn errors(&self) -> Vec<(String, String)> {
        self.console()
            .await
            .into_iter()
            .filter(|(level, text)| {
                level == "SEVERE"
                    && !(text.contains("/api/v1/twins/") && text.contains("status of 409"))
            })
            .collect()
    }

    /// Writes a screenshot of the page to `target/console/<name>.png`, for review.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// The flag that names this browser's own profile directory (in each of its
    /// processes' command lines).
    pub fn profile_flag(&self) -> String {
        format!("--user-data-dir={}", self.profile.path().display())
    }

    /// Ends the session (the browser exits) and stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.0.kill();
        let _ = self.driver.0.wait();
        // A test that failed never ended its session: chromedriver's browser would outlive
        // it. Its processes are the ones that use this browser's own profile directory.
        for pid in browser_pids(&self.profile_flag()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The processes whose command line holds `arg` (a browser's profile flag).
pub fn browser_pids(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
        })
        .collect()
}
