//! The role vocabulary: which pattern label a change gets on a server of a given role.
//!
//! Rules come from settings, not code. They are tried in order and the first that matches
//! names the spike, so specific rules go before general ones:
//!
//! ```toml
//! [[labels]]               # web servers: deploy users are expected ...
//! label = "deployment_user"
//! roles = ["web"]
//! kinds = ["user"]
//! changes = ["added"]
//! subject = "deploy*"
//! [[labels]]               # ... any other new user is not
//! label = "unexpected_user"
//! roles = ["web"]
//! kinds = ["user"]
//! changes = ["added"]
//! ```
//!
//! A change no rule names is labelled `<kind>_<change>` (`file_modified`).

use serde::{Deserialize, Serialize};

use crate::spike::{Change, Kind, Observation, Severity};

/// One rule as written in settings. Empty lists match anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub label: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<Kind>,
    #[serde(default)]
    pub changes: Vec<Change>,
    /// A glob over the subject (`deploy*`, `/etc/nginx/**`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The rule matches only subjects *not* in this list (an approved list).
    #[serde(default)]
    pub subject_not_in: Vec<String>,
    /// Raises the spike's severity to at least this.
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// A rule that cannot be used; `index` is its position in the list (from 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label rule {index} ({label}): {problem}")]
pub struct Error {
    pub index: usize,
    pub label: String,
    pub problem: String,
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: Rule,
    subject: Option<glob::Pattern>,
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    rules: Vec<Compiled>,
}

/// What the vocabulary says about one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub label: String,
    pub severity: Severity,
}

impl Vocabulary {
    pub fn new(rules: Vec<Rule>) -> Result<Self, Error> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            let fail = |problem: String| Error {
                index,
                label: rule.label.clone(),
                problem,
            };
            if rule.label.trim().is_empty() {
                return Err(fail("label must not be empty".into()));
            }
            let subject = match &rule.subject {
                Some(p) => Some(
                    glob::Pattern::new(p)
                        .map_err(|e| fail(format!("subject `{p}` is not a glob: {e}")))?,
                ),
                None => None,
            };
            compiled.push(Compiled { rule, subject });
        }
        Ok(Vocabulary { rules: compiled })
    }

    /// The label (and severity) of `obs` on a server of `role`.
    pub fn judge(&self, role: &str, obs: &Observation) -> Verdict {
        for c in &self.rules {
            let r = &c.rule;
            let matches = (r.roles.is_empty() || r.roles.iter().any(|x| x == role))
                && (r.kinds.is_empty() || r.kinds.contains(&obs.kind))
                && (r.changes.is_empty() || r.changes.contains(&obs.change))
                && c.subject.as_ref().is_none_or(|p| p.matches(&obs.subject))
                && !r.subject_not_in.contains(&obs.subject);
            if matches {
                return Verdict {
                    label: r.label.clone(),
                    severity: r.severity.map_or(obs.severity, |s| s.max(obs.severity)),
                };
            }
        }
        Verdict {
            label: format!("{}_{}", obs.kind.as_str(), obs.change.as_str()),
            severity: obs.severity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::Layer;

    /// The vocabulary the issue describes, as an operator would write it.
    fn fleet_rules() -> Vec<Rule> {
        let user_added = |label: &str, role: &str| Rule {
            label: label.into(),
            roles: vec![role.into()],
            kinds: vec![Kind::User],
            changes: vec![Change::Added],
            subject: None,
            subject_not_in: vec![],
            severity: None,
        };
        vec![
            Rule {
                subject: Some("deploy*".into()),
                ..user_added("deployment_user", "web")
            },
            Rule {
                severity: Some(Severity::Medium),
                ..user_added("unexpected_user", "web")
            },
            Rule {
                severity: Some(Severity::High),
                ..user_added("policy_violation", "baseline")
            },
            Rule {
                subject_not_in: vec!["postgres".into(), "dbadmin".into()],
                severity: Some(Severity::Critical),
                ..user_added("unauthorized_db_access", "database")
            },
        ]
    }

    fn user(name: &str) -> Observation {
        Observation::new(Kind::User, Change::Added, name, Layer::Realtime)
    }

    #[test]
    fn role_decides_the_label_of_the_same_change() {
        let v = Vocabulary::new(fleet_rules()).expect("valid rules");
        assert_eq!(v.judge("web", &user("deploy-ci")).label, "deployment_user");
        assert_eq!(v.judge("web", &user("mallory")).label, "unexpected_user");
        assert_eq!(
            v.judge("baseline", &user("deploy")).label,
            "policy_violation"
        );
        assert_eq!(v.judge("database", &user("dbadmin")).label, "user_added");
        let db = v.judge("database", &user("mallory"));
        assert_eq!(db.label, "unauthorized_db_access");
        assert_eq!(db.severity, Severity::Critical);
        let other = Observation::new(Kind::File, Change::Modified, "/etc/hosts", Layer::Hash);
        assert_eq!(v.judge("web", &other).label, "file_modified");
    }

    #[test]
    fn bad_rules_are_refused_by_position() {
        let mut rules = fleet_rules();
        rules[2].subject = Some("[unclosed".into());
        let e = Vocabulary::new(rules).expect_err("bad glob");
        assert_eq!(e.index, 2);
        assert!(e.to_string().contains("[unclosed"), "{e}");
    }

    #[test]
    fn rules_load_from_toml_shaped_data() {
        let rule: Rule = serde_json::from_str(
            r#"{"label":"x","kinds":["user"],"changes":["added"],"subject":"a*"}"#,
        )
        .expect("parses");
        assert_eq!(rule.kinds, [Kind::User]);
        assert!(serde_json::from_str::<Rule>(r#"{"label":"x","colour":"red"}"#).is_err());
    }
}
