//! The OOM kills of the last [`WINDOW`], by cgroup path — which outlives a container
//! that an engine re-creates there (podman) — and by its parent, the pod's cgroup,
//! which outlives a container that Kubernetes replaces with a new id on restart.
//! Bounded: [`MAX_PATHS`] paths of [`MAX_KILLS`] kills each.

use crate::findings::container_subject;
use crate::model::{Container, Finding, Severity};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(600);
const MAX_PATHS: usize = 256;
const MAX_KILLS: usize = 32;

#[derive(Debug, Clone)]
pub struct Kill {
    pub at: Instant,
    /// The kernel's peak usage for that life (v1 max_usage_in_bytes, v2 memory.peak).
    pub peak_bytes: Option<u64>,
    pub victim: String,
}

#[derive(Debug, Default)]
pub struct KillLog {
    by_path: HashMap<String, VecDeque<Kill>>,
}

impl KillLog {
    /// Records a kill in `path` and in its parent.
    pub fn record(&mut self, path: &str, kill: Kill) {
        let parent = parent_of(path);
        for p in [Some(path), parent].into_iter().flatten() {
            if !self.by_path.contains_key(p) && self.by_path.len() >= MAX_PATHS {
                self.forget_oldest();
            }
            let kills = self.by_path.entry(p.to_string()).or_default();
            if kills.len() >= MAX_KILLS {
                kills.pop_front();
            }
            kills.push_back(kill.clone());
        }
    }

    /// The kills within [`WINDOW`] of `now`, oldest first.
    pub fn recent(&self, path: &str, now: Instant) -> Vec<&Kill> {
        self.by_path
            .get(path)
            .map(|k| k.iter().filter(|k| now.duration_since(k.at) <= WINDOW).collect())
            .unwrap_or_default()
    }

    fn forget_oldest(&mut self) {
        let oldest = self.by_path.iter().min_by_key(|(_, k)| k.back().map(|k| k.at)).map(|(p, _)| p.clone());
        if let Some(p) = oldest {
            self.by_path.remove(&p);
        }
    }

    /// `memory.crashloop_oom` when the container's path, or else its pod, saw two kills
    /// or more within the window.
    pub fn finding(&self, c: &Container, path: &str, limit: u64, now: Instant) -> Option<Finding> {
        let mine = self.recent(path, now);
        let (kills, scope) = if mine.len() >= 2 {
            (mine, "this container")
        } else {
            (parent_of(path).map(|p| self.recent(p, now)).filter(|k| k.len() >= 2)?, "this pod's containers")
        };
        let peaks: Vec<String> = kills
            .iter()
            .map(|k| k.peak_bytes.map_or("?".into(), |p| format!("{:.1} MiB", p as f64 / 1048576.0)))
            .collect();
        let mut victims: Vec<&str> = kills.iter().map(|k| k.victim.as_str()).collect();
        victims.dedup();
        let span = now.duration_since(kills[0].at).as_secs();
        Some(Finding {
            id: "memory.crashloop_oom",
            severity: Severity::Critical,
            subject: container_subject(c),
            pid: None,
            container_id: c.id.clone(),
            message: format!(
                "OOM-killed {} times in {} s in {scope} (limit {:.1} MiB); peak each life: {}; killed: {}",
                kills.len(),
                span,
                limit as f64 / 1048576.0,
                peaks.join(", "),
                victims.join(", ")
            ),
            evidence: vec![("oom_kills_10m", kills.len().to_string()), ("limit_bytes", limit.to_string())],
            next_step: "a crash loop at the memory limit: each restart grows to the limit again, so a restart \
                        does not help; raise the limit above the peak or fix what grows (the pre-OOM reports of \
                        each life name the top grower: `kubectl osl reports`)"
                .into(),
        })
    }
}

fn parent_of(path: &str) -> Option<&str> {
    let parent = path.trim_end_matches('/').rsplit_once('/')?.0;
    (!parent.is_empty()).then_some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(at: Instant, victim: &str) -> Kill {
        Kill { at, peak_bytes: Some(32 << 20), victim: victim.into() }
    }

    #[test]
    fn two_kills_in_ten_minutes_are_a_crash_loop_by_path_or_pod() {
        let t0 = Instant::now();
        let c = Container { id: Some("a".repeat(64)), ..Default::default() };
        let mut log = KillLog::default();
        log.record("/pod1/ctr-a", kill(t0, "app"));
        assert!(log.finding(&c, "/pod1/ctr-a", 32 << 20, t0).is_none(), "one kill is not a loop");
        // Kubernetes: the restart is a new container id in the same pod.
        log.record("/pod1/ctr-b", kill(t0 + Duration::from_secs(30), "app"));
        let f = log.finding(&c, "/pod1/ctr-b", 32 << 20, t0 + Duration::from_secs(30)).unwrap();
        assert!(
            f.message.starts_with("OOM-killed 2 times in 30 s in this pod's containers (limit 32.0 MiB)"),
            "{}",
            f.message
        );
        log.record("/pod1/ctr-b", kill(t0 + Duration::from_secs(40), "app"));
        let f = log.finding(&c, "/pod1/ctr-b", 32 << 20, t0 + Duration::from_secs(40)).unwrap();
        assert!(f.message.contains("2 times in 10 s in this container"), "{}", f.message);
        assert!(log.finding(&c, "/pod1/ctr-b", 32 << 20, t0 + WINDOW + Duration::from_secs(41)).is_none(), "aged out");
    }

    #[test]
    fn bounded_in_paths_and_kills() {
        let t0 = Instant::now();
        let mut log = KillLog::default();
        for i in 0..1000 {
            log.record(&format!("/pod/{i}"), kill(t0 + Duration::from_millis(i), "x"));
        }
        assert!(log.by_path.len() <= MAX_PATHS);
        for i in 0..100 {
            log.record("/pod/x", kill(t0 + Duration::from_millis(2000 + i), "x"));
        }
        assert_eq!(log.recent("/pod/x", t0 + Duration::from_secs(3)).len(), MAX_KILLS);
    }
}
