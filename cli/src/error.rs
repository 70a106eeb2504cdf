//! CLI errors and their documented exit codes.

use std::process::ExitCode;

/// Exit codes, as documented in README.md and `kubectl osl --help`.
pub mod code {
    pub const OK: u8 = 0;
    /// A finding at or above `--fail-on`.
    pub const FINDINGS: u8 = 1;
    /// Bad flags or arguments (also what clap uses).
    pub const USAGE: u8 = 2;
    /// The process, container or target does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The agent cannot be reached.
    pub const CANNOT_CONNECT: u8 = 4;
    /// The agent (or the kernel) refused: missing privilege.
    pub const PERMISSION_DENIED: u8 = 5;
    /// The agent answered with an error of its own.
    pub const AGENT_ERROR: u8 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{message}")]
    NotFound { message: String },
    #[error("cannot connect to the agent at {addr}")]
    CannotConnect {
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the agent at {addr} did not answer within the timeout (--timeout)")]
    Timeout { addr: String },
    #[error("permission denied: {message}")]
    PermissionDenied { message: String },
    #[error("the agent failed: {message}")]
    Agent { message: String },
    #[error("cannot write the output")]
    Output(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => code::USAGE,
            Self::NotFound { .. } => code::NOT_FOUND,
            Self::CannotConnect { .. } | Self::Timeout { .. } => code::CANNOT_CONNECT,
            Self::PermissionDenied { .. } => code::PERMISSION_DENIED,
            Self::Agent { .. } | Self::Output(_) => code::AGENT_ERROR,
        }
    }

    /// Maps an agent's gRPC status (remote or in-process) to an error; `addr`
    /// names the agent for the messages that need it.
    pub fn from_status(status: tonic::Status, addr: &str) -> Self {
        use tonic::Code;
        let message = status.message().to_string();
        match status.code() {
            Code::NotFound => Self::NotFound { message },
            Code::InvalidArgument => Self::Usage(message),
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied { message },
            Code::Unavailable => Self::CannotConnect { addr: addr.to_string(), source: Box::new(status) },
            Code::DeadlineExceeded => Self::Timeout { addr: addr.to_string() },
            _ => Self::Agent { message: format!("{} ({:?})", message, status.code()) },
        }
    }

    /// Prints `error: <sentence>` and the `Caused by:` chain to stderr.
    pub fn report(&self) -> ExitCode {
        let mut text = format!("error: {self}\n");
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            text.push_str("Caused by:\n");
        }
        while let Some(cause) = source {
            text.push_str(&format!("  {cause}\n"));
            source = cause.source();
        }
        let _ = std::io::Write::write_all(&mut anstream::stderr(), text.as_bytes());
        ExitCode::from(self.exit_code())
    }
}
