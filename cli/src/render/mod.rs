//! Output: tables for people (sized to the terminal, findings coloured by
//! severity, NO_COLOR and pipes respected), JSON and YAML for scripts (the
//! osl.v1 messages themselves, so the shape is the versioned contract).

mod fds;
mod reports;
mod syscalls;
mod tables;
mod units;

use crate::args::Output;
use crate::error::CliError;
use anstyle::{AnsiColor, Style};
use osl_proto::enum_names;
use osl_proto::v1;
use std::io::{IsTerminal, Write};

pub struct View {
    output: Output,
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
        Self { output, width }
    }

    fn wide(&self) -> bool {
        self.output == Output::Wide
    }

    pub fn processes(&self, resp: &v1::ListProcessesResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
        let mut out = String::new();
        out.push_str(&tables::processes(&resp.processes, self.wide(), self.width));
        out.push('\n');
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &resp.processes, None);
        write(&out)
    }

    pub fn diagnose(&self, resp: &v1::DiagnoseResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
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
        out.push_str(&heading("PROCESSES"));
        out.push_str(&tables::processes(&resp.processes, self.wide(), self.width));
        out.push_str("\n\n");
        if resp.processes.iter().any(|p| p.blocked.is_some()) {
            out.push_str(&heading("BLOCKED IN (sampled from /proc, no stops)"));
            out.push_str(&blocked_table(&resp.processes, self.wide(), self.width));
            out.push_str("\n\n");
        }
        if resp.processes.iter().any(|p| p.fd_summary.is_some()) {
            out.push_str(&heading("FILE DESCRIPTORS"));
            out.push_str(&fds::summaries(&resp.processes, self.wide(), self.width));
            out.push('\n');
            if let Some(t) = &resp.fd_totals {
                out.push_str(&format!("pod total: {}\n", fds::summary_line(t)));
            }
            out.push('\n');
        }
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &resp.processes, Some(resp.capture_usec));
        write(&out)
    }

    pub fn fds(&self, resp: &v1::ListFdsResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
        let mut out = String::new();
        findings(&mut out, &resp.findings);
        out.push_str(&fds::table(&resp.fds, self.wide(), self.width));
        out.push_str("\n\n");
        if let Some(p) = &resp.process {
            out.push_str(&fds::process_lines(p));
        }
        let processes: Vec<v1::Process> = resp.process.iter().cloned().collect();
        notes(&mut out, resp.agent.as_ref(), &resp.unavailable, &processes, None);
        write(&out)
    }

    pub fn blocked(&self, resp: &v1::SampleBlockedResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
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
        write(&out)
    }

    /// Several pods' diagnoses, worst first: a line each, then each pod's
    /// findings (`wide`: everything `diagnose` shows for one pod).
    pub fn pods(&self, answers: &[crate::fanout::PodAnswer], wide: bool) -> Result<(), CliError> {
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
        let mut t =
            tables::Grid::new(vec!["POD", "AGENT", "CRITICAL", "WARN", "PROCESSES", "WORST FINDING"], &[2, 3, 4]);
        for a in answers {
            let row = match &a.answer {
                Ok(r) => {
                    let count =
                        |s: v1::Severity| r.findings.iter().filter(|f| f.severity == s as i32).count().to_string();
                    let worst = r.findings.iter().max_by_key(|f| f.severity);
                    vec![
                        a.pod.clone(),
                        "ok".into(),
                        count(v1::Severity::Critical),
                        count(v1::Severity::Warn),
                        r.processes.len().to_string(),
                        worst.map_or_else(|| "-".into(), |f| format!("{} {}", f.id, f.subject)),
                    ]
                }
                Err(e) => vec![a.pod.clone(), format!("error: {e}"), "-".into(), "-".into(), "-".into(), "-".into()],
            };
            t.push(row);
        }
        let mut out = heading("PODS");
        out.push_str(&t.render(self.width));
        out.push_str("\n\n");
        write(&out)?;
        for a in answers {
            let Ok(r) = &a.answer else { continue };
            if wide {
                write(&heading(&format!("pod/{}", a.pod)))?;
                self.diagnose(r)?;
            } else if !r.findings.is_empty() {
                let mut out = heading(&format!("pod/{}", a.pod));
                findings(&mut out, &r.findings);
                write(&out)?;
            }
        }
        Ok(())
    }

    pub fn profile(&self, p: &v1::SyscallProfile) -> Result<(), CliError> {
        if self.output == Output::Seccomp {
            let json = serde_json::to_string_pretty(&syscalls::seccomp(p)).unwrap_or_default();
            return write(&format!("{json}\n"));
        }
        if let Some(r) = self.structured(p) {
            return r;
        }
        let mut out = syscalls::header(p);
        findings(&mut out, &p.findings);
        out.push_str(&syscalls::table(&p.syscalls, self.wide(), self.width));
        out.push_str("\n\n");
        for t in &p.threads {
            out.push_str(&heading(&format!(
                "THREAD {} ({}) of pid {}: {} calls, {} errors",
                t.tid, t.comm, t.pid, t.calls, t.errors
            )));
            out.push_str(&syscalls::table(&t.syscalls, self.wide(), self.width));
            out.push_str("\n\n");
        }
        notes(&mut out, p.agent.as_ref(), &p.unavailable, &[], None);
        write(&out)
    }

    pub fn reports(&self, resp: &v1::ListReportsResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
        write(&reports::list(resp, self.width))
    }

    pub fn report(&self, resp: &v1::GetReportResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
        let Some(report) = &resp.report else { return write("") };
        let mut out = String::new();
        findings(&mut out, &report.findings);
        out.push_str(&reports::detail(report, self.wide(), self.width));
        write(&out)
    }

    pub fn memory(&self, resp: &v1::DiagnoseResponse) -> Result<(), CliError> {
        if let Some(r) = self.structured(resp) {
            return r;
        }
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
        write(&out)
    }

    /// JSON or YAML of the message itself; `None` for table output.
    pub fn structured<T: serde::Serialize>(&self, value: &T) -> Option<Result<(), CliError>> {
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
    p.unavailable.iter().any(|u| u.reason.starts_with("kernel thread"))
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
