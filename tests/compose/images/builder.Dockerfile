# Test-only builder image: the local Debian root (with gcc and libc6-dev)
# plus the host's Rust toolchain, copied in by tests/compose/run. Stands in
# for rust:1-slim-bookworm, which cannot be pulled here.
ARG TOOLS_IMAGE
FROM ${TOOLS_IMAGE}
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
RUN rustc -vV && cargo -V && cc --version | head -n 1
