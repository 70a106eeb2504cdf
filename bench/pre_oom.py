#!/usr/bin/env python3
"""The pre-OOM watcher on a real cgroup v1 memory limit (run as root).

    sudo python3 bench/pre_oom.py [--runs 20] [--procs 50] [--rate 200]

For each run: a 256 MiB memory cgroup holding --procs idle processes and one that
leaks --rate MB/s; the release osl-agent watches it. Prints, over the runs, the
report capture time (median, max) for a pod of that many processes, and the lead
time: from the first pre-OOM report reaching the disk to the kernel's kill, as the
dmesg timestamp of "Memory cgroup out of memory: Killed process" shows it.
"""
import argparse, glob, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CG = "/sys/fs/cgroup/memory"


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "osl-agent", "--bin", "osl-testproc"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def kill_time(pid):
    """Seconds since boot at which the kernel logged the OOM kill of pid."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    for line in reversed(out.splitlines()):
        if f"Killed process {pid} " in line and line.startswith("["):
            return float(line[1:line.index("]")])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--procs", type=int, default=50)
    ap.add_argument("--rate", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (cgroup v1 memory limits)")
    bins = build()
    captures, leads, missed = [], [], 0
    for run in range(args.runs):
        cg = os.path.join(CG, f"osl-bench-{os.getpid()}-{run}")
        os.mkdir(cg)
        with open(os.path.join(cg, "memory.limit_in_bytes"), "w") as f:
            f.write(str(256 << 20))
        reports = tempfile.mkdtemp()
        idle = [subprocess.Popen([os.path.join(bins, "osl-testproc"), "anon", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(args.procs)]
        leaker = subprocess.Popen([os.path.join(bins, "osl-testproc"), "anon", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for p in idle + [leaker]:
            p.stdout.readline()
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(p.pid))
        agent = subprocess.Popen([os.path.join(bins, "osl-agent"), "serve", "--listen", "127.0.0.1:0", "--report-dir", reports], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # the watcher's first scan
        leaker.stdin.write(f"grow {args.rate}\n".encode())
        leaker.stdin.flush()
        leaker.wait()
        time.sleep(1.5)  # the post-mortem
        agent.send_signal(signal.SIGTERM)
        agent.wait()
        killed = kill_time(leaker.pid)
        pre = []
        for path in sorted(glob.glob(os.path.join(reports, "*.json"))):
            with open(path) as f:
                r = json.load(f)
            if r["kind"] == "pre_oom" and r["cgroup_path"].endswith(os.path.basename(cg)):
                pre.append((r, os.stat(path).st_mtime))
        if not pre or killed is None:
            missed += 1
        else:
            r, mtime = pre[0]
            captures.append(r["capture_usec"] / 1000)
            # mtime is wall-clock; dmesg is seconds since boot: convert mtime through the offset now.
            offset = time.time() - uptime()
            lead = (killed - (mtime - offset)) * 1000
            leads.append(lead)
            missed += lead <= 0
        for p in idle:
            p.kill()
            p.wait()
        shutil.rmtree(reports)
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.05)
    print(f"{args.runs} runs, {args.procs + 1} processes in a 256 MiB cgroup, leak {args.rate} MB/s")
    print(f"  runs with a pre-OOM report on disk before the kill: {args.runs - missed} of {args.runs}")
    if captures:
        print(f"  capture time: median {statistics.median(captures):.1f} ms, max {max(captures):.1f} ms (goal < 20 ms)")
        print(f"  lead time (report on disk -> kill): median {statistics.median(leads):.0f} ms, min {min(leads):.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
