//! kubectl-osl: a kubectl plugin that asks a pod's operating system what is wrong.

mod app;
mod args;
mod backend;
mod calls;
mod error;
mod fanout;
mod k8s;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(e) => return e.report(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime\nCaused by:\n  {e}");
            return ExitCode::from(error::code::AGENT_ERROR);
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => e.report(),
    }
}
