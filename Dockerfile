# auroratrack: the proxy, the changelog streamer and the admin API in one process.
# The build steps are the README's install steps: a virtualenv with the package in it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/venv/bin:$PATH \
    AURORATRACK_DATA_DIR=/var/lib/auroratrack
VOLUME /var/lib/auroratrack
EXPOSE 3307 3308
ENTRYPOINT ["auroratrack"]
CMD ["serve", "--listen", "0.0.0.0:3307", "--admin", "0.0.0.0:3308"]
