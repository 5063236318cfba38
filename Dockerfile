# The archiver as a service: `archiver serve`, non-root, fonts included.
FROM python:3.11-slim-bookworm

COPY config/debian-packages.txt /tmp/debian-packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/debian-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/debian-packages.txt \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin archiver

WORKDIR /app
COPY pyproject.toml README.md ./
COPY archiver ./archiver
COPY templates ./templates
COPY config ./config
RUN pip install --no-cache-dir . && chown -R root:root /app

USER archiver
# Settings come from ARCHIVER_* variables, or a mounted file named by ARCHIVER_CONFIG.
# The templates are installed inside the package: render.template needs no setting.
# Inside a container, loopback is unreachable from the published port: listen on every interface.
ENV ARCHIVER_METRICS__HOST=0.0.0.0
ENTRYPOINT ["archiver"]
CMD ["serve"]
