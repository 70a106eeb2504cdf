//! Label and field selectors, as the apiserver parses them from the query
//! string (`labelSelector=app=demo,tier in (web,api),!canary`).

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<(String, Op)>);

/// Splits on the commas that are not inside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for t in terms(s) {
            let bad = || format!("unable to parse requirement: {t:?}");
            let req = if let Some(k) = t.strip_prefix('!') {
                (k.trim().to_string(), Op::DoesNotExist)
            } else if let Some(open) = t.find('(') {
                let head: Vec<&str> = t[..open].split_whitespace().collect();
                let inner = t[open + 1..].strip_suffix(')').ok_or_else(bad)?;
                let values = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
                match head.as_slice() {
                    [k, "in"] => (k.to_string(), Op::In(values)),
                    [k, "notin"] => (k.to_string(), Op::NotIn(values)),
                    _ => return Err(bad()),
                }
            } else if let Some((k, v)) = t.split_once("!=") {
                (k.trim().to_string(), Op::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once('>') {
                (k.trim().to_string(), Op::Gt(v.trim().parse().map_err(|_| bad())?))
            } else if let Some((k, v)) = t.split_once('<') {
                (k.trim().to_string(), Op::Lt(v.trim().parse().map_err(|_| bad())?))
            } else {
                (t.to_string(), Op::Exists)
            };
            if !valid_key(&req.0) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub(crate) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| {
            let v = get(k);
            match op {
                Op::Equals(want) => v == Some(want.as_str()),
                Op::NotEquals(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

/// `metav1.FormatLabelSelector` of a JSON `LabelSelector`: what the SELECTOR
/// column shows.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return "<none>".into() };
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let s = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        };
        parts.push((key.to_string(), s));
    }
    if parts.is_empty() {
        return "<none>".into();
    }
    parts.sort();
    parts.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(",")
}

/// A parsed field selector (`status.phase=Running,metadata.name!=x`): dotted
/// paths into the object compared as strings, an absent field being `""`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{t}'"));
            };
            reqs.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut v = obj;
            for part in path.split('.') {
                v = v.get(part).unwrap_or(&Value::Null);
            }
            let got = match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sel: &str, labels: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(labels.as_object())
    }

    #[test]
    fn label_selectors_match_like_the_apiserver() {
        let l = json!({"app": "demo", "tier": "web", "n": "3"});
        assert!(m("app=demo", l.clone()));
        assert!(m("app==demo,tier", l.clone()));
        assert!(!m("app=other", l.clone()));
        assert!(m("app!=other,!canary", l.clone()));
        assert!(m("tier in (web, api),app notin (x)", l.clone()));
        assert!(!m("tier in (api)", l.clone()));
        assert!(m("n>2,n<4", l.clone()));
        assert!(m("", l.clone()));
        assert!(!m("app", json!({})));
        assert!(m("app notin (demo)", json!({})));
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn selectors_format_like_kubectl() {
        let s = json!({"matchLabels": {"app": "demo"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]});
        assert_eq!(format_label_selector(Some(&s)), "app=demo,tier in (api,web)");
        assert_eq!(format_label_selector(None), "<none>");
    }

    #[test]
    fn field_selectors_compare_paths() {
        let pod = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("status.phase=Running").unwrap().matches(&pod));
        assert!(FieldSelector::parse("status.phase!=Pending,metadata.name==a").unwrap().matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName=n1").unwrap().matches(&pod));
    }
}
