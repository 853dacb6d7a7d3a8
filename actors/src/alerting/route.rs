//! The routing tree: which receivers an alert goes to, and how it is grouped there.
//!
//! As in Alertmanager: an alert enters at the root (which matches everything) and descends
//! into the first child route whose matchers all match; with `continue = true` on that
//! child, the siblings after it are tried too. A route none of whose children match is
//! itself the match. Unset fields are inherited from the parent; the root's defaults are
//! receiver `default`, grouping by `region` and `alertname` (the action), 10 s group
//! wait, 5 min group interval and 4 h repeat interval.

use serde::{Deserialize, Serialize};

use super::labels::{Labels, Matcher, all_match, parse_all};

pub const DEFAULT_RECEIVER: &str = "default";
pub const DEFAULT_GROUP_WAIT_MS: u64 = 10_000;
pub const DEFAULT_GROUP_INTERVAL_MS: u64 = 300_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: u64 = 14_400_000;

/// `[alerts.route]` and its nested `[[...routes]]`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub receiver: Option<String>,
    /// Label names; `action` is taken as `alertname`, `...` groups by every label.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub group_wait_ms: Option<u64>,
    #[serde(default)]
    pub group_interval_ms: Option<u64>,
    #[serde(default)]
    pub repeat_interval_ms: Option<u64>,
    /// Matchers as text (`role = database`); the root must have none.
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    #[serde(default)]
    pub routes: Vec<Config>,
}

impl Config {
    /// Nothing routes yet: no receiver and no child route written.
    pub fn routes_nothing(&self) -> bool {
        self.receiver.is_none() && self.routes.is_empty()
    }

    /// This root with one child per receiver, each matching every alert and going on to
    /// the next: every alert reaches every receiver (what an `[alerts]` table with sinks
    /// and no route means). The root's receiver is the first (`default` if none).
    pub fn fan_out(mut self, receivers: &[String]) -> Config {
        self.receiver = Some(
            receivers
                .first()
                .cloned()
                .unwrap_or_else(|| DEFAULT_RECEIVER.into()),
        );
        self.routes = receivers
            .iter()
            .map(|r| Config {
                receiver: Some(r.clone()),
                continue_: true,
                ..Config::default()
            })
            .collect();
        self
    }
}

/// A configuration error; `at` names the setting (`route.routes[0].matchers[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct Error {
    pub at: String,
    pub reason: String,
}

/// How a route groups: by these labels, or by all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    Labels(Vec<String>),
    All,
}

/// A checked route, its inherited settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its position in the tree (`0`, `0.2.1`): part of the group key.
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait_ms: u64,
    pub group_interval_ms: u64,
    pub repeat_interval_ms: u64,
    pub continue_: bool,
    pub routes: Vec<Route>,
}

impl Route {
    /// The root route of `config`, checked. The root has no matchers.
    pub fn root(config: &Config) -> Result<Route, Error> {
        if !config.matchers.is_empty() {
            return Err(Error {
                at: "route.matchers".into(),
                reason: "the root route matches every alert: give it no matchers".into(),
            });
        }
        let defaults = Route {
            id: "0".into(),
            matchers: Vec::new(),
            receiver: DEFAULT_RECEIVER.into(),
            group_by: GroupBy::Labels(vec!["alertname".into(), "region".into()]),
            group_wait_ms: DEFAULT_GROUP_WAIT_MS,
            group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
            continue_: false,
            routes: Vec::new(),
        };
        build(config, &defaults, "0".into(), "route".into())
    }

    /// The routes `labels` goes to, in tree order (at least one: the root matches all).
    pub fn matching(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn collect<'a>(&'a self, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
        if !all_match(&self.matchers, labels) {
            return false;
        }
        let mut any = false;
        for child in &self.routes {
            if child.collect(labels, out) {
                any = true;
                if !child.continue_ {
                    break;
                }
            }
        }
        if !any {
            out.push(self);
        }
        true
    }

    /// The group key of `labels` on this route: the route id and the grouping labels'
    /// values, e.g. `0.1|alertname=anomaly,region=eu`.
    pub fn group_key(&self, labels: &Labels) -> (String, Labels) {
        let picked: Labels = match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        };
        let body: Vec<String> = picked.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (format!("{}|{}", self.id, body.join(",")), picked)
    }

    /// Every receiver named in the tree.
    pub fn receivers(&self) -> Vec<&str> {
        let mut out = vec![self.receiver.as_str()];
        for r in &self.routes {
            out.extend(r.receivers());
        }
        out
    }
}

fn build(c: &Config, parent: &Route, id: String, at: String) -> Result<Route, Error> {
    let matchers = parse_all(&c.matchers).map_err(|(i, e)| Error {
        at: format!("{at}.matchers[{i}]"),
        reason: e.to_string(),
    })?;
    let receiver = c
        .receiver
        .clone()
        .unwrap_or_else(|| parent.receiver.clone());
    if receiver.trim().is_empty() {
        return Err(Error {
            at: format!("{at}.receiver"),
            reason: "must name a receiver".into(),
        });
    }
    let group_by = match &c.group_by {
        None => parent.group_by.clone(),
        Some(names) if names.iter().any(|n| n == "...") => {
            if names.len() > 1 {
                return Err(Error {
                    at: format!("{at}.group_by"),
                    reason: "`...` (every label) stands alone".into(),
                });
            }
            GroupBy::All
        }
        Some(names) => {
            let mut v: Vec<String> = names
                .iter()
                .map(|n| {
                    if n == "action" {
                        "alertname"
                    } else {
                        n.as_str()
                    }
                    .to_string()
                })
                .collect();
            v.sort();
            v.dedup();
            GroupBy::Labels(v)
        }
    };
    let positive = |name: &str, v: Option<u64>, inherited: u64| match v {
        Some(0) => Err(Error {
            at: format!("{at}.{name}"),
            reason: "must be at least 1".into(),
        }),
        Some(v) => Ok(v),
        None => Ok(inherited),
    };
    let mut route = Route {
        id: id.clone(),
        matchers,
        receiver,
        group_by,
        group_wait_ms: c.group_wait_ms.unwrap_or(parent.group_wait_ms),
        group_interval_ms: positive(
            "group_interval_ms",
            c.group_interval_ms,
            parent.group_interval_ms,
        )?,
        repeat_interval_ms: positive(
            "repeat_interval_ms",
            c.repeat_interval_ms,
            parent.repeat_interval_ms,
        )?,
        continue_: c.continue_,
        routes: Vec::new(),
    };
    let mut children = Vec::with_capacity(c.routes.len());
    for (i, child) in c.routes.iter().enumerate() {
        children.push(build(
            child,
            &route,
            format!("{id}.{i}"),
            format!("{at}.routes[{i}]"),
        )?);
    }
    route.routes = children;
    Ok(route)
}
