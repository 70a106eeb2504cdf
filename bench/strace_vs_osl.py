#!/usr/bin/env python3
"""What counting a busy process's syscalls costs it, in one run (root).

    sudo python3 bench/strace_vs_osl.py [--n 2000000] [--n-slow 50000] [--runs 3]

The target is `dd if=/dev/zero of=/dev/null bs=1 count=N`: two syscalls a byte,
a few million a second untraced. dd times itself (its "copied, X s" line), so
only its own work is measured. Each way of watching it runs --runs times:

  untraced
  strace -c -f -w            (ptrace, N = --n-slow: ptrace is slow here)
  kubectl-osl strace --backend ptrace   (N = --n-slow)
  kubectl-osl strace --backend ebpf     (N = --n)
  kubectl-osl blocked --rate 100        (the /proc sampler, N = --n)

and the slowdown printed is time per syscall against untraced dd's.
"""
import argparse, os, re, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "osl-cli"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "kubectl-osl")


def tracer_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def run_dd(n, watcher=None, ptrace=False):
    """Seconds dd took for n bytes, with `watcher(pid)` (a command) attached first."""
    dd = subprocess.Popen(
        ["sh", "-c", f"read go; exec dd if=/dev/zero of=/dev/null bs=1 count={n}"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    w = None
    if watcher:
        w = subprocess.Popen(watcher(dd.pid), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        if ptrace:
            while tracer_pid(dd.pid) == 0 and time.time() < deadline:
                time.sleep(0.01)
            if tracer_pid(dd.pid) == 0:
                sys.exit("the tracer did not attach")
        time.sleep(1.0)  # programs loaded, sampler running
    dd.stdin.write("go\n")
    dd.stdin.close()
    err = dd.stderr.read()
    dd.wait()
    if w:
        w.send_signal(signal.SIGINT)
        w.wait()
    m = re.search(r"copied, ([0-9.e-]+) s", err)
    if not m:
        sys.exit(f"dd said: {err}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--n-slow", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: ptrace of another process and BPF need it")
    osl = build()

    def osl_strace(backend):
        return lambda pid: [osl, "strace", "--local", "--pid", str(pid), "--backend", backend, "--duration", "60s"]

    ways = [
        ("untraced", a.n, None, False),
        ("strace -c -f -w", a.n_slow, lambda pid: ["strace", "-c", "-f", "-w", "-o", "/dev/null", "-p", str(pid)], True),
        ("osl ptrace", a.n_slow, osl_strace("ptrace"), True),
        ("osl ebpf", a.n, osl_strace("ebpf"), False),
        ("osl blocked (sampler, 100 Hz)", a.n, lambda pid: [osl, "blocked", "--local", "--pid", str(pid), "--duration", "60s"], False),
    ]
    times = {name: [] for name, *_ in ways}
    for _ in range(a.runs):  # interleaved, so that noise hits all alike
        for name, n, watcher, ptrace in ways:
            times[name].append(run_dd(n, watcher, ptrace) / (2 * n))
    base = statistics.median(times["untraced"])
    print(f"dd bs=1: {1 / base / 1e6:.2f} M syscalls/s untraced (median of {a.runs})")
    print(f"{'':34} {'ns/syscall':>11} {'slowdown':>9}")
    for name, *_ in ways:
        per = statistics.median(times[name])
        print(f"{name:34} {per * 1e9:11.0f} {per / base:8.2f}x")
    print(f"osl ptrace / strace -c -f: {statistics.median(times['osl ptrace']) / statistics.median(times['strace -c -f -w']):.2f}")


if __name__ == "__main__":
    main()
