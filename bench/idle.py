#!/usr/bin/env python3
"""The agent at rest: CPU and memory when nobody asks it anything.

    sudo python3 bench/idle.py [--seconds 60] [--procs 10]

A pod in miniature: a new PID namespace (unshare --pid --fork --mount-proc)
holding --procs sleepers and the release agent (`osl-agent serve`, with its fd
sampler and pre-OOM watcher on, as deployed), all in one v1 memory cgroup with a
256 MiB limit, so the watcher arms its thresholds on a real container. After a
10 s settle, the agent's utime+stime and VmRSS are read over --seconds.

Prints CPU as a share of one core and RSS (and its high-water mark), against
DESIGN.md's budgets (0.5% of a core, 15 MiB). Needs root (cgroup, namespaces)
and an existing release build (`cargo build --release -p osl-agent`).
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target", "release", "osl-agent")
CGROUP = "/sys/fs/cgroup/memory/osl-bench-idle"
TCK = os.sysconf("SC_CLK_TCK")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--procs", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: a memory cgroup and a PID namespace")
    if not os.path.exists(AGENT):
        sys.exit(f"no {AGENT}: cargo build --release -p osl-agent")
    os.makedirs(CGROUP, exist_ok=True)
    with open(f"{CGROUP}/memory.limit_in_bytes", "w") as f:
        f.write(str(256 << 20))
    work = tempfile.mkdtemp(prefix="osl-idle-")
    log = os.path.join(work, "agent.log")
    script = (f"echo $$ > {CGROUP}/cgroup.procs; "
              f"for i in $(seq {args.procs}); do sleep 100000 & done; "
              f"exec {AGENT} serve --listen 127.0.0.1:0 --report-dir {work}/reports --events off 2>{log}")
    # The watcher says which containers it watches at debug level, once each.
    env = {**os.environ, "OSL_LOG": "info,osl_agent::watch=debug", "NO_COLOR": "1"}
    pod = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                           stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        agent = None
        for _ in range(100):
            time.sleep(0.1)
            found = [p for p in open(f"{CGROUP}/cgroup.procs").read().split()
                     if os.readlink(f"/proc/{p}/exe").endswith("osl-agent")]
            if found:
                agent = int(found[0])
                break
        if agent is None:
            sys.exit("the agent did not start: " + open(log, errors="replace").read())
        time.sleep(10)  # start-up: first scan, thresholds armed, idle runtime threads gone
        watching = [l for l in open(log, errors="replace") if "watching a container" in l]
        if not any("osl-bench-idle" in l and "woken_by_kernel=true" in l for l in watching):
            sys.exit(f"the watcher is not watching {CGROUP} with eventfds: {watching or 'no such log line'}")
        c0, t0 = cpu_secs(agent), time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1)
            rss.append(status(agent, "VmRSS"))
        c1, t1 = cpu_secs(agent), time.monotonic()
        cpu_pct = (c1 - c0) / (t1 - t0) * 100
        hwm = status(agent, "VmHWM")
        print(f"agent at rest, {args.procs} processes in a 256 MiB v1 memory cgroup, {t1 - t0:.0f} s "
              f"(fd sampler every 5 s, pre-OOM watcher armed):")
        print(f"  CPU {cpu_pct:.2f}% of one core ({(c1 - c0) * 1000:.0f} ms)   budget 0.5%")
        print(f"  RSS {rss[-1] / 1024:.1f} MiB (min {min(rss) / 1024:.1f}, max {max(rss) / 1024:.1f}), "
              f"high-water {hwm / 1024:.1f} MiB   budget 15 MiB")
        ok = cpu_pct <= 0.5 and max(rss) <= 15 * 1024
        print(f"verdict: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        os.killpg(pod.pid, signal.SIGKILL)
        pod.wait()
        shutil.rmtree(work)
        for _ in range(50):
            try:
                os.rmdir(CGROUP)
                break
            except OSError:
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
