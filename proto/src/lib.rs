//! osl's gRPC contract, package `osl.v1`.
//!
//! The generated code stays in a private module; `osl_proto::v1` is the public face.
//! Messages derive serde so the CLI's `-o json|yaml` is the contract itself: field
//! names are the proto names, enums are written as short lower-case names
//! (`"critical"`, `"sleeping"`), and absent values are `null`.

mod generated {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("osl.v1");
}

pub mod enum_names;
pub mod text;
pub mod units;

pub mod v1 {
    pub use crate::generated::*;
}

/// The encoded `FileDescriptorSet` of `osl.v1` (with its imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/osl_v1_descriptor.bin"));

/// The fully qualified gRPC service name, for health checks.
pub const DIAGNOSTICS_SERVICE: &str = "osl.v1.Diagnostics";
