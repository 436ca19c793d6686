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
USER 65532:65532
EXPOSE 8080 9091
# Exec form: the binary is PID 1 and gets the kubelet's SIGTERM itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gsd-server"]
