//! The pod sandbox: a Kubernetes pod built on one Linux machine the way the kubelet
//! and containerd build it on a cgroup v1 node (DESIGN.md, test strategy 5).
//!
//! - **The pause container** is PID 1 of a new PID namespace and owns the pod's
//!   network, UTS and IPC namespaces: `setpriv --pdeathsig KILL unshare --pid --fork
//!   --kill-child --mount --net --uts --ipc sh -c …` brings loopback up, sets the
//!   hostname to the pod name, mounts the pod's `/proc`, and execs
//!   `perl -e '$0 = "pause"; …'`: one process, named `pause` like the real one,
//!   that reaps every zombie re-parented to it and otherwise sleeps. The network
//!   namespace has only `lo`, so nothing in it is reachable from the host.
//! - **Every container** (the pause included) gets a memory cgroup
//!   `/sys/fs/cgroup/memory/kubepods/burstable/pod<UID>/<64-hex id>` (with
//!   `memory.limit_in_bytes` when a limit is given) and its own mount namespace in
//!   which `/sys/fs/cgroup/memory` is a read-only bind mount of that cgroup alone
//!   (the host's whole-hierarchy mount is unmounted there, not just covered), as a
//!   runtime mounts cgroups into a container on a v1 host without a cgroup namespace:
//!   `/proc/self/cgroup` names the full `/kubepods/…/<id>` path, and a sibling reads the
//!   cgroup's files through `/proc/PID/root/sys/fs/cgroup/memory/`.
//! - **An app container** is `nsenter -t <pause> --pid --net --uts --ipc -- unshare
//!   --mount -- sh -c <init>`: the init script moves itself into the container's
//!   cgroup, mounts the cgroup and the pod's `/proc`, and only then execs the
//!   command, so everything the command starts is in the cgroup and the namespaces.
//!   `Pod::create` and `Pod::add_container` return after that exec.
//!
//! What is not modelled: root filesystems (containers share the host's), cpu and
//! other v1 controllers (containers stay in the host's root cgroups there), a pod
//! level memory limit, `/sys` (the host's sysfs), seccomp and capabilities (every
//! process runs as root with all capabilities).
//!
//! Dropping the [`Pod`] SIGKILLs the pause (the kernel then kills every process of the
//! PID namespace), reaps, kills whatever is still in the pod's cgroups and removes
//! them. A test process killed outright takes the pod with it (the pause's `unshare`
//! has a parent-death signal and kills the pause when it dies); what it leaves in
//! cgroupfs and in `$TMPDIR/osl-sandbox/` is swept by the next [`Pod::create`].

#![cfg(target_os = "linux")]

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The host's cgroup v1 memory hierarchy.
pub const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
/// Where the kubelet (cgroupfs driver) puts a Burstable pod, below the hierarchy root.
const QOS_DIR: &str = "kubepods/burstable";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a pause or a container may take to start, and the pod's cgroups to go.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// `$0` of the init script: while a container's cmdline holds it, it has not exec'd yet.
const INIT_MARKER: &str = "osl-sandbox-init";

/// One container of a pod: what a pod spec's container entry says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    /// argv; `command[0]` is looked up in the container's `PATH`.
    pub command: Vec<String>,
    /// `resources.limits.memory`: the cgroup's `memory.limit_in_bytes`.
    pub memory_limit_bytes: Option<u64>,
    /// The container's environment, on top of `PATH` and `HOSTNAME` (which it may
    /// override). Nothing of the test process's environment leaks in.
    pub env: Vec<(String, String)>,
}

impl ContainerSpec {
    pub fn new(name: impl Into<String>, command: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { name: name.into(), command: command.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// 64 lower-case hex digits, the last component of its cgroup path.
    pub id: String,
    /// Its main process in the host's PID namespace.
    pub host_pid: i32,
    /// The same process in the pod's PID namespace (the pause is 1).
    pub pod_pid: i32,
    /// The memory cgroup, as a host path (`/sys/fs/cgroup/memory/kubepods/…/<id>`).
    pub cgroup_dir: PathBuf,
    /// The memory cgroup as `/proc/PID/cgroup` names it (`/kubepods/burstable/pod<uid>/<id>`).
    pub cgroup_path: String,
    pub memory_limit_bytes: Option<u64>,
    /// The environment the spec gave it (on top of `PATH` and `HOSTNAME`).
    pub env: Vec<(String, String)>,
    /// stdout and stderr of the container.
    pub log_path: PathBuf,
}

impl Container {
    /// Everything the container wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

/// A pod: see the module documentation.
pub struct Pod {
    name: String,
    uid: String,
    /// `$TMPDIR/osl-sandbox/<uid>`: logs, mount staging points, the owner file.
    dir: PathBuf,
    /// `/sys/fs/cgroup/memory/kubepods/burstable/pod<uid>`.
    cgroup_dir: PathBuf,
    /// Container cgroups made so far, the pause's first.
    cgroups: Vec<PathBuf>,
    pause: Option<Pause>,
    containers: Vec<Container>,
    /// The `nsenter` parents of the containers' main processes.
    children: Vec<Child>,
    tools: &'static Tools,
}

struct Pause {
    container: Container,
    /// The `unshare` whose child is the pause.
    unshare: Child,
    net_ns: File,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("pause", &self.pause.as_ref().map(|p| &p.container))
            .field("containers", &self.containers)
            .finish_non_exhaustive()
    }
}

impl Pod {
    /// Starts the pause, then each container in order.
    pub fn create(name: &str, containers: &[ContainerSpec]) -> io::Result<Pod> {
        available().map_err(|reason| io::Error::new(io::ErrorKind::Unsupported, reason))?;
        if !is_dns_label(name) {
            return Err(invalid(format!("pod name {name:?} is not a DNS label")));
        }
        let tools = tools();
        sweep_stale();
        let uid = random_uid()?;
        let dir = registry().join(&uid);
        fs::create_dir_all(dir.join("mnt")).map_err(|e| at(e, "creating", &dir))?;
        let cgroup_dir = Path::new(MEMORY_ROOT).join(QOS_DIR).join(format!("pod{uid}"));
        let mut pod = Pod {
            name: name.to_owned(),
            uid,
            dir,
            cgroup_dir,
            cgroups: Vec::new(),
            pause: None,
            containers: Vec::new(),
            children: Vec::new(),
            tools,
        };
        fs::write(pod.dir.join("owner"), owner_token(std::process::id() as i32).unwrap_or_default())
            .map_err(|e| at(e, "writing", &pod.dir.join("owner")))?;
        create_cgroup_dir(&pod.cgroup_dir)?;
        pod.start_pause()?;
        for spec in containers {
            pod.add_container(spec.clone())?;
        }
        Ok(pod)
    }

    /// Adds a container to the running pod (a sidecar, an ephemeral container, the agent).
    pub fn add_container(&mut self, spec: ContainerSpec) -> io::Result<&Container> {
        if !is_dns_label(&spec.name) || spec.name == "pause" || self.containers.iter().any(|c| c.name == spec.name) {
            return Err(invalid(format!("container name {:?} is not a DNS label, is reserved or is taken", spec.name)));
        }
        if spec.command.is_empty() {
            return Err(invalid(format!("container {:?} has no command", spec.name)));
        }
        let pause_pid = self.pause_host_pid();
        let (id, cgroup_dir, cgroup_path) = self.make_cgroup(spec.memory_limit_bytes)?;
        let stage = self.dir.join("mnt").join(&id);
        fs::create_dir(&stage).map_err(|e| at(e, "creating", &stage))?;
        let started = self.dir.join(format!("{id}.started"));
        let log_path = self.dir.join(format!("{}.log", spec.name));
        let log = File::create(&log_path).map_err(|e| at(e, "creating", &log_path))?;
        let t = self.tools;
        let mut cmd = Command::new(&t.nsenter);
        cmd.args(["-t", &pause_pid.to_string(), "--pid", "--net", "--uts", "--ipc", "--"])
            .arg(&t.unshare)
            .args(["--mount", "--"])
            .arg(&t.sh)
            .args(["-c", &t.init_script, INIT_MARKER])
            .args([&cgroup_dir, &stage, &started])
            .args(&spec.command);
        self.container_env(&mut cmd, &spec.env);
        cmd.current_dir("/").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().map_err(|e| at(e, "running", &t.nsenter))?;
        self.children.push(child);
        let (host_pid, pod_pid) = self.wait_started(&spec.name, &started, &log_path)?;
        self.containers.push(Container {
            name: spec.name,
            id,
            host_pid,
            pod_pid,
            cgroup_dir,
            cgroup_path,
            memory_limit_bytes: spec.memory_limit_bytes,
            env: spec.env,
            log_path,
        });
        Ok(self.containers.last().expect("just pushed"))
    }

    /// A TCP connection to `127.0.0.1:port` inside the pod's network namespace, the
    /// way the kubelet bridges a port-forward into the pod. The socket stays in
    /// the pod's namespace for its whole life.
    pub fn connect(&self, port: u16) -> io::Result<TcpStream> {
        self.in_net_namespace(|| TcpStream::connect((Ipv4Addr::LOCALHOST, port)))?
    }

    /// [`Pod::connect`], retried until something listens or `timeout` passes.
    pub fn wait_for_port(&self, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.connect(port) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("nothing listens on 127.0.0.1:{port} in pod {} after {timeout:?}: {e}", self.name),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Runs `f` on a thread that has joined the pod's network namespace (sockets it
    /// makes live there); other namespaces stay the test's.
    pub fn in_net_namespace<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let net_ns = &self.pause.as_ref().ok_or_else(|| io::Error::other("the pod has no pause"))?.net_ns;
        std::thread::scope(|s| {
            let joined = s.spawn(move || {
                setns(net_ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::new(io::Error::from(e).kind(), format!("setns into the pod's netns: {e}"))
                })?;
                Ok(f())
            });
            joined.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A command that will run in the pod's network namespace (and nowhere else in
    /// the pod): how a test runs `kubectl-osl --agent 127.0.0.1:7450` "inside" the pod.
    pub fn net_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.tools.nsenter);
        cmd.args(["-t", &self.pause_host_pid().to_string(), "--net", "--"]).arg(program);
        cmd
    }

    /// `kubectl exec`: runs `argv` to completion in the container's namespaces and
    /// cgroup, with the container's environment. Like `kubectl exec`, it waits while
    /// a background process it started keeps stdout or stderr open.
    pub fn exec(&self, container: &str, argv: &[&str]) -> io::Result<Output> {
        let c = self.container(container).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("pod {} has no container {container:?}", self.name))
        })?;
        let t = self.tools;
        let mut cmd = Command::new(&t.nsenter);
        cmd.args(["-t", &self.pause_host_pid().to_string(), "--pid", "--net", "--uts", "--ipc", "--"])
            .arg(&t.sh)
            .args(["-c", &t.exec_script, "osl-sandbox-exec"])
            .arg(&c.cgroup_dir)
            .arg(format!("/proc/{}/ns/mnt", c.host_pid))
            .args(argv);
        self.container_env(&mut cmd, &c.env);
        cmd.current_dir("/").stdin(Stdio::null()).output().map_err(|e| at(e, "running", &t.nsenter))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's uid (random, uuid v4 format), as in `pod<uid>` of the cgroup path.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The pause process (PID 1 of the pod) in the host's PID namespace.
    pub fn pause_host_pid(&self) -> i32 {
        self.pause.as_ref().map_or(0, |p| p.container.host_pid)
    }

    /// The sandbox ("pause") container: pod pid 1, its own cgroup and mount namespace.
    pub fn pause(&self) -> &Container {
        &self.pause.as_ref().expect("a Pod is returned only once its pause runs").container
    }

    /// The containers started so far, in order (the pause is not among them).
    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// `/sys/fs/cgroup/memory/kubepods/burstable/pod<uid>`.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup_dir
    }

    /// The pod's scratch directory (container logs live here); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn start_pause(&mut self) -> io::Result<()> {
        let (id, cgroup_dir, cgroup_path) = self.make_cgroup(None)?;
        let stage = self.dir.join("mnt").join(&id);
        fs::create_dir(&stage).map_err(|e| at(e, "creating", &stage))?;
        let log_path = self.dir.join("pause.log");
        let log = File::create(&log_path).map_err(|e| at(e, "creating", &log_path))?;
        let t = self.tools;
        let mut cmd = Command::new(&t.setpriv);
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(&t.unshare)
            .args(["--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--net", "--uts", "--ipc", "--"])
            .arg(&t.sh)
            .args(["-c", &t.pause_script, "osl-sandbox-pause"])
            .args([&cgroup_dir, &stage])
            .arg(&self.name)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut unshare = spawn_from_keeper(cmd).map_err(|e| at(e, "running", &t.setpriv))?;
        let stdout = unshare.stdout.take().expect("piped");
        // The first line is "ready <host pid>"; end of file means the script failed.
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let host_pid = line.strip_prefix("ready ").and_then(|p| p.trim().parse::<i32>().ok());
        let Some(host_pid) = host_pid.filter(|_| read.is_ok()) else {
            let _ = unshare.kill();
            let _ = unshare.wait();
            return Err(io::Error::other(format!(
                "the pause of pod {} did not start ({read:?}, {line:?}): {}",
                self.name,
                fs::read_to_string(&log_path).unwrap_or_default().trim()
            )));
        };
        let ns_path = format!("/proc/{host_pid}/ns/net");
        let net_ns = match File::open(&ns_path) {
            Ok(f) => f,
            Err(e) => {
                let _ = kill(Pid::from_raw(host_pid), Signal::SIGKILL);
                let _ = unshare.wait();
                return Err(at(e, "opening", Path::new(&ns_path)));
            }
        };
        let container = Container {
            name: "pause".into(),
            id,
            host_pid,
            pod_pid: 1,
            cgroup_dir,
            cgroup_path,
            memory_limit_bytes: None,
            env: Vec::new(),
            log_path,
        };
        self.pause = Some(Pause { container, unshare, net_ns });
        Ok(())
    }

    /// A new container cgroup below the pod's: (id, host dir, path as /proc/PID/cgroup shows it).
    fn make_cgroup(&mut self, limit: Option<u64>) -> io::Result<(String, PathBuf, String)> {
        let id = random_hex(32)?;
        let dir = self.cgroup_dir.join(&id);
        fs::create_dir(&dir).map_err(|e| at(e, "creating cgroup", &dir))?;
        self.cgroups.push(dir.clone());
        if let Some(bytes) = limit {
            let file = dir.join("memory.limit_in_bytes");
            fs::write(&file, bytes.to_string()).map_err(|e| at(e, "writing", &file))?;
        }
        let path = format!("/{QOS_DIR}/pod{}/{id}", self.uid);
        Ok((id, dir, path))
    }

    fn container_env(&self, cmd: &mut Command, env: &[(String, String)]) {
        cmd.env_clear().env("PATH", DEFAULT_PATH).env("HOSTNAME", &self.name);
        for (k, v) in env {
            cmd.env(k, v);
        }
    }

    /// Waits until the init script has written "<host pid> <pod pid>" and exec'd the
    /// command (or the command already exited). Returns the two pids.
    fn wait_started(&mut self, name: &str, started: &Path, log: &Path) -> io::Result<(i32, i32)> {
        let deadline = Instant::now() + START_TIMEOUT;
        let (pod, uid) = (self.name.clone(), self.uid.clone());
        let failed = |what: String| {
            io::Error::other(format!(
                "container {name} of pod {pod} (uid {uid}) {what}; its output: {}",
                fs::read_to_string(log).unwrap_or_default().trim()
            ))
        };
        let mut pids = None;
        loop {
            if pids.is_none() {
                let text = fs::read_to_string(started).unwrap_or_default();
                if let Some(line) = text.strip_suffix('\n') {
                    let mut it = line.split(' ').map(str::parse::<i32>);
                    match (it.next(), it.next()) {
                        (Some(Ok(h)), Some(Ok(p))) => pids = Some((h, p)),
                        _ => return Err(failed(format!("wrote {text:?} as its pids"))),
                    }
                }
            }
            if let Some((host_pid, pod_pid)) = pids {
                // Exec'd when its cmdline no longer holds the init script (a zombie's is empty).
                let cmdline = fs::read(format!("/proc/{host_pid}/cmdline")).unwrap_or_default();
                let marker = format!("\0{INIT_MARKER}\0");
                if !cmdline.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    return Ok((host_pid, pod_pid));
                }
            } else if let Some(status) = self.children.last_mut().expect("pushed").try_wait()? {
                return Err(failed(format!("exited with {status} before its command started")));
            }
            if Instant::now() >= deadline {
                return Err(failed(format!("did not start within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn teardown(&mut self) {
        if let Some(p) = &self.pause {
            // PID 1 of the namespace: the kernel kills the rest of it.
            let _ = kill(Pid::from_raw(p.container.host_pid), Signal::SIGKILL);
        }
        if let Some(p) = &mut self.pause {
            let _ = p.unshare.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut dirs = self.cgroups.clone();
        dirs.push(self.cgroup_dir.clone());
        remove_cgroups(&dirs);
        let _ = fs::remove_dir_all(&self.dir);
        remove_empty_qos_dirs();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Why the sandbox cannot run here, if it cannot: not root, no cgroup v1 memory
/// hierarchy, a missing tool, or namespaces refused (an unprivileged container).
pub fn available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE.get_or_init(check_available).clone()
}

/// For a test: true when the sandbox can run. Otherwise prints why and returns
/// false, except under `CI=true`, where the machine is root and the test must run,
/// so it panics with the reason.
pub fn run_or_skip(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: the pod sandbox must run under CI but cannot: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

fn check_available() -> Result<(), String> {
    if !geteuid().is_root() {
        return Err(format!(
            "not root (euid {}): the pod sandbox needs root for namespaces, mounts and cgroups",
            geteuid()
        ));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let v1_memory = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        sep.is_some_and(|s| {
            f.get(4) == Some(&MEMORY_ROOT)
                && f.get(s + 1) == Some(&"cgroup")
                && f.get(s + 3).is_some_and(|o| o.split(',').any(|o| o == "memory"))
        })
    });
    if !v1_memory {
        return Err(format!("no cgroup v1 memory hierarchy mounted at {MEMORY_ROOT} (a cgroup v2-only host)"));
    }
    let t = TOOLS.get_or_init(resolve_tools).as_ref().map_err(Clone::clone)?;
    let probe = Command::new(&t.unshare)
        .args(["--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "--"])
        .arg(&t.sh)
        .args(["-c", "exit 0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {}: {e}", t.unshare.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "unshare of pid, mount and network namespaces is refused here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(())
}

/// Absolute paths of the host tools, and the scripts built from them.
#[derive(Debug)]
struct Tools {
    unshare: PathBuf,
    nsenter: PathBuf,
    setpriv: PathBuf,
    sh: PathBuf,
    pause_script: String,
    init_script: String,
    exec_script: String,
}

static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();

fn tools() -> &'static Tools {
    TOOLS.get().and_then(|t| t.as_ref().ok()).expect("available() checked the tools")
}

fn resolve_tools() -> Result<Tools, String> {
    let find = |name: &str, package: &str| {
        find_program(name)
            .ok_or_else(|| format!("`{name}` ({package}) is not on PATH nor in /usr/bin, /bin, /usr/sbin"))
    };
    let [unshare, nsenter, setpriv, mount, umount] =
        ["unshare", "nsenter", "setpriv", "mount", "umount"].map(|n| find(n, "util-linux"));
    let (unshare, nsenter, setpriv, mount, umount) = (unshare?, nsenter?, setpriv?, mount?, umount?);
    let ip = find("ip", "iproute2")?;
    let perl = find("perl", "perl-base")?;
    let sh = find("sh", "a POSIX shell")?;
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let (mount, umount, ip, perl) = (q(&mount), q(&umount), q(&ip), q(&perl));
    let m = MEMORY_ROOT;
    // $1 cgroup dir, $2 an empty staging directory. The cgroup is bound read-only
    // at the staging point first, then the host's whole-hierarchy mount is unmounted
    // and the binding moved in its place: the container's mountinfo shows one memory
    // mount, rooted at its cgroup. Same for /proc: a fresh procfs of the pod's PID
    // namespace replaces the host's. (The mount namespace is private: nothing
    // propagates to the host.) `read … < /proc/self/stat` runs in the shell itself
    // while /proc is still the host's: the host pid.
    let mounts = format!(
        "read -r host_pid _ < /proc/self/stat\n\
         echo 0 > \"$1/cgroup.procs\"\n\
         {mount} --bind -o ro \"$1\" \"$2\"\n\
         {umount} {m}\n\
         {mount} --move \"$2\" {m}\n\
         {mount} -t proc -o nosuid,nodev,noexec proc \"$2\"\n\
         {umount} -l /proc\n\
         {mount} --move \"$2\" /proc\n"
    );
    // A single process that reaps every orphan of the pod and sleeps, named "pause".
    let pause_loop = "$0 = \"pause\"; use POSIX \":sys_wait_h\"; \
        $SIG{CHLD} = sub { 1 while waitpid(-1, WNOHANG) > 0 }; $SIG{TERM} = $SIG{INT} = sub { exit 0 }; \
        sleep 1e9 while 1";
    let pause_script = format!(
        "set -eu\n{mounts}\
         {ip} link set lo up\n\
         echo \"$3\" > /proc/sys/kernel/hostname\n\
         echo \"ready $host_pid\"\n\
         exec {perl} -e {} > /dev/null\n",
        shell_quote(pause_loop)
    );
    // $3 the file that receives "<host pid> <pod pid>" just before the exec.
    let init_script = format!(
        "set -eu\n{mounts}\
         started=$3\n\
         shift 3\n\
         command -v \"$1\" > /dev/null || {{ echo \"$1: executable file not found in \\$PATH\" >&2; exit 127; }}\n\
         echo \"$host_pid $$\" > \"$started\"\n\
         exec \"$@\"\n"
    );
    // $1 the container's cgroup dir, $2 its mount namespace file.
    let exec_script = "set -eu\necho 0 > \"$1/cgroup.procs\"\nns=$2\nshift 2\nexec nsenter --mount=\"$ns\" -- \"$@\"\n"
        .replace("nsenter", &q(&nsenter));
    Ok(Tools { unshare, nsenter, setpriv, sh, pause_script, init_script, exec_script })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_absolute() && fs::metadata(p).is_ok_and(|m| m.is_file()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Spawns from one thread that lives as long as the test process: a
/// parent-death signal fires when the parent *thread* exits, and a test's thread
/// may end while its pod lives on.
fn spawn_from_keeper(mut cmd: Command) -> io::Result<Child> {
    type Job = Box<dyn FnOnce() + Send>;
    static KEEPER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("osl-sandbox-keeper".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .expect("spawning the sandbox keeper thread");
        tx
    });
    let (tx, rx) = mpsc::sync_channel(1);
    keeper
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .map_err(|_| io::Error::other("the sandbox keeper thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("the sandbox keeper thread is gone"))?
}

fn create_cgroup_dir(dir: &Path) -> io::Result<()> {
    // Another process's teardown may remove an empty kubepods/burstable between
    // our mkdirs: retry.
    let mut tries = 0;
    loop {
        match fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 20 => tries += 1,
            Err(e) => return Err(at(e, "creating cgroup", dir)),
        }
    }
}

/// Kills whatever is left in the cgroups and removes them, children first,
/// retrying while the kernel finishes with dying tasks.
fn remove_cgroups(dirs: &[PathBuf]) {
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    loop {
        let mut left = false;
        for dir in dirs.iter().filter(|d| d.exists()) {
            for pid in fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if fs::remove_dir(dir).is_err() && dir.exists() {
                left = true;
            }
        }
        if !left || Instant::now() >= deadline {
            if left {
                eprintln!("pod sandbox: could not remove every cgroup of {dirs:?} in {TEARDOWN_TIMEOUT:?}");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn remove_empty_qos_dirs() {
    let qos = Path::new(MEMORY_ROOT).join(QOS_DIR);
    // Fails (and is left) while another pod lives there, or on a real node.
    let _ = fs::remove_dir(&qos);
    let _ = fs::remove_dir(qos.parent().expect("kubepods"));
}

/// `$TMPDIR/osl-sandbox`: one directory per live pod, named by its uid.
fn registry() -> PathBuf {
    std::env::temp_dir().join("osl-sandbox")
}

/// "<pid> <start time>": who made a pod, so a later run knows whether it is gone.
fn owner_token(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Removes the pods of test processes that died without dropping them.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(registry()) else { return };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let alive = match owner.split_once(' ').and_then(|(pid, _)| pid.parse::<i32>().ok()) {
            Some(pid) => owner_token(pid).is_some_and(|t| t == owner),
            // Being created right now, unless it is old.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < START_TIMEOUT * 6),
        };
        if alive {
            continue;
        }
        let uid = entry.file_name();
        let pod_cgroup = Path::new(MEMORY_ROOT).join(QOS_DIR).join(format!("pod{}", uid.to_string_lossy()));
        let mut dirs: Vec<PathBuf> = fs::read_dir(&pod_cgroup)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        dirs.push(pod_cgroup);
        remove_cgroups(&dirs);
        let _ = fs::remove_dir_all(&dir);
    }
    remove_empty_qos_dirs();
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn random_hex(bytes: usize) -> io::Result<String> {
    let b: [u8; 64] = random_bytes()?;
    Ok(b[..bytes].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// A random uuid (version 4), as the API server gives a pod.
fn random_uid() -> io::Result<String> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// What Kubernetes allows as a container name (and this sandbox as a pod name, its hostname).
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn at(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
