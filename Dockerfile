# One image for every role: the latency server, the CPU device agent and the exporters (docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY spaces spaces
COPY exporters exporters
COPY profilers profilers
# predictors/ holds predictors/bundled (the shipped forests the server serves at start)
COPY predictors predictors
COPY server server
COPY search search
# CPU-only torch first so pip never resolves the CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e .
# Trained predictors and the default SQLite file live under /app/var (HIL_VAR); compose mounts a volume there.
ENV HIL_VAR=/app/var PYTHONUNBUFFERED=1
EXPOSE 8000
# No ENTRYPOINT: `docker compose run --rm server python -m server token create ...` runs as written.
CMD ["python", "-m", "server", "serve", "--host", "0.0.0.0", "--port", "8000"]
