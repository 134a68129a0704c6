# serin's container image: a static binary (musl) on a distroless, non-root base.
# Build: docker build -t serin . (the same binary runs `serin controller` and `serin loadtester`).
FROM rust:1.95-alpine3.22 AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin serin \
    && strip target/release/serin \
    && mkdir /out && cp target/release/serin /out/serin && ln -s serin /out/wget

# The load tester with the tools Flagger-style tasks call (before the runtime stage, so that a
# build without --target still makes the controller's image): `docker build --target loadtester -t
# REGISTRY/serin-loadtester:0.1.0 .`. Flagger's load tester runs `bash` tasks with a shell
# (`curl ... | grep ...`), and `helm`/`helmv3`/`kubectl` tasks with those binaries, which the
# distroless image above does not have. Versions pinned; each download checked against the
# checksum its project publishes beside it.
FROM debian:12-slim AS loadtester
ARG KUBECTL_VERSION=v1.34.2
ARG HELM_VERSION=v3.19.2
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && cd /tmp \
    && curl -fsSLO "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" \
    && echo "$(curl -fsSL https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl.sha256)  kubectl" | sha256sum -c - \
    && install -m 0755 kubectl /usr/local/bin/kubectl \
    && curl -fsSLO "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz" \
    && echo "$(curl -fsSL https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz.sha256sum | cut -d' ' -f1)  helm-${HELM_VERSION}-linux-amd64.tar.gz" | sha256sum -c - \
    && tar -xzf "helm-${HELM_VERSION}-linux-amd64.tar.gz" linux-amd64/helm \
    && install -m 0755 linux-amd64/helm /usr/local/bin/helm \
    && rm -rf /tmp/*
COPY --from=build /out/serin /usr/local/bin/serin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["loadtester"]

FROM gcr.io/distroless/static-debian12:nonroot
# serin, and `wget` linked to it: Flagger's chart probes with `exec: wget ... --spider
# http://localhost:8080/healthz`, and serin answers to that name (src/cli/wget.rs), so that
# chart runs with this image unchanged.
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["controller"]

