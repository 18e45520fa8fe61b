# steadyframe server image: the API, the UI and the workers in one container.
#   make image                      # GPU box: CUDA runtime base, torch from PyPI
#   make image BASE_IMAGE=... IMAGE_OFFLINE=1 IMAGE_TORCH_SPEC=...   # see `make test-container`
# No `# syntax=` line on purpose: it builds with the classic builder and BuildKit, with no registry.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

# --- Python, venv and tini from the distribution, unless the base has them already ------------
FROM ${BASE_IMAGE} AS python-base
RUN set -eu; \
    if ! command -v tini >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv tini ca-certificates; \
      rm -rf /var/lib/apt/lists/*; \
    fi

# --- builder: the project's wheel (the runtime stage gets the wheel, not the source tree) -------
FROM python-base AS builder
# Set by scripts/build-image.sh for an offline build: pip reads them from the environment and then
# installs only from the loopback wheelhouse (PIP_NO_INDEX=1, PIP_FIND_LINKS=http://127.0.0.1:…/).
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1
ARG PIP_ROOT_USER_ACTION=ignore
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel --no-deps -w /dist /src

# --- runtime: torch, the dependencies and the wheel in a venv; a non-root user, volumes, init ----
# Layers from the slowest-changing to the fastest: a code change reinstalls only the small wheel.
FROM python-base AS runtime
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/steadyframe steadyframe \
    && mkdir -p /data /models /hf-cache \
    && chown steadyframe:steadyframe /data /models /hf-cache
# The torch build the workers get (override for a CUDA version, or a CPU build).
ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1
ARG PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/steadyframe && /opt/steadyframe/bin/pip install $TORCH_SPEC
COPY pyproject.toml /tmp/steadyframe-build/
RUN set -eu; cd /tmp/steadyframe-build; \
    /opt/steadyframe/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >requirements.txt; \
    /opt/steadyframe/bin/pip install $TORCH_SPEC -r requirements.txt; \
    cd / && rm -rf /tmp/steadyframe-build
COPY --from=builder /dist /tmp/dist
RUN /opt/steadyframe/bin/pip install --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist
COPY docker/entrypoint.sh /usr/local/bin/steadyframe-entrypoint
COPY docker/healthcheck.py /usr/local/lib/steadyframe-healthcheck.py
ENV PATH=/opt/steadyframe/bin:$PATH \
    STEADYFRAME_HOST=0.0.0.0 \
    STEADYFRAME_PORT=7860 \
    STEADYFRAME_DATA_DIR=/data \
    STEADYFRAME_MODELS_DIR=/models \
    STEADYFRAME_LOG_TO_STDERR=1 \
    HF_HOME=/hf-cache \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1 \
    TINI_SUBREAPER=1
USER steadyframe
WORKDIR /home/steadyframe
VOLUME ["/data", "/models", "/hf-cache"]
EXPOSE 7860
# Ready = a worker can take a job (/readyz). Liveness probes that restart should use /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "/usr/local/lib/steadyframe-healthcheck.py", "/readyz"]
# tini (PID 1) forwards SIGTERM to the server and reaps what its workers leave behind.
ENTRYPOINT ["tini", "--", "steadyframe-entrypoint"]
CMD ["steadyframe", "serve"]
