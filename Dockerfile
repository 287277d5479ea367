# syntax=docker/dockerfile:1
# The reconciler's image: `docker build -t keycloak-user-reconciler:0.1.0 .`
# Stage 1 builds the project's wheel and the wheels of its runtime dependencies (never the dev extras);
# stage 2 installs them offline into a slim Python and runs as the unprivileged user 10001.
# Where no registry answers, scripts/image/build.sh builds on a local Debian base instead (make_base.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The host's package index, when it has one set (scripts/image/build.sh passes pip's own setting through);
# they reach only this stage, never the runtime image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="keycloak-user-reconciler" \
      org.opencontainers.image.description="Keeps an application's MongoDB copy of Keycloak users true" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 reconciler \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin reconciler
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels keycloak-user-reconciler
WORKDIR /app
USER 10001:10001
# /healthz, /readyz and /metrics (HTTP_HOST:HTTP_PORT, default 0.0.0.0:8000).
EXPOSE 8000
ENTRYPOINT ["reconciler"]
CMD ["run"]
