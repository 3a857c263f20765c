# auroratrack: the proxy, the changelog streamer and the admin API in one process.
# The build steps are the README's install steps: a virtualenv with the package in it.
# Two stages: the first has gcc so setup.py can compile the protocol tracker with mypyc; the
# image itself carries only the virtualenv (the compiled tracker included), no compiler.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    AURORATRACK_DATA_DIR=/var/lib/auroratrack
VOLUME /var/lib/auroratrack
EXPOSE 3307 3308
ENTRYPOINT ["auroratrack"]
CMD ["serve", "--listen", "0.0.0.0:3307", "--admin", "0.0.0.0:3308"]
