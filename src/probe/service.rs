//! Service probes' I/O: one attempt of a TCP or HTTP check, bounded by the probe's
//! timeout, and the subscription that tells the service actor which probes this node owns.
//!
//! What an attempt means (which statuses are up, when a state change is reported) is
//! decided in `fleetmesh_actors::service`; here an attempt only connects, asks, and names
//! what went wrong.

use actix::Addr;
use anyhow::Context as _;
use fleetmesh_actors::actor::region::{RegionActor, SubscribeAssigned};
use fleetmesh_actors::actor::service::{Run, ServiceActor};
use fleetmesh_actors::service::{Check, Outcome, Reason, Spec};

/// The runner the service actor starts attempts with.
///
/// HTTP probes open a fresh connection every time (no pool: a kept-alive connection would
/// hide a listener that no longer accepts) and do not follow redirects (a redirect is the
/// answer, judged like any status).
pub fn runner() -> anyhow::Result<Run> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fleetmesh/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client of the service probes")?;
    Ok(Box::new(move |spec: &Spec| {
        let (client, spec) = (client.clone(), spec.clone());
        Box::pin(async move { attempt(&client, &spec).await })
    }))
}

/// One attempt of `spec`, never longer than its timeout.
pub async fn attempt(client: &reqwest::Client, spec: &Spec) -> Outcome {
    let tried = tokio::time::timeout(spec.timeout, async {
        match &spec.check {
            Check::Tcp { target } => match tokio::net::TcpStream::connect(target.as_str()).await {
                Ok(_) => Outcome::Up,
                Err(e) => Outcome::Down(io_reason(&e)),
            },
            Check::Http { url, expect } => match client.get(url).send().await {
                Ok(answer) => expect.judge(answer.status().as_u16()),
                Err(e) => Outcome::Down(http_reason(&e)),
            },
        }
    })
    .await;
    tried.unwrap_or(Outcome::Down(Reason::Timeout))
}

fn io_reason(e: &std::io::Error) -> Reason {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Reason::Refused,
        K::TimedOut => Reason::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Reason::Reset
        }
        K::HostUnreachable | K::NetworkUnreachable => Reason::Unreachable,
        _ => Reason::Error(e.to_string()),
    }
}

/// The reason behind a failed request: the I/O error underneath if there is one.
fn http_reason(e: &reqwest::Error) -> Reason {
    if e.is_timeout() {
        return Reason::Timeout;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        last = c.to_string();
        cause = c.source();
    }
    Reason::Error(last)
}

/// Subscribes the service actor to what the region's committed assignments give this
/// node (pushed by the region actor on change): the probes among them are the ones it runs.
pub async fn subscribe(region: &Addr<RegionActor>, services: &Addr<ServiceActor>) {
    let _ = region
        .send(SubscribeAssigned(services.clone().recipient()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::service::Expect;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    fn spec(check: Check) -> Spec {
        Spec {
            name: "svc".into(),
            check,
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
        }
    }

    /// Answers every request on `listener` with `status_line`, `n` times.
    fn answer(listener: TcpListener, status_line: &'static str, n: usize) {
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
    }

    #[tokio::test]
    async fn tcp_up_then_refused() {
        let client = reqwest::Client::new();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = listener.local_addr().expect("addr").to_string();
        let s = spec(Check::Tcp { target });
        assert_eq!(attempt(&client, &s).await, Outcome::Up);
        drop(listener);
        assert_eq!(attempt(&client, &s).await, Outcome::Down(Reason::Refused));
    }

    #[tokio::test]
    async fn http_statuses_and_silence() {
        let run = runner().expect("client");
        let ok = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/health", ok.local_addr().expect("addr"));
        answer(ok, "200 OK", 1);
        let s = spec(Check::Http {
            url: url.clone(),
            expect: Expect::Success,
        });
        assert_eq!(run(&s).await, Outcome::Up);

        let unavailable = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", unavailable.local_addr().expect("addr"));
        answer(unavailable, "503 Service Unavailable", 2);
        let mut s = spec(Check::Http {
            url,
            expect: Expect::Success,
        });
        assert_eq!(run(&s).await, Outcome::Down(Reason::Status(503)));
        s.check = match s.check {
            Check::Http { url, .. } => Check::Http {
                url,
                expect: Expect::Status(503),
            },
            other => other,
        };
        assert_eq!(run(&s).await, Outcome::Up, "503 expected");

        // Accepts the connection (the kernel does) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", silent.local_addr().expect("addr"));
        let s = spec(Check::Http {
            url,
            expect: Expect::Success,
        });
        assert_eq!(run(&s).await, Outcome::Down(Reason::Timeout));
        drop(silent);

        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", closed.local_addr().expect("addr"));
        drop(closed);
        let s = spec(Check::Http {
            url,
            expect: Expect::Success,
        });
        assert_eq!(run(&s).await, Outcome::Down(Reason::Refused));
    }
}
