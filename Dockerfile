# syntax=docker/dockerfile:1
# lrp as a small, non-root image. Build: docker build -t lrp .
# Run: docker run -p 8080:8080 -v "$PWD/lrp.yaml:/etc/lrp.yaml:ro" lrp

# The build CI tests and bench/run measures: a glibc release build on Debian 12, the same
# system the test machines run. It links only libc, libm, libgcc_s and the dynamic loader,
# which distroless/cc-debian12 provides (tests/image.rs checks the release binary against
# that list). aws-lc-sys builds C code with the image's gcc and cmake.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lrp \
    && mkdir -p /rootfs/go/bin \
    && cp target/release/lrp /rootfs/lrp \
    # The Go image's entrypoint path, so `entrypoint: /go/bin/lrp /etc/lrp.yaml` keeps working.
    && ln -s /lrp /rootfs/go/bin/lrp

# distroless/cc: glibc, libgcc_s, CA certificates (the AWS SDK loads the system roots),
# tzdata and a non-root user; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /rootfs/ /
# The server and `lrp healthcheck` read the same file, so the health check follows the
# configured port and internal_route_prefix.
ENV LRP_CONFIG=/etc/lrp.yaml
# distroless: 65532 is the "nonroot" user and group.
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/lrp", "healthcheck"]
ENTRYPOINT ["/lrp"]
