# serin's container image: a static binary (musl) on a distroless, non-root base.
# Build: docker build -t serin . (the same binary runs `serin controller` and `serin loadtester`).
FROM rust:1.95-alpine3.22 AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin serin \
    && strip target/release/serin \
    && mkdir /out && cp target/release/serin /out/serin && ln -s serin /out/wget

FROM gcr.io/distroless/static-debian12:nonroot
# serin, and `wget` linked to it: Flagger's chart probes with `exec: wget ... --spider
# http://localhost:8080/healthz`, and serin answers to that name (src/cli/wget.rs), so that
# chart runs with this image unchanged.
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["controller"]
