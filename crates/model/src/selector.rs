//! Kubernetes label selectors, compiled once and evaluated per request.
//!
//! Semantics are Kubernetes': `matchLabels` and `matchExpressions` are ANDed; `In` needs the
//! key with one of the values, `NotIn` is satisfied by a missing key, `Exists` and
//! `DoesNotExist` test the key only. An empty selector matches everything; no selector at all
//! matches nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::LabelSelector;

/// Labels of a namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requirement {
    /// The key is present with one of the values (`matchLabels` is `In` with one value).
    In(String, Vec<String>),
    /// The key is absent, or present with none of the values.
    NotIn(String, Vec<String>),
    /// The key is present.
    Exists(String),
    /// The key is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::In(k, v) if v.len() == 1 => write!(f, "{k}={}", v[0]),
            Requirement::In(k, v) => write!(f, "{k} in ({})", v.join(", ")),
            Requirement::NotIn(k, v) => write!(f, "{k} notin ({})", v.join(", ")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A label selector that is not valid Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct SelectorError {
    /// The field path inside the selector (`matchExpressions[1].operator`).
    pub field: String,
    /// The rule broken.
    pub rule: String,
}

/// A validated selector: requirements ANDed together. No requirements matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Validates a Kubernetes `LabelSelector` by the API server's rules.
    pub fn compile(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            check_key(key, &format!("matchLabels.{key}"))?;
            requirements.push(Requirement::In(key.clone(), vec![value.clone()]));
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let field = |f: &str| format!("matchExpressions[{i}].{f}");
            check_key(&expr.key, &field("key"))?;
            let values = expr.values.clone().unwrap_or_default();
            let need_values = |op: &str| -> Result<(), SelectorError> {
                if values.is_empty() {
                    return Err(SelectorError {
                        field: field("values"),
                        rule: format!("operator {op} needs at least one value"),
                    });
                }
                Ok(())
            };
            let no_values = |op: &str| -> Result<(), SelectorError> {
                if !values.is_empty() {
                    return Err(SelectorError {
                        field: field("values"),
                        rule: format!("operator {op} takes no values"),
                    });
                }
                Ok(())
            };
            let requirement = match expr.operator.as_str() {
                "In" => {
                    need_values("In")?;
                    Requirement::In(expr.key.clone(), values.clone())
                }
                "NotIn" => {
                    need_values("NotIn")?;
                    Requirement::NotIn(expr.key.clone(), values.clone())
                }
                "Exists" => {
                    no_values("Exists")?;
                    Requirement::Exists(expr.key.clone())
                }
                "DoesNotExist" => {
                    no_values("DoesNotExist")?;
                    Requirement::DoesNotExist(expr.key.clone())
                }
                other => {
                    return Err(SelectorError {
                        field: field("operator"),
                        rule: format!(
                            "unknown operator {other:?}: expected In, NotIn, Exists or DoesNotExist"
                        ),
                    });
                }
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, for explanations.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{} (everything)");
        }
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Kubernetes semantics at the field level: no selector matches nothing.
pub fn matches(selector: Option<&Selector>, labels: &Labels) -> bool {
    selector.is_some_and(|s| s.matches(labels))
}

fn check_key(key: &str, field: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(SelectorError {
            field: field.to_owned(),
            rule: format!(
                "{key:?} is not a valid label key ([prefix/]name, name ≤ 63 alphanumerics, '-', '_', '.')"
            ),
        })
    }
}
