//! CLI errors and their documented exit codes.

use crate::render::escape;
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
    /// The agent cannot be reached, or went away in the middle of a call.
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
    /// The connection broke during a call: the agent was likely killed (an OOM
    /// kill, a failed probe) or restarted. In a pod, `container` says what the
    /// pod's status says of the agent's container now.
    #[error(
        "the agent at {addr} went away mid-call: the connection broke, so it was likely killed or restarted{}",
        container_status.as_ref().map(|c| format!("; its container now: {c}")).unwrap_or_default()
    )]
    AgentGone {
        addr: String,
        container_status: Option<String>,
        #[source]
        source: BrokenCall,
    },
    #[error("cannot write the output")]
    Output(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => code::USAGE,
            Self::NotFound { .. } => code::NOT_FOUND,
            Self::CannotConnect { .. } | Self::Timeout { .. } | Self::AgentGone { .. } => code::CANNOT_CONNECT,
            Self::PermissionDenied { .. } => code::PERMISSION_DENIED,
            Self::Agent { .. } | Self::Output(_) => code::AGENT_ERROR,
        }
    }

    /// Maps an agent's gRPC status (remote or in-process) to an error; `addr`
    /// names the agent for the messages that need it.
    pub fn from_status(status: tonic::Status, addr: &str) -> Self {
        use tonic::Code;
        if went_away(&status) {
            return Self::AgentGone { addr: addr.to_string(), container_status: None, source: BrokenCall(status) };
        }
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

    /// Prints `error: <sentence>` and the `Caused by:` chain to stderr, each
    /// line escaped: the agent's messages are text from the pod.
    pub fn report(&self) -> ExitCode {
        let mut text = format!("error: {}\n", escape::text(&self.to_string()));
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            text.push_str("Caused by:\n");
        }
        while let Some(cause) = source {
            text.push_str(&format!("  {}\n", escape::text(&cause.to_string())));
            source = cause.source();
        }
        let _ = std::io::Write::write_all(&mut anstream::stderr(), text.as_bytes());
        ExitCode::from(self.exit_code())
    }
}

/// The status a call ended with when its connection broke; its sources are the
/// transport's (hyper, h2, the socket's I/O error).
#[derive(Debug)]
pub struct BrokenCall(pub tonic::Status);

impl std::fmt::Display for BrokenCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.0.code();
        match std::error::Error::source(&self.0) {
            Some(_) => write!(f, "the call ended with gRPC status {code:?}"),
            None => write!(f, "the call ended with gRPC status {code:?}: {}", self.0.message()),
        }
    }
}

impl std::error::Error for BrokenCall {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// Whether a call failed because the connection to the agent broke under it
/// (the agent killed or restarted, its pod deleted, the port-forward closed),
/// not because the agent answered with an error. The client's own statuses
/// carry the transport error as their source: a typed one (tonic's transport
/// error, a reset or broken socket) is proof; hyper's and h2's errors, which
/// this crate does not link, are known by their words.
pub fn went_away(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    use tonic::Code;
    if !matches!(status.code(), Code::Unknown | Code::Unavailable | Code::Internal | Code::Cancelled) {
        return false;
    }
    const WORDS: &[&str] = &[
        "transport error",
        "connection reset",
        "broken pipe",
        "stream closed",
        "connection closed",
        "connection error",
        "connection aborted",
        "h2 protocol error",
        "stream error",
        "error reading a body from connection",
        "unexpected end of file",
        "unexpected eof",
    ];
    let said = |text: &str| {
        let text = text.to_ascii_lowercase();
        WORDS.iter().any(|w| text.contains(w))
    };
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        // A (re)connection refused: the agent is not there, it did not go away during the call.
        let refused = e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused);
        if refused || e.to_string().to_ascii_lowercase().contains("connect error") {
            return false;
        }
        let broken_io = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::UnexpectedEof
            )
        });
        if broken_io || e.is::<tonic::transport::Error>() || said(&e.to_string()) {
            return true;
        }
        cause = e.source();
    }
    // No source: the words of a status the client made from an h2 reset. An
    // agent's own Internal errors (which may quote an I/O error) are not it.
    status.code() != Code::Internal && said(status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn io(kind: std::io::ErrorKind, what: &str) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(std::io::Error::new(kind, what.to_string()))
    }

    #[test]
    fn a_broken_connection_is_the_agent_going_away() {
        use std::io::ErrorKind;
        // What tonic gives when the agent is killed mid-call (seen against a real agent).
        let mut killed = Status::new(Code::Unknown, "transport error");
        killed.set_source(std::sync::Arc::new(std::io::Error::new(
            ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        )));
        assert!(went_away(&killed));
        let e = CliError::from_status(killed, "127.0.0.1:7450");
        assert_eq!(e.exit_code(), code::CANNOT_CONNECT);
        assert_eq!(
            e.to_string(),
            "the agent at 127.0.0.1:7450 went away mid-call: the connection broke, so it was likely killed or restarted"
        );
        let chain: Vec<String> =
            std::iter::successors(std::error::Error::source(&e), |c| c.source()).map(ToString::to_string).collect();
        assert_eq!(chain, ["the call ended with gRPC status Unknown", "stream closed because of a broken pipe"]);
        let CliError::AgentGone { source, .. } = &e else { panic!("{e:?}") };
        assert_eq!(source.0.code(), Code::Unknown, "the status is kept, typed");

        for (code, cause) in [
            (Code::Unavailable, io(ErrorKind::ConnectionReset, "connection reset by peer")),
            (Code::Unknown, io(ErrorKind::Other, "h2 protocol error: stream closed")),
            (Code::Internal, io(ErrorKind::Other, "connection error received: not a result of an error")),
            (Code::Cancelled, io(ErrorKind::UnexpectedEof, "early eof")),
        ] {
            let mut s = Status::new(code, "");
            s.set_source(std::sync::Arc::from(cause));
            assert!(went_away(&s), "{s:?}");
        }
        assert!(went_away(&Status::unavailable("error reading a body from connection: connection reset")));
    }

    #[test]
    fn the_agents_own_errors_are_not() {
        assert!(!went_away(&Status::internal("reading /proc/1/smaps: broken pipe")), "the agent's own I/O error");
        assert!(!went_away(&Status::unknown("something else")));
        assert!(!went_away(&Status::not_found("process 1 not found: connection reset")));
        assert!(!went_away(&Status::deadline_exceeded("transport error")));
        let mut refused = Status::new(Code::Unavailable, "tcp connect error");
        refused.set_source(std::sync::Arc::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")));
        assert!(!went_away(&refused), "never connected is not going away");
        let mut reconnect = Status::new(Code::Unavailable, "transport error");
        reconnect.set_source(std::sync::Arc::from(io(std::io::ErrorKind::Other, "tcp connect error")));
        assert!(!went_away(&reconnect), "a reconnection that failed is cannot connect");
        let e = CliError::from_status(Status::unknown("boom"), "a");
        assert_eq!(e.to_string(), "the agent failed: boom (Unknown)");
    }

    #[test]
    fn the_pods_word_on_the_agent_follows_the_sentence() {
        let e = CliError::AgentGone {
            addr: "pod/web (container osl-agent)".into(),
            container_status: Some("last state: Terminated (OOMKilled, exit 137), restarts: 3".into()),
            source: BrokenCall(Status::unknown("transport error")),
        };
        assert!(
            e.to_string().ends_with(
                "likely killed or restarted; its container now: last state: Terminated (OOMKilled, exit 137), restarts: 3"
            ),
            "{e}"
        );
    }
}
