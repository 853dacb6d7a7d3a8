//! The `email` receiver: one plain-text email per notification, sent over SMTP (lettre,
//! on tokio, TLS by rustls). STARTTLS is required by default; `opportunistic` uses it
//! when the server offers it, `off` never does (a relay on loopback). [`subject`] and
//! [`body`] build the message from the notification ([`super::text`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fleetmesh_actors::actor::alert::Deliver;
use fleetmesh_actors::alert::Outcome;
use fleetmesh_actors::alerting::Notification;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::text;

/// When the connection to the SMTP server is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starttls {
    /// STARTTLS or no email: a server that does not offer it is a failed delivery.
    Required,
    /// STARTTLS when the server offers it, else in the clear.
    Opportunistic,
    /// Never: for a relay on this machine.
    Off,
}

impl Starttls {
    pub fn parse(s: &str) -> Option<Starttls> {
        match s {
            "required" => Some(Starttls::Required),
            "opportunistic" => Some(Starttls::Opportunistic),
            "off" => Some(Starttls::Off),
            _ => None,
        }
    }
}

/// An `email` receiver's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The SMTP server's host (name or address) and port.
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub starttls: Starttls,
    /// Log in as this user with the password read from `password_file` (at start).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// The subject line of `n`'s email: its title ([`text::title`]).
pub fn subject(n: &Notification) -> String {
    text::title(n)
}

/// The plain-text body of `n`'s email: the title, the alert blocks ([`text::lines`]), the
/// group and the receiver.
pub fn body(n: &Notification) -> String {
    let mut out = vec![text::title(n), String::new()];
    out.extend(text::lines(n));
    out.push(String::new());
    if !n.is_summary() {
        out.push(format!("Group: {}", n.group_key));
    }
    out.push(format!("Receiver: {} (fleetmesh)", n.receiver));
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// The email of `n` from `c.from` to every `c.to`.
pub fn message(c: &Config, n: &Notification) -> Result<Message, lettre::error::Error> {
    let mut m = Message::builder()
        .from(c.from.clone())
        .subject(subject(n))
        .header(ContentType::TEXT_PLAIN);
    for to in &c.to {
        m = m.to(to.clone());
    }
    m.body(body(n))
}

/// The sink: `at` names the receiver's entry for start-up errors; `ca` is the PEM of the
/// certificates to trust besides the system's (the receiver's `ca_file`, read). Fails at
/// start when the password file cannot be read or the certificates cannot be used.
pub fn sink(
    at: &str,
    c: Config,
    ca: Option<(PathBuf, Vec<u8>)>,
    timeout: Duration,
) -> anyhow::Result<Deliver> {
    let mut tls = TlsParameters::builder(c.host.clone());
    if let Some((path, pem)) = &ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        if CertificateDer::pem_slice_iter(pem).next().is_none() {
            anyhow::bail!("{at}.ca_file: {} holds no PEM certificate", path.display());
        }
        let cert = Certificate::from_pem(pem).with_context(|| {
            format!(
                "{at}.ca_file: {} holds no usable PEM certificate",
                path.display()
            )
        })?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls
        .build_rustls()
        .with_context(|| format!("{at}: cannot set up TLS for {}", c.host))?;
    let tls = match c.starttls {
        Starttls::Required => Tls::Required(tls),
        Starttls::Opportunistic => Tls::Opportunistic(tls),
        Starttls::Off => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
        .port(c.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
        let password = std::fs::read_to_string(file)
            .with_context(|| format!("{at}.password_file: cannot read {}", file.display()))?;
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.trim_end_matches(['\r', '\n']).to_string(),
        ));
    }
    let transport = builder.build();
    let server = format!("smtp {}:{}", c.host, c.port);
    Ok(Box::new(move |batch: Vec<Notification>| {
        let messages: Vec<_> = batch.iter().map(|n| message(&c, n)).collect();
        let (transport, server) = (transport.clone(), server.clone());
        Box::pin(async move {
            let count = messages.len();
            let mut rejected = Vec::new();
            let mut first_rejection = None;
            for (i, m) in messages.into_iter().enumerate() {
                let m = match m {
                    Ok(m) => m,
                    // Not the server's fault, and no retry mends it.
                    Err(e) => {
                        rejected.push(i);
                        first_rejection.get_or_insert(format!("cannot build the email: {e}"));
                        continue;
                    }
                };
                if let Err(e) = transport.send(m).await {
                    let error = format!("{server}: {}", super::chain(&e));
                    return if i == 0 {
                        Outcome::Failed(error)
                    } else {
                        Outcome::Partly {
                            retry: (i..count).collect(),
                            rejected,
                            error,
                        }
                    };
                }
            }
            match first_rejection {
                None => Outcome::Delivered,
                Some(error) => Outcome::Partly {
                    retry: Vec::new(),
                    rejected,
                    error,
                },
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::{notification_of, raised};
    use fleetmesh_actors::alerting::Reason;
    use fleetmesh_actors::spike::Severity;

    fn config() -> Config {
        Config {
            host: "127.0.0.1".into(),
            port: 25,
            from: "fleetmesh <fleetmesh@example.org>"
                .parse()
                .expect("mailbox"),
            to: vec![
                "ops@example.org".parse().expect("mailbox"),
                "Night Shift <night@example.org>".parse().expect("mailbox"),
            ],
            starttls: Starttls::Off,
            username: None,
            password_file: None,
        }
    }

    #[test]
    fn one_email_lists_every_alert_of_the_group() {
        let n = notification_of(
            "mail",
            vec![
                raised("a", Severity::High, "deploy"),
                raised("b", Severity::Low, "backup"),
            ],
        );
        assert_eq!(subject(&n), "[FIRING:2] policy_violation region=r");
        let text = body(&n);
        for want in [
            "[firing] policy_violation on h: deploy",
            "[firing] policy_violation on h: backup",
            "node h, severity high, region r, role baseline, since 1970-01-01T00:00:00.005Z",
            "node h, severity low",
            "why: why",
            "Receiver: mail",
        ] {
            assert!(text.contains(want), "{want} in:\n{text}");
        }
        assert!(!text.contains("more alert"), "{text}");

        let m = message(&config(), &n).expect("an email");
        let raw = String::from_utf8(m.formatted()).expect("text");
        assert!(
            raw.contains("Subject: [FIRING:2] policy_violation region=r"),
            "{raw}"
        );
        assert!(
            raw.contains("To: ops@example.org, \"Night Shift\" <night@example.org>"),
            "{raw}"
        );
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
        let envelope = m.envelope();
        assert_eq!(envelope.to().len(), 2);
        assert_eq!(
            envelope.from().map(ToString::to_string).as_deref(),
            Some("fleetmesh@example.org")
        );
    }

    #[test]
    fn a_summary_and_left_out_alerts_are_told() {
        let mut n = notification_of("mail", vec![raised("a", Severity::High, "deploy")]);
        n.omitted = 3;
        assert!(body(&n).contains("3 more alert(s) of this group are not listed here."));
        n.reason = Reason::Summary {
            held: 4,
            groups: vec!["g".into()],
        };
        n.alerts.clear();
        assert_eq!(subject(&n), "[HELD:4] receiver mail: budget spent");
        assert!(
            body(&n).contains("4 notification(s) for receiver mail are held back"),
            "{}",
            body(&n)
        );
    }

    #[tokio::test]
    async fn a_server_that_is_down_fails_the_delivery_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("reserve a port")
            .port();
        let mut c = config();
        c.port = port;
        let deliver = sink("alerts.receivers[0]", c, None, Duration::from_secs(2)).expect("sink");
        let n = notification_of("mail", vec![raised("a", Severity::High, "deploy")]);
        match deliver(vec![n]).await {
            Outcome::Failed(e) => assert!(e.contains(&format!("smtp 127.0.0.1:{port}")), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let mut c = config();
        c.username = Some("u".into());
        c.password_file = Some("/nonexistent/fleetmesh-password".into());
        let e = sink("alerts.receivers[3]", c, None, Duration::from_secs(2))
            .map(|_| ())
            .expect_err("no password");
        let text = format!("{e:#}");
        assert!(
            text.contains("alerts.receivers[3].password_file")
                && text.contains("/nonexistent/fleetmesh-password"),
            "{text}"
        );
    }
}
