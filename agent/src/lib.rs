//! osl-agent: reads the processes, cgroups and kernel state of the pod it runs
//! in, and serves them over gRPC. It reads the OS and never changes it.
//!
//! Layout: a reader per data source (`proc`, `cgroup`, `fds`, `net`, `probe`), the domain
//! `model`, `findings` over the model, the `snapshot` collector that ties them,
//! the background fd `trend` sampler,
//! one conversion layer (`convert`) to the osl.v1 messages, and the gRPC
//! `service` + `server`.

pub mod answers;
pub mod blocked;
pub mod cgroup;
pub mod convert;
pub mod decode;
pub mod error;
pub mod fds;
pub mod findings;
pub mod kube_events;
#[allow(unsafe_code)] // mallopt(3): see the module's doc
pub mod malloc;
pub mod model;
pub mod net;
pub mod par;
pub mod peer;
pub mod probe;
pub mod proc;
pub mod profile;
pub mod redact;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod testing;
pub mod trend;
pub mod watch;

pub use service::Agent;
pub use snapshot::Roots;
