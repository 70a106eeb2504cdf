# osl-agent: one static binary in an otherwise empty image.
#
#   docker build -t ghcr.io/osl-dev/osl-agent:0.1.0 .
#
# The binary is linked statically against glibc (no libc in the image, no
# loader): it needs no NSS lookups (the in-cluster API server is an IP) and no
# CA bundle (in-cluster TLS trusts the ServiceAccount's ca.crt). TLS is rustls
# with ring, so there is no OpenSSL to link.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest (.dockerignore keeps
# target/ and the non-Rust parts out).
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY agent agent
COPY cli cli
# BuildKit caches: the crates and the target directory survive between builds,
# so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target x86_64-unknown-linux-gnu --bin osl-agent \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/osl-agent /out/osl-agent \
 && if readelf -d /out/osl-agent | grep -q NEEDED; then \
      echo "osl-agent is dynamically linked" >&2; readelf -d /out/osl-agent >&2; exit 1; \
    fi
# The report directory, for `docker run` without a volume. In Kubernetes the
# chart mounts an emptyDir over it (reports.sizeLimit). World-writable like an
# emptyDir: the agent runs as 65532 (level basic, or the pod's runAsUser) or as
# root without CAP_DAC_OVERRIDE (levels ptrace and ebpf), and both must write.
RUN install -d -m 0777 /out/var/run/osl/reports

FROM scratch
COPY --from=build /out/ /
# Level basic runs as this non-root UID (the chart sets runAsUser: set it to
# your app's UID to see that app's fds and smaps). Levels ptrace and ebpf need
# runAsUser: 0 in the pod spec: Kubernetes grants no ambient capabilities, so
# only root can use the added SYS_PTRACE, DAC_READ_SEARCH, BPF and PERFMON.
USER 65532:65532
# gRPC (osl.v1, health, reflection). The agent binds 127.0.0.1 unless told
# otherwise (--listen / OSL_LISTEN): reach it with kubectl port-forward.
EXPOSE 7450
ENTRYPOINT ["/osl-agent", "serve"]
