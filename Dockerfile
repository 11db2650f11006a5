# The worker image: `streams worker` (default), or any other `streams` command
# (`docker run IMAGE produce clickstream ...`). Built by docker-compose.yml and for Kubernetes.
#
#   docker build -t streams:local .
#
# The package is installed from a wheel (pip install .); the files the workers read at run time
# (Cassandra schema, pinned priors, model and lookups, event schemas) are copied to /app, the
# working directory, where the settings find them (`deploy/` and `schemas/` beside the cwd).

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY streams ./streams
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # A container's /metrics must be reachable from Prometheus, not only from inside the container.
    STREAMS_WORKER__METRICS_HOST=0.0.0.0 \
    STREAMS_WORKER__METRICS_PORT=9400 \
    # Faust's data dir and other local state: writable, and a volume (emptyDir) on Kubernetes.
    STREAMS_RUNTIME__HOME=/var/lib/streams
# The wheels of the package and of every dependency, installed without asking an index again.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels streams \
 && useradd --system --uid 10001 --gid 0 --home-dir /var/lib/streams --no-create-home streams \
 && mkdir -p /var/lib/streams \
 && chown 10001:0 /var/lib/streams \
 && chmod 0770 /var/lib/streams
WORKDIR /app
COPY deploy/cassandra/schema ./deploy/cassandra/schema
COPY deploy/priors ./deploy/priors
COPY deploy/models ./deploy/models
COPY deploy/fraud ./deploy/fraud
COPY schemas ./schemas
USER 10001
EXPOSE 9400
ENTRYPOINT ["streams"]
CMD ["worker"]
