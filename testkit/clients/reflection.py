#!/usr/bin/env python3
"""A third-party gRPC client against a real osl-agent: Python's grpcio-reflection,
which speaks only grpc.reflection.v1alpha. It knows nothing of osl: it lists the
services, fetches the file descriptors of osl.v1.Diagnostics over reflection,
builds a DiagnoseRequest class from them alone (protobuf's message factory), calls
Diagnose and decodes the answer with the same descriptors.

    pip install grpcio-reflection
    python3 testkit/clients/reflection.py target/debug/osl-agent   # exit 1 on failure

Ends with "reflection: N passed, M failed".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

try:
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
except ImportError as e:  # pragma: no cover - environment problem
    print(f"reflection: missing a Python package ({e}); run: pip install grpcio-reflection", file=sys.stderr)
    sys.exit(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    agent_bin = sys.argv[1] if len(sys.argv) > 1 else "target/debug/osl-agent"
    port = free_port()
    reports = tempfile.mkdtemp(prefix="osl-reflection-")
    agent = subprocess.Popen(
        [agent_bin, "serve", "--listen", f"127.0.0.1:{port}", "--no-watch", "--allow-pod-peers", "--report-dir", reports],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, OSL_EVENTS="off"))
    passed, failed = 0, []

    def check(name: str, ok: bool, detail: object = "") -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(name)
            print(f"FAIL {name}: {detail}")

    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        check("lists the services over v1alpha", "osl.v1.Diagnostics" in services
              and "grpc.health.v1.Health" in services, services)
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("osl.v1.Diagnostics")
        method = service.methods_by_name["Diagnose"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(f"/{service.full_name}/{method.name}",
                                   request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        answer = call(request_cls(), timeout=30)
        pids = [p.pid for p in answer.processes]
        check("Diagnose built from reflected descriptors answers", answer.agent.pid == agent.pid
              and agent.pid in pids and os.getpid() in pids, (answer.agent.pid, agent.pid, pids[:10]))
        check("its enums decode by name", method.output_type.fields_by_name["agent"].message_type
              .fields_by_name["level"].enum_type.values_by_number[answer.agent.level].name.startswith("PRIVILEGE_LEVEL_"),
              answer.agent.level)
    except Exception as e:  # noqa: BLE001 - any failure is a failed check, with its cause
        check("the client ran", False, repr(e))
    finally:
        agent.terminate()
        try:
            _, err = agent.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            _, err = agent.communicate()
        if failed:
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    print(f"reflection: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
