# syntax=docker/dockerfile:1.7
#
# One image, three binaries:
#   order-api       POST /api/order, GET /api/order/{id}        (Kubernetes: command order-api)
#   stream-gateway  GET /api/order/stream over SSE              (Kubernetes: command stream-gateway)
#   sse-orders      both on one port with the in-memory log     (the default entrypoint, for docker run)
#
#   docker build -t sse-orders .
#   docker run --rm -p 8080:8080 sse-orders
#
# The cache mounts keep the cargo registry and target directory between builds, so a change to
# one crate rebuilds that crate only.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p order-api -p stream-gateway -p sse-orders \
        --bin order-api --bin stream-gateway --bin sse-orders \
 && mkdir -p /out \
 && cp target/release/order-api target/release/stream-gateway target/release/sse-orders /out/

# distroless/cc: glibc, libgcc and CA certificates (rediss:// verifies against the system roots),
# no shell, no package manager. The :nonroot tag runs as uid/gid 65532.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/order-api /out/stream-gateway /out/sse-orders /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sse-orders"]
