# syntax=docker/dockerfile:1
# Build wheels for the service and everything it needs, then install them into a small runtime image.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY namaskah_notify ./namaskah_notify
COPY cli ./cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOTIFY_DATA_DIR=/data \
    NOTIFY_STATIC_DIR=/app/static
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin notify \
    && mkdir -p /data && chown notify:notify /data
COPY static /app/static
USER notify
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["notify", "serve", "--host", "0.0.0.0", "--port", "8000"]
