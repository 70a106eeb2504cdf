//! osl-agent's integration tests: real processes with known state, real cgroups
//! (as root), fixture trees for what this machine cannot show, and the gRPC server.

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails

mod api_recorder;
mod cgroup_v1;
mod cgroup_v2;
mod fds;
mod grpc;
mod kube_events;
mod memory;
mod pre_oom;
mod profile;
mod ptrace;
mod races;
mod store;
mod support;
