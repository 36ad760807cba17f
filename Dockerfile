# pipeflow: the CLI, with the model server (`pipeflow serve`), batch inference and the Dask runner.
#
#   docker build -t pipeflow .
#   docker run --rm -v "$PWD/.pipeflow:/store" -p 8000:8000 pipeflow \
#       serve claims-categoriser@production --store /store --host 0.0.0.0
#
# The server writes its audit log under /store/audit: a bind-mounted store must be writable by
# the container's user (uid 10001), or add --user "$(id -u):$(id -g)" to docker run.
#
# See docs/deploy/docker.md. The team store's clients (s3fs, psycopg) are in; other Python packages
# (gcsfs, adlfs, the libraries your own stages import) go in with --build-arg EXTRA_PACKAGES="gcsfs".
FROM python:3.11-slim

ARG EXTRA_PACKAGES=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install` needs: the package, its metadata (pyproject.toml names README.md) and
# the SQL plugin. Every dependency is a binary wheel, so no compiler is installed. Versions of
# the dependencies are those pyproject.toml allows; pin EXTRA_PACKAGES in the build argument.
COPY pyproject.toml README.md /opt/pipeflow-src/
COPY pipeflow/ /opt/pipeflow-src/pipeflow/
COPY plugins/pipeflow-sql/ /opt/pipeflow-src/plugins/pipeflow-sql/
# The README's install from a clone ("Install"), with the team store's extras (PostgreSQL history,
# S3 artifacts: docs/howto-team.md), run in the copied source (tests/deploy/test_dockerfile.py).
# (cd, not WORKDIR: the folder is deleted once installed)
# hadolint ignore=DL3003,DL3013
RUN cd /opt/pipeflow-src \
    && pip install '.[postgres,s3]' ./plugins/pipeflow-sql ${EXTRA_PACKAGES} \
    && cd / && rm -rf /opt/pipeflow-src \
    && pipeflow --version

# An unprivileged user, numeric in USER so that Kubernetes' runAsNonRoot can verify it. /store is
# where a store is mounted (the model registry, and the audit log under /store/audit unless
# --audit-dir says otherwise); /audit is for --audit-dir /audit when the store is read-only or
# remote (a new named volume mounted there takes its owner); /work is the working directory for
# `pipeflow run` and `pipeflow predict` jobs.
RUN groupadd --gid 10001 pipeflow \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin pipeflow \
    && mkdir -p /store /audit /work \
    && chown pipeflow:pipeflow /store /audit /work
USER 10001:10001
WORKDIR /work
ENV PIPEFLOW_STORE=/store

EXPOSE 8000

# The slim image has no curl: probe /health with the Python standard library. urlopen raises on
# a refused connection and on any non-2xx answer, so the probe exits non-zero. It assumes the
# default --port 8000; with another port, override it (docker run --health-cmd ...).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["pipeflow"]
CMD ["serve", "--help"]
