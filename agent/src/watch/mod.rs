//! The pre-OOM watcher. Every container the agent sees is polled cheaply (its
//! cgroup's usage, `memory.stat` and OOM counter), and the kernel wakes the watcher
//! between polls where it can: on cgroup v1 through `cgroup.event_control` eventfds
//! when usage crosses the thresholds and when the cgroup goes OOM, on v2 through a
//! PSI trigger on `memory.pressure` and changes of `memory.events`. A report is written when the working set crosses a threshold or, at its
//! growth rate, will reach the limit soon; a post-mortem when `oom_kill` rises.
//!
//! The watcher only reads, but for one thing: registering the notifications writes
//! to the cgroup's `cgroup.event_control` (v1) or `memory.pressure` (v2), which
//! changes nothing the container can see (and fails harmlessly on a read-only
//! cgroupfs: then it polls).

mod capture;
pub mod events;
pub mod held;
pub mod history;
pub mod kills;
pub mod policy;
pub mod store;
pub mod victim;

use crate::cgroup::{CgroupReader, files, working_set};
use crate::convert;
use crate::error::open_dir;
use crate::kube_events::{Notice, NoticeSender};
use crate::model::{CgroupVersion, Container, Process};
use crate::proc::{Brief, ProcReader};
use osl_proto::v1;
pub use policy::{Decision, decide_for};
use policy::{HYSTERESIS_PCT, PREDICT_FROM_PCT, decide, growth_per_sec, near};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Store;

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Working set shares of the limit that trigger a report (each once, until
    /// usage falls back below `warn_pct` - 5).
    pub warn_pct: f64,
    pub critical_pct: f64,
    /// Report when, at the current growth rate, the limit is nearer than this.
    pub predict_within: Duration,
    /// Growth is measured over this window.
    pub window: Duration,
    pub poll: Duration,
    /// How often processes are re-read and grouped into containers.
    pub rescan: Duration,
    /// At most one pre-OOM report per container in this time.
    pub cooldown: Duration,
    /// The PSI trigger registered on v2 cgroups' memory.pressure.
    pub psi_trigger: String,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            warn_pct: 80.0,
            critical_pct: 90.0,
            predict_within: Duration::from_secs(60),
            window: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            rescan: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
            // 200 ms of stall in 2 s: without CAP_SYS_RESOURCE the kernel takes
            // only windows that are multiples of 2 s.
            psi_trigger: "some 200000 2000000".into(),
        }
    }
}

/// Makes report ids unique within a millisecond.
static REPORT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The longest the watcher sleeps without looking at its stop flag.
const STOP_LATENCY: Duration = Duration::from_millis(200);

/// A process is re-placed at every poll while younger than this: a runtime moves a
/// new process into its container's cgroup just after creating it (and a poll may
/// fall in between). Later moves are found by the rescan.
const YOUNG: Duration = Duration::from_secs(2);

/// After the kernel wakes the watcher, it polls every HOT_POLL for HOT_FOR; a
/// container near its limit (see [`policy::near`]), always.
const HOT_POLL: Duration = Duration::from_millis(20);
const HOT_FOR: Duration = Duration::from_secs(1);

/// Histories kept for containers that may come back at the same path (28 KiB each).
const RETIRED: usize = 32;

/// How long a post-mortem waits for the OOM victim to finish exiting.
const VICTIM_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Watcher {
    procs: ProcReader,
    cgroups: CgroupReader,
    store: Arc<Store>,
    cfg: WatchConfig,
    containers: BTreeMap<String, Watched>,
    last_rescan: Option<Instant>,
    /// The pids of the last poll, with when each was first seen: a pid new or young
    /// (see [`YOUNG`]) is read and placed at each poll, so that a new container is
    /// watched within one poll, not one rescan.
    seen: HashMap<i32, Instant>,
    /// Containers without a memory limit, not re-read for each new process until the
    /// next rescan (which notices a limit set later).
    unlimited: HashSet<String>,
    /// The kills of the last minutes, across re-created and replaced containers.
    kills: kills::KillLog,
    /// The memory history of containers the rescan found empty (between two lives of
    /// a crash loop), for the next one at the same path; bounded, see [`RETIRED`].
    retired: HashMap<String, history::History>,
    /// Where reports are announced as Kubernetes Events, when on.
    notify: Option<NoticeSender>,
    /// The kernel signalled since the last poll: the eventfds are worth draining.
    signalled: bool,
    /// Where each rescan publishes the containers' memory trends, for Diagnose.
    trends: Option<Trends>,
}

/// Each watched container's working set over the last minutes ([`TREND_POINTS`]
/// points), by memory cgroup path: what Diagnose shows; replaced at each rescan.
pub type Trends = Arc<std::sync::Mutex<HashMap<String, Vec<v1::MemorySample>>>>;
pub const TREND_POINTS: usize = 60;

/// One container under watch.
#[derive(Debug)]
struct Watched {
    container: Container,
    /// Its memory cgroup's directory and poll files, held open.
    files: held::PollFiles,
    /// Its limit file as last read: the rescan re-reads the container when it changes.
    limit_raw: Option<Vec<u8>>,
    /// Its cgroup.procs at the last poll.
    pids: Vec<i32>,
    members: Vec<Brief>,
    samples: VecDeque<(Instant, u64)>,
    fired_warn: bool,
    fired_critical: bool,
    fired_prediction: bool,
    last_report: Option<(Instant, String)>,
    last_processes: Vec<v1::ReportProcess>,
    oom_kills: Option<u64>,
    events: Option<events::Events>,
    /// The held directory no longer reads: the cgroup was removed (an engine that
    /// re-creates a restarted container's cgroup at the same path makes a new one).
    stale: bool,
    /// The working set's share of the limit at the last poll.
    last_pct: f64,
    /// Near its limit at the last poll: polled every [`HOT_POLL`].
    near: bool,
    /// The minutes before (kept when the cgroup is re-created at the same path).
    history: history::History,
}

impl Watcher {
    pub fn new(procs: ProcReader, cgroups: CgroupReader, store: Arc<Store>, cfg: WatchConfig) -> Self {
        Self {
            procs,
            cgroups,
            store,
            cfg,
            containers: BTreeMap::new(),
            last_rescan: None,
            seen: HashMap::new(),
            unlimited: HashSet::new(),
            kills: kills::KillLog::default(),
            retired: HashMap::new(),
            notify: None,
            signalled: false,
            trends: None,
        }
    }

    /// Publishes the containers' memory trends to `trends` at each rescan.
    pub fn with_trends(mut self, trends: Trends) -> Self {
        self.trends = Some(trends);
        self
    }

    fn publish_trends(&self) {
        let Some(trends) = &self.trends else { return };
        let fresh: HashMap<String, Vec<v1::MemorySample>> = self
            .containers
            .iter()
            .filter(|(_, w)| !w.stale && !w.history.is_empty())
            .map(|(k, w)| (k.clone(), w.history.trend(TREND_POINTS)))
            .collect();
        *trends.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Announces every report, on disk or not (never blocking: a full queue drops it).
    pub fn with_notify(mut self, notify: NoticeSender) -> Self {
        self.notify = Some(notify);
        self
    }

    fn announce(&self, report: &v1::Report) {
        let (Some(tx), Some(notice)) = (&self.notify, Notice::from_report(report)) else { return };
        if tx.try_send(notice).is_err() {
            tracing::warn!(report = %report.id, "Event queue full or closed: this report is not announced");
        }
    }

    /// Polls until `stop` is set (noticed within [`STOP_LATENCY`]).
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let mut next = Instant::now();
        let mut hot_until = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next || now < hot_until {
                self.tick();
                if now >= next {
                    next = now + self.cfg.poll;
                }
            } else {
                self.check_near(now);
            }
            let hot = now < hot_until || self.near().next().is_some();
            let mut sleep = next.saturating_duration_since(Instant::now());
            if hot {
                sleep = sleep.min(HOT_POLL);
            }
            if self.wait(sleep.min(STOP_LATENCY)) {
                self.signalled = true;
                // The kernel signalled: poll now, and often for a moment. The v1 OOM
                // eventfd fires when the cgroup hits its limit, before the killer has
                // picked (and counted) its victim; the engine may remove a dead
                // container's cgroup soon after, taking the counter with it.
                next = Instant::now();
                hot_until = next + HOT_FOR;
            }
        }
    }

    /// Sleeps up to `timeout`, or less if the kernel signals a container; returns
    /// whether it did.
    fn wait(&self, timeout: Duration) -> bool {
        let (mut v1, mut v2) = (Vec::new(), Vec::new());
        for e in self.containers.values().filter_map(|w| w.events.as_ref()) {
            match e {
                events::Events::V1(e) => v1.extend(e.fds()),
                events::Events::V2(e) => v2.extend(e.fds()),
            }
        }
        events::wait_all(&v1, &v2, timeout)
    }

    /// The containers within reach of their limit (see [`policy::near`]).
    fn near(&self) -> impl Iterator<Item = &String> {
        self.containers.iter().filter(|(_, w)| w.near).map(|(k, _)| k)
    }

    /// Checks only the containers near their limit: they are polled every
    /// [`HOT_POLL`]. A container's cgroupfs is read-only (Kubernetes, podman), so
    /// the v1 eventfds cannot be registered there, and an engine removes a killed
    /// container's cgroup, counter and all, 100-200 ms after the kill (podman here).
    fn check_near(&mut self, now: Instant) {
        let keys: Vec<String> = self.near().cloned().collect();
        for key in keys {
            self.check(&key, now);
        }
    }

    /// One poll: rescan when due, then check every container.
    pub fn tick(&mut self) {
        // Check before rescanning: a container whose last process was just killed
        // still gets its post-mortem before it is dropped.
        let now = Instant::now();
        let keys: Vec<String> = self.containers.keys().cloned().collect();
        for key in keys {
            self.check(&key, now);
        }
        self.signalled = false;
        if self.last_rescan.is_none_or(|t| t.elapsed() >= self.cfg.rescan) {
            self.rescan();
            self.publish_trends();
        } else {
            self.discover();
        }
    }

    /// Places the processes that appeared since the last poll (a readdir of /proc,
    /// then stat and cgroup of the new pids only): a new container, or one whose
    /// cgroup was re-created, is watched afresh.
    fn discover(&mut self) {
        let Ok(pids) = self.procs.pids() else { return };
        let now = Instant::now();
        let seen = std::mem::take(&mut self.seen);
        self.seen = pids.iter().map(|&p| (p, seen.get(&p).copied().unwrap_or(now))).collect();
        let fresh: Vec<i32> =
            self.seen.iter().filter(|(_, first)| now.duration_since(**first) < YOUNG).map(|(&p, _)| p).collect();
        for (key, members) in self.group(&fresh) {
            match self.containers.get_mut(&key) {
                Some(w) if !w.stale => {
                    w.members.retain(|m| !members.iter().any(|n| n.pid == m.pid));
                    w.members.extend(members);
                }
                None if self.unlimited.contains(&key) => {}
                _ => self.watch(key, members, true),
            }
        }
    }

    /// Groups processes by their container's memory cgroup (kernel threads and
    /// processes that are gone left out).
    fn group(&self, pids: &[i32]) -> BTreeMap<String, Vec<Brief>> {
        let mut groups: BTreeMap<String, Vec<Brief>> = BTreeMap::new();
        for &pid in pids {
            let Ok(b) = self.procs.read_brief(pid) else { continue };
            if b.kernel_thread {
                continue;
            }
            let key =
                Process { cgroups: b.cgroups.clone(), ..Default::default() }.container_cgroup().map(|m| m.path.clone());
            if let Some(key) = key {
                groups.entry(key).or_default().push(b);
            }
        }
        groups
    }

    /// Re-reads processes (stat and cgroup only) and groups them into containers.
    pub fn rescan(&mut self) {
        self.last_rescan = Some(Instant::now());
        let Ok(pids) = self.procs.pids() else { return };
        let groups = self.group(&pids);
        let (now, seen) = (Instant::now(), std::mem::take(&mut self.seen));
        // At the first scan nothing is young: every process was placed just now.
        let first_seen = if seen.is_empty() { now.checked_sub(YOUNG).unwrap_or(now) } else { now };
        self.seen = pids.into_iter().map(|p| (p, seen.get(&p).copied().unwrap_or(first_seen))).collect();
        self.unlimited.clear();
        let gone: Vec<String> = self.containers.keys().filter(|k| !groups.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(w) = self.containers.remove(&key) {
                self.retire(key, w.history);
            }
        }
        for (key, members) in groups {
            match self.containers.get_mut(&key) {
                Some(w) if w.stale => self.watch(key, members, false),
                Some(w) => {
                    // A resized container (kubectl patch, in-place resize): new
                    // limit, new thresholds. Only a changed limit file is worth
                    // re-reading the container for (a v1 parent's limit changed
                    // alone goes unnoticed: Kubernetes resizes the container too).
                    let raw = w.files.limit.as_ref().and_then(|f| f.read().ok());
                    if raw.is_some() && raw == w.limit_raw {
                        w.members = members;
                        continue;
                    }
                    w.limit_raw = raw;
                    let first = &members[0];
                    let now = self.cgroups.read_container(first.pid, &first.cgroups);
                    let limit_of = |c: &Container| c.memory.as_ref().and_then(|m| m.limit_bytes).flatten();
                    let (was, is) = (limit_of(&w.container), limit_of(&now));
                    w.members = members;
                    if is.is_none() || is == was {
                        continue;
                    }
                    tracing::info!(cgroup = %key, from = ?was, to = ?is, "memory limit changed: thresholds re-armed");
                    let events = self.arm(&now);
                    if let Some(w) = self.containers.get_mut(&key) {
                        w.container = now;
                        w.events = events;
                        w.fired_warn = false;
                        w.fired_critical = false;
                        w.fired_prediction = false;
                    }
                }
                None => self.watch(key, members, false),
            }
        }
    }

    /// Starts watching a container (again, if its cgroup was re-created), if it has
    /// a memory limit.
    ///
    /// `young`: the members were just created. Then a container that reads as
    /// unlimited is not written off until the rescan: a runtime's process between
    /// fork and exec (runc init, before its pivot_root) shows a /proc/PID/root that
    /// does not lead to its container's cgroup yet.
    fn watch(&mut self, key: String, members: Vec<Brief>, young: bool) {
        let first = &members[0];
        let container = self.cgroups.read_container(first.pid, &first.cgroups);
        let limited = container.memory.as_ref().is_some_and(|m| matches!(m.limit_bytes, Some(Some(_))));
        if !limited {
            if let Some(w) = self.containers.remove(&key) {
                self.retire(key.clone(), w.history);
            }
            if !young {
                self.unlimited.insert(key);
            }
            return; // nothing to run into
        }
        // Held open: the path may lead through a member's /proc/PID/root, which
        // goes when that process does.
        let Some(m) = container.memory.as_ref() else { return };
        let Ok(dir) = open_dir(&m.location.dir) else { return };
        let Ok(files) = held::PollFiles::open(dir, m.location.version) else { return };
        let limit_raw = files.limit.as_ref().and_then(|f| f.read().ok());
        let events = self.arm(&container);
        let oom_kills = container.memory.as_ref().and_then(|m| m.oom_kill_events);
        let pids = files.pids().unwrap_or_default();
        let history = self.containers.remove(&key).map(|w| w.history).or_else(|| self.retired.remove(&key));
        let again = history.is_some();
        tracing::info!(cgroup = %key, woken_by_kernel = events.is_some(), again, oom_kills = ?oom_kills, "watching a container");
        self.containers.insert(
            key,
            Watched {
                container,
                files,
                limit_raw,
                pids,
                members,
                samples: VecDeque::new(),
                fired_warn: false,
                fired_critical: false,
                fired_prediction: false,
                last_report: None,
                last_processes: Vec::new(),
                oom_kills,
                events,
                stale: false,
                last_pct: 0.0,
                near: false,
                history: history.unwrap_or_default(),
            },
        );
    }

    /// Keeps a dropped container's history for a successor at its path, while it
    /// covers the last [`history::SPAN`]; at most [`RETIRED`], the stalest going first.
    fn retire(&mut self, key: String, history: history::History) {
        let now = Instant::now();
        self.retired.retain(|_, h| h.last_sampled().is_some_and(|t| now.duration_since(t) < history::SPAN));
        if history.is_empty() {
            return;
        }
        if self.retired.len() >= RETIRED
            && let Some(stalest) = self.retired.iter().min_by_key(|(_, h)| h.last_sampled()).map(|(k, _)| k.clone())
        {
            self.retired.remove(&stalest);
        }
        self.retired.insert(key, history);
    }

    /// v1: eventfds at the thresholds and on OOM; v2: a PSI trigger and
    /// memory.events. `None` (polling only) where the cgroupfs is read-only.
    fn arm(&self, c: &Container) -> Option<events::Events> {
        let m = c.memory.as_ref()?;
        let Some(Some(limit)) = m.limit_bytes else { return None };
        match m.location.version {
            CgroupVersion::V1 => {
                let at = |pct: f64| (limit as f64 * pct / 100.0) as u64;
                let thresholds = [at(self.cfg.warn_pct), at(self.cfg.critical_pct)];
                events::V1Events::register(&m.location.dir, &thresholds).ok().map(events::Events::V1)
            }
            CgroupVersion::V2 => {
                events::V2Events::register(&m.location.dir, &self.cfg.psi_trigger).ok().map(events::Events::V2)
            }
        }
    }

    fn check(&mut self, key: &str, now: Instant) {
        let cfg = self.cfg.clone();
        let signalled = self.signalled;
        let Some(w) = self.containers.get_mut(key) else { return };
        let woken = signalled && w.events.as_ref().is_some_and(events::Events::drain);
        let Some(Some(Some(limit))) = w.container.memory.as_ref().map(|m| m.limit_bytes) else { return };
        // Below every trigger, memory.stat (the working set) is read only for the
        // history's sample of the second: the working set is at most the usage.
        let light_below = cfg.warn_pct.min(PREDICT_FROM_PCT) - HYSTERESIS_PCT;
        let due = w.history.due(now);
        let Some(polled) = poll_memory(&w.files, limit, light_below, due || w.last_pct >= light_below) else {
            w.stale = w.files.pids().is_none();
            if w.stale && w.last_pct > 0.0 {
                tracing::info!(cgroup = %key, last_pct = w.last_pct, kills = ?w.oom_kills, "cgroup removed");
            }
            w.last_pct = 0.0;
            w.near = false;
            return;
        };
        let before = std::mem::replace(&mut w.pids, w.files.pids().unwrap_or_default());
        match polled.working_set_bytes {
            Some(ws) => {
                let extras = due.then(|| sample_extras(&self.procs, w));
                record(w, now, &polled, ws, extras, cfg.window);
                w.last_pct = ws as f64 * 100.0 / limit.max(1) as f64;
                w.near = near(w.last_pct, ws, limit, growth_per_sec(&w.samples));
            }
            None => {
                // A light poll, below every trigger: only the kill counter matters.
                w.last_pct = polled.usage_bytes as f64 * 100.0 / limit.max(1) as f64;
                w.near = false;
                (w.fired_warn, w.fired_critical, w.fired_prediction) = (false, false, false);
            }
        }
        let ws = polled.working_set_bytes.unwrap_or(polled.usage_bytes);
        if let (Some(was), Some(is)) = (w.oom_kills, polled.oom_kills)
            && is > was
        {
            w.oom_kills = polled.oom_kills;
            self.post_mortem(key, ws, limit, (is - was, is), before);
            return;
        }
        w.oom_kills = polled.oom_kills.or(w.oom_kills);
        if polled.working_set_bytes.is_none() {
            return;
        }
        let decision = decide(w, now, ws, limit, &cfg);
        if let Some(d) = decision {
            let source = if woken { "event" } else { "poll" };
            self.pre_oom(key, ws, limit, d, source);
        }
    }

    fn pre_oom(&mut self, key: &str, ws: u64, limit: u64, decision: Decision, source: &str) {
        let started = Instant::now();
        let Some(w) = self.containers.get_mut(key) else { return };
        let growth = growth_per_sec(&w.samples);
        let (event, eta_msec) = match decision {
            Decision::Threshold => {
                ("threshold", (growth > 0.0).then(|| (limit.saturating_sub(ws) as f64 * 1000.0 / growth) as u64))
            }
            Decision::Prediction { eta } => ("prediction", Some(eta.as_millis() as u64)),
        };
        let trigger = v1::Trigger {
            event: event.into(),
            source: source.into(),
            working_set_bytes: Some(ws),
            limit_bytes: Some(limit),
            usage_pct: ws as f64 * 100.0 / limit as f64,
            growth_bytes_per_sec: growth,
            predicted_oom_in_msec: eta_msec,
        };
        let mut report = capture::report(&self.procs, &self.cgroups, w, v1::ReportKind::PreOom, trigger);
        report.capture_usec = started.elapsed().as_micros() as u64;
        // Announced whatever the disk says: a report it refused is kept in memory
        // (the store logs what it could not keep).
        let _ = self.store.write(&report);
        w.last_report = Some((Instant::now(), report.id.clone()));
        self.announce(&report);
        if let Some(w) = self.containers.get_mut(key) {
            w.last_processes = report.processes;
        }
    }

    /// `before`: the container's pids at the poll before the kill.
    fn post_mortem(&mut self, key: &str, ws: u64, limit: u64, (kills, oom_kills): (u64, u64), before: Vec<i32>) {
        let started = Instant::now();
        let Some(w) = self.containers.get_mut(key) else { return };
        let trigger = v1::Trigger {
            event: "oom_kill".into(),
            source: "poll".into(),
            working_set_bytes: Some(ws),
            limit_bytes: Some(limit),
            usage_pct: ws as f64 * 100.0 / limit as f64,
            ..Default::default()
        };
        // The victims: in the cgroup at the last poll, gone from it now. The counter
        // rises when the killer picks its victim, which may still be exiting: give
        // it a moment to go.
        let deadline = Instant::now() + VICTIM_WAIT;
        let gone = loop {
            let now: Vec<i32> = w.files.pids().unwrap_or_default();
            let gone: Vec<i32> = before.iter().copied().filter(|p| !now.contains(p)).collect();
            if !gone.is_empty() || Instant::now() >= deadline {
                w.pids = now;
                break gone;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let known: Vec<v1::ReportProcess> =
            w.last_processes.iter().cloned().chain(w.members.iter().map(capture::brief_process)).collect();
        let victims: Vec<v1::ReportProcess> = gone
            .iter()
            .map(|&pid| {
                known.iter().find(|p| p.pid == pid).cloned().unwrap_or(v1::ReportProcess { pid, ..Default::default() })
            })
            .collect();
        let mut report = capture::report(&self.procs, &self.cgroups, w, v1::ReportKind::PostMortem, trigger);
        report.victims = victims;
        // The counter as the poll read it through the held directory, whatever the
        // re-read could reach.
        if let Some(m) = report.memory.as_mut() {
            m.oom_kill_events = Some(oom_kills);
        }
        report.previous_report_id = w.last_report.as_ref().map(|(_, id)| id.clone()).unwrap_or_default();
        report.unavailable.push(v1::Unavailable {
            field: "oom_kill_events".into(),
            reason: format!("rose by {kills} since the previous poll"),
            path: String::new(),
        });
        let peak_bytes = report.memory.as_ref().and_then(|m| m.peak_bytes);
        let victim = report.victims.first().map(|v| v.comm.clone()).unwrap_or_else(|| "?".into());
        let now = Instant::now();
        self.kills.record(key, kills::Kill { at: now, peak_bytes, victim });
        if let Some(f) = self.kills.finding(&w.container, key, limit, now) {
            report.findings.insert(0, convert::findings(std::slice::from_ref(&f)).remove(0));
        }
        report.capture_usec = started.elapsed().as_micros() as u64;
        w.fired_warn = false;
        w.fired_critical = false;
        w.fired_prediction = false;
        tracing::info!(cgroup = %key, kills, victims = report.victims.len(), "OOM kill: post-mortem");
        let _ = self.store.write(&report);
        self.announce(&report);
    }
}

/// What the cheap poll reads.
struct Polled {
    usage_bytes: u64,
    /// `None` for a light poll (see [`poll_memory`]).
    working_set_bytes: Option<u64>,
    anon_bytes: Option<u64>,
    file_bytes: Option<u64>,
    oom_kills: Option<u64>,
}

/// The cheap poll through the held files: usage and the OOM-kill counter; the
/// working set, anon and file too when `full` or the usage is at `light_below`%
/// of the limit or more.
fn poll_memory(files: &held::PollFiles, limit: u64, light_below: f64, full: bool) -> Option<Polled> {
    let usage = files::single_u64(&files.usage.read().ok()?).ok()?;
    let oom = files.oom.as_ref().and_then(|f| f.read().ok());
    let oom_kills = oom.and_then(|b| files::flat_keyed(&b).ok()).and_then(|m| m.get("oom_kill").copied());
    let mut polled =
        Polled { usage_bytes: usage, working_set_bytes: None, anon_bytes: None, file_bytes: None, oom_kills };
    if !full && (usage as f64 * 100.0 / limit.max(1) as f64) < light_below {
        return Some(polled);
    }
    let [inactive, anon, file] = match files.version {
        CgroupVersion::V1 => ["total_inactive_file", "total_rss", "total_cache"],
        CgroupVersion::V2 => ["inactive_file", "anon", "file"],
    };
    let stat = files::flat_keyed(&files.stat.read().ok()?).ok()?;
    polled.working_set_bytes = Some(working_set(Some(usage), stat.get(inactive).copied())?);
    polled.anon_bytes = stat.get(anon).copied();
    polled.file_bytes = stat.get(file).copied();
    Some(polled)
}

/// What the ring takes once a second besides the cgroup's counters.
#[derive(Default)]
struct Extras {
    top: [Option<(i32, u64)>; history::TOP],
    fd_count: Option<u32>,
    pressure_some_avg10: Option<f32>,
}

fn sample_extras(procs: &ProcReader, w: &Watched) -> Extras {
    let (top, fd_count) = sample_processes(procs, &w.pids);
    Extras { top, fd_count, pressure_some_avg10: w.files.pressure_some_avg10().map(|p| p as f32) }
}

/// A full poll's working set into the ring (its second's peak) and the growth window.
fn record(w: &mut Watched, now: Instant, polled: &Polled, ws: u64, extras: Option<Extras>, window: Duration) {
    let extras = extras.unwrap_or_default();
    w.history.offer(
        now,
        history::Sample {
            at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            working_set_bytes: ws,
            anon_bytes: polled.anon_bytes,
            file_bytes: polled.file_bytes,
            top: extras.top,
            fd_count: extras.fd_count,
            pressure_some_avg10: extras.pressure_some_avg10,
        },
    );
    w.samples.push_back((now, ws));
    while w.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
        w.samples.pop_front();
    }
}

/// Past this many processes a container's second has no per-process columns: the
/// poll's cost stays bounded whatever a container forks.
const MAX_SAMPLED_PROCESSES: usize = 256;

/// The biggest processes by RSS, and the fds of all (`None` if any was unreadable).
fn sample_processes(procs: &ProcReader, pids: &[i32]) -> ([Option<(i32, u64)>; history::TOP], Option<u32>) {
    let mut top = [None; history::TOP];
    if pids.len() > MAX_SAMPLED_PROCESSES {
        return (top, None);
    }
    let mut read: Vec<(i32, u64, Option<u64>)> =
        pids.iter().filter_map(|&pid| procs.rss_and_fds(pid).ok().map(|(rss, fds)| (pid, rss, fds))).collect();
    let fds = read.iter().map(|r| r.2).sum::<Option<u64>>().map(|n| n.min(u32::MAX as u64) as u32);
    read.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (slot, r) in top.iter_mut().zip(&read) {
        *slot = Some((r.0, r.1));
    }
    (top, fds)
}
