//! What each subcommand does: find the agent (a pod's, through the API server;
//! --agent; or --local), ask it, render, choose the exit code.

use crate::args::{Cli, Command, Level, Output, ProfileBackend, ProfileBy};
use crate::backend::Backend;
use crate::calls::{container_id, diagnose_request, exit_for, filter, in_pod, pod_backend, reach, with_agent_status};
use crate::error::{CliError, code};
use crate::k8s::{Cluster, agent, attach, target};
use crate::render;
use k8s_openapi::api::core::v1::Pod;
use osl_proto::v1;
use std::collections::HashMap;

pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let target = match &cli.command {
        Command::Diagnose(a) | Command::Mem(a) => a.selection.target.clone(),
        Command::Ps(s) => s.target.clone(),
        Command::Fds(f) => f.target.clone(),
        Command::Blocked(b) => b.target.clone(),
        Command::Strace(s) => s.target.clone(),
        Command::Attach(a) => Some(a.target.clone()),
        Command::Reports(r) => r.split(cli.conn.agent.is_some() || cli.conn.local).0.cloned(),
    };
    if cli.output == Output::Seccomp && !matches!(cli.command, Command::Strace(_)) {
        return Err(CliError::Usage(
            "-o seccomp turns a syscall profile into a seccomp profile: use it with strace".into(),
        ));
    }
    let direct = cli.conn.agent.is_some() || cli.conn.local;
    if direct && (target.is_some() || cli.kube.selector.is_some()) {
        return Err(CliError::Usage(
            "--agent and --local ask one agent directly: drop the pod target (or drop --agent/--local to go through Kubernetes)"
                .into(),
        ));
    }
    if !direct && (target.is_some() || cli.kube.selector.is_some()) {
        return run_in_cluster(&cli, target.as_deref()).await;
    }
    if matches!(cli.command, Command::Attach(_)) {
        return Err(CliError::Usage("attach needs a pod: kubectl osl attach pod/NAME".into()));
    }
    let backend = connect(&cli).await?;
    ask(&cli, backend, &HashMap::new(), None).await
}

/// A pod target or selector: resolve it to running pods, reach each one's agent
/// through a port-forward, and ask.
async fn run_in_cluster(cli: &Cli, target: Option<&str>) -> Result<u8, CliError> {
    let target = target.map(target::parse).transpose()?;
    let cluster = Cluster::connect(&cli.kube).await?;
    let pods = target::resolve(&cluster, target.as_ref(), cli.kube.selector.as_deref()).await?;
    let described = target
        .as_ref()
        .map_or_else(|| format!("-l {}", cli.kube.selector.clone().unwrap_or_default()), ToString::to_string);
    if let Command::Attach(a) = &cli.command {
        let pod = single(&pods, &described)?;
        let (found, added) = attach::attach(&cluster, pod, a.container.as_deref(), &a.image, a.level, a.wait).await?;
        let (mut backend, _, _) = reach(&cluster, pod, &found, a.wait).await?;
        let procs = backend.list_processes(v1::ListProcessesRequest::default()).await?;
        let name = agent::pod_name(pod);
        println!(
            "{} pod/{name}: the agent sees {} processes\nnext: kubectl osl diagnose pod/{name} -n {}",
            if added { "attached to" } else { "already attached to" },
            procs.processes.len(),
            pod.metadata.namespace.as_deref().unwrap_or(&cluster.namespace)
        );
        return Ok(code::OK);
    }
    // A workload or a selector is answered pod by pod (the same shape for one pod
    // as for ten); a pod target is answered as that pod.
    let one_pod = target.as_ref().is_some_and(|t| t.kind == target::Kind::Pod);
    if let Command::Diagnose(args) = &cli.command
        && !one_pod
    {
        return crate::fanout::diagnose(cli, &cluster, pods, args).await;
    }
    let pod = single(&pods, &described)?;
    let attach_level = matches!(&cli.command, Command::Diagnose(a) if a.attach).then_some(Level::Ptrace);
    let (backend, names, pod) = pod_backend(&cluster, pod, attach_level, cli.conn.timeout).await?;
    let asked = ask(cli, backend, &names, Some(&pod)).await;
    with_agent_status(&cluster, &pod, asked).await
}

fn single<'a>(pods: &'a [Pod], described: &str) -> Result<&'a Pod, CliError> {
    match pods {
        [one] => Ok(one),
        many => {
            let names: Vec<String> = many.iter().map(|p| format!("pod/{}", agent::pod_name(p))).collect();
            Err(CliError::Usage(format!(
                "{described} has {} running pods; this command asks one: pick one of {}",
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// Asks the agent what the command wants; `names` puts container names on processes.
async fn ask(
    cli: &Cli,
    mut backend: Backend,
    names: &HashMap<String, String>,
    pod: Option<&Pod>,
) -> Result<u8, CliError> {
    let view = render::View::detect(cli.output).with_kernel_threads(cli.all);
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
                container_id: container_id(args.container.as_ref(), names),
                duration_msec: u32::try_from(args.duration.as_millis()).unwrap_or(u32::MAX),
                backend: match args.backend {
                    ProfileBackend::Auto => v1::ProfileBackend::Unspecified,
                    ProfileBackend::Ebpf => v1::ProfileBackend::Ebpf,
                    ProfileBackend::Ptrace => v1::ProfileBackend::Ptrace,
                } as i32,
                threads: args.threads,
                progress_msec: 500,
                // 0 asks for the agent's default: say none with an empty list instead.
                slowest: args.slowest.max(1),
                time_one_in: args.sample.unwrap_or(match args.by {
                    ProfileBy::Syscall => 8,
                    ProfileBy::Fd => 1,
                }),
            };
            let progress = render::Progress::on_terminal();
            let profile = backend.profile_syscalls(req, |p| progress.show(p)).await;
            progress.clear();
            let mut profile = profile?;
            profile.slowest.truncate(args.slowest as usize);
            view.profile(&profile, args.by)?;
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
                // The default table shows no offset or flags: only -o wide and the data formats need every fdinfo.
                fdinfo: if view.output() == Output::Table { v1::FdInfoLevel::Table } else { v1::FdInfoLevel::Full }
                    as i32,
            };
            let resp = backend.list_fds(req).await?;
            view.fds(&resp)?;
            Ok(code::OK)
        }
        Command::Attach(_) => unreachable!("attach is answered in run_in_cluster"),
        Command::Ps(selection) => {
            let filter = filter(selection, names);
            let mut resp = backend.list_processes(v1::ListProcessesRequest { filter: Some(filter) }).await?;
            agent::name_containers(names, &mut resp.processes, &mut []);
            view.processes(&resp)?;
            Ok(code::OK)
        }
        Command::Diagnose(args) => {
            let mut resp = backend.diagnose(diagnose_request(args, names)).await?;
            in_pod(&mut resp, names, pod);
            view.diagnose(&resp)?;
            Ok(exit_for(args, &resp.findings))
        }
        Command::Mem(args) => {
            let req = v1::DiagnoseRequest { filter: Some(filter(&args.selection, names)), blocked_sample_msec: 0 };
            let mut resp = backend.diagnose(req).await?;
            in_pod(&mut resp, names, pod);
            view.memory(&resp)?;
            Ok(exit_for(args, &resp.findings))
        }
    }
}

async fn connect(cli: &Cli) -> Result<Backend, CliError> {
    // (pod targets go through run_in_cluster)
    if let Some(addr) = &cli.conn.agent {
        return Backend::connect(addr, cli.conn.timeout, cli.conn.token()?.as_deref()).await;
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
