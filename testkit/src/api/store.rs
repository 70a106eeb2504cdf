//! The objects the fixture serves, keyed by resource, namespace and name, with
//! one resourceVersion counter like etcd's revision.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::discovery::{Resource, by_path};
use super::time::{now, rfc3339};

/// `n` random lowercase hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

/// A random RFC 4122 style uid.
pub(crate) fn uid() -> String {
    let h = random_hex(32);
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..])
}

/// The suffix the apiserver appends to `generateName` (consonants and digits).
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_hex(10)
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let n = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[n as usize % ALPHABET.len()] as char
        })
        .collect()
}

type Key = (&'static str, &'static str, String, String);

#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    revision: u64,
}

fn key(res: &Resource, ns: &str, name: &str) -> Key {
    (res.group, res.plural, if res.namespaced { ns.to_string() } else { String::new() }, name.to_string())
}

impl Store {
    pub(crate) fn new() -> Store {
        Store { objects: BTreeMap::new(), revision: 1000 }
    }

    pub(crate) fn resource_version(&self) -> String {
        self.revision.to_string()
    }

    fn bump(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Stores an object, filling what the apiserver would set and the fixture
    /// left out (kind, apiVersion, namespace, uid, resourceVersion,
    /// creationTimestamp); a value the fixture gave is kept as it is.
    pub(crate) fn insert(&mut self, res: &Resource, ns: &str, mut obj: Value) -> Value {
        let rv = self.bump();
        let o = obj.as_object_mut().expect("an object is a JSON object");
        o.entry("apiVersion").or_insert_with(|| json!(res.api_version()));
        o.entry("kind").or_insert_with(|| json!(res.kind));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().expect("metadata is an object");
        if res.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.entry("uid").or_insert_with(|| json!(uid()));
        meta.entry("resourceVersion").or_insert_with(|| json!(rv));
        meta.entry("creationTimestamp").or_insert_with(|| json!(rfc3339(now())));
        let name = meta.get("name").and_then(Value::as_str).expect("metadata.name is set").to_string();
        self.objects.insert(key(res, ns, &name), obj.clone());
        obj
    }

    /// Replaces a stored object as an update does: a new resourceVersion.
    pub(crate) fn update(&mut self, res: &Resource, ns: &str, name: &str, mut obj: Value) -> Value {
        obj["metadata"]["resourceVersion"] = json!(self.bump());
        self.objects.insert(key(res, ns, name), obj.clone());
        obj
    }

    pub(crate) fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        if res.kind == "Namespace" && res.group.is_empty() {
            return self.namespaces().into_iter().find(|n| n["metadata"]["name"] == name);
        }
        self.objects.get(&key(res, ns, name)).cloned()
    }

    pub(crate) fn remove(&mut self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        let removed = self.objects.remove(&key(res, ns, name));
        if removed.is_some() {
            self.bump();
        }
        removed
    }

    /// The objects of a resource in one namespace, or in all (`None`).
    pub(crate) fn list(&self, res: &Resource, ns: Option<&str>) -> Vec<Value> {
        if res.kind == "Namespace" && res.group.is_empty() {
            return self.namespaces();
        }
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == res.group && *p == res.plural && ns.is_none_or(|ns| !res.namespaced || ns == n)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The Namespace objects added, and an Active one for every other
    /// namespace an object lives in.
    fn namespaces(&self) -> Vec<Value> {
        let res = by_path("", "v1", "namespaces").expect("namespaces are served");
        let mut out: BTreeMap<String, Value> = self
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| *g == res.group && *p == res.plural)
            .map(|((_, _, _, name), o)| (name.clone(), o.clone()))
            .collect();
        for (_, _, ns, _) in self.objects.keys() {
            if !ns.is_empty() && !out.contains_key(ns) {
                out.insert(
                    ns.clone(),
                    json!({
                        "kind": "Namespace",
                        "apiVersion": "v1",
                        "metadata": {"name": ns, "uid": format!("00000000-0000-4000-a000-{:012x}", ns.len()),
                            "resourceVersion": "1", "creationTimestamp": "2024-01-01T00:00:00Z",
                            "labels": {"kubernetes.io/metadata.name": ns}},
                        "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"}
                    }),
                );
            }
        }
        out.into_values().collect()
    }
}
