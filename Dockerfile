# paramd's container image: paramd (PID 1) and paramctl on Debian 12, as a non-root user.
#
#   podman build --format docker -t paramd .            (docker build -t paramd . likewise)
#   podman run -d -p 50051:50051 -e PARAMD_ALLOW_INSECURE=1 -v paramd-data:/var/lib/paramd/data paramd
#
# docs/deploy.md explains the settings (every paramd flag is a PARAMD_* variable), the
# volumes, TLS and tokens, and the CUDA flavour. Build with --format docker under podman:
# its default OCI format drops HEALTHCHECK. tests/deploy/run builds and runs this file.
#
# CUDA flavour (not built or tested here: no CUDA base image can be pulled on the machines
# that test this file): NVIDIA's CUDA development and runtime images as the two bases and
# the CUDA backend on, e.g.
#   --build-arg BUILDER_IMAGE=nvidia/cuda:12.4.1-cudnn-devel-ubuntu24.04
#   --build-arg RUNTIME_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu24.04
#   --build-arg PARAMD_CUDA=ON
ARG BUILDER_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The one list of build packages, shared with scripts/install-deps.
COPY scripts/packages/build /tmp/build-packages
RUN apt-get update \
 && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' /tmp/build-packages \
    | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y -q --no-install-recommends \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG PARAMD_CUDA=OFF
# Parallel compile jobs (default: every core the build sees).
ARG JOBS=
# `podman build -v HOST_DIR:/ccache` lends a compiler cache to this step (tests/deploy/run
# does); without it ccache fills a throwaway directory of this stage. The image never
# depends on it: only the two binaries leave this stage.
ENV CCACHE_DIR=/ccache CCACHE_BASEDIR=/src CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=2G
# Warnings fail CI's builds (-O2 with -Werror); at Release's -O3 GCC 12 adds false
# maybe-uninitialized reports (client/cli/npy.cc), which must not fail an image build.
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPARAMD_WERROR=OFF \
      -DPARAMD_ENABLE_CUDA="${PARAMD_CUDA}" \
 && cmake --build /build -j"${JOBS:-$(nproc)}" --target paramd paramctl \
 && mkdir -p /out/bin \
 && strip -o /out/bin/paramd /build/server/main/paramd \
 && strip -o /out/bin/paramctl /build/client/cli/paramctl \
 && scripts/runtime-packages /out/bin/paramd /out/bin/paramctl > /out/runtime-packages

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="paramd" \
      org.opencontainers.image.description="Model-parameter server: named PyTorch-style module trees served over gRPC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/deploy.md" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Only the packages holding the libraries the two binaries load (scripts/runtime-packages).
COPY --from=builder /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages \
    apt-get install -y -q --no-install-recommends \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/runtime-packages \
 && groupadd --system --gid 10001 paramd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/paramd --no-create-home \
    --shell /usr/sbin/nologin paramd \
 && mkdir -p /var/lib/paramd/data /var/lib/paramd/checkpoints \
 && chown -R 10001:10001 /var/lib/paramd
COPY --from=builder /out/bin/paramd /out/bin/paramctl /usr/local/bin/

# Every paramd flag is also a PARAMD_* variable (docs/daemon.md). Beyond loopback paramd
# wants TLS and tokens (docs/security.md) and refuses to start without them unless
# PARAMD_ALLOW_INSECURE=1 says so. The health port serves grpc.health.v1 alone, in
# plaintext, for probes (HEALTHCHECK below, the kubelet's gRPC probes).
ENV PARAMD_LISTEN=0.0.0.0:50051 \
    PARAMD_HEALTH_LISTEN=0.0.0.0:50052 \
    PARAMD_DATA_DIR=/var/lib/paramd/data \
    PARAMD_CHECKPOINT_DIR=/var/lib/paramd/checkpoints \
    PARAMD_SHUTDOWN_GRACE=8
VOLUME ["/var/lib/paramd/data", "/var/lib/paramd/checkpoints"]
# 50051: gRPC (paramd.v1, health, reflection). 50052: health only, plaintext.
# (9090 is kept for Prometheus metrics, which this image does not serve yet.)
EXPOSE 50051 50052
USER 10001:10001
WORKDIR /var/lib/paramd
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/paramctl", "--server", "127.0.0.1:50052", "--timeout", "2", "health"]
# paramd is PID 1: SIGTERM lets calls in flight finish within PARAMD_SHUTDOWN_GRACE,
# snapshots every model and exits 0; give `docker stop -t` / `podman stop -t` more than the
# grace (10 s, their default, covers the 8 s here plus the snapshot of small models).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/paramd"]
