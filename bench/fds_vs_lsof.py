#!/usr/bin/env python3
"""kubectl-osl's fd table against lsof and ls -l, on one process, in one run.

    python3 bench/fds_vs_lsof.py [--fds 17000] [--runs 10]

Starts osl-testproc holding ~17,000 fds (35% files, 30% socketpair ends, 23% pipe
ends, 12% TCP connection ends, both ends of each connection in the process), then
times, alternating so noise hits all alike:
  kubectl-osl fds --local --pid N -o json   (every fd: kind, target, fdinfo, sockets resolved)
  lsof -n -P -p N
  ls -l /proc/N/fd                           (the readlink floor)
and prints medians and ratios.
"""
import argparse, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "kubectl-osl", "--bin", "osl-testproc"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def time_cmd(argv):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fds", type=int, default=17000)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    bin_dir = build()
    proc = subprocess.Popen([os.path.join(bin_dir, "osl-testproc"), "many", str(args.fds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"ready")
        pid = proc.pid
        n = len(os.listdir(f"/proc/{pid}/fd"))
        cmds = {
            "kubectl-osl fds --local -o json": [os.path.join(bin_dir, "kubectl-osl"), "fds", "--local", "--pid", str(pid), "-o", "json"],
            "lsof -n -P -p": ["lsof", "-n", "-P", "-p", str(pid)],
            "ls -l /proc/N/fd": ["ls", "-l", f"/proc/{pid}/fd"],
        }
        for argv in cmds.values():
            time_cmd(argv)
        times = {k: [] for k in cmds}
        for _ in range(args.runs):
            for k, argv in cmds.items():
                times[k].append(time_cmd(argv))
    finally:
        proc.kill()
        proc.wait()
    med = {k: statistics.median(t) for k, t in times.items()}
    print(f"{n} fds, {args.runs} runs each, medians (min):")
    for k, t in times.items():
        print(f"  {k:<34} {med[k] * 1e3:8.1f} ms ({min(t) * 1e3:7.1f})")
    osl = med["kubectl-osl fds --local -o json"]
    print(f"  lsof / osl        {med['lsof -n -P -p'] / osl:5.2f}x  (goal >= 3x)")
    print(f"  osl / ls -l       {osl / med['ls -l /proc/N/fd']:5.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    sys.exit(main())
