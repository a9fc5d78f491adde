# The his-otel command line (bridge, create-table, tail, demo) in a container, for docker-compose.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY his_otel ./his_otel
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER nobody
ENTRYPOINT ["his-otel"]
