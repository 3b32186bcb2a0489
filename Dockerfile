# syntax=docker/dockerfile:1
# Build wheels for the service and everything it needs, each download checked against the hashes in
# requirements.lock, then install exactly those into a small runtime image. The lock is made for CPython 3.11
# (python3 dev.py lock). A package published only as a source archive (http-ece) is checked as that archive and
# built into a wheel here, whose own hash the lock cannot know: the wheels are installed as built.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --require-hashes --no-deps --wheel-dir /wheels -r requirements.lock \
    && pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
COPY pyproject.toml README.md ./
COPY namaskah_notify ./namaskah_notify
COPY cli ./cli
# Built with the setuptools the lock pinned, not one fetched for an isolated build.
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOTIFY_DATA_DIR=/data \
    NOTIFY_STATIC_DIR=/app/static
COPY --from=build /wheels /wheels
COPY --from=build /dist /dist
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl /dist/*.whl \
    && rm -rf /wheels /dist \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin notify \
    && mkdir -p /data && chown notify:notify /data && chmod 700 /data
COPY static /app/static
USER notify
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["notify", "serve", "--host", "0.0.0.0", "--port", "8000"]
