# One image for every role (exporter now; server and CPU agent arrive with the Latency service issue).
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY spaces spaces
COPY exporters exporters
COPY profilers profilers
COPY predictors predictors
COPY server server
COPY search search
# CPU-only torch first so pip never resolves the CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e .
ENTRYPOINT ["python", "-m"]
CMD ["exporters", "--help"]
