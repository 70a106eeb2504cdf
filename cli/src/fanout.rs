//! `diagnose` of a workload: every running pod asked at once (at most
//! [`CONCURRENCY`] at a time), then one line per pod with the worst findings
//! first, and each pod's findings below (everything with -o wide, json, yaml).

use crate::args::{Cli, DiagnoseArgs, Level, Output};
use crate::calls::{diagnose_request, exit_for, in_pod, pod_backend};
use crate::error::CliError;
use crate::k8s::{Cluster, agent};
use crate::render::{self, PodAnswer};
use k8s_openapi::api::core::v1::Pod;
use osl_proto::v1;
use std::io::IsTerminal;
use std::sync::Arc;

pub const CONCURRENCY: usize = 16;

pub async fn diagnose(cli: &Cli, cluster: &Cluster, pods: Vec<Pod>, args: &DiagnoseArgs) -> Result<u8, CliError> {
    let total = pods.len();
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for pod in pods {
        let (cluster, limit) = (cluster.clone(), limit.clone());
        let (timeout, attach) = (cli.conn.timeout, args.attach.then_some(Level::Ptrace));
        let args = DiagnoseArgs {
            selection: crate::args::Selection {
                target: None,
                pids: args.selection.pids.clone(),
                container: args.selection.container.clone(),
            },
            ..*args
        };
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await;
            let answer = async {
                let (mut backend, names, now) = pod_backend(&cluster, &pod, attach, timeout).await?;
                let req = diagnose_request(&args, &names);
                let mut resp = crate::calls::with_agent_status(&cluster, &now, backend.diagnose(req).await).await?;
                in_pod(&mut resp, &names, Some(&now));
                Ok(resp)
            }
            .await;
            PodAnswer {
                pod: agent::pod_name(&pod),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                answer,
            }
        });
    }
    let progress = std::io::stderr().is_terminal();
    let mut answers = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        answers.push(done.map_err(|e| CliError::Agent { message: format!("a pod's diagnosis failed: {e}") })?);
        if progress {
            eprint!("\r\x1b[Kdiagnosed {}/{total} pods", answers.len());
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    answers.sort_by_key(|a| (std::cmp::Reverse(worst(a)), a.pod.clone()));
    render::View::detect(cli.output).pods(&answers, cli.output == Output::Wide)?;
    // Every pod failed: the command failed, with the first pod's error and code.
    if answers.iter().all(|a| a.answer.is_err()) {
        if let Some(first) = answers.into_iter().find_map(|a| a.answer.err()) {
            return Err(first);
        }
        return Ok(crate::error::code::OK);
    }
    let findings: Vec<v1::Finding> =
        answers.iter().filter_map(|a| a.answer.as_ref().ok()).flat_map(|r| r.findings.clone()).collect();
    Ok(exit_for(args, &findings))
}

/// The pod's worst severity; an error sorts first.
pub fn worst(a: &PodAnswer) -> i32 {
    match &a.answer {
        Ok(r) => r.findings.iter().map(|f| f.severity).max().unwrap_or(0),
        Err(_) => i32::MAX,
    }
}
