#!/usr/bin/env python3
"""How soon the pre-OOM watcher watches a new container, and what it costs at rest.

    sudo python3 bench/discovery.py [--runs 50] [--containers 20] [--seconds 30]

The shipped agent (the static release build, else target/release) runs `serve`
with its defaults (250 ms poll, 5 s rescan). Discovery: --runs times, a new v1
memory cgroup with a 256 MiB limit gets a fresh process; the delay is from the
write to its cgroup.procs to the agent's log line "watching a container" for it
(the line is logged after the cgroup is opened and armed). At rest: --containers
cgroups with a sleeper each, the agent's CPU (utime+stime) over --seconds and its
RSS, in a PID namespace as in a pod, against DESIGN.md's budgets (0.5% of a core, 15 MiB). Needs root.
"""
import argparse, os, random, re, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = [os.path.join(ROOT, "target/static/x86_64-unknown-linux-gnu/release/osl-agent"),
              os.path.join(ROOT, "target/release/osl-agent")]
V1 = "/sys/fs/cgroup/memory"
TCK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def rss_mib(pid):
    return int(re.search(r"^VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read(), re.M).group(1)) / 1024


def cgroup(name):
    path = f"{V1}/{name}"
    os.makedirs(path, exist_ok=True)
    with open(f"{path}/memory.limit_in_bytes", "w") as f:
        f.write(str(256 << 20))
    return path


def remove(path):
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--agent", help="an osl-agent binary to measure instead (e.g. a baseline build)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: memory cgroups")
    agent_bin = args.agent or next((c for c in CANDIDATES if os.path.exists(c)), None)
    if not agent_bin:
        sys.exit("no release agent: .ci/static-binary or cargo build --release -p osl-agent")
    work = tempfile.mkdtemp(prefix="osl-discovery-")
    log_path = os.path.join(work, "agent.log")
    log = open(log_path, "w")
    agent = subprocess.Popen([agent_bin, "serve", "--listen", "127.0.0.1:0", "--report-dir", f"{work}/reports",
                              "--events", "off", "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=log)
    sleepers, made, pod = [], [], None
    try:
        time.sleep(1)
        delays = []
        for run in range(args.runs):
            # Out of step with the watcher's polls: each run would otherwise start
            # just after the poll that found the previous one, and wait a whole poll.
            time.sleep(random.uniform(0, 0.3))
            path = cgroup(f"osl-bench-disc-{os.getpid()}-{run}")
            made.append(path)
            p = subprocess.Popen(["sleep", "1000"])
            sleepers.append(p)
            start = time.monotonic()
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(p.pid))
            name = os.path.basename(path)
            while time.monotonic() - start < 10:
                lines = open(log_path).read().splitlines()
                if any(name in l and "watching a container" in l for l in lines):
                    delays.append(time.monotonic() - start)
                    break
                time.sleep(0.002)
            else:
                sys.exit(f"run {run}: not watched within 10 s")
        # At rest, as in a pod: a PID namespace holding a sleeper in each of
        # --containers cgroups and its own agent (on the host, the agent would also
        # sample every host process's fds and list the host's /proc every poll).
        for p in sleepers:
            p.kill()
        rest = [cgroup(f"osl-bench-rest-{os.getpid()}-{i}") for i in range(args.containers)]
        made.extend(rest)
        script = "".join(f"sleep 100000 & echo $! > {c}/cgroup.procs; " for c in rest)
        script += f"exec {agent_bin} serve --listen 127.0.0.1:0 --report-dir {work}/rest --events off 2>/dev/null"
        pod = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                               start_new_session=True)
        time.sleep(8)
        # unshare's one child is the namespace's init: sh, which exec'd the agent.
        ns_agent = int(open(f"/proc/{pod.pid}/task/{pod.pid}/children").read().split()[0])
        c0, t0 = cpu_secs(ns_agent), time.monotonic()
        time.sleep(args.seconds)
        cpu = (cpu_secs(ns_agent) - c0) / (time.monotonic() - t0)
        rss = rss_mib(ns_agent)
        ms = sorted(d * 1000 for d in delays)
        if os.environ.get("VERBOSE"):
            print("delays ms:", [round(d * 1000) for d in delays])
        print(f"discovery of a new container ({len(ms)} runs, poll 250 ms): median {statistics.median(ms):.0f} ms, "
              f"min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms")
        print(f"at rest in a PID namespace with {args.containers} containers over {args.seconds:.0f} s: "
              f"CPU {cpu * 100:.2f}% of a core (budget 0.5%), RSS {rss:.1f} MiB (budget 15 MiB)")
    finally:
        if pod:
            os.killpg(pod.pid, 9)
            pod.wait()
        agent.terminate()
        agent.wait()
        for p in sleepers:
            p.kill()
            p.wait()
        for path in made:
            remove(path)


if __name__ == "__main__":
    main()
