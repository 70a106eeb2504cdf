//! What each subcommand does: ask the backend, render, choose the exit code.

use crate::args::{Cli, Command, DiagnoseArgs, FailOn, Output, ProfileBackend, Selection};
use crate::backend::Backend;
use crate::error::{CliError, code};
use crate::render;
use osl_proto::v1;

pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let target = match &cli.command {
        Command::Diagnose(a) | Command::Mem(a) => &a.selection.target,
        Command::Ps(s) => &s.target,
        Command::Fds(f) => &f.target,
        Command::Blocked(b) => &b.target,
        Command::Strace(s) => &s.target,
        Command::Reports(r) => &r.split(cli.conn.agent.is_some() || cli.conn.local).0.cloned(),
    };
    if let Some(target) = target {
        return Err(CliError::Usage(format!(
            "cannot resolve {target:?}: Kubernetes targets are not supported by this build yet; \
             port-forward to the agent and use --agent HOST:PORT, or use --local"
        )));
    }
    if cli.output == Output::Seccomp && !matches!(cli.command, Command::Strace(_)) {
        return Err(CliError::Usage(
            "-o seccomp turns a syscall profile into a seccomp profile: use it with strace".into(),
        ));
    }
    let mut backend = connect(&cli).await?;
    let view = render::View::detect(cli.output);
    match &cli.command {
        Command::Blocked(args) => {
            let req = v1::SampleBlockedRequest {
                pid: args.pid,
                start_time_ticks: None,
                duration_msec: u32::try_from(args.duration.as_millis()).unwrap_or(u32::MAX),
                rate_hz: args.rate,
            };
            view.blocked(&backend.sample_blocked(req).await?)?;
            Ok(code::OK)
        }
        Command::Strace(args) => {
            let req = v1::ProfileSyscallsRequest {
                pid: args.pid.unwrap_or(0),
                start_time_ticks: None,
                container_id: args.container.clone().unwrap_or_default(),
                duration_msec: u32::try_from(args.duration.as_millis()).unwrap_or(u32::MAX),
                backend: match args.backend {
                    ProfileBackend::Auto => v1::ProfileBackend::Unspecified,
                    ProfileBackend::Ebpf => v1::ProfileBackend::Ebpf,
                    ProfileBackend::Ptrace => v1::ProfileBackend::Ptrace,
                } as i32,
                threads: args.threads,
                progress_msec: 500,
            };
            let progress = render::Progress::on_terminal();
            let profile = backend.profile_syscalls(req, |p| progress.show(p)).await;
            progress.clear();
            view.profile(&profile?)?;
            Ok(code::OK)
        }
        Command::Reports(args) => {
            match args.split(true).1 {
                Some(id) => view.report(&backend.get_report(id.clone()).await?)?,
                None => view.reports(&backend.list_reports().await?)?,
            }
            Ok(code::OK)
        }
        Command::Fds(args) => {
            let req = v1::ListFdsRequest {
                pid: args.pid,
                start_time_ticks: None,
                kinds: args.kind.clone(),
                tcp_states: args.state.clone(),
            };
            let resp = backend.list_fds(req).await?;
            view.fds(&resp)?;
            Ok(code::OK)
        }
        Command::Ps(selection) => {
            let filter = filter(selection);
            let resp = backend.list_processes(v1::ListProcessesRequest { filter: Some(filter) }).await?;
            view.processes(&resp)?;
            Ok(code::OK)
        }
        Command::Diagnose(args) => {
            let resp = backend.diagnose(v1::DiagnoseRequest { filter: Some(filter(&args.selection)) }).await?;
            view.diagnose(&resp)?;
            Ok(exit_for(args, &resp.findings))
        }
        Command::Mem(args) => {
            let resp = backend.diagnose(v1::DiagnoseRequest { filter: Some(filter(&args.selection)) }).await?;
            view.memory(&resp)?;
            Ok(exit_for(args, &resp.findings))
        }
    }
}

async fn connect(cli: &Cli) -> Result<Backend, CliError> {
    if let Some(addr) = &cli.conn.agent {
        return Backend::connect(addr, cli.conn.timeout).await;
    }
    if cli.conn.local {
        #[cfg(target_os = "linux")]
        return Ok(Backend::local(osl_agent::Roots {
            proc: cli.conn.proc_root.clone(),
            cgroup: cli.conn.cgroup_root.clone(),
        }));
        #[cfg(not(target_os = "linux"))]
        return Err(CliError::Usage("--local reads Linux's /proc: it works on Linux only".into()));
    }
    Err(CliError::Usage("no agent to ask: give --agent HOST:PORT, or --local to read this machine".into()))
}

fn filter(s: &Selection) -> v1::Filter {
    v1::Filter { pids: s.pids.clone(), container_id: s.container.clone().unwrap_or_default() }
}

/// 1 when a finding is at or above `--fail-on`, else 0.
fn exit_for(args: &DiagnoseArgs, findings: &[v1::Finding]) -> u8 {
    let Some(fail_on) = args.fail_on else { return code::OK };
    let threshold = match fail_on {
        FailOn::Warn => v1::Severity::Warn,
        FailOn::Critical => v1::Severity::Critical,
    } as i32;
    if findings.iter().any(|f| f.severity >= threshold) { code::FINDINGS } else { code::OK }
}
