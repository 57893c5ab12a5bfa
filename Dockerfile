# syntax=docker/dockerfile:1.7
#
# One image for every run target and for the operator; the command picks what it runs:
#   docker run IMAGE                                        # run --target all --host 0.0.0.0 (the default CMD)
#   docker run IMAGE run --target secrets --host 0.0.0.0    # one target (what the operator's Deployments run)
#   docker run IMAGE migrate --target secrets,usage         # the migration Job
#   docker run IMAGE operator ...                           # the operator (charts/coder-operator)
#
# Build:  docker build -t coderide/coder-platform:dev .
# tests/delivery/test_image.py repeats this file's uv commands in a plain venv and runs the entrypoint
# from it as an unprivileged user over a read-only tree; it cannot build the image itself (no engine).

# An exact patch tag, the same in both stages: the venv's interpreter link must point at the same
# Python in the final stage as in the builder. Pin a digest on top of it (`python:...@sha256:...`)
# where the registry can be reached.
ARG PYTHON_IMAGE=python:3.11.15-slim-trixie

# --------------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# The uv that `make install` uses, so the image resolves exactly what uv.lock says.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

# UV_PYTHON_DOWNLOADS=never: the venv must be built on the base image's interpreter (the final
# stage has that one, not a downloaded one). UV_LINK_MODE=copy: the cache mount is another
# filesystem, hard links cannot cross it. UV_COMPILE_BYTECODE: the final root filesystem is
# read-only, so the .pyc files must be written now.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-install-project

# Then the project, installed the way `make install` installs it: editable, so `coder` is imported
# through `.pkg/coder -> ..` (a .pth file names /app/.pkg), and the import path mirrors the file path.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups \
 && python -m compileall -q -j 0 -x '/\.(venv|pkg)/' /app

# ----------------------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

# OCI labels: VERSION follows pyproject.toml's version (tests/delivery checks it); a release build
# passes REVISION, the commit it was built from: `docker build --build-arg REVISION=$(git rev-parse HEAD)`.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/coderide/coder-platform
LABEL org.opencontainers.image.title="coder-platform" \
      org.opencontainers.image.description="Coder Platform: the gateway, the services and the operator (one image, the target is an argument)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# The base image's own installers are not needed at run time (the venv has none either).
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 10001 coder \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin coder

# Owned by root and not writable by the user: the code cannot be changed by the process that runs
# it, with or without readOnlyRootFilesystem. skaffold's dev profile builds with APP_OWNER=10001,
# because its file sync unpacks changed files into /app as the container's user.
ARG APP_OWNER=0
COPY --from=builder --chown=${APP_OWNER}:${APP_OWNER} /app /app

# HOME points at /tmp, the one writable place (an emptyDir in Kubernetes). The image has no embedded
# PostgreSQL or in-process Redis (pyproject.toml's `embedded` group, for laptops): it is given
# DATABASE_URL and REDIS_URL, as the operator and the chart do, and writes nothing but temporary files.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

WORKDIR /app
# Numeric, so `runAsNonRoot` can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 3000

ENTRYPOINT ["coder-platform"]
CMD ["run", "--target", "all", "--host", "0.0.0.0"]
