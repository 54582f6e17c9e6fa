# syntax=docker/dockerfile:1.7
# mutr-api: the HTTP API, STOMP push and the analysis dispatcher (`serve`, `migrate`, `recover`, `activate`).
# Build from the repository root:
#   docker build -f docker/api.Dockerfile -t mutr-api:dev .
# The runtime image is distroless (glibc, CA certificates, no shell) and runs as UID 65532.
# No credentials are baked in: DATABASE_URL, REDIS_URL and the JWT/OAuth secrets come from the pod's env.

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
RUN cargo chef cook --locked --release --recipe-path recipe.json -p mutr-api --bin mutr-api
COPY . .
RUN cargo build --locked --release -p mutr-api --bin mutr-api \
    && install -D -m 0755 target/release/mutr-api /out/mutr-api

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mutr-api" \
      org.opencontainers.image.description="MUTR HTTP API, STOMP push and analysis dispatcher" \
      org.opencontainers.image.source="https://github.com/mutr/mutr-k8s" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/mutr-api /usr/local/bin/mutr-api
USER 65532:65532
EXPOSE 8080
ENV MUTR_HTTP_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/mutr-api"]
CMD ["serve"]
