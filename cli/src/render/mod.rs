//! Output: tables for people (sized to the terminal, findings coloured by
//! severity, NO_COLOR and pipes respected), JSON and YAML for scripts (the
//! osl.v1 messages themselves, so the shape is the versioned contract).
//!
//! Every table renderer draws the answer through [`View::text`], which first
//! escapes every string in it ([`escape`]): the text comes from the pod's
//! processes, and a terminal must not act on it. JSON and YAML stay the raw data.

pub mod escape;
mod fds;
mod reports;
mod scan;
mod syscalls;
mod tables;
mod units;

use crate::args::{Output, ProfileBy};
use crate::error::CliError;
use anstyle::{AnsiColor, Style};
use osl_proto::enum_names;
use osl_proto::v1;
use std::io::{IsTerminal, Write};

/// One pod's answer in a workload's diagnose (or why there is none).
pub struct PodAnswer {
    pub pod: String,
    pub namespace: String,
    pub answer: Result<v1::DiagnoseResponse, CliError>,
}

pub struct View {
    output: Output,
    /// Tables list kernel threads too (`--all`).
    kernel_threads: bool,
    /// Terminal width when stdout is a terminal; tables are not wrapped for pipes.
    width: Option<u16>,
}

impl View {
    pub fn detect(output: Output) -> Self {
        // COLUMNS wins over the terminal's own size, as for ls and ps.
        let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c: &u16| c > 0);
        let width = std::io::stdout()
            .is_terminal()
            .then(|| columns.or_else(|| terminal_size::terminal_size().map(|(w, _)| w.0)))
            .flatten();
        Self { output, width, kernel_threads: false }
    }

    /// Tables list kernel threads too.
    pub fn with_kernel_threads(mut self, shown: bool) -> Self {
        self.kernel_threads = shown;
        self
    }

    /// The processes a table lists: without kernel threads unless asked, and how
    /// many were left out.
    fn listed<'a>(&self, processes: &'a [v1::Process]) -> (std::borrow::Cow<'a, [v1::Process]>, usize) {
        let hidden = if self.kernel_threads { 0 } else { processes.iter().filter(|p| p.kernel_thread).count() };
        if hidden == 0 {
            return (std::borrow::Cow::Borrowed(processes), 0);
        }
        (processes.iter().filter(|p| !p.kernel_thread).cloned().collect(), hidden)
    }

    fn wide(&self) -> bool {
        self.output == Output::Wide
    }

    pub fn output(&self) -> Output {
        self.output
    }

    /// JSON or YAML of `resp` as it is; for a table, `draw` of `resp` escaped.
    fn show<T>(&self, resp: &T, draw: impl FnOnce(&Self, &T) -> String) -> Result<(), CliError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Clone,
    {
        if let Some(r) = self.structured(resp) {
            return r;
        }
        write(&self.text(resp, draw)?)
    }

    /// The one way into the table renderers: each draws an answer whose every
    /// string ([`escape::message`]) has had its control and bidi characters
    /// escaped, so no text from the pod reaches the terminal raw.
    fn text<T, O>(&self, resp: &T, draw: impl FnOnce(&Self, &T) -> O) -> Result<O, CliError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Clone,
    {
        let escaped = escape::message(resp).map_err(|e| CliError::Agent {
            message: format!("cannot draw the answer as a table ({e}); -o json shows it"),
        })?;
        Ok(draw(self, &escaped))
    }

    pub fn processes(&self, resp: &v1::ListProcessesResponse) -> Result<(), CliError> {
        self.show(resp, Self::processes_text)
    }

    fn processes_text(&self, resp: &v1::ListProcessesResponse) -> String {
        let mut out = String::new();
        let (processes, hidden) = self.listed(&resp.processes);
        out.push_str(&tables::processes(&processes, self.wide(), self.width));
        out.push('\n');
        hidden_note(&mut out, hidden);
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &processes, None);
        out
    }

    pub fn diagnose(&self, resp: &v1::DiagnoseResponse) -> Result<(), CliError> {
        self.show(resp, Self::diagnose_text)
    }

    fn diagnose_text(&self, resp: &v1::DiagnoseResponse) -> String {
        let mut out = String::new();
        findings(&mut out, &resp.findings);
        if !resp.containers.is_empty() {
            out.push_str(&heading("CONTAINERS"));
            out.push_str(&tables::containers(&resp.containers, self.wide(), self.width));
            out.push_str("\n\n");
            let trends = tables::memory_trends(&resp.containers);
            if !trends.is_empty() {
                out.push_str(&heading("MEMORY TREND"));
                out.push_str(&trends);
                out.push('\n');
            }
        }
        let (processes, hidden) = self.listed(&resp.processes);
        out.push_str(&heading("PROCESSES"));
        out.push_str(&tables::processes(&processes, self.wide(), self.width));
        out.push_str("\n\n");
        if processes.iter().any(|p| p.blocked.is_some()) {
            out.push_str(&heading("BLOCKED IN (sampled from /proc, no stops)"));
            out.push_str(&blocked_table(&processes, self.wide(), self.width));
            out.push_str("\n\n");
        }
        if processes.iter().any(|p| p.fd_summary.is_some()) {
            out.push_str(&heading("FILE DESCRIPTORS"));
            out.push_str(&fds::summaries(&processes, self.wide(), self.width));
            out.push('\n');
            if let Some(t) = &resp.fd_totals {
                out.push_str(&format!("pod total: {}\n", fds::summary_line(t)));
            }
            out.push('\n');
        }
        hidden_note(&mut out, hidden);
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &processes, Some(resp.capture_usec));
        out
    }

    pub fn fds(&self, resp: &v1::ListFdsResponse) -> Result<(), CliError> {
        self.show(resp, Self::fds_text)
    }

    fn fds_text(&self, resp: &v1::ListFdsResponse) -> String {
        let mut out = String::new();
        findings(&mut out, &resp.findings);
        out.push_str(&fds::table(&resp.fds, self.wide(), self.width));
        out.push_str("\n\n");
        if let Some(p) = &resp.process {
            out.push_str(&fds::process_lines(p));
        }
        let processes: Vec<v1::Process> = resp.process.iter().cloned().collect();
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &processes, None);
        out
    }

    pub fn blocked(&self, resp: &v1::SampleBlockedResponse) -> Result<(), CliError> {
        self.show(resp, Self::blocked_text)
    }

    fn blocked_text(&self, resp: &v1::SampleBlockedResponse) -> String {
        let mut out = format!(
            "{} samples over {:.1}s{}\n\n",
            resp.samples,
            resp.duration_msec as f64 / 1000.0,
            if resp.exited { " (the process exited)" } else { "" }
        );
        let mut t = tables::Grid::new(vec!["TID", "COMM", "RUNNING", "BLOCKED IN", "WAITING IN (wchan)"], &[0, 2]);
        let n = if self.wide() { usize::MAX } else { 3 };
        let rows = resp
            .total
            .iter()
            .map(|t| ("all".to_string(), t))
            .chain(resp.threads.iter().map(|t| (t.tid.to_string(), t)));
        for (tid, s) in rows {
            t.push(vec![
                tid,
                s.comm.clone(),
                share(u64::from(s.running), s.samples),
                top_counts(&s.by_syscall, s.samples, n),
                top_counts(&s.by_wchan, s.samples, n),
            ]);
        }
        out.push_str(&t.render(self.width));
        out.push('\n');
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &[], None);
        out
    }

    /// Several pods' diagnoses, worst first: a line each, then each pod's
    /// findings (`wide`: everything `diagnose` shows for one pod).
    pub fn pods(&self, answers: &[PodAnswer], wide: bool) -> Result<(), CliError> {
        if matches!(self.output, Output::Json | Output::Yaml) {
            let list: Vec<serde_json::Value> = answers
                .iter()
                .map(|a| match &a.answer {
                    Ok(r) => serde_json::json!({"pod": a.pod, "namespace": a.namespace, "diagnosis": r}),
                    Err(e) => serde_json::json!({"pod": a.pod, "namespace": a.namespace, "error": e.to_string()}),
                })
                .collect();
            return self.structured(&list).unwrap_or(Ok(()));
        }
        write(&self.pods_text(answers, wide)?)
    }

    fn pods_text(&self, answers: &[PodAnswer], wide: bool) -> Result<String, CliError> {
        let mut t =
            tables::Grid::new(vec!["POD", "AGENT", "CRITICAL", "WARN", "PROCESSES", "WORST FINDING"], &[2, 3, 4]);
        let mut sections = String::new();
        for a in answers {
            let pod = escape::text(&a.pod).into_owned();
            let row = match &a.answer {
                Ok(r) => {
                    let (row, section) = self.text(r, |view, r| {
                        let count =
                            |s: v1::Severity| r.findings.iter().filter(|f| f.severity == s as i32).count().to_string();
                        let worst = r.findings.iter().max_by_key(|f| f.severity);
                        let row = vec![
                            pod.clone(),
                            "ok".into(),
                            count(v1::Severity::Critical),
                            count(v1::Severity::Warn),
                            r.processes.len().to_string(),
                            worst.map_or_else(|| "-".into(), |f| format!("{} {}", f.id, f.subject)),
                        ];
                        let section = if wide {
                            heading(&format!("pod/{pod}")) + &view.diagnose_text(r)
                        } else if !r.findings.is_empty() {
                            let mut out = heading(&format!("pod/{pod}"));
                            findings(&mut out, &r.findings);
                            out
                        } else {
                            String::new()
                        };
                        (row, section)
                    })?;
                    sections.push_str(&section);
                    row
                }
                Err(e) => {
                    let error = format!("error: {}", escape::text(&e.to_string()));
                    vec![pod, error, "-".into(), "-".into(), "-".into(), "-".into()]
                }
            };
            t.push(row);
        }
        let mut out = heading("PODS");
        out.push_str(&t.render(self.width));
        out.push_str("\n\n");
        out.push_str(&sections);
        Ok(out)
    }

    pub fn profile(&self, p: &v1::SyscallProfile, by: ProfileBy) -> Result<(), CliError> {
        if self.output == Output::Seccomp {
            let json = serde_json::to_string_pretty(&syscalls::seccomp(p)).unwrap_or_default();
            return write(&format!("{json}\n"));
        }
        self.show(p, |view, p| view.profile_text(p, by))
    }

    fn profile_text(&self, p: &v1::SyscallProfile, by: ProfileBy) -> String {
        /// The fds a `--by fd` table shows, most time first.
        const FD_ROWS: usize = 50;
        let mut out = syscalls::header(p);
        findings(&mut out, &p.findings);
        let tables = |out: &mut String, syscalls: &[v1::SyscallStat], fds: &[v1::FdStat]| {
            match by {
                ProfileBy::Syscall => out.push_str(&syscalls::table(syscalls, self.wide(), self.width)),
                ProfileBy::Fd if fds.is_empty() => out.push_str("(no time on fds)"),
                ProfileBy::Fd => {
                    out.push_str(&syscalls::fd_table(&fds[..fds.len().min(FD_ROWS)], self.wide(), self.width));
                    if fds.len() > FD_ROWS {
                        out.push_str(&format!(
                            "\n({} more fds with less time: -o json has them all)",
                            fds.len() - FD_ROWS
                        ));
                    }
                }
            }
            out.push_str("\n\n");
        };
        tables(&mut out, &p.syscalls, &p.fds);
        if self.wide() {
            out.push_str(&heading("LATENCY (calls per log2 bucket)"));
            match by {
                ProfileBy::Syscall => {
                    for s in p.syscalls.iter().filter(|s| s.timed > 0) {
                        out.push_str(&format!("{} ({} calls timed)\n", s.name, s.timed));
                        out.push_str(&syscalls::histogram(&s.latency_buckets));
                    }
                }
                ProfileBy::Fd => {
                    for f in p.fds.iter().filter(|f| f.timed > 0).take(FD_ROWS) {
                        out.push_str(&format!("pid {} fd {} {} ({} calls timed)\n", f.pid, f.fd, f.target, f.timed));
                        out.push_str(&syscalls::histogram(&f.latency_buckets));
                    }
                }
            }
            out.push('\n');
        }
        if !p.slowest.is_empty() {
            out.push_str(&heading(if p.time_one_in > 1 {
                "SLOWEST CALLS (of the timed ones)"
            } else {
                "SLOWEST CALLS"
            }));
            out.push_str(&syscalls::slowest(&p.slowest, self.width));
            out.push('\n');
            if p.slowest_missed > 0 {
                out.push_str(&format!(
                    "({} slow calls were overwritten in the kernel before the agent read them: the list may miss some)\n",
                    p.slowest_missed
                ));
            }
            out.push('\n');
        }
        for t in &p.threads {
            out.push_str(&heading(&format!(
                "THREAD {} ({}) of pid {}: {} calls, {} errors",
                t.tid, t.comm, t.pid, t.calls, t.errors
            )));
            tables(&mut out, &t.syscalls, &t.fds);
        }
        notes(&mut out, p.agent.as_ref(), &p.unavailable, &[], None);
        out
    }

    pub fn reports(&self, resp: &v1::ListReportsResponse) -> Result<(), CliError> {
        self.show(resp, |view, resp| reports::list(resp, view.width))
    }

    pub fn report(&self, resp: &v1::GetReportResponse) -> Result<(), CliError> {
        self.show(resp, |view, resp| {
            let Some(report) = &resp.report else { return String::new() };
            let mut out = String::new();
            findings(&mut out, &report.findings);
            out.push_str(&reports::detail(report, view.wide(), view.width));
            out
        })
    }

    pub fn memory(&self, resp: &v1::DiagnoseResponse) -> Result<(), CliError> {
        self.show(resp, Self::memory_text)
    }

    fn memory_text(&self, resp: &v1::DiagnoseResponse) -> String {
        let mut out = String::new();
        let memory_findings: Vec<v1::Finding> =
            resp.findings.iter().filter(|f| f.id.starts_with("memory.")).cloned().collect();
        findings(&mut out, &memory_findings);
        if !resp.containers.is_empty() {
            out.push_str(&heading("CONTAINER MEMORY"));
            out.push_str(&tables::container_memory(&resp.containers, self.wide(), self.width));
            out.push_str("\n\n");
        }
        out.push_str(&heading("PROCESS MEMORY (by PSS)"));
        out.push_str(&tables::process_memory(&resp.processes, self.wide(), self.width));
        out.push('\n');
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &resp.processes, Some(resp.capture_usec));
        out
    }

    /// JSON or YAML of the message itself; `None` for table output.
    fn structured<T: serde::Serialize>(&self, value: &T) -> Option<Result<(), CliError>> {
        // Streamed through a buffer: an fd table of 17,000 entries is megabytes of JSON.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        let written = match self.output {
            Output::Json => serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from),
            Output::Yaml => serde_norway::to_writer(&mut out, value).map_err(std::io::Error::other),
            Output::Table | Output::Wide | Output::Seccomp => return None,
        };
        let newline = if self.output == Output::Json { &b"\n"[..] } else { b"" };
        let done = written.and_then(|()| out.write_all(newline)).and_then(|()| out.flush());
        Some(done.or_else(ignore_broken_pipe))
    }
}

/// `62%` of the samples.
fn share(n: u64, of: u32) -> String {
    if of == 0 { "-".to_string() } else { format!("{:.0}%", n as f64 * 100.0 / f64::from(of)) }
}

/// The `n` most frequent, with their shares: `read 80%, futex 20%`.
fn top_counts(c: &[v1::Count], of: u32, n: usize) -> String {
    let items: Vec<String> = c.iter().take(n).map(|c| format!("{} {}", c.name, share(c.count, of))).collect();
    if items.is_empty() { "-".to_string() } else { items.join(", ") }
}

/// Each process's threads, summed: running, or which syscall and kernel function.
fn blocked_table(processes: &[v1::Process], wide: bool, width: Option<u16>) -> String {
    let mut t =
        tables::Grid::new(vec!["PID", "COMMAND", "THR", "RUNNING", "BLOCKED IN", "WAITING IN (wchan)"], &[0, 2, 3]);
    let n = if wide { usize::MAX } else { 2 };
    for p in processes {
        let Some(s) = &p.blocked else { continue };
        t.push(vec![
            p.pid.to_string(),
            p.comm.clone(),
            p.cpu.and_then(|c| c.threads).map_or_else(|| "-".into(), |n| n.to_string()),
            share(u64::from(s.running), s.samples),
            top_counts(&s.by_syscall, s.samples, n),
            top_counts(&s.by_wchan, s.samples, n),
        ]);
    }
    t.render(width)
}

fn heading(title: &str) -> String {
    let bold = Style::new().bold();
    format!("{bold}{title}{bold:#}\n")
}

fn severity_style(severity: i32) -> Style {
    match v1::Severity::try_from(severity) {
        Ok(v1::Severity::Critical) => AnsiColor::Red.on_default().bold(),
        Ok(v1::Severity::Warn) => AnsiColor::Yellow.on_default().bold(),
        _ => AnsiColor::Cyan.on_default(),
    }
}

fn findings(out: &mut String, findings: &[v1::Finding]) {
    if findings.is_empty() {
        let green = AnsiColor::Green.on_default();
        out.push_str(&format!("{green}No findings.{green:#}\n\n"));
        return;
    }
    out.push_str(&heading("FINDINGS"));
    for f in findings {
        let style = severity_style(f.severity);
        let severity = enum_names::severity::name_of(f.severity).to_uppercase();
        out.push_str(&format!("  {style}{severity:<8}{style:#} {} {}: {}\n", f.id, f.subject, f.message));
        if !f.next_step.is_empty() {
            out.push_str(&format!("           next: {}\n", f.next_step));
        }
    }
    out.push('\n');
}

/// What could not be seen, and who answered.
fn notes(
    out: &mut String,
    agent: Option<&v1::AgentInfo>,
    unavailable: &[v1::Unavailable],
    processes: &[v1::Process],
    capture_usec: Option<u64>,
) {
    let dim = Style::new().dimmed();
    for u in unavailable {
        out.push_str(&format!("{dim}not seen: {}: {}{dim:#}\n", u.field, u.reason));
    }
    let partial = processes.iter().filter(|p| !p.unavailable.is_empty() && !is_kernel_thread(p)).count();
    if partial > 0 {
        out.push_str(&format!(
            "{dim}{partial} process(es) partly unreadable (\"-\" in the table); -o json shows why in \"unavailable\"{dim:#}\n"
        ));
    }
    if let Some(a) = agent {
        let level = enum_names::privilege_level::name_of(a.level);
        let capture = capture_usec.map(|u| format!(", snapshot in {:.1} ms", u as f64 / 1000.0)).unwrap_or_default();
        out.push_str(&format!(
            "{dim}agent {} (pid {}, privilege {level}, rss {}{capture}){dim:#}\n",
            a.version,
            a.pid,
            units::bytes(a.rss_bytes)
        ));
        for l in &a.limitations {
            out.push_str(&format!("{dim}  limited: {}: {}{dim:#}\n", l.field, l.reason));
        }
    }
}

fn is_kernel_thread(p: &v1::Process) -> bool {
    p.kernel_thread || p.unavailable.iter().any(|u| u.reason.starts_with("kernel thread"))
}

fn hidden_note(out: &mut String, hidden: usize) {
    if hidden > 0 {
        let dim = Style::new().dimmed();
        out.push_str(&format!("{dim}{hidden} kernel thread(s) not listed (--all lists them){dim:#}\n"));
    }
}

/// Text with styles: anstream drops them for pipes and NO_COLOR.
fn write(text: &str) -> Result<(), CliError> {
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).or_else(ignore_broken_pipe)
}

/// `kubectl osl ps | head` must not fail.
fn ignore_broken_pipe(e: std::io::Error) -> Result<(), CliError> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(CliError::Output(e.into())) }
}

/// A one-line progress report on stderr while a profile runs, only on a terminal.
pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn on_terminal() -> Self {
        Self { on: std::io::stderr().is_terminal() }
    }

    pub fn show(&self, p: &v1::ProfileProgress) {
        if self.on {
            eprint!(
                "\r\x1b[Kprofiling… {:.1}/{:.1} s, {} calls, {} errors",
                p.elapsed_msec as f64 / 1000.0,
                p.duration_msec as f64 / 1000.0,
                p.calls,
                p.errors
            );
        }
    }

    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a hostile process puts in its name, its command line and its files' names:
    /// clear the screen, and flip the rest of the line right to left.
    const CLEAR: &str = "\x1b[2J";
    const FLIP: &str = "\u{202e}";

    fn hostile(what: &str) -> String {
        format!("{what}{CLEAR}{FLIP}gnp.exe\r\x08\u{9b}31m")
    }

    fn table() -> View {
        View { output: Output::Table, width: None, kernel_threads: false }
    }

    /// The text with this module's own styles taken out: anything left that a
    /// terminal would act on came from the answer.
    fn assert_escaped(text: &str) {
        let mut styles: Vec<String> =
            [Style::new().bold(), Style::new().dimmed(), AnsiColor::Green.on_default(), Style::new()]
                .into_iter()
                .chain((0..4).map(severity_style))
                .flat_map(|s| [s.render().to_string(), s.render_reset().to_string()])
                .collect();
        // Bold and red is bold's sequence and red's: the longest first.
        styles.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut plain = text.to_string();
        for s in styles.iter().filter(|s| !s.is_empty()) {
            plain = plain.replace(s, "");
        }
        let raw: Vec<char> =
            plain.chars().filter(|&c| escape::text(&c.to_string()) != c.to_string() && c != '\n').collect();
        assert!(raw.is_empty(), "raw {raw:?} in:\n{text}");
        assert!(text.contains("\\x1b[2J\\u{202e}gnp.exe\\r\\x08\\u{9b}31m"), "{text}");
    }

    fn process() -> v1::Process {
        v1::Process {
            pid: 4242,
            comm: hostile("comm"),
            cmdline: vec![hostile("/bin/cmd"), hostile("--arg")],
            container_id: hostile("id"),
            blocked: Some(v1::ThreadSamples {
                samples: 10,
                by_syscall: vec![v1::Count { name: hostile("read"), count: 10 }],
                ..Default::default()
            }),
            fd_summary: Some(v1::FdSummary {
                total: 1,
                by_kind: vec![v1::Count { name: hostile("kind"), count: 1 }],
                top_remotes: vec![v1::Endpoint { remote: hostile("10.0.0.1"), connections: 1 }],
                ..Default::default()
            }),
            unavailable: vec![v1::Unavailable { field: "fds".into(), reason: hostile("denied"), ..Default::default() }],
            ..Default::default()
        }
    }

    fn finding() -> v1::Finding {
        v1::Finding {
            id: "fd.near_limit".into(),
            severity: v1::Severity::Critical as i32,
            subject: hostile("pid 4242"),
            message: hostile("message"),
            next_step: hostile("next"),
            ..Default::default()
        }
    }

    fn agent() -> v1::AgentInfo {
        v1::AgentInfo { version: hostile("0.1.0"), ..Default::default() }
    }

    #[test]
    fn ps_escapes_what_the_process_named_itself() {
        let resp = v1::ListProcessesResponse {
            agent: Some(agent()),
            processes: vec![process()],
            unavailable: vec![v1::Unavailable { field: "x".into(), reason: hostile("why"), ..Default::default() }],
            ..Default::default()
        };
        for view in [table(), View { output: Output::Wide, width: Some(80), kernel_threads: false }] {
            let text = view.text(&resp, View::processes_text).unwrap();
            assert_escaped(&text);
            assert!(text.contains("/bin/cmd\\x1b[2J"), "{text}");
        }
    }

    #[test]
    fn kernel_threads_are_listed_only_with_all() {
        let kworker = v1::Process { pid: 7, comm: "kworker/0:1".into(), kernel_thread: true, ..Default::default() };
        let app = v1::Process { pid: 4242, comm: "app".into(), ..Default::default() };
        let resp = v1::ListProcessesResponse { processes: vec![kworker, app], ..Default::default() };
        let text = table().text(&resp, View::processes_text).unwrap();
        assert!(text.contains("4242") && !text.contains("kworker"), "{text}");
        assert!(text.contains("1 kernel thread(s) not listed (--all lists them)"), "{text}");
        let all = table().with_kernel_threads(true).text(&resp, View::processes_text).unwrap();
        assert!(all.contains("kworker") && !all.contains("not listed"), "{all}");
        let diag = v1::DiagnoseResponse { processes: resp.processes.clone(), ..Default::default() };
        let text = table().text(&diag, View::diagnose_text).unwrap();
        assert!(!text.contains("kworker") && text.contains("not listed"), "{text}");
    }

    #[test]
    fn diagnose_and_mem_escape_every_table_and_line() {
        let resp = v1::DiagnoseResponse {
            agent: Some(agent()),
            findings: vec![finding()],
            processes: vec![process()],
            containers: vec![v1::Container { id: hostile("c"), name: hostile("app"), ..Default::default() }],
            fd_totals: Some(v1::FdSummary {
                total: 1,
                by_kind: vec![v1::Count { name: hostile("kind"), count: 1 }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = table().text(&resp, View::diagnose_text).unwrap();
        assert_escaped(&text);
        for part in ["comm\\x1b[2J", "message\\x1b[2J", "next: next\\x1b[2J", "app\\x1b[2J", "read\\x1b[2J"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert_escaped(&table().text(&resp, View::memory_text).unwrap());
        // Several pods: their rows, sections and errors.
        let answers = [
            PodAnswer { pod: "web-1".into(), namespace: "ns".into(), answer: Ok(resp.clone()) },
            PodAnswer {
                pod: "web-2".into(),
                namespace: "ns".into(),
                answer: Err(CliError::Agent { message: hostile("it broke") }),
            },
        ];
        for wide in [false, true] {
            let text = table().pods_text(&answers, wide).unwrap();
            assert_escaped(&text);
            assert!(text.contains("error: the agent failed: it broke\\x1b[2J"), "{text}");
        }
    }

    #[test]
    fn fds_escape_paths_and_sockets() {
        let fd = |n: i32, target: String, socket: Option<v1::Socket>| v1::Fd {
            fd: n,
            kind: v1::FdKind::File as i32,
            target,
            socket,
            flags: vec![hostile("O_RDONLY")],
            ..Default::default()
        };
        let resp = v1::ListFdsResponse {
            agent: Some(agent()),
            process: Some(process()),
            fds: vec![
                fd(3, hostile("/tmp/file"), None),
                fd(
                    4,
                    "socket:[1]".into(),
                    Some(v1::Socket { protocol: "unix".into(), unix_path: hostile("/run/sock"), ..Default::default() }),
                ),
                fd(
                    5,
                    "socket:[2]".into(),
                    Some(v1::Socket { protocol: "tcp".into(), local: hostile("1.2.3.4:5"), ..Default::default() }),
                ),
            ],
            findings: vec![finding()],
            ..Default::default()
        };
        for view in [table(), View { output: Output::Wide, width: None, kernel_threads: false }] {
            let text = view.text(&resp, View::fds_text).unwrap();
            assert_escaped(&text);
            for part in ["/tmp/file\\x1b[2J", "/run/sock\\x1b[2J", "1.2.3.4:5\\x1b[2J", "10.0.0.1\\x1b[2J"] {
                assert!(text.contains(part), "{part}: {text}");
            }
        }
    }

    #[test]
    fn blocked_strace_and_reports_escape_too() {
        let blocked = v1::SampleBlockedResponse {
            samples: 1,
            total: Some(v1::ThreadSamples { comm: hostile("comm"), ..Default::default() }),
            threads: vec![v1::ThreadSamples {
                tid: 7,
                comm: hostile("thread"),
                samples: 1,
                by_wchan: vec![v1::Count { name: hostile("wchan"), count: 1 }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_escaped(&table().text(&blocked, View::blocked_text).unwrap());
        let profile = v1::SyscallProfile {
            backend_reason: hostile("why"),
            partial: true,
            partial_reason: hostile("partial"),
            syscalls: vec![v1::SyscallStat {
                name: hostile("read"),
                top_fds: vec![v1::TimeCount { name: hostile("top fd"), ..Default::default() }],
                ..Default::default()
            }],
            fds: vec![v1::FdStat { target: hostile("path"), ..Default::default() }],
            slowest: vec![v1::SlowCall { target: hostile("slow fd"), ..Default::default() }],
            threads: vec![v1::ThreadProfile { comm: hostile("thread"), ..Default::default() }],
            ..Default::default()
        };
        for by in [ProfileBy::Syscall, ProfileBy::Fd] {
            assert_escaped(&table().text(&profile, |view, p| view.profile_text(p, by)).unwrap());
        }
        let report = v1::Report {
            id: hostile("id"),
            container_id: hostile("c"),
            processes: vec![v1::ReportProcess { pid: 1, comm: hostile("comm"), ..Default::default() }],
            victims: vec![v1::ReportProcess { pid: 1, comm: hostile("victim"), ..Default::default() }],
            ..Default::default()
        };
        let detail = table().text(&report, |v, r| reports::detail(r, v.wide(), v.width)).unwrap();
        assert_escaped(&detail);
        let list = v1::ListReportsResponse {
            directory: hostile("/dir"),
            reports: vec![v1::ReportSummary {
                id: hostile("id"),
                trigger_event: hostile("event"),
                ..Default::default()
            }],
        };
        assert_escaped(&table().text(&list, |v, r| reports::list(r, v.width)).unwrap());
    }
}
