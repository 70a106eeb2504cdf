#!/usr/bin/env python3
"""osl in real pods: the chart's own example Deployment, rendered by Helm for each
level, run by a real container engine (podman kube play + runc), and asked
through the real CLI from inside the pod's network namespace.

Per pod (levels basic, ptrace, ebpf under the chart's default RuntimeDefault
seccomp, and ebpf with the chart's Localhost profile osl-ebpf.json):
- the agent runs with exactly the capabilities, user, read-only root and seccomp
  mode the manifest sets, and reports the level the probe measured;
- `diagnose` lists every app process under the app container, with the memory
  limit from the pod spec;
- `fds` shows the app's TCP connection in CLOSE_WAIT, endpoints exact;
- `strace` counts the app's syscalls exactly (ptrace; ebpf where the profile
  allows it), and where it does not, falls back to ptrace saying why;
- at level ptrace, a leak in the app container gets a pre-OOM report before the
  kill and a post-mortem naming the victim.

Needs root, podman and runc (see .ci/run), the static agent and test programs
(built here with the Dockerfile's flags) and the debug CLI.

    python3 testkit/podman/test_pods.py                 # all pods
    python3 testkit/podman/test_pods.py --level ptrace  # one
    python3 testkit/podman/test_pods.py --keep          # leave the pods running

Ends with "pods: N passed, M failed"; exit 1 on a failure. Outside CI, without
root or podman, prints "skipped: <reason>" and exits 0; under CI=true that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "charts" / "osl"
PROFILE = CHART / "seccomp" / "osl-ebpf.json"
STATIC = ROOT / "target" / "static" / "x86_64-unknown-linux-gnu" / "release"
CLI = ROOT / "target" / "debug" / "kubectl-osl"
AGENT_IMAGE = "localhost/osl-agent:podman-test"
APP_IMAGE = "localhost/osl-app:podman-test"
# Where kube play looks for Localhost profiles (--seccomp-profile-root), as kubelet
# looks in /var/lib/kubelet/seccomp.
SECCOMP_ROOT = Path("/var/lib/kubelet/seccomp")
NAMESPACE = "shop"
PEER_PORT = 9000
MIB = 1 << 20

CAPS = {
    "basic": [],
    "ptrace": ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"],
    "ebpf": ["CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_PERFMON", "CAP_SYS_PTRACE"],
}
CAP_BITS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_PERFMON": 38, "CAP_BPF": 39}

# name -> (chart values, the level the probe must measure)
PODS = {
    "basic": ({"level": "basic"}, "basic"),
    "ptrace": ({"level": "ptrace"}, "ptrace"),
    # The chart's defaults: this engine's RuntimeDefault allows bpf() only with
    # CAP_SYS_ADMIN, so the probe measures ptrace and says why.
    "ebpf": ({"level": "ebpf"}, "ptrace"),
    "ebpf-localhost": ({"level": "ebpf", "seccompProfile": {"type": "Localhost",
                                                            "localhostProfile": "osl/osl-ebpf.json"}},
                       "ebpf"),
    # The crash loop: an app that leaks 16 MiB/s into its 32 MiB from its start, and
    # the engine's restartPolicy Always (a Deployment's) starting it again.
    "crashloop": ({"level": "ptrace"}, "ptrace"),
}


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail != "" else ""))
        return ok

    def equal(self, name: str, got: object, want: object) -> bool:
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


R = Results()


def run(*cmd: str | Path, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def skip_or_fail(reason: str) -> int:
    if os.environ.get("CI") == "true":
        print(f"pods: cannot run under CI: {reason}", file=sys.stderr)
        return 1
    print(f"skipped: {reason}")
    return 0


# --- images -----------------------------------------------------------------------------

def build_binaries() -> None:
    """The agent exactly as the Dockerfile builds it, and the test programs the same way
    (static, so that the app image needs no libc)."""
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static", CARGO_TARGET_DIR=str(ROOT / "target/static"))
    run("cargo", "build", "--release", "--locked", "--target", "x86_64-unknown-linux-gnu", "-p", "osl-agent",
        "--bin", "osl-agent", "--bin", "osl-testproc", "--bin", "osl-syscalls", cwd=ROOT, env=env, timeout=1800)
    run("cargo", "build", "--locked", "--bin", "kubectl-osl", cwd=ROOT, timeout=1800)


def build_images(work: Path) -> dict[str, int]:
    # The agent: the Dockerfile's final stage (its build stage needs a registry's
    # rust image; the binary above is built with the same flags).
    ctx = work / "agent"
    (ctx / "out/var/run/osl/reports").mkdir(parents=True)
    os.chmod(ctx / "out/var/run/osl/reports", 0o777)
    shutil.copy2(STATIC / "osl-agent", ctx / "out/osl-agent")
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile[dockerfile.index("FROM scratch"):]
    (ctx / "Containerfile").write_text(final.replace("COPY --from=build /out/ /", "COPY out/ /"))
    run("podman", "build", "--quiet", "-t", AGENT_IMAGE, "-f", ctx / "Containerfile", ctx)
    # The app: busybox (sh, sleep) and the static test programs, from a rootfs tar.
    busybox = shutil.which("busybox") or "/bin/busybox"
    tar_path = work / "app.tar"
    with tarfile.open(tar_path, "w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        tar.add(busybox, "bin/busybox")
        for applet in ("sh", "sleep", "cat", "ls"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for prog in ("osl-testproc", "osl-syscalls"):
            tar.add(STATIC / prog, f"bin/{prog}")
    run("podman", "import", "--change", "CMD=/bin/sh", tar_path, APP_IMAGE)
    sizes = {}
    for image in (AGENT_IMAGE, APP_IMAGE):
        sizes[image] = int(run("podman", "image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    return sizes


# --- manifests --------------------------------------------------------------------------

def render(values: dict, release: str) -> dict:
    import helm_python as helm
    import yaml
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=release, namespace=NAMESPACE)
    deploys = [d for d in yaml.safe_load_all(manifests["osl/templates/example-deployment.yaml"]) if d]
    assert len(deploys) == 1 and deploys[0]["kind"] == "Deployment", deploys
    return deploys[0]


def adapt(deploy: dict, uid: str, crashloop: bool = False) -> dict:
    """What podman needs changed in the chart's Deployment, each for a stated reason;
    the chart itself stays as Kubernetes gets it."""
    spec = deploy["spec"]["template"]["spec"]
    app, agent = spec["containers"][0], spec["containers"][1]
    assert app["name"] == "app" and agent["name"] == "osl-agent", [c["name"] for c in spec["containers"]]
    # No registry here: the locally built images.
    agent["image"], app["image"] = AGENT_IMAGE, APP_IMAGE
    agent["imagePullPolicy"] = app["imagePullPolicy"] = "Never"
    # podman maps every containerPort to the host, which needs a bridge network (no
    # CNI here); Kubernetes only documents them. The agent listens in the pod anyway.
    agent.pop("ports")
    # The test workload instead of the example's bare sleep: the same sleep, and a
    # process holding a TCP connection whose peer the harness closes (CLOSE_WAIT).
    app["command"] = ["/bin/sh", "-c", f"/bin/osl-testproc connect {PEER_PORT} & exec /bin/sleep 2147483647"]
    if crashloop:
        app["command"] = ["/bin/osl-testproc", "eat", "16"]
    # podman's downward API knows metadata.name but not namespace or uid: the values
    # Kubernetes would inject, literally.
    for var in agent["env"]:
        field = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field in ("metadata.namespace", "metadata.uid"):
            var.pop("valueFrom")
            var["value"] = NAMESPACE if field == "metadata.namespace" else uid
    # podman 4.3 makes an emptyDir a named volume, shared by every pod that names it
    # and kept after kube down; Kubernetes gives each pod its own. One per release
    # (Pod.down removes it).
    volume = f"{deploy['metadata']['name']}-reports"
    for v in spec["volumes"]:
        if v["name"] == "osl-reports":
            v["name"] = volume
    for m in agent["volumeMounts"]:
        if m["name"] == "osl-reports":
            m["name"] = volume
    deploy["x-volume"] = volume
    # podman 4.3 ignores securityContext.seccompProfile and reads the annotations that
    # Kubernetes used before 1.19 (and translated the field to until 1.27); without
    # one it applies its default profile, which is RuntimeDefault. A Localhost
    # profile becomes the annotation; podman takes only the file name after
    # "localhost/", so --seccomp-profile-root names the profile's directory under
    # kubelet's root (Pod.play).
    for c in spec["containers"]:
        profile = c.get("securityContext", {}).get("seccompProfile", {})
        if profile.get("type") == "Localhost":
            annotations = deploy["spec"]["template"]["metadata"].setdefault("annotations", {})
            key = f"container.seccomp.security.alpha.kubernetes.io/{c['name']}"
            annotations[key] = f"localhost/{Path(profile['localhostProfile']).name}"
            deploy["x-seccomp-dir"] = str(Path(profile["localhostProfile"]).parent)
    return deploy


# --- pods -------------------------------------------------------------------------------

class Pod:
    def __init__(self, name: str, deploy: dict, work: Path) -> None:
        self.name = name
        self.deploy = deploy
        self.file = work / f"{name}.yaml"
        self.infra_pid = 0
        self.ids: dict[str, str] = {}
        self.pod = ""
        self.volume = deploy.get("x-volume", "")

    def play(self) -> float:
        import yaml
        profile_root = SECCOMP_ROOT / self.deploy.pop("x-seccomp-dir", "")
        self.volume = self.deploy.pop("x-volume", "")
        self.file.write_text(yaml.safe_dump(self.deploy))
        started = time.monotonic()
        # No bridge network (no CNI here): the pod gets its own network namespace with
        # only loopback, which is all the agent listens on.
        out = run("podman", "kube", "play", "--network", "none", "--seccomp-profile-root", profile_root,
                  self.file).stdout
        self.pod = out.split("Pod:\n", 1)[1].split()[0]
        infra = run("podman", "pod", "inspect", "--format", "{{.InfraContainerID}}", self.pod).stdout.strip()
        self.infra_pid = int(run("podman", "inspect", "--format", "{{.State.Pid}}", infra).stdout.strip())
        for c in json.loads(run("podman", "ps", "--all", "--filter", f"pod={self.pod}", "--format", "json").stdout):
            for container in ("app", "osl-agent"):
                if any(n.endswith(f"-{container}") for n in c["Names"]):
                    self.ids[container] = c["Id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.osl("ps", "-o", "json", check=False, timeout=5).returncode == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"the agent of {self.pod} did not answer in 60 s: {self.logs('osl-agent')}")

    def pid(self, container: str) -> int:
        return int(run("podman", "inspect", "--format", "{{.State.Pid}}", self.ids[container]).stdout.strip())

    def logs(self, container: str) -> str:
        p = run("podman", "logs", self.ids.get(container, container), check=False)
        return p.stdout + p.stderr

    def netns(self, *cmd: str | Path) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.infra_pid}/ns/net", *map(str, cmd)]

    def osl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(*self.netns(CLI, *args, "--agent", "127.0.0.1:7450"), check=check, timeout=timeout,
                   env=dict(os.environ, NO_COLOR="1"))

    def osl_json(self, *args: str) -> dict:
        return json.loads(self.osl(*args, "-o", "json").stdout)

    def down(self) -> None:
        if self.file.exists():
            run("podman", "kube", "down", self.file, check=False)
        else:  # left over from an interrupted run: kube play names it so
            run("podman", "pod", "rm", "--force", f"{self.deploy['metadata']['name']}-pod-0", check=False)
        if self.volume:
            run("podman", "volume", "rm", "--force", self.volume, check=False)


def host_pid_of(pod_pid: int, near: int) -> int:
    """The host pid of a process whose innermost pid is `pod_pid`, in the pid namespace
    of host process `near`."""
    ns = os.readlink(f"/proc/{near}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            nspid = next(line for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                         if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if int(nspid[-1]) == pod_pid:
            return int(entry)
    raise LookupError(f"no process {pod_pid} in the pid namespace of {near}")


def close_peer(pod: Pod) -> None:
    """Listens on the peer port inside the pod, accepts the app's connection and closes
    it: the app, which never reads, is left in CLOSE_WAIT."""
    script = (f"import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
              f"s.bind(('127.0.0.1',{PEER_PORT}));s.listen(1);s.settimeout(60)\nc,_=s.accept();c.close();s.close()\n")
    run(*pod.netns(sys.executable, "-c", script), timeout=90)


# --- the checks -------------------------------------------------------------------------

def check_agent(pod: Pod, values: dict, level: str, info: dict) -> None:
    n = pod.name
    base = values["level"]
    agent = pod.deploy["spec"]["template"]["spec"]["containers"][1]
    sc = agent["securityContext"]
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pod.pid('osl-agent')}/status").read_text().splitlines()
                  if ":\t" in line)
    cap_eff = int(status["CapEff"], 16)
    want_bits = sum(1 << CAP_BITS[c] for c in CAPS[base])
    R.equal(f"{n}: the agent's effective capabilities are the manifest's", cap_eff, want_bits)
    R.equal(f"{n}: the manifest adds exactly the level's capabilities",
            sorted("CAP_" + c for c in sc["capabilities"].get("add", [])), CAPS[base])
    R.equal(f"{n}: the agent reports its capabilities", sorted(info["capabilities"]), CAPS[base])
    R.equal(f"{n}: the agent runs as the manifest's user", status["Uid"].split()[:2],
            [str(sc["runAsUser"])] * 2)
    R.equal(f"{n}: seccomp filters the agent", status["Seccomp"].strip(), "2")
    R.equal(f"{n}: no new privileges", status["NoNewPrivs"].strip(), "1")
    mount_opts = next(line.split()[5] for line in Path(f"/proc/{pod.pid('osl-agent')}/mountinfo").read_text()
                      .splitlines() if line.split()[4] == "/")
    R.check(f"{n}: the agent's root is read-only as the manifest says",
            sc["readOnlyRootFilesystem"] is True and "ro" in mount_opts.split(","), mount_opts)
    R.equal(f"{n}: the probe measures level", info["level"], level)
    limits = {u["field"]: u["reason"] for u in info.get("limitations", [])}
    if level == "ebpf":
        R.check(f"{n}: no limitation at level ebpf", not limits, limits)
    else:
        why = limits.get("in-kernel syscall counting", "")
        want = "seccomp profile refuses bpf()" if base == "ebpf" else "needs CAP_BPF and CAP_PERFMON"
        R.check(f"{n}: in-kernel counting refused with its real cause", want in why, why)


def check_neighbour(pod: Pod) -> None:
    """A process of the app container dials the agent on the pod's loopback: the
    agent refuses it osl.v1 (the sandbox test checks the PERMISSION_DENIED a client
    gets; here, that the engine's pod is told apart from the port-forward path)."""
    n = pod.name
    # nc holds the connection while sleep keeps its stdin open, then both exit.
    run("podman", "exec", pod.ids["app"], "/bin/sh", "-c", "/bin/sleep 2 | /bin/busybox nc 127.0.0.1 7450",
        check=False, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while "Neighbour" not in pod.logs("osl-agent") and time.monotonic() < deadline:
        time.sleep(0.2)
    refused = [l for l in pod.logs("osl-agent").splitlines() if "osl.v1 refused" in l]
    R.check(f"{n}: a connection from the app container is refused, naming its process",
            any("Neighbour" in l and "busybox" in l for l in refused), refused[-3:])
    R.check(f"{n}: the port-forward path is never refused", not any("Neighbour" not in l for l in refused),
            refused[-3:])


def check_diagnose(pod: Pod) -> dict:
    n = pod.name
    d = pod.osl_json("diagnose")
    app_id, agent_id = pod.ids["app"], pod.ids["osl-agent"]
    containers = {c["id"]: c for c in d["containers"]}
    spec = pod.deploy["spec"]["template"]["spec"]["containers"]
    for cid, c in ((app_id, spec[0]), (agent_id, spec[1])):
        want = quantity(c["resources"]["limits"]["memory"])
        got = (containers.get(cid, {}).get("memory") or {}).get("limit_bytes")
        R.equal(f"{n}: container {c['name']}'s limit is the pod spec's", int(got or 0), want)
    app_procs = sorted(p["comm"] for p in d["processes"] if p.get("container_id") == app_id)
    R.equal(f"{n}: every app process, under the app container", app_procs, ["osl-testproc", "sleep"])
    host = sorted(Path(f"/proc/{h}/comm").read_text().strip() for h in cgroup_procs(pod.pid("app")))
    R.equal(f"{n}: the same processes the engine put in the app's cgroup", app_procs, host)
    return d


def cgroup_procs(host_pid: int) -> list[int]:
    line = next(x for x in Path(f"/proc/{host_pid}/cgroup").read_text().splitlines() if ":memory:" in x)
    path = Path("/sys/fs/cgroup/memory") / line.split(":", 2)[2].lstrip("/")
    return [int(p) for p in (path / "cgroup.procs").read_text().split()]


def quantity(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", q)
    assert m, q
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]


def check_close_wait(pod: Pod, d: dict) -> None:
    n = pod.name
    holder = next(p for p in d["processes"] if p["comm"] == "osl-testproc")
    local_port = int(pod.logs("app").split("ready ")[-1].split()[0])
    deadline = time.monotonic() + 10
    while True:
        fds = pod.osl_json("fds", "--pid", str(holder["pid"]))["fds"]
        tcp = [f["socket"] for f in fds if (f.get("socket") or {}).get("protocol") == "tcp"]
        if tcp and tcp[0].get("tcp_state") == "close_wait" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    want = [{"local": f"127.0.0.1:{local_port}", "remote": f"127.0.0.1:{PEER_PORT}", "state": "close_wait"}]
    got = [{"local": s.get("local"), "remote": s.get("remote"), "state": s.get("tcp_state")} for s in tcp]
    R.equal(f"{n}: fds shows the app's connection in CLOSE_WAIT, exactly", got, want)


def check_strace(pod: Pod, backend_args: list[str], want_backend: str, reason_has: str) -> None:
    """osl-syscalls, exec'd into the app container, makes exactly 2000 getppid and 500
    failing openat calls while profiled."""
    n = pod.name
    work = subprocess.Popen(["podman", "exec", "-i", pod.ids["app"], "/bin/osl-syscalls"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = work.stdout.readline().split()
        pod_pid = int(ready[1])
        host_pid = host_pid_of(pod_pid, pod.pid("app"))
        profile = subprocess.Popen(pod.netns(CLI, "strace", "--pid", str(pod_pid), *backend_args, "--duration",
                                             "20s", "-o", "json", "--agent", "127.0.0.1:7450", "--timeout", "60s"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if want_backend == "ptrace":
            wait_traced(host_pid)
        else:
            time.sleep(2)  # nothing outside shows an attached BPF program's filter; it attaches in ms
        started = time.monotonic()
        work.stdin.write("go\n")
        work.stdin.flush()
        done = work.stdout.readline().strip()
        took = time.monotonic() - started
        # Keep the workload alive past the agent's next look at new fds (every 50 ms), so
        # that fd 1 is named while it is open, then end it.
        work.stdin.write("sigs\n")
        work.stdin.flush()
        work.stdout.readline()
        time.sleep(0.3)
        work.stdin.close()
        out, err = profile.communicate(timeout=90)
        R.check(f"{n}: the workload finished while profiled", done == "done", done)
        if not R.check(f"{n}: strace {' '.join(backend_args) or '(auto)'} exits 0", profile.returncode == 0, err):
            return
        p = json.loads(out)
        R.check(f"{n}: backend {want_backend} ran and says why",
                p.get("backend") == want_backend and reason_has in p.get("backend_reason", ""),
                (p.get("backend"), p.get("backend_reason")))
        calls = {s["name"]: s for s in p.get("syscalls", [])}
        R.equal(f"{n}: {p.get('backend')} counts getppid exactly", int(calls.get("getppid", {}).get("calls", 0)), 2000)
        openat = calls.get("openat", {})
        R.equal(f"{n}: {p.get('backend')} counts openat and its ENOENT errors exactly",
                (int(openat.get("calls", 0)), int(openat.get("errors", 0))), (500, 500))
        # "done" went out on fd 1: its time is told by fd, named as the agent saw it from
        # outside the app's mount namespace.
        out_fd = [f for f in p.get("fds", []) if int(f.get("pid", 0)) == pod_pid and int(f.get("fd", -1)) == 1]
        R.check(f"{n}: {p.get('backend')} names the fd the workload wrote to",
                len(out_fd) == 1 and any(c["name"] == "write" for c in out_fd[0].get("syscalls", []))
                and out_fd[0].get("target", "") not in ("", "(closed before the agent read it)"), out_fd)
        print(f"     {want_backend}: 2,500 syscalls took {took * 1000:.0f} ms under the profile; fd 1 is "
              f"{out_fd[0].get('target') if out_fd else '?'}")
    finally:
        if work.poll() is None:
            work.kill()
        work.wait()


def wait_traced(host_pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = list(Path(f"/proc/{host_pid}/task").iterdir())
        tracers = [next(x for x in (t / "status").read_text().splitlines() if x.startswith("TracerPid:")).split()[1]
                   for t in tasks]
        if len(tasks) > 1 and all(t != "0" for t in tracers):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host_pid}'s threads were not all traced within {timeout} s")


def check_ebpf_refused(pod: Pod) -> None:
    n = pod.name
    p = pod.osl("strace", "--pid", "1", "--backend", "ebpf", "--duration", "1s", check=False)
    R.check(f"{n}: --backend ebpf fails with exit 5 and the cause",
            p.returncode == 5 and "seccomp profile refuses bpf()" in p.stderr, (p.returncode, p.stderr.strip()))


def check_oom(pod: Pod) -> None:
    """A leak in the app container: a pre-OOM report before the kill, then a post-mortem
    naming the victim."""
    n = pod.name
    before = time.time()
    run("podman", "exec", "-d", pod.ids["app"], "/bin/osl-testproc", "eat", "4")
    deadline = time.monotonic() + 60
    reports = []
    while time.monotonic() < deadline:
        listing = pod.osl_json("reports")
        reports = listing.get("reports", [])
        if any(r.get("kind") == "post_mortem" for r in reports):
            break
        time.sleep(0.5)
    app = pod.ids["app"]
    kinds = [(r.get("kind"), r.get("container_id", "")[:12]) for r in reports]
    pre = [r for r in reports if r.get("kind") == "pre_oom" and r.get("container_id") == app]
    post = [r for r in reports if r.get("kind") == "post_mortem" and r.get("container_id") == app]
    if not R.check(f"{n}: a pre-OOM report and a post-mortem for the app container", pre and post, kinds):
        print(pod.logs("osl-agent")[-3000:])
        return
    R.check(f"{n}: the pre-OOM report came before the kill",
            min(r["created_at_unix_ms"] for r in pre) < post[0]["created_at_unix_ms"], kinds)
    victims = pod.osl_json("reports", post[0]["id"])["report"].get("victims", [])
    R.equal(f"{n}: the post-mortem names the victim", [(v["comm"], v["cmdline"]) for v in victims],
            [("osl-testproc", ["/bin/osl-testproc", "eat", "4"])])
    print(f"     the leak ran {time.time() - before:.1f} s to its post-mortem")


def check_crashloop(pod: Pod, seconds: float = 15) -> None:
    """Every kill of the crash loop gets a post-mortem naming its victim, and every life
    (about 2 s) a pre-OOM report before its kill. The kernel's own log is the count:
    each memcg OOM kill prints the cgroup it happened in."""
    n = pod.name
    app = pod.ids["app"]

    def kernel_kills() -> int:
        kills = 0
        for line in run("dmesg").stdout.splitlines():
            if "oom-kill:constraint=CONSTRAINT_MEMCG" in line and "oom_memcg=" in line:
                kills += app in line.split("oom_memcg=")[1].split(",")[0]
        return kills

    time.sleep(seconds)
    # Stop the loop, then let the last post-mortem land.
    run("podman", "stop", "--time", "0", app, check=False)
    time.sleep(2)
    kills = kernel_kills()
    restarts = int(run("podman", "inspect", "--format", "{{.RestartCount}}", app).stdout.strip() or 0)
    reports = pod.osl_json("reports").get("reports", [])
    mine = sorted((r for r in reports if r.get("container_id") == app), key=lambda r: r["created_at_unix_ms"])
    post = [r for r in mine if r["kind"] == "post_mortem"]
    R.check(f"{n}: the engine restarted the app after its kills", kills >= 3 and restarts >= 2, (kills, restarts))
    if not R.equal(f"{n}: one post-mortem per kernel OOM kill", len(post), kills):
        logged = [line for line in pod.logs("osl-agent").splitlines() if "post-mortem" in line or "cgroup removed" in line
                  or "watching a container" in line]
        print("     every report:", [(r["id"], r["container_id"][:12]) for r in reports])
        print("     the agent's log:", *logged[-40:], sep="\n       ")
    victims = [pod.osl_json("reports", r["id"])["report"].get("victims", []) for r in post]
    R.check(f"{n}: every post-mortem names its victim",
            all([v["comm"] for v in vs] == ["osl-testproc"] for vs in victims), victims)
    last = pod.osl_json("reports", post[-1]["id"])["report"] if post else {}
    loop = [f["message"] for f in last.get("findings", []) if f["id"] == "memory.crashloop_oom"]
    R.check(f"{n}: the last post-mortem calls it a crash loop, with every kill and each life's peak",
            len(loop) == 1 and loop[0].startswith(f"OOM-killed {len(post)} times in") and "?" not in loop[0], loop)
    history = last.get("history", [])
    R.check(f"{n}: the last post-mortem carries the minutes before, across lives",
            len(history) >= seconds - 3 and max(h["working_set_bytes"] for h in history) >= 24 * MIB, len(history))
    lives_reported, previous = 0, 0
    for r in post:
        if any(m["kind"] == "pre_oom" and previous < m["created_at_unix_ms"] < r["created_at_unix_ms"] for m in mine):
            lives_reported += 1
        previous = r["created_at_unix_ms"]
    R.equal(f"{n}: every life got a pre-OOM report before its kill", lives_reported, len(post))
    print(f"     {kills} kills in {seconds:.0f} s, {restarts} restarts, {len(post)} post-mortems, "
          f"{len(mine) - len(post)} pre-OOM reports")


# --- main -------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--level", choices=list(PODS), action="append")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        return skip_or_fail("needs root (podman kube play with capabilities, nsenter)")
    for tool in ("podman", "runc", "nsenter"):
        if not shutil.which(tool):
            return skip_or_fail(f"{tool} is not installed (apt-get install podman runc)")
    try:
        import helm_python  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as e:
        return skip_or_fail(f"missing a Python package ({e}): pip install helm-python-sdk")
    t0 = time.monotonic()
    build_binaries()
    work = Path(tempfile.mkdtemp(prefix="osl-pods-"))
    # conmon writes a file named "oom" into its working directory when an exec
    # session is OOM-killed: keep it out of the checkout.
    os.chdir(work)
    sizes = build_images(work)
    t_images = time.monotonic() - t0
    (SECCOMP_ROOT / "osl").mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROFILE, SECCOMP_ROOT / "osl" / "osl-ebpf.json")
    starts = {}
    for name in args.level or list(PODS):
        values, level = PODS[name]
        release = f"osl-{name}"
        deploy = adapt(render(values, release), uid=f"00000000-0000-0000-0000-{len(starts):012d}",
                       crashloop=name == "crashloop")
        pod = Pod(name, deploy, work)
        pod.down()  # a pod left over from an interrupted run
        try:
            starts[name] = pod.play()
            info = pod.osl_json("ps")["agent"]
            if name == "crashloop":
                check_crashloop(pod)
                continue
            check_agent(pod, values, level, info)
            close_peer(pod)
            d = check_diagnose(pod)
            check_close_wait(pod, d)
            check_neighbour(pod)
            if name == "ptrace":
                check_strace(pod, ["--backend", "ptrace"], "ptrace", "asked for")
                check_oom(pod)
            elif name == "ebpf":
                check_strace(pod, [], "ptrace", "seccomp profile refuses bpf()")
                check_ebpf_refused(pod)
            elif name == "ebpf-localhost":
                check_strace(pod, [], "ebpf", "counting in the kernel")
        except Exception as e:  # noqa: BLE001 - a broken pod is a failure with its cause, the others still run
            R.check(f"{name}: the pod ran", False, repr(e))
            print(pod.logs("osl-agent")[-3000:])
        finally:
            if not args.keep:
                pod.down()
    if not args.keep:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    mib = {k.split("/")[-1]: f"{v / MIB:.1f} MiB" for k, v in sizes.items()}
    start_txt = ", ".join(f"{k} {v:.2f} s" for k, v in starts.items())
    print(f"images {mib} (built in {t_images:.0f} s); pod start to first answer: {start_txt}; "
          f"total {time.monotonic() - t0:.0f} s")
    print(f"pods: {R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
