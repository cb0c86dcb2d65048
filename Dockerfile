# syntax=docker/dockerfile:1
# lrp as a small, static, non-root image. Build: docker build -t lrp .
# Run: docker run -p 8080:8080 -v "$PWD/lrp.yaml:/etc/lrp.yaml:ro" lrp

# A static binary (musl), so the final image needs no libc. aws-lc-sys builds C code.
FROM rust:1.95-alpine3.22 AS build
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev gcc g++ make cmake perl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lrp \
    && mkdir -p /rootfs/go/bin \
    && cp target/release/lrp /rootfs/lrp \
    # The Go image's entrypoint path, so `entrypoint: /go/bin/lrp /etc/lrp.yaml` keeps working.
    && ln -s /lrp /rootfs/go/bin/lrp

# distroless/static: CA certificates (the AWS SDK loads the system roots), tzdata, and a
# non-root user, in about 2 MiB.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /rootfs/ /
# The server and `lrp healthcheck` read the same file, so the health check follows the
# configured port and internal_route_prefix.
ENV LRP_CONFIG=/etc/lrp.yaml
# distroless: 65532 is the "nonroot" user and group.
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/lrp", "healthcheck"]
ENTRYPOINT ["/lrp"]
