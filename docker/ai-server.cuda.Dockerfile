# syntax=docker/dockerfile:1.7
# mutr-ai-server, `cuda` variant: llama.cpp built with CUDA for NVIDIA GPUs (GKE: L4/T4/A100 node pools
# with the NVIDIA driver installed by GKE). Build from the repository root:
#   docker build -f docker/ai-server.cuda.Dockerfile -t mutr-ai-server:dev-cuda .
# CUDA_ARCHITECTURES limits the kernels compiled (build time and image size): 75 T4, 80 A100, 89 L4,
# 90 H100. Set n_gpu_layers (e.g. 999) in the pod to offload the model.
# Same rules as the CPU image: no model files inside, UID 65532, read-only root filesystem.

ARG CUDA_VERSION=12.6.3
ARG UBUNTU_VERSION=24.04

FROM docker.io/nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS chef
ARG RUST_VERSION=1.95
ARG CUDA_ARCHITECTURES="75;80;89;90"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl cmake g++ make libclang-dev pkg-config git \
    && rm -rf /var/lib/apt/lists/*
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}"
# cargo-chef splits the build in two layers: the dependencies (cooked from recipe.json, which changes
# only when a Cargo.toml or Cargo.lock does) and our own code. A registry cache (--cache-from/--cache-to,
# see the release workflow) then keeps llama.cpp and every crate across fresh CI runners.
RUN cargo install --locked cargo-chef --version 0.1.77
WORKDIR /src
# CUDAARCHS initialises CMake's CMAKE_CUDA_ARCHITECTURES; the driver stub satisfies the link (the real
# libcuda.so.1 comes from the node's driver at run time).
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never CUDAARCHS=${CUDA_ARCHITECTURES} \
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --locked --release --recipe-path recipe.json -p mutr-ai-server --bin mutr-ai-server --features cuda
COPY . .
RUN cargo build --locked --release -p mutr-ai-server --bin mutr-ai-server --features cuda \
    && install -D -m 0755 target/release/mutr-ai-server /out/mutr-ai-server

FROM docker.io/nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mutr-ai-server" \
      org.opencontainers.image.description="MUTR gRPC analysis server (llama.cpp, CUDA)" \
      org.opencontainers.image.source="https://github.com/mutr/mutr-k8s" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 65532 -g 65532 -m 0755 /models
COPY --from=build /out/mutr-ai-server /usr/local/bin/mutr-ai-server
USER 65532:65532
ENV MUTR_MODEL_DIR=/models AI_SERVER_PORT=50051 MUTR_METRICS_ADDR=0.0.0.0:9090 HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/mutr-ai-server"]
CMD ["serve"]
