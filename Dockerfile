# The image deploy/ names (ghcr.io/inferchaos/inferchaos): the chaos runner (`inferchaos`,
# `pytest experiments/`), the reference server, its stores and pipeline, locust, and the GPU
# hog exec'd into pods -- one image, every command from deploy/base/*.yaml.
#
#   make image                      # docker, else podman, else buildah
#   docker run --rm IMAGE inferchaos --help
#
# BASE: python:3.11.14-slim-bookworm pinned by the digest of its multi-architecture index, so a
# rebuild gets the same bytes until the pin is bumped on purpose (the tag alone is rebuilt
# upstream for every Debian point release). Where no registry is reachable,
# deploy/image/debian-python-base.sh makes a stand-in from Debian's packages:
#   make image BASE=localhost/debian-python:bookworm
ARG BASE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- builder: the wheel, and a venv holding it and its hash-pinned dependencies ----
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# Dependencies first (their layer survives source edits): wheels only, every file by hash.
COPY deploy/image/requirements.txt deploy/image/build-requirements.txt /tmp/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/build-requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements.txt
COPY . /src
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src \
 && /opt/venv/bin/pip install --no-deps /dist/inferchaos-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---- runtime: the venv, the experiments and their runbooks; no compiler, no pip ----
FROM ${BASE}
# uid/gid 1000: deploy/base's runAsUser and fsGroup. Numeric below, so runAsNonRoot can check it.
RUN groupadd --gid 1000 inferchaos \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/inferchaos --shell /usr/sbin/nologin inferchaos
COPY --from=builder /opt/venv /opt/venv
# /app is deploy/'s workingDir: pytest's rootdir (pyproject.toml: markers, addopts, timeout),
# experiments/ and the runbooks they link; load/ is the installed package's, for
# `locust -f load/locustfile.py`. Read-only to the user but for the state pytest and
# inferchaos keep beside it.
COPY pyproject.toml conftest.py /app/
COPY experiments/ /app/experiments/
COPY runbooks/ /app/runbooks/
RUN ln -s /opt/venv/lib/python3.11/site-packages/inferchaos/load /app/load \
 && install -d -o 1000 -g 1000 /app/.inferchaos /app/.pytest_cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 1000:1000
# Last, so a new revision rebuilds only this layer.
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="inferchaos" \
      org.opencontainers.image.description="Chaos engineering for ML inference clusters: real load, real faults, SLO verdicts." \
      org.opencontainers.image.source="https://github.com/inferchaos/inferchaos" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
# No ENTRYPOINT: deploy/ gives every container its command (python -m ..., /bin/sh -c ...).
CMD ["inferchaos", "--help"]
