# syntax=docker/dockerfile:1.7
# mutr-operator (the MutrDeployment controller) and kubectl-mutr (the kubectl plugin, also usable from
# CI jobs that run this image). Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t mutr-operator:dev .
# The runtime image is distroless (glibc, CA certificates, no shell) and runs as UID 65532.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --locked --release -p mutr-operator --bins \
    && install -D -m 0755 target/release/mutr-operator /out/mutr-operator \
    && install -D -m 0755 target/release/kubectl-mutr /out/kubectl-mutr

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mutr-operator /usr/local/bin/mutr-operator
COPY --from=build /out/kubectl-mutr /usr/local/bin/kubectl-mutr
USER 65532:65532
EXPOSE 8080
ENV MUTR_OPERATOR_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/mutr-operator"]
