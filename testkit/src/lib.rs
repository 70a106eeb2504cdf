//! Harnesses that let tests run the real agent, the real CLI and the real
//! `kubectl` end to end on one Linux machine (see DESIGN.md, test strategy 5
//! and 6): [`api`] speaks the slice of the Kubernetes API the CLI uses,
//! [`sandbox`] builds a pod out of namespaces and cgroups.

pub mod api;
pub mod sandbox;
