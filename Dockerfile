# Build on the official Swift image, run on slim Debian with only the runtime libraries.
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev libsqlite3-dev libpq-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
# The manifest names the test targets too; their folders must exist for it to load.
COPY Tests ./Tests
RUN swift build -c release --product switchboard --static-swift-stdlib \
 && install -D .build/release/switchboard /out/switchboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 zlib1g libsqlite3-0 libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/switchboard --shell /usr/sbin/nologin switchboard \
 && install -d -m 0700 -o switchboard /var/lib/switchboard
COPY --from=build /out/switchboard /usr/local/bin/switchboard
USER switchboard
VOLUME /var/lib/switchboard
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/switchboard", "serve", "--host", "0.0.0.0", "--data-dir", "/var/lib/switchboard"]
