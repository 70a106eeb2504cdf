#!/usr/bin/env python3
"""The agent under the chart's memory limit, with a heavy pod and many clients.

    sudo python3 bench/hostile.py                       # 50 clients x 20 Diagnose calls, 64 MiB
    sudo python3 bench/hostile.py --agent /tmp/old-agent  # the same against another build

Puts osl-agent in a cgroup v1 memory cgroup with the chart's limit (--limit-mib,
64), around a pod made heavy on purpose: one process holding 17,000 fds (pipes,
files and loopback TCP connections), one with 1 MiB of argv, and 500 sleepers.
Then 50 clients (one connection each, the cli's `load` example) call Diagnose in
a loop, each call with a 200 ms blocked-on sample as `kubectl osl diagnose` asks.

Prints latency (p50/p99/max), errors, the cgroup's peak usage and OOM kills,
and whether the agent survived. PASS: no OOM kill, the agent alive, no failed
call. Needs root (cgroups, 17,000 fds).
"""
import argparse, json, os, re, signal, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY = "/sys/fs/cgroup/memory"

HOLDER = r"""
import os, resource, socket, sys, time
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1024)
while len(held) < n:
    kind = len(held) % 4
    if kind == 0:
        held += os.pipe()
    elif kind == 1:
        held.append(open("/dev/null"))
    else:
        c = socket.create_connection(srv.getsockname()); s, _ = srv.accept(); held += [c, s]
print("ready", flush=True)
time.sleep(3600)
"""


def cgroup(name, limit):
    path = os.path.join(MEMORY, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
        f.write(str(limit))
    return path


def read(path, name):
    with open(os.path.join(path, name)) as f:
        return f.read()


def oom_kills(path):
    m = re.search(r"oom_kill (\d+)", read(path, "memory.oom_control"))
    return int(m.group(1)) if m else 0


def remove(path):
    for _ in range(50):
        pids = read(path, "cgroup.procs").split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.1)


def start_agent(binary, group):
    """The agent, moved into `group` before it execs; its address from its log."""
    cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"', binary,
           "serve", "--listen", "127.0.0.1:0", "--no-watch", "--allow-pod-peers"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"}, text=True, errors="replace")
    log, addr, ready = [], [], threading.Event()

    def drain():
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            m = re.search(r"serving osl\.v1\.Diagnostics.*listen=(\S+)", line)
            if m and not addr:
                addr.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(30) or not addr:
        proc.kill()
        sys.exit("the agent did not start:\n" + "\n".join(log[-10:]))
    return proc, addr[0], log


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", help="an osl-agent binary (default: this tree's release build)")
    ap.add_argument("--limit-mib", type=int, default=64)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--calls", type=int, default=20, help="calls per client")
    ap.add_argument("--fds", type=int, default=17000)
    ap.add_argument("--sleepers", type=int, default=500)
    ap.add_argument("--blocked-sample-msec", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: a memory cgroup and 17,000 fds")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "osl-agent", "-p", "osl-cli", "--bin", "osl-agent", "--example", "load"],
                   cwd=ROOT, check=True)
    binary = args.agent or os.path.join(ROOT, "target", "release", "osl-agent")
    loader = os.path.join(ROOT, "target", "release", "examples", "load")

    kids = []
    group = cgroup(f"osl-bench-hostile-{os.getpid()}", args.limit_mib << 20)
    try:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(args.fds)], stdout=subprocess.PIPE, text=True)
        kids.append(holder)
        big = [f"--opt{i}={'x' * 65536}" for i in range(16)]
        kids.append(subprocess.Popen(["sh", "-c", "read x", "sh", *big], stdin=subprocess.PIPE))
        kids += [subprocess.Popen(["sleep", "3600"]) for _ in range(args.sleepers)]
        if holder.stdout.readline().strip() != "ready":
            sys.exit("the fd holder did not start")
        agent, addr, log = start_agent(binary, group)
        time.sleep(1)
        at_rest = int(read(group, "memory.usage_in_bytes"))
        with open(os.path.join(group, "memory.max_usage_in_bytes"), "w") as f:
            f.write("0")
        t = time.monotonic()
        out = subprocess.run([loader, "--agent", addr, "--clients", str(args.clients), "--calls", str(args.calls),
                              "--blocked-sample-msec", str(args.blocked_sample_msec), "--timeout", "120s"],
                             stdout=subprocess.PIPE, text=True)
        secs = time.monotonic() - t
        try:
            r = json.loads(out.stdout)
        except json.JSONDecodeError:
            r = {"errors": -1, "total_calls": 0, "error_samples": [], "p50_ms": None, "p99_ms": None, "max_ms": None,
                 "processes_per_answer": 0, "calls_per_sec": 0}
        peak = int(read(group, "memory.max_usage_in_bytes"))
        kills = oom_kills(group)
        alive = agent.poll() is None
        ms = lambda v: "-" if v is None else f"{v:.0f} ms"
        print(f"pod: 1 process with {args.fds} fds, 1 with 1 MiB argv, {args.sleepers} sleepers; "
              f"agent {binary} in a {args.limit_mib} MiB cgroup")
        print(f"load: {args.clients} clients x {args.calls} Diagnose (blocked sample {args.blocked_sample_msec} ms) "
              f"in {secs:.1f} s: {r['total_calls']} calls, {r['errors']} errors, {r['calls_per_sec']:.1f} calls/s, "
              f"p50 {ms(r['p50_ms'])}, p99 {ms(r['p99_ms'])}, max {ms(r['max_ms'])}, "
              f"{r['processes_per_answer']} processes per answer")
        for e in r["error_samples"][:3]:
            print(f"  {e['count']} x {e['error'][:200]}")
        print(f"memory: at rest {at_rest / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB of {args.limit_mib} MiB; "
              f"OOM kills {kills}; agent {'alive' if alive else 'DEAD'}")
        ok = kills == 0 and alive and r["errors"] == 0
        print(f"verdict: {'PASS' if ok else 'FAIL'}")
        if alive:
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
        return 0 if ok else 1
    finally:
        for k in kids:
            k.kill()
        for k in kids:
            k.wait()
        remove(group)


if __name__ == "__main__":
    sys.exit(main())
