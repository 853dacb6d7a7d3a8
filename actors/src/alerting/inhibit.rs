//! Inhibition: a firing alert that matches a rule's source matchers mutes the alerts that
//! match its target matchers and have the same values for the rule's `equal` labels
//! (absent on both sides counts as equal), as in Alertmanager. An alert never inhibits
//! itself. Example: a node's `node_dead` inhibits its `service_down` alerts
//! (`equal = ["node"]`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::labels::{Labels, Matcher, all_match, parse_all};
use super::route::Error;

/// One `[[alerts.inhibit]]` entry, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl Rule {
    /// `i` is the rule's position, for errors (`inhibit[2].target_matchers[0]`).
    pub fn new(c: &Config, i: usize) -> Result<Rule, Error> {
        let parse = |list: &[String], field: &str| {
            parse_all(list).map_err(|(j, e)| Error {
                at: format!("inhibit[{i}].{field}[{j}]"),
                reason: e.to_string(),
            })
        };
        let equal = c
            .equal
            .iter()
            .map(|n| if n == "action" { "alertname" } else { n }.to_string())
            .collect();
        Ok(Rule {
            source: parse(&c.source_matchers, "source_matchers")?,
            target: parse(&c.target_matchers, "target_matchers")?,
            equal,
        })
    }

    fn equal_values(&self, labels: &Labels) -> Vec<String> {
        self.equal
            .iter()
            .map(|n| labels.get(n).cloned().unwrap_or_default())
            .collect()
    }
}

/// The sources of every rule at one moment: built once per evaluation from the firing
/// alerts, then asked about each alert in constant time per rule.
#[derive(Debug, Default)]
pub struct Sources {
    /// Per rule: equal-label values -> the ids of up to two firing sources with them (two,
    /// so that an alert that is itself a source can still be inhibited by another).
    by_rule: Vec<HashMap<Vec<String>, Vec<String>>>,
}

impl Sources {
    /// `firing` yields (alert id, labels) of every firing (unresolved) alert.
    pub fn new<'a>(rules: &[Rule], firing: impl Iterator<Item = (&'a str, &'a Labels)>) -> Self {
        let mut by_rule: Vec<HashMap<Vec<String>, Vec<String>>> = vec![HashMap::new(); rules.len()];
        for (id, labels) in firing {
            for (rule, map) in rules.iter().zip(by_rule.iter_mut()) {
                if all_match(&rule.source, labels) {
                    let ids = map.entry(rule.equal_values(labels)).or_default();
                    if ids.len() < 2 {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        Sources { by_rule }
    }

    /// The id of a firing alert that inhibits the alert `id` with `labels`, if any.
    pub fn inhibitor(&self, rules: &[Rule], id: &str, labels: &Labels) -> Option<String> {
        rules
            .iter()
            .zip(&self.by_rule)
            .filter(|(rule, _)| all_match(&rule.target, labels))
            .find_map(|(rule, map)| {
                map.get(&rule.equal_values(labels))?
                    .iter()
                    .find(|s| s.as_str() != id)
                    .cloned()
            })
    }
}
