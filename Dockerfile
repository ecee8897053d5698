# Multi-stage build of the RingKV binaries; the runtime image runs as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringkv-server --bin ringkv

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/ringkv --create-home ringkv
COPY --from=build /src/target/release/ringkv-server /src/target/release/ringkv /usr/local/bin/
USER ringkv
WORKDIR /var/lib/ringkv
VOLUME ["/var/lib/ringkv"]
# Clients, peers (Raft), admin HTTP.
EXPOSE 7001 7101 8001
ENTRYPOINT ["/usr/local/bin/ringkv-server"]
