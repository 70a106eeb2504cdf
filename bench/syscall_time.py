#!/usr/bin/env python3
"""What timing a busy process's syscalls by fd costs it, against bpftrace and perf, in one run (root).

    sudo python3 bench/syscall_time.py [--n 3000000] [--fds 1000] [--runs 3]

Two targets, each timing itself (only its own work is measured):
  dd if=/dev/zero of=/dev/null bs=1 count=N     two syscalls a byte on 2 fds
  osl-syscalls pipes FDS N                       a byte written to and read back from
                                                 each of FDS pipes in turn: 2 syscalls
                                                 an iteration on 2×FDS fds
Each runs --runs times under each watcher, interleaved so that noise hits all alike:
  untraced
  perf stat -e raw_syscalls:sys_enter -p PID    the counting floor (a tracepoint, no program)
  bpftrace count by syscall                     sys_enter only, @[id] = count()
  bpftrace latency by syscall                   enter+exit with nsecs: count, sum, hist by id
  bpftrace latency by syscall and fd            the same keyed by (id, fd): osl's aggregation
  kubectl-osl strace --backend ebpf --by syscall counts every call by syscall, fd and
                                                epoch (errors, errnos), times 1 call in 8
                                                per thread (histograms, slowest calls)
  kubectl-osl strace --backend ebpf --by fd     the same with every call timed
and the slowdown printed is the target's time against its untraced time (median of
--runs), with osl by fd's ratio to each bpftrace aggregation. bpftrace needs tracefs, mounted
here if it is not. Prints min–max over the runs too.
"""
import argparse, os, re, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BPFTRACE = {
    "count": "tracepoint:raw_syscalls:sys_enter /pid == PID/ { @[args->id] = count(); }",
    "latency": (
        "tracepoint:raw_syscalls:sys_enter /pid == PID/ { @start[tid] = nsecs; } "
        "tracepoint:raw_syscalls:sys_exit /pid == PID && @start[tid]/ { $d = nsecs - @start[tid]; "
        "@calls[args->id] = count(); @ns[args->id] = sum($d); @lat[args->id] = hist($d); "
        "if (args->ret < 0) { @err[args->id] = count(); } delete(@start[tid]); }"
    ),
    "latency_fd": (
        "tracepoint:raw_syscalls:sys_enter /pid == PID/ { @start[tid] = nsecs; @fd[tid] = args->args[0]; } "
        "tracepoint:raw_syscalls:sys_exit /pid == PID && @start[tid]/ { $d = nsecs - @start[tid]; $k = @fd[tid]; "
        "@calls[args->id, $k] = count(); @ns[args->id, $k] = sum($d); @lat[args->id, $k] = hist($d); "
        "if (args->ret < 0) { @err[args->id, $k] = count(); } delete(@start[tid]); delete(@fd[tid]); }"
    ),
}


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "kubectl-osl", "--bin", "osl-syscalls"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def start_target(kind, n, fds, bins):
    if kind == "dd":
        argv = ["sh", "-c", f"read go; exec dd if=/dev/zero of=/dev/null bs=1 count={n // 2}"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.05)  # sh is at its read
        return p
    p = subprocess.Popen([os.path.join(bins, "osl-syscalls"), "pipes", str(fds), str(n // 2)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def finish_target(kind, p):
    p.stdin.write("go\n")
    p.stdin.close()
    if kind == "dd":
        err = p.stderr.read()
        p.wait()
        m = re.search(r"copied, ([0-9.e-]+) s", err)
        if not m:
            sys.exit(f"dd said: {err}")
        return float(m.group(1))
    line = p.stdout.readline()
    p.wait()
    return float(line.split()[1])


def watch(argv, ready_line=None):
    w = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if ready_line:
        deadline = time.time() + 30
        for line in w.stdout:
            if ready_line in line or time.time() > deadline:
                break
        time.sleep(0.5)
    else:
        time.sleep(1.0)  # programs loaded and attached
    return w


def run(kind, n, fds, bins, watcher):
    target = start_target(kind, n, fds, bins)
    w = watcher(target.pid) if watcher else None
    secs = finish_target(kind, target)
    if w:
        w.send_signal(signal.SIGINT)
        try:
            w.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3_000_000, help="syscalls per target run")
    ap.add_argument("--fds", type=int, default=1000, help="pipes of the many-fd target")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--targets", default="dd,pipes", help="which targets: dd, pipes")
    ap.add_argument("--only", default="", help="run only the watchers whose names contain one of these (comma-separated)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: BPF and perf on another process need it")
    if not os.path.exists("/sys/kernel/tracing/events"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)
    bins = build()

    def osl(by):
        argv = [os.path.join(bins, "kubectl-osl"), "strace", "--local", "--backend", "ebpf", "--by", by, "--duration", "60s"]
        return lambda pid: watch(argv + ["--pid", str(pid)])

    def bpftrace(which):
        return lambda pid: watch(["bpftrace", "-e", BPFTRACE[which].replace("PID", str(pid))], "Attaching")

    ways = [
        ("untraced", None),
        ("perf stat sys_enter (floor)", lambda pid: watch(["perf", "stat", "-e", "raw_syscalls:sys_enter", "-p", str(pid), "-o", "/dev/null"])),
        ("bpftrace count by syscall", bpftrace("count")),
        ("bpftrace latency by syscall", bpftrace("latency")),
        ("bpftrace latency by syscall+fd", bpftrace("latency_fd")),
        ("osl ebpf by syscall (1 in 8 timed)", osl("syscall")),
        ("osl ebpf by fd (every call timed)", osl("fd")),
    ]
    if a.only:
        keep = a.only.split(",")
        ways = [w for w in ways if w[0] == "untraced" or any(k in w[0] for k in keep)]
    for kind in a.targets.split(","):
        times = {name: [] for name, _ in ways}
        for _ in range(a.runs):
            for name, watcher in ways:
                times[name].append(run(kind, a.n, a.fds, bins, watcher))
        base = statistics.median(times["untraced"])
        what = f"dd bs=1, {a.n} syscalls" if kind == "dd" else f"{a.fds} pipes, {a.n} syscalls on {2 * a.fds} fds"
        print(f"\n{what}: {a.n / base / 1e6:.2f} M syscalls/s untraced (median of {a.runs})")
        print(f"{'':32} {'ns/syscall':>10} {'slowdown':>9} {'min-max':>13}")
        slow = {}
        for name, _ in ways:
            per = statistics.median(times[name]) / a.n
            lo, hi = min(times[name]) / base, max(times[name]) / base
            slow[name] = statistics.median(times[name]) / base
            print(f"{name:32} {per * 1e9:10.0f} {slow[name]:8.2f}x {lo:6.2f}-{hi:.2f}x")
        osl = slow.get("osl ebpf by fd (every call timed)")
        for peer in [p for p in ["bpftrace latency by syscall", "bpftrace latency by syscall+fd"] if p in slow and osl]:
            added = (osl - 1) / max(slow[peer] - 1, 1e-9)
            print(f"osl / {peer}: {osl / slow[peer]:.2f} of its slowdown ({added:.2f} of the time it adds)")


if __name__ == "__main__":
    main()
