//! Label selectors (`matchLabels` and `matchExpressions`), checked once and then evaluated many times.
//!
//! A [`Selector`] is the validated, canonical form of a Kubernetes `LabelSelector`: every
//! `matchLabels` pair becomes an `In` requirement with one value, requirements are sorted, and equal
//! selectors compare equal, so the compiler can cache what a selector matches.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use thiserror::Error;

use crate::model::Labels;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unknown operator {operator:?} for key {key:?}")]
    UnknownOperator { key: String, operator: String },
    #[error("operator {operator} for key {key:?} needs at least one value")]
    MissingValues { key: String, operator: &'static str },
    #[error("operator {operator} for key {key:?} takes no values")]
    UnexpectedValues { key: String, operator: &'static str },
    #[error("empty label key")]
    EmptyKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Operator {
    /// Sorted values (a slice rather than a set: most selectors have one value, and a tree node
    /// per selector would be most of a policy's memory).
    In(Box<[String]>),
    NotIn(Box<[String]>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Requirement {
    key: String,
    operator: Operator,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match (&self.operator, value) {
            (Operator::In(values), Some(v)) => values.binary_search(v).is_ok(),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), Some(v)) => values.binary_search(v).is_err(),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        }
    }
}

/// A validated label selector. The default (no requirement) matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Validates a Kubernetes selector: unknown operators, `In`/`NotIn` without values and
    /// `Exists`/`DoesNotExist` with values are errors (the API server rejects them too).
    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: checked_key(key)?,
                operator: Operator::In(Box::new([value.clone()])),
            });
        }
        for expr in selector.match_expressions.iter().flatten() {
            let key = checked_key(&expr.key)?;
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let operator = operator(&key, &expr.operator, values)?;
            requirements.push(Requirement { key, operator });
        }
        requirements.sort();
        requirements.dedup();
        // Kept as long as the policy is: no spare room.
        requirements.shrink_to_fit();
        Ok(Self { requirements })
    }

    /// Parses an optional selector, where absence means "everything".
    pub fn parse_optional(selector: Option<&LabelSelector>) -> Result<Self, SelectorError> {
        selector.map_or_else(|| Ok(Self::everything()), Self::parse)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn checked_key(key: &str) -> Result<String, SelectorError> {
    if key.is_empty() {
        return Err(SelectorError::EmptyKey);
    }
    Ok(key.to_owned())
}

fn operator(key: &str, name: &str, values: BTreeSet<String>) -> Result<Operator, SelectorError> {
    let needs_values = |operator: &'static str, values: BTreeSet<String>| {
        if values.is_empty() {
            Err(SelectorError::MissingValues {
                key: key.to_owned(),
                operator,
            })
        } else {
            Ok(values)
        }
    };
    let no_values = |operator: &'static str, values: &BTreeSet<String>| {
        if values.is_empty() {
            Ok(())
        } else {
            Err(SelectorError::UnexpectedValues {
                key: key.to_owned(),
                operator,
            })
        }
    };
    match name {
        "In" => Ok(Operator::In(
            needs_values("In", values)?.into_iter().collect(),
        )),
        "NotIn" => Ok(Operator::NotIn(
            needs_values("NotIn", values)?.into_iter().collect(),
        )),
        "Exists" => no_values("Exists", &values).map(|()| Operator::Exists),
        "DoesNotExist" => no_values("DoesNotExist", &values).map(|()| Operator::DoesNotExist),
        _ => Err(SelectorError::UnknownOperator {
            key: key.to_owned(),
            operator: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default()).unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&Labels::new()));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_require_every_pair() {
        let s = Selector::parse(&selector(&[("app", "web"), ("tier", "fe")], vec![])).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn in_matches_listed_values_only() {
        let s =
            Selector::parse(&selector(&[], vec![expr("env", "In", Some(&["a", "b"]))])).unwrap();
        assert!(s.matches(&labels(&[("env", "a")])));
        assert!(s.matches(&labels(&[("env", "b")])));
        assert!(!s.matches(&labels(&[("env", "c")])));
        assert!(!s.matches(&Labels::new()));
    }

    #[test]
    fn not_in_matches_other_values_and_absent_key() {
        let s = Selector::parse(&selector(&[], vec![expr("env", "NotIn", Some(&["a"]))])).unwrap();
        assert!(!s.matches(&labels(&[("env", "a")])));
        assert!(s.matches(&labels(&[("env", "b")])));
        assert!(s.matches(&Labels::new()));
    }

    #[test]
    fn exists_and_does_not_exist_look_at_the_key_only() {
        let exists = Selector::parse(&selector(&[], vec![expr("k", "Exists", None)])).unwrap();
        let absent =
            Selector::parse(&selector(&[], vec![expr("k", "DoesNotExist", Some(&[]))])).unwrap();
        assert!(exists.matches(&labels(&[("k", "")])));
        assert!(!exists.matches(&Labels::new()));
        assert!(!absent.matches(&labels(&[("k", "v")])));
        assert!(absent.matches(&labels(&[("j", "v")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = Selector::parse(&selector(
            &[("app", "web")],
            vec![expr("env", "NotIn", Some(&["dev"]))],
        ))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("env", "prod")])));
    }

    #[test]
    fn invalid_selectors_are_errors() {
        let cases = [
            expr("k", "Equals", Some(&["v"])),
            expr("k", "In", None),
            expr("k", "In", Some(&[])),
            expr("k", "NotIn", None),
            expr("k", "Exists", Some(&["v"])),
            expr("k", "DoesNotExist", Some(&["v"])),
            expr("", "Exists", None),
        ];
        for case in cases {
            let result = Selector::parse(&selector(&[], vec![case.clone()]));
            assert!(result.is_err(), "{case:?} should be invalid");
        }
    }

    #[test]
    fn equal_selectors_have_equal_canonical_forms() {
        let a = Selector::parse(&selector(
            &[("app", "web")],
            vec![expr("x", "Exists", None)],
        ))
        .unwrap();
        let b = Selector::parse(&selector(
            &[],
            vec![expr("x", "Exists", None), expr("app", "In", Some(&["web"]))],
        ))
        .unwrap();
        assert_eq!(a, b);
    }
}
