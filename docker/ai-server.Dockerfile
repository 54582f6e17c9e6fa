# syntax=docker/dockerfile:1.7
# mutr-ai-server (CPU): gRPC mutr.AnalysisService on llama.cpp. Build from the repository root:
#   docker build -f docker/ai-server.Dockerfile -t mutr-ai-server:dev .
# For NVIDIA GPUs use docker/ai-server.cuda.Dockerfile (the `cuda` cargo feature).
#
# Model files are never part of the image. A pod gets them one of two ways:
#   - an init container runs `mutr-ai-server fetch-model --profile <tiny|production>` into an emptyDir or
#     PVC mounted at /models (checksums verified; a mismatch leaves no file behind), or
#   - MUTR_MODEL_DIR points at a volume that already holds the GGUF files.
# Runs as UID 65532 with a read-only root filesystem; /models and /tmp are volumes.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS chef
# llama.cpp (llama-cpp-sys-2) needs cmake, a C++ compiler and libclang for bindgen.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make libclang-dev pkg-config git \
    && rm -rf /var/lib/apt/lists/*
# cargo-chef splits the build in two layers: the dependencies (cooked from recipe.json, which changes
# only when a Cargo.toml or Cargo.lock does) and our own code. A registry cache (--cache-from/--cache-to,
# see the release workflow) then keeps llama.cpp and every crate across fresh CI runners.
RUN cargo install --locked cargo-chef --version 0.1.77
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --locked --release --recipe-path recipe.json -p mutr-ai-server --bin mutr-ai-server
COPY . .
RUN cargo build --locked --release -p mutr-ai-server --bin mutr-ai-server \
    && install -D -m 0755 target/release/mutr-ai-server /out/mutr-ai-server

FROM docker.io/library/debian:${DEBIAN_SUITE}-slim
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mutr-ai-server" \
      org.opencontainers.image.description="MUTR gRPC analysis server (llama.cpp, CPU)" \
      org.opencontainers.image.source="https://github.com/mutr/mutr-k8s" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# libgomp1: llama.cpp's OpenMP threads. ca-certificates: `fetch-model` downloads over HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 65532 -g 65532 -m 0755 /models
COPY --from=build /out/mutr-ai-server /usr/local/bin/mutr-ai-server
USER 65532:65532
ENV MUTR_MODEL_DIR=/models AI_SERVER_PORT=50051 MUTR_METRICS_ADDR=0.0.0.0:9090 HOME=/tmp
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/mutr-ai-server"]
CMD ["serve"]
