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

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
# llama.cpp (llama-cpp-sys-2) needs cmake, a C++ compiler and libclang for bindgen.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make libclang-dev pkg-config git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --locked --release -p mutr-ai-server --bin mutr-ai-server \
    && install -D -m 0755 target/release/mutr-ai-server /out/mutr-ai-server

FROM docker.io/library/debian:${DEBIAN_SUITE}-slim
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
