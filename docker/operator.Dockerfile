# syntax=docker/dockerfile:1.7
# mutr-operator (the MutrDeployment controller) and kubectl-mutr (the kubectl plugin, also usable from
# CI jobs that run this image). Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t mutr-operator:dev .
# The runtime image is distroless (glibc, CA certificates, no shell) and runs as UID 65532.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS chef
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config \
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
RUN cargo chef cook --locked --release --recipe-path recipe.json -p mutr-operator --bins
COPY . .
RUN cargo build --locked --release -p mutr-operator --bins \
    && install -D -m 0755 target/release/mutr-operator /out/mutr-operator \
    && install -D -m 0755 target/release/kubectl-mutr /out/kubectl-mutr

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mutr-operator" \
      org.opencontainers.image.description="MUTR MutrDeployment operator and the kubectl-mutr plugin" \
      org.opencontainers.image.source="https://github.com/mutr/mutr-k8s" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/mutr-operator /usr/local/bin/mutr-operator
COPY --from=build /out/kubectl-mutr /usr/local/bin/kubectl-mutr
USER 65532:65532
EXPOSE 8080
ENV MUTR_OPERATOR_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/mutr-operator"]
