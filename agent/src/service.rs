//! The agent's API: [`Agent`] answers osl.v1 requests (used in-process by
//! `kubectl-osl --local`), and [`DiagnosticsService`] serves it over gRPC.

use crate::convert;
use crate::error::{AgentError, Result};
use crate::findings;
use crate::model::Filter;
use crate::probe::{Level, Privileges, probe};
use crate::proc::ProcReader;
use crate::profile::{self, Profiles};
use crate::snapshot::{Collector, Roots};
use crate::trend::FdSampler;
use crate::watch::store::Store;
use osl_proto::v1;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest syscall profile, unless the agent is told otherwise.
pub const DEFAULT_MAX_PROFILE: Duration = Duration::from_secs(60);
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub struct Agent {
    collector: Collector,
    privileges: Privileges,
    own: ProcReader,
    started: Instant,
    /// The fd-count history, when the agent samples in the background (not `--local`).
    sampler: Option<Arc<FdSampler>>,
    /// The pre-OOM reports, when the watcher runs.
    reports: Option<Arc<Store>>,
    /// The containers' memory trends, when the watcher runs.
    trends: Option<crate::watch::Trends>,
    profiles: Profiles,
}

impl Agent {
    pub fn new(roots: &Roots) -> Self {
        let privileges = probe(&roots.proc);
        Self {
            collector: Collector::new(roots, privileges.level >= Level::Ptrace),
            privileges,
            own: ProcReader::default(),
            started: Instant::now(),
            sampler: None,
            reports: None,
            trends: None,
            profiles: Profiles::new(DEFAULT_MAX_PROFILE, 4),
        }
    }

    /// Caps profiles at `max_duration`, at most `max_concurrent` at once.
    pub fn with_profile_limits(mut self, max_duration: Duration, max_concurrent: usize) -> Self {
        self.profiles = Profiles::new(max_duration, max_concurrent.max(1));
        self
    }

    /// `strace -c` for a process or a container's processes. `progress` gets a
    /// tick at the requested interval and `None` in between; when it returns
    /// false (the client went away) the profile ends early and every thread is
    /// detached.
    pub fn profile_syscalls(
        &self,
        req: v1::ProfileSyscallsRequest,
        progress: impl FnMut(Option<v1::ProfileProgress>) -> bool,
    ) -> Result<v1::SyscallProfile> {
        self.profile_syscalls_after_scan(req, || (), progress)
    }

    /// [`Agent::profile_syscalls`], calling `scanned` once the processes to trace
    /// are known (the server holds a reader's turn until then).
    pub fn profile_syscalls_after_scan(
        &self,
        req: v1::ProfileSyscallsRequest,
        scanned: impl FnOnce(),
        mut progress: impl FnMut(Option<v1::ProfileProgress>) -> bool,
    ) -> Result<v1::SyscallProfile> {
        let me = std::process::id() as i32;
        let duration = Duration::from_millis(if req.duration_msec == 0 { 5000 } else { req.duration_msec.into() });
        let tick = Duration::from_millis(if req.progress_msec == 0 { 1000 } else { req.progress_msec.max(100).into() });
        let slowest = if req.slowest == 0 { 10 } else { req.slowest as usize };
        if slowest > profile::counts::SLOWEST_KEPT {
            return Err(AgentError::InvalidArgument(format!(
                "at most {} slowest calls; asked {slowest}",
                profile::counts::SLOWEST_KEPT
            )));
        }
        let time_one_in = req.time_one_in.max(1);
        if !time_one_in.is_power_of_two() || time_one_in > profile::MAX_SAMPLE {
            return Err(AgentError::InvalidArgument(format!(
                "time_one_in must be a power of two up to {}; asked {time_one_in}",
                profile::MAX_SAMPLE
            )));
        }
        let asked = v1::ProfileBackend::try_from(req.backend)
            .map_err(|_| AgentError::InvalidArgument(format!("unknown backend {}", req.backend)))?;
        let (backend, reason) = profile::choose(asked, &self.privileges)?;
        let container = if req.pid == 0 && !req.container_id.is_empty() {
            filter_from(Some(v1::Filter { container_id: req.container_id.clone(), pids: vec![] }))?
        } else {
            Filter::default()
        };
        let members = |filter: &Filter| -> Result<Vec<i32>> {
            let (procs, _) = self.collector.processes(filter)?;
            Ok(procs.iter().filter(|p| p.pid != me && !p.kernel_thread).map(|p| p.pid).collect())
        };
        let (pids, subject, pid) = if req.pid != 0 {
            if req.pid == me {
                return Err(AgentError::InvalidArgument("the agent does not profile itself".into()));
            }
            let p = self.collector.process(req.pid, req.start_time_ticks)?;
            (vec![p.pid], findings::process_subject(&p), Some(p.pid))
        } else if container.container_id.is_some() {
            let pids = members(&container)?;
            (pids, format!("container {}", req.container_id), None)
        } else {
            return Err(AgentError::InvalidArgument("profile what? give a pid or a container id".into()));
        };
        scanned();
        let root = self.collector.proc_reader().root().to_path_buf();
        // A zombie has exited (its /proc entry lasts until its parent reaps it).
        let alive = |p: i32| self.collector.proc_reader().read_brief(p).is_ok_and(|b| !b.dead);
        let more = || if container.container_id.is_some() { members(&container).unwrap_or_default() } else { vec![] };
        let fallback = asked == v1::ProfileBackend::Unspecified;
        let plan = profile::Plan {
            pids,
            backend,
            duration,
            tick_every: tick,
            fallback,
            proc_root: root.clone(),
            time_one_in,
            ptrace_refused: self.privileges.ptrace_refusal().to_string(),
        };
        let outcome = self.profiles.run(plan, alive, more, |p| {
            progress(p.map(|p| v1::ProfileProgress {
                elapsed_msec: p.elapsed.as_millis() as u64,
                duration_msec: duration.as_millis() as u64,
                calls: p.calls,
                errors: p.errors,
            }))
        })?;
        let (backend, reason) = match &outcome.fell_back {
            Some(why) => (profile::Backend::Ptrace, profile::fallback_reason(why)),
            None => (backend, reason),
        };
        let summary = profile::summary::summarize(&outcome.counts, slowest);
        let found = profile::findings::evaluate(&summary, outcome.elapsed, &subject, pid);
        let comm = |pid: i32, tid: i32| -> Vec<u8> {
            let mut c = std::fs::read(root.join(format!("{pid}/task/{tid}/comm"))).unwrap_or_default();
            if c.last() == Some(&b'\n') {
                c.pop();
            }
            c
        };
        let parts = convert::ProfileParts {
            outcome: &outcome,
            summary: &summary,
            backend,
            backend_reason: reason,
            threads: req.threads,
            findings: found,
        };
        Ok(convert::syscall_profile(parts, comm, self.info()))
    }

    /// Samples what each thread of a process is blocked in.
    pub fn sample_blocked(&self, req: v1::SampleBlockedRequest) -> Result<v1::SampleBlockedResponse> {
        const MAX_DURATION_MSEC: u32 = 60_000;
        const MAX_RATE_HZ: u32 = 1000;
        let duration = if req.duration_msec == 0 { 2000 } else { req.duration_msec };
        let rate = if req.rate_hz == 0 { 100 } else { req.rate_hz };
        if duration > MAX_DURATION_MSEC || rate > MAX_RATE_HZ {
            return Err(AgentError::InvalidArgument(format!(
                "sampling is capped at {MAX_DURATION_MSEC} ms and {MAX_RATE_HZ} Hz (asked {duration} ms at {rate} Hz)"
            )));
        }
        let p = self.collector.process(req.pid, req.start_time_ticks)?;
        let dir = self.collector.proc_reader().root().join(p.pid.to_string());
        let sampled = crate::blocked::sample(&dir, std::time::Duration::from_millis(duration.into()), rate).map_err(
            |e| match e {
                crate::error::ReadError::Gone { .. } => AgentError::ProcessNotFound { pid: req.pid },
                e => e.into(),
            },
        )?;
        Ok(convert::blocked(&sampled, self.info()))
    }

    /// Serves the reports a watcher writes to `store`.
    pub fn with_reports(mut self, store: Arc<Store>) -> Self {
        self.reports = Some(store);
        self
    }

    /// Diagnose shows each container's memory trend, as the watcher publishes it.
    pub fn with_trends(mut self, trends: crate::watch::Trends) -> Self {
        self.trends = Some(trends);
        self
    }

    pub fn list_reports(&self, _req: v1::ListReportsRequest) -> Result<v1::ListReportsResponse> {
        Ok(match &self.reports {
            Some(store) => {
                v1::ListReportsResponse { reports: store.list(), directory: store.dir().to_string_lossy().into_owned() }
            }
            None => v1::ListReportsResponse::default(),
        })
    }

    pub fn get_report(&self, req: v1::GetReportRequest) -> Result<v1::GetReportResponse> {
        let store = self.reports.as_ref().ok_or(AgentError::WatcherOff)?;
        Ok(v1::GetReportResponse { report: Some(store.get(&req.id)?) })
    }

    /// Keeps an fd-count history for trends; [`Agent::sample_fds`] feeds it.
    pub fn with_fd_sampler(mut self, sampler: FdSampler) -> Self {
        self.sampler = Some(Arc::new(sampler));
        self
    }

    /// Takes one fd-count sample of every process (a no-op without a sampler).
    pub fn sample_fds(&self) {
        if let Some(s) = &self.sampler {
            s.sample(self.collector.proc_reader());
        }
    }

    pub fn privileges(&self) -> &Privileges {
        &self.privileges
    }

    pub fn info(&self) -> v1::AgentInfo {
        let own = self.own.read(std::process::id() as i32).ok();
        convert::agent_info(&self.privileges, own.as_ref(), self.started.elapsed().as_millis() as u64)
    }

    pub fn diagnose(&self, req: v1::DiagnoseRequest) -> Result<v1::DiagnoseResponse> {
        const MAX_SAMPLE_MSEC: u32 = 5000;
        if req.blocked_sample_msec > MAX_SAMPLE_MSEC {
            return Err(AgentError::InvalidArgument(format!(
                "the blocked-on sample inside diagnose is capped at {MAX_SAMPLE_MSEC} ms (asked {}); \
                 use SampleBlocked for longer",
                req.blocked_sample_msec
            )));
        }
        let snapshot = self.collector.snapshot(&filter_from(req.filter)?, self.sampler.as_deref())?;
        let mut resp = convert::snapshot(&snapshot, self.info());
        if let Some(trends) = &self.trends {
            let trends = trends.lock().unwrap_or_else(|p| p.into_inner());
            for c in &mut resp.containers {
                let path = c.memory.as_ref().and_then(|m| m.location.as_ref()).map(|l| l.path.as_str());
                if let Some(t) = path.and_then(|p| trends.get(p)) {
                    c.memory_trend = t.clone();
                }
            }
        }
        if req.blocked_sample_msec > 0 {
            let root = self.collector.proc_reader().root();
            let duration = Duration::from_millis(req.blocked_sample_msec.into());
            let me = std::process::id() as i32;
            let pids: Vec<i32> =
                snapshot.processes.iter().filter(|p| !p.kernel_thread && p.pid != me).map(|p| p.pid).collect();
            let samples = crate::blocked::sample_all(root, &pids, duration, 100);
            for p in &mut resp.processes {
                if let Some(Ok(s)) = samples.get(&p.pid) {
                    p.blocked = convert::blocked(s, v1::AgentInfo::default()).total;
                }
            }
        }
        Ok(resp)
    }

    pub fn list_processes(&self, req: v1::ListProcessesRequest) -> Result<v1::ListProcessesResponse> {
        let taken_at_unix_ms = now_unix_ms();
        let (processes, unavailable) = self.collector.processes(&filter_from(req.filter)?)?;
        Ok(v1::ListProcessesResponse {
            agent: Some(self.info()),
            taken_at_unix_ms,
            processes: processes.iter().map(convert::process).collect(),
            unavailable: unavailable.iter().map(convert::unavailable).collect(),
        })
    }

    pub fn get_process(&self, req: v1::GetProcessRequest) -> Result<v1::GetProcessResponse> {
        let p = self.collector.process(req.pid, req.start_time_ticks)?;
        let findings = findings::evaluate(std::slice::from_ref(&p), &[]);
        Ok(v1::GetProcessResponse {
            agent: Some(self.info()),
            process: Some(convert::process(&p)),
            findings: convert::findings(&findings),
        })
    }

    pub fn list_fds(&self, req: v1::ListFdsRequest) -> Result<v1::ListFdsResponse> {
        let kinds: Vec<v1::FdKind> = enum_list(&req.kinds, "kind")?;
        let states: Vec<v1::TcpState> = enum_list(&req.tcp_states, "tcp state")?;
        let detail = match v1::FdInfoLevel::try_from(req.fdinfo) {
            Ok(v1::FdInfoLevel::Unspecified | v1::FdInfoLevel::Full) => crate::fds::Detail::default(),
            Ok(v1::FdInfoLevel::Table) => crate::fds::Detail::table(),
            Err(_) => return Err(AgentError::InvalidArgument(format!("unknown fdinfo level {}", req.fdinfo))),
        };
        let (mut p, table) =
            self.collector.process_fds(req.pid, req.start_time_ticks, self.sampler.as_deref(), detail)?;
        // A one-off read (--local) has no history; a running agent says why it has no trend yet.
        if p.fd_trend.is_none() && p.fd_summary.is_some() && self.sampler.is_some() {
            p.unavailable.push(crate::model::Unavailable::new(
                "fd_trend",
                "not enough samples yet: the agent samples fd counts in the background",
            ));
        }
        let findings = findings::evaluate(std::slice::from_ref(&p), &[]);
        let fds = table
            .iter()
            .flat_map(|t| &t.fds)
            .map(convert::fd)
            .filter(|fd| kinds.is_empty() || kinds.iter().any(|&k| k as i32 == fd.kind))
            .filter(|fd| {
                states.is_empty()
                    || fd.socket.as_ref().is_some_and(|s| states.iter().any(|&st| st as i32 == s.tcp_state))
            })
            .collect();
        Ok(v1::ListFdsResponse {
            agent: Some(self.info()),
            unavailable: p.unavailable.iter().map(convert::unavailable).collect(),
            process: Some(convert::process(&p)),
            fds,
            findings: convert::findings(&findings),
        })
    }
}

/// Known values of a repeated enum field, or INVALID_ARGUMENT naming the unknown one.
fn enum_list<E: TryFrom<i32>>(values: &[i32], what: &str) -> Result<Vec<E>> {
    values
        .iter()
        .map(|&v| E::try_from(v).map_err(|_| AgentError::InvalidArgument(format!("unknown {what} {v}"))))
        .collect()
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Validates a request's filter.
fn filter_from(filter: Option<v1::Filter>) -> Result<Filter> {
    let f = filter.unwrap_or_default();
    if let Some(bad) = f.pids.iter().find(|&&p| p <= 0) {
        return Err(AgentError::InvalidArgument(format!("pid {bad} is not a process id")));
    }
    let id = f.container_id.trim().to_ascii_lowercase();
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() > 64 {
        return Err(AgentError::InvalidArgument(format!(
            "container id {:?} is not a hex container id (or a prefix of one)",
            f.container_id
        )));
    }
    Ok(Filter { pids: f.pids, container_id: (!id.is_empty()).then_some(id) })
}

/// osl.v1.Diagnostics over gRPC. Reads run on the blocking pool: /proc reads block.
#[derive(Debug, Clone)]
pub struct DiagnosticsService {
    agent: Arc<Agent>,
    /// Reads running at once; the rest wait their turn. Fifty clients at once
    /// would otherwise be fifty snapshots sharing the CPUs, each with its own
    /// buffers: the agent's memory would follow the number of clients. A turn is
    /// held by the blocking work itself, so a client that gives up (a deadline,
    /// RST_STREAM) frees it only when the work is done.
    readers: Arc<Semaphore>,
    /// SampleBlocked calls at once: mostly asleep, so apart from the readers.
    samplers: Arc<Semaphore>,
    /// Diagnose calls in flight, by request: identical ones share one snapshot.
    diagnosing: Arc<Mutex<HashMap<Vec<u8>, Arc<Flight>>>>,
}

type Flight = tokio::sync::OnceCell<Result<Arc<v1::DiagnoseResponse>, Status>>;

/// How many requests read /proc at once.
pub const CONCURRENT_READS: usize = 4;
/// How many SampleBlocked calls run at once.
pub const CONCURRENT_SAMPLES: usize = 4;
/// How long the last message of a profile waits for a stalled client.
const LAST_SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl DiagnosticsService {
    pub fn new(agent: Arc<Agent>) -> Self {
        Self {
            agent,
            readers: Arc::new(Semaphore::new(CONCURRENT_READS)),
            samplers: Arc::new(Semaphore::new(CONCURRENT_SAMPLES)),
            diagnosing: Arc::default(),
        }
    }

    async fn turn(&self, of: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Status> {
        of.clone().acquire_owned().await.map_err(|_| Status::unavailable("the agent is stopping"))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let turn = self.turn(&self.readers).await?;
        blocking(move || {
            let _turn = turn;
            f()
        })
        .await
    }

    /// One snapshot for every identical Diagnose in flight. If the caller that
    /// takes it gives up, the next waiter takes a snapshot of its own.
    async fn diagnose_shared(&self, req: v1::DiagnoseRequest) -> Result<Response<v1::DiagnoseResponse>, Status> {
        let key = prost::Message::encode_to_vec(&req);
        let flight = {
            let mut map = self.diagnosing.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let shared = flight
            .get_or_init(|| async {
                let agent = self.agent.clone();
                self.blocking(move || agent.diagnose(req)).await.map(|r| Arc::new(r.into_inner()))
            })
            .await
            .clone();
        {
            let mut map = self.diagnosing.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                map.remove(&key);
            }
        }
        shared.map(|r| Response::new((*r).clone()))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<Response<T>, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(Response::new(v)),
        Ok(Err(e)) => Err(convert::status_from(&e)),
        Err(e) => Err(Status::internal(format!("the request's reader failed: {e}"))),
    }
}

#[tonic::async_trait]
impl v1::diagnostics_server::Diagnostics for DiagnosticsService {
    async fn diagnose(&self, req: Request<v1::DiagnoseRequest>) -> Result<Response<v1::DiagnoseResponse>, Status> {
        self.diagnose_shared(req.into_inner()).await
    }

    async fn list_processes(
        &self,
        req: Request<v1::ListProcessesRequest>,
    ) -> Result<Response<v1::ListProcessesResponse>, Status> {
        let agent = self.agent.clone();
        self.blocking(move || agent.list_processes(req.into_inner())).await
    }

    async fn get_process(
        &self,
        req: Request<v1::GetProcessRequest>,
    ) -> Result<Response<v1::GetProcessResponse>, Status> {
        let agent = self.agent.clone();
        self.blocking(move || agent.get_process(req.into_inner())).await
    }

    async fn list_fds(&self, req: Request<v1::ListFdsRequest>) -> Result<Response<v1::ListFdsResponse>, Status> {
        let agent = self.agent.clone();
        self.blocking(move || agent.list_fds(req.into_inner())).await
    }

    async fn list_reports(
        &self,
        req: Request<v1::ListReportsRequest>,
    ) -> Result<Response<v1::ListReportsResponse>, Status> {
        let agent = self.agent.clone();
        self.blocking(move || agent.list_reports(req.into_inner())).await
    }

    async fn sample_blocked(
        &self,
        req: Request<v1::SampleBlockedRequest>,
    ) -> Result<Response<v1::SampleBlockedResponse>, Status> {
        let agent = self.agent.clone();
        let turn = self.turn(&self.samplers).await?;
        blocking(move || {
            let _turn = turn;
            agent.sample_blocked(req.into_inner())
        })
        .await
    }

    type ProfileSyscallsStream = tokio_stream::wrappers::ReceiverStream<Result<v1::ProfileSyscallsEvent, Status>>;

    async fn profile_syscalls(
        &self,
        req: Request<v1::ProfileSyscallsRequest>,
    ) -> Result<Response<Self::ProfileSyscallsStream>, Status> {
        use v1::profile_syscalls_event::Event;
        let agent = self.agent.clone();
        // The scan that finds the processes to trace is a read like any other.
        let turn = self.turn(&self.readers).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let ticks = tx.clone();
            // A tick that cannot be queued is skipped; a closed stream ends the profile.
            let progress = move |p: Option<v1::ProfileProgress>| match p {
                None => !ticks.is_closed(),
                Some(p) => !matches!(
                    ticks.try_send(Ok(v1::ProfileSyscallsEvent { event: Some(Event::Progress(p)) })),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
                ),
            };
            let last = match agent.profile_syscalls_after_scan(req.into_inner(), move || drop(turn), progress) {
                Ok(profile) => Ok(v1::ProfileSyscallsEvent { event: Some(Event::Profile(profile)) }),
                Err(e) => Err(convert::status_from(&e)),
            };
            // A client that stopped reading does not hold this thread forever.
            if runtime.block_on(tokio::time::timeout(LAST_SEND_TIMEOUT, tx.send(last))).is_err() {
                tracing::warn!("a profile's client stopped reading; its result is dropped");
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn get_report(&self, req: Request<v1::GetReportRequest>) -> Result<Response<v1::GetReportResponse>, Status> {
        let agent = self.agent.clone();
        self.blocking(move || agent.get_report(req.into_inner())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        assert!(filter_from(None).unwrap().is_empty());
        let bad_pid = v1::Filter { pids: vec![0], ..Default::default() };
        assert!(matches!(filter_from(Some(bad_pid)), Err(AgentError::InvalidArgument(_))));
        let bad_id = v1::Filter { container_id: "../etc".into(), ..Default::default() };
        assert!(matches!(filter_from(Some(bad_id)), Err(AgentError::InvalidArgument(_))));
        let ok = v1::Filter { container_id: "3F2A".into(), pids: vec![4] };
        assert_eq!(filter_from(Some(ok)).unwrap(), Filter { pids: vec![4], container_id: Some("3f2a".into()) });
    }
}
