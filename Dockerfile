# Lextral container images (one image, every service: `lextral serve <service>`).
#
#   docker build -t lextral .                      # bundled: models baked in (one machine)
#   docker build --target runtime -t lextral:slim . # no models: mount them (Helm init container)
#   docker build --target models -t lextral-models .# the models alone; copies them to /dest
#
# No Docker engine runs where this project is built and tested: this file is
# checked by tests/integration/dockerfile.rs (stages, COPY sources, binary
# path, non-root user, ports), not by building it.

# ---- build: the release binary -------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Workspace manifests and every member crate (cargo resolves the whole workspace).
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY proto proto
COPY services services
COPY clients/cli clients/cli
COPY clients/eval clients/eval
COPY tests tests
# protoc comes vendored (protoc-bin-vendored); no system packages needed.
RUN cargo build --release --locked -p lextral-cli \
    && strip target/release/lextral \
    && cp target/release/lextral /usr/local/bin/lextral

# ---- models: all-MiniLM-L6-v2 and the local LLM, as the quickstart caches them
FROM python:3.11-slim-bookworm AS models
# Not pinned to package versions (DL3008): bookworm's security updates
# replace them, so a pin breaks the build; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/setup-model.sh scripts/setup-llm.sh /opt/lextral/
ENV LEXTRAL_HOME=/opt/lextral
RUN /opt/lextral/setup-model.sh && /opt/lextral/setup-llm.sh \
    && rm -rf /root/.cache/pip
# As an init container: copy the models into the shared volume at /dest.
CMD ["sh", "-c", "cp -a /opt/lextral/models/. /dest/ && ls /dest"]

# ---- runtime: the binary on a slim base, non-root, no models ----------------
FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/lextral --create-home lextral
COPY --from=build /usr/local/bin/lextral /usr/local/bin/lextral
# Without LEXTRAL_DATABASE_URL the embedded store keeps clauses in
# /var/lib/lextral/store: mount a volume there to keep them across containers.
ENV LEXTRAL_HOME=/var/lib/lextral \
    LEXTRAL_STORE_PATH=/var/lib/lextral/store \
    LEXTRAL_METRICS=0.0.0.0:9464 \
    LEXTRAL_EMBED_MODEL=/models/all-MiniLM-L6-v2 \
    LEXTRAL_LLM_MODEL=/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf
USER 10001
# gRPC (all services in `serve all`), REST gateway, Prometheus metrics.
EXPOSE 50051 8080 9464
ENTRYPOINT ["/usr/local/bin/lextral"]
# On 0.0.0.0 the server refuses to start without keys: mount a keys file
# and set LEXTRAL_KEYS_FILE, or set LEXTRAL_INSECURE_NO_AUTH=1 (README "Security").
CMD ["serve", "all", "--grpc", "0.0.0.0:50051", "--http", "0.0.0.0:8080"]

# ---- bundled (default): runtime plus the models ------------------------------
FROM runtime AS bundled
COPY --from=models --chown=10001:10001 /opt/lextral/models /models
