# syntax=docker/dockerfile:1.7
# mutr-api: the HTTP API, STOMP push and the analysis dispatcher (`serve`, `migrate`, `recover`, `activate`).
# Build from the repository root:
#   docker build -f docker/api.Dockerfile -t mutr-api:dev .
# The runtime image is distroless (glibc, CA certificates, no shell) and runs as UID 65532.
# No credentials are baked in: DATABASE_URL, REDIS_URL and the JWT/OAuth secrets come from the pod's env.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# sqlx reads the checked-in query data (.sqlx/), so the build never needs a database.
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --locked --release -p mutr-api --bin mutr-api \
    && install -D -m 0755 target/release/mutr-api /out/mutr-api

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mutr-api /usr/local/bin/mutr-api
USER 65532:65532
EXPOSE 8080
ENV MUTR_HTTP_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/mutr-api"]
CMD ["serve"]
