# One image, one binary under three names (order-api and stream-gateway are links to sse-orders,
# which becomes the service it is started as):
#   order-api       POST /api/order, GET /api/order/{id}        (Kubernetes: command order-api)
#   stream-gateway  GET /api/order/stream over SSE              (Kubernetes: command stream-gateway)
#   sse-orders      both on one port with the in-memory log     (the default entrypoint, for docker run)
#
#   DOCKER_BUILDKIT=1 docker build -t sse-orders .
#   docker run --rm -p 8080:8080 sse-orders
#
# Needs BuildKit (docker 20.10 or later with DOCKER_BUILDKIT=1, or docker buildx) for the cache
# mounts, which keep the cargo registry and target directory between builds, so a change to one
# crate rebuilds that crate only. No frontend image is pulled: the Dockerfile syntax used here is built into BuildKit.
#
# Without a registry, scripts/image-base makes both base images locally from Debian packages and
# this machine's Rust toolchain; scripts/image-test builds with them:
#   docker build $(scripts/image-base --print) -t sse-orders .
#
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK on purpose: the runtime image has no shell or HTTP
#   client to run one, and Kubernetes probes /healthz and /readyz itself (helm/, k8s/).
# checkov:skip=CKV_DOCKER_7: both base images are tagged (the ARG defaults below: a Rust release
#   and distroless cc-debian12); checkov does not resolve ARGs in FROM and sees no tag.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The release profile carries no debug info (root Cargo.toml) and the copies in the image no symbol
# table either, which keeps the image small; a panic still names its file and line.
RUN --mount=type=cache,id=sse-orders-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=sse-orders-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=sse-orders-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p sse-orders --bin sse-orders \
 && mkdir -p /out/bin \
 && cp target/release/sse-orders /out/bin/ \
 && strip /out/bin/sse-orders \
 && ln -s sse-orders /out/bin/order-api \
 && ln -s sse-orders /out/bin/stream-gateway

# distroless/cc (or its local stand-in): glibc, libgcc and CA certificates (rediss:// verifies
# against the system roots), no shell, no package manager. It runs as uid/gid 65532.
FROM ${RUNTIME_IMAGE}
# The directory is copied whole, so the two links stay links.
COPY --from=build /out/bin/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sse-orders"]
