# Test-only Redis image: Debian's redis-server from the local Debian root,
# laid out like the official image (data in /data, runs as redis).
ARG TOOLS_IMAGE
FROM ${TOOLS_IMAGE}
RUN install -d -o redis -g redis -m 0750 /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--dir", "/data", "--protected-mode", "no"]
