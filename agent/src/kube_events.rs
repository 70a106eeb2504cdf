//! Kubernetes Events for pre-OOM reports and OOM kills: `kubectl describe pod`
//! and `kubectl get events` then say `PreOOM` / `OOMKilled` with the numbers and
//! the report id, next to the kubelet's own events.
//!
//! On when the agent knows its pod (`OSL_POD_NAME`, `OSL_POD_NAMESPACE`,
//! `OSL_POD_UID` from the downward API) and finds a client configuration
//! (in-cluster service account, or a kubeconfig when run elsewhere). Posting never
//! blocks the watcher: it hands notices over a small bounded queue, and a notice
//! that does not fit is dropped and counted.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use osl_proto::v1;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The pod the agent runs in, from the downward API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodRef {
    /// From `OSL_POD_NAME`, `OSL_POD_NAMESPACE` (both required) and `OSL_POD_UID`.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("OSL_POD_NAME"), var("OSL_POD_NAMESPACE")) {
            (Some(name), Some(namespace)) => Ok(Self { name, namespace, uid: var("OSL_POD_UID").unwrap_or_default() }),
            _ => Err("OSL_POD_NAME and OSL_POD_NAMESPACE are not set (the downward API gives them)".into()),
        }
    }
}

/// One event to post, built from a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub reason: &'static str,
    /// Rate limiting key: the same reason for the same container.
    pub key: String,
    pub message: String,
}

impl Notice {
    pub fn from_report(report: &v1::Report) -> Option<Self> {
        let container = short(&report.container_id);
        let (reason, message) = match report.kind() {
            v1::ReportKind::PreOom => ("PreOOM", pre_oom_message(report, container)),
            v1::ReportKind::PostMortem => ("OOMKilled", post_mortem_message(report, container)),
            _ => return None,
        };
        Some(Self { reason, key: format!("{reason}/{}", report.container_id), message })
    }
}

fn short(id: &str) -> &str {
    if id.is_empty() { "(host)" } else { &id[..id.len().min(12)] }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

fn pre_oom_message(r: &v1::Report, container: &str) -> String {
    let t = r.trigger.clone().unwrap_or_default();
    let mut m = format!("container {container} at {:.0}% of its memory limit", t.usage_pct);
    if let (Some(ws), Some(limit)) = (t.working_set_bytes, t.limit_bytes) {
        m += &format!(" ({} of {})", mib(ws), mib(limit));
    }
    if t.growth_bytes_per_sec > 0.0 {
        m += &format!(", growing {}/s", mib(t.growth_bytes_per_sec as u64));
    }
    if let Some(eta) = t.predicted_oom_in_msec {
        m += &format!(", OOM in ~{:.1} s", eta as f64 / 1000.0);
    }
    if let Some(p) = r.processes.first() {
        m += &format!("; top grower pid {} ({})", p.pid, p.comm);
        if let Some(g) = p.rss_growth_bytes.filter(|g| *g > 0) {
            m += &format!(" +{}", mib(g as u64));
        }
    }
    m + &format!("; osl report {}", r.id)
}

fn post_mortem_message(r: &v1::Report, container: &str) -> String {
    let victims: Vec<String> = r
        .victims
        .iter()
        .map(|v| match v.rss_bytes {
            Some(rss) => format!("pid {} ({}, RSS {})", v.pid, v.comm, mib(rss)),
            None => format!("pid {} ({})", v.pid, v.comm),
        })
        .collect();
    let killed = if victims.is_empty() { "a process".to_string() } else { victims.join(", ") };
    let mut m = format!("OOM killer in container {container} killed {killed}");
    if let Some(limit) = r.trigger.as_ref().and_then(|t| t.limit_bytes) {
        m += &format!(" at its {} limit", mib(limit));
    }
    m += &format!("; osl report {}", r.id);
    if !r.previous_report_id.is_empty() {
        m += &format!(" (pre-OOM report {})", r.previous_report_id);
    }
    m
}

/// Limits: per reason and container at most one event per `per_key`, and at most
/// `burst` events in any `window` overall. Suppressed notices are counted and
/// mentioned in the next event that goes out for the same key.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_key: Duration,
    pub burst: usize,
    pub window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_key: Duration::from_secs(60), burst: 10, window: Duration::from_secs(600) }
    }
}

#[derive(Debug, Default)]
struct Limiter {
    last: HashMap<String, Instant>,
    suppressed: HashMap<String, u64>,
    sent: std::collections::VecDeque<Instant>,
}

impl Limiter {
    /// The message to send now (with the suppressed count), or None.
    fn admit(&mut self, limit: &RateLimit, notice: &Notice, now: Instant) -> Option<String> {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= limit.window) {
            self.sent.pop_front();
        }
        // A kill is always worth telling; a warning for the same container waits.
        let key_ok = notice.reason == "OOMKilled"
            || self.last.get(&notice.key).is_none_or(|t| now.duration_since(*t) >= limit.per_key);
        if !key_ok || self.sent.len() >= limit.burst {
            *self.suppressed.entry(notice.key.clone()).or_default() += 1;
            return None;
        }
        self.last.insert(notice.key.clone(), now);
        self.sent.push_back(now);
        Some(match self.suppressed.remove(&notice.key) {
            Some(n) => format!("{} ({n} similar suppressed)", notice.message),
            None => notice.message.clone(),
        })
    }
}

/// The sending half the watcher holds.
pub type NoticeSender = mpsc::Sender<Notice>;

/// Posts notices as core/v1 Events on the pod until the sender is dropped.
pub struct Poster {
    api: Api<Event>,
    pod: PodRef,
    limit: RateLimit,
    limiter: Limiter,
}

impl Poster {
    pub fn new(client: kube::Client, pod: PodRef, limit: RateLimit) -> Self {
        Self { api: Api::namespaced(client, &pod.namespace), pod, limit, limiter: Limiter::default() }
    }

    /// Queue of `capacity` notices, and the task that drains it.
    pub fn spawn(self, capacity: usize) -> (NoticeSender, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, tokio::spawn(self.run(rx)))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Notice>) {
        while let Some(notice) = rx.recv().await {
            if let Err(e) = self.post(&notice).await {
                tracing::warn!(reason = notice.reason, error = %e, "cannot post a Kubernetes Event");
            }
        }
    }

    /// Posts unless rate limited; Ok(false) when held back.
    pub async fn post(&mut self, notice: &Notice) -> Result<bool, kube::Error> {
        let Some(message) = self.limiter.admit(&self.limit, notice, Instant::now()) else {
            tracing::debug!(reason = notice.reason, key = %notice.key, "Event rate limited");
            return Ok(false);
        };
        self.api.create(&PostParams::default(), &self.event(notice.reason, message)).await?;
        tracing::info!(reason = notice.reason, pod = %self.pod.name, "posted a Kubernetes Event");
        Ok(true)
    }

    fn event(&self, reason: &str, message: String) -> Event {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.osl-", self.pod.name)),
                namespace: Some(self.pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(self.pod.name.clone()),
                namespace: Some(self.pod.namespace.clone()),
                uid: Some(self.pod.uid.clone()).filter(|u| !u.is_empty()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some("Warning".into()),
            source: Some(EventSource { component: Some("osl-agent".into()), host: None }),
            reporting_component: Some("osl.dev/agent".into()),
            reporting_instance: Some(self.pod.name.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        }
    }
}

/// The client configuration: in-cluster, or the kubeconfig kubectl would use.
/// Err says why Events are off.
pub async fn client() -> Result<kube::Client, String> {
    let config = kube::Config::infer().await.map_err(|e| format!("not in a cluster and no kubeconfig ({e})"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(reason: &'static str, key: &str) -> Notice {
        Notice { reason, key: key.into(), message: "m".into() }
    }

    #[test]
    fn one_event_per_container_and_reason_per_interval_and_a_global_burst() {
        let limit = RateLimit { per_key: Duration::from_secs(60), burst: 3, window: Duration::from_secs(600) };
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(l.admit(&limit, &notice("PreOOM", "a"), t0).as_deref(), Some("m"));
        assert_eq!(l.admit(&limit, &notice("PreOOM", "a"), t0 + Duration::from_secs(10)), None);
        assert_eq!(l.admit(&limit, &notice("PreOOM", "b"), t0).as_deref(), Some("m"));
        let back = l.admit(&limit, &notice("PreOOM", "a"), t0 + Duration::from_secs(61));
        assert_eq!(back.as_deref(), Some("m (1 similar suppressed)"));
        // The burst of 3 is spent: even a kill waits for the window.
        assert_eq!(l.admit(&limit, &notice("OOMKilled", "k"), t0 + Duration::from_secs(62)), None);
        let later = l.admit(&limit, &notice("OOMKilled", "k"), t0 + Duration::from_secs(601));
        assert_eq!(later.as_deref(), Some("m (1 similar suppressed)"));
    }

    #[test]
    fn messages_carry_the_numbers_and_the_report_id() {
        let report = v1::Report {
            id: "1-pre_oom-3f2a9c1d0e4b-7".into(),
            kind: v1::ReportKind::PreOom as i32,
            container_id: "3f2a9c1d0e4b5a6978".into(),
            trigger: Some(v1::Trigger {
                usage_pct: 91.4,
                working_set_bytes: Some(234 << 20),
                limit_bytes: Some(256 << 20),
                growth_bytes_per_sec: (200 << 20) as f64,
                predicted_oom_in_msec: Some(110),
                ..Default::default()
            }),
            processes: vec![v1::ReportProcess {
                pid: 42,
                comm: "leaker".into(),
                rss_growth_bytes: Some(180 << 20),
                ..Default::default()
            }],
            ..Default::default()
        };
        let n = Notice::from_report(&report).unwrap();
        assert_eq!(n.reason, "PreOOM");
        assert_eq!(
            n.message,
            "container 3f2a9c1d0e4b at 91% of its memory limit (234 MiB of 256 MiB), growing 200 MiB/s, \
             OOM in ~0.1 s; top grower pid 42 (leaker) +180 MiB; osl report 1-pre_oom-3f2a9c1d0e4b-7"
        );
        let pm = v1::Report {
            id: "2-post_mortem-x".into(),
            kind: v1::ReportKind::PostMortem as i32,
            previous_report_id: report.id.clone(),
            trigger: report.trigger.clone(),
            victims: vec![v1::ReportProcess {
                pid: 42,
                comm: "leaker".into(),
                rss_bytes: Some(250 << 20),
                ..Default::default()
            }],
            ..Default::default()
        };
        let n = Notice::from_report(&pm).unwrap();
        assert_eq!(n.reason, "OOMKilled");
        assert_eq!(
            n.message,
            "OOM killer in container (host) killed pid 42 (leaker, RSS 250 MiB) at its 256 MiB limit; \
             osl report 2-post_mortem-x (pre-OOM report 1-pre_oom-3f2a9c1d0e4b-7)"
        );
    }
}
