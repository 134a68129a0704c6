# serin's container image: a static binary (musl) on a distroless, non-root base.
# Build: docker build -t serin . (the same binary runs `serin controller` and `serin loadtester`).
FROM rust:1.95-alpine3.22 AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin serin \
    && strip target/release/serin

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/serin /usr/local/bin/serin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["controller"]
