//! Compiles `osl/v1/*.proto` with protox (pure Rust: no system `protoc`) and
//! generates prost messages + tonic client/server. The encoded descriptor set is
//! written next to the code so the agent can serve gRPC reflection.

use prost::Message;
use std::{env, fs, io, path::PathBuf};

const PROTOS: &[&str] =
    &["osl/v1/common.proto", "osl/v1/process.proto", "osl/v1/cgroup.proto", "osl/v1/diagnostics.proto"];

/// Enum-typed fields: serde writes them as their proto names, not numbers.
const ENUM_FIELDS: &[(&str, &str)] = &[
    (".osl.v1.Finding.severity", "severity"),
    (".osl.v1.Process.state", "process_state"),
    (".osl.v1.CgroupLocation.version", "cgroup_version"),
    (".osl.v1.AgentInfo.level", "privilege_level"),
    (".osl.v1.Fd.kind", "fd_kind"),
    (".osl.v1.FdStat.kind", "fd_kind"),
    (".osl.v1.Socket.tcp_state", "tcp_state"),
    (".osl.v1.ListFdsRequest.kinds", "fd_kind::list"),
    (".osl.v1.ListFdsRequest.tcp_states", "tcp_state::list"),
    (".osl.v1.ListFdsRequest.fdinfo", "fd_info_level"),
    (".osl.v1.Report.kind", "report_kind"),
    (".osl.v1.ReportSummary.kind", "report_kind"),
    (".osl.v1.SyscallProfile.backend", "profile_backend"),
    (".osl.v1.ProfileSyscallsRequest.backend", "profile_backend"),
];

fn main() -> io::Result<()> {
    // The directory, not the PROTOS: their imports (fds, reports, profile…) count too.
    println!("cargo:rerun-if-changed=osl/v1");
    let fds = protox::compile(PROTOS, ["."]).map_err(io::Error::other)?;
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("osl_v1_descriptor.bin"), fds.encode_to_vec())?;

    let mut builder = tonic_prost_build::configure()
        .btree_map(".")
        .type_attribute(".osl.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".osl.v1", "#[serde(default)]");
    for (field, module) in ENUM_FIELDS {
        builder = builder.field_attribute(field, format!("#[serde(with = \"crate::enum_names::{module}\")]"));
    }
    builder.compile_fds(fds)
}
