# One image, every program: gsd-server (the default), gsd-client and
# gsd-verdict (the chart's in-cluster verdict).
#   docker build -t gsd .
#   docker run --rm -p 8080:8080 gsd                 # the server
#   docker run --rm --entrypoint gsd-client gsd ...   # the client

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts, so a rebuild after
# a source change recompiles gsd, not its dependencies. scripts/build-release
# is the same command scripts/test runs in CI.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release \
    && mkdir -p /out \
    && cp target/release/gsd-server target/release/gsd-client target/release/gsd-verdict /out/

# distroless cc: glibc and libgcc only, no shell, uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/gsd-server /out/gsd-client /out/gsd-verdict /usr/local/bin/
# The OCI annotations registries and scanners show. The version is the
# workspace's (Cargo.toml) and the chart's appVersion, which tests/chart.rs
# holds equal; scripts/release passes it again with the commit and the
# build time (org.opencontainers.image.revision and .created, as --label).
# Declared in this stage, after the build: a new value changes no cached
# layer of the builder.
ARG GSD_VERSION=0.1.0
LABEL org.opencontainers.image.title="gsd" \
      org.opencontainers.image.description="gsd-server, gsd-client and gsd-verdict: WebSocket sessions that survive pod termination without losing a message" \
      org.opencontainers.image.version="${GSD_VERSION}" \
      org.opencontainers.image.source="https://github.com/gsd-project/gsd" \
      org.opencontainers.image.url="https://github.com/gsd-project/gsd" \
      org.opencontainers.image.documentation="https://github.com/gsd-project/gsd/blob/main/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="gsd maintainers"
USER 65532:65532
EXPOSE 8080 9091
# Exec form: the binary is PID 1 and gets the kubelet's SIGTERM itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gsd-server"]
