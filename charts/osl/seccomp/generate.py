#!/usr/bin/env python3
"""Writes osl-ebpf.json, the Localhost seccomp profile for the agent at level ebpf,
from a container engine's default profile (moby/containerd/containers-common
format, whose rules may depend on the container's capabilities):

- bpf and perf_event_open allowed (the defaults allow them only with CAP_SYS_ADMIN,
  which the agent never gets); the kernel still asks for CAP_BPF and CAP_PERFMON;
- open_by_handle_at denied always: the defaults allow it with CAP_DAC_READ_SEARCH,
  which the agent has at levels ptrace and ebpf, and it opens any file of the
  node's filesystems by handle (the "shocker" container escape);
- everything else exactly as the default.

    python3 charts/osl/seccomp/generate.py [BASE]            # BASE: /usr/share/containers/seccomp.json
    python3 charts/osl/seccomp/generate.py --check [BASE]    # exit 1 if osl-ebpf.json differs
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "osl-ebpf.json"
ADD = ["bpf", "perf_event_open"]
DENY = ["open_by_handle_at"]


def derive(base: dict) -> dict:
    profile = copy.deepcopy(base)
    rules = []
    for rule in profile["syscalls"]:
        # Every rule naming them, conditional or not, goes: one rule each below decides.
        names = [n for n in rule["names"] if n not in ADD + DENY]
        if names:
            rules.append(dict(rule, names=names))
    rules.append({"names": ADD, "action": "SCMP_ACT_ALLOW",
                  "comment": "osl: in-kernel syscall counting (the kernel still asks for CAP_BPF, CAP_PERFMON)"})
    rules.append({"names": DENY, "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                  "comment": "osl: never, whatever the capabilities (CAP_DAC_READ_SEARCH would allow it)"})
    profile["syscalls"] = rules
    return profile


def render(profile: dict) -> str:
    return json.dumps(profile, indent=1) + "\n"


def main() -> int:
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    base_path = Path(args[0] if args else "/usr/share/containers/seccomp.json")
    text = render(derive(json.loads(base_path.read_text())))
    if check:
        if OUT.read_text() != text:
            print(f"{OUT} is not derived from {base_path}: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} from {base_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
