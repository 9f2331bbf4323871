# syntax=docker/dockerfile:1
# One image per minimart function: `docker build --build-arg FUNCTION=inventory .`
# (skaffold.yaml builds one artifact per function with FUNCTION and SIGNATURE set).
#   FUNCTION   a folder of functions/ (order, inventory, payment, shipping, notification,
#              order-status, redrive)
#   SIGNATURE  http for the order ingress, cloudevent for the KafkaSource-fed functions

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Pinned dependencies first (a layer cached until the pins change): the lock file when there
# is one, else the pins of requirements.in.
COPY requirements.* ./
RUN if [ -f requirements.lock ]; then pip install -r requirements.lock; \
    else pip install -r requirements.in; fi
COPY pyproject.toml ./
COPY minimart/ minimart/
RUN pip install --no-deps .

FROM python:3.11-slim
ARG FUNCTION
ARG SIGNATURE=cloudevent
RUN test -n "$FUNCTION" || (echo "build with --build-arg FUNCTION=<name>" >&2; exit 1) \
    && groupadd --system --gid 10001 minimart \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent minimart
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MINIMART_FUNCTION=${FUNCTION} \
    MINIMART_SIGNATURE=${SIGNATURE}
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY functions/${FUNCTION}/ functions/${FUNCTION}/
# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# functions-framework's server as its command line runs it, without gunicorn's control socket
# (it would go to $HOME, /nonexistent here: minimart/serve.py).
CMD ["sh", "-c", "exec python -m minimart.serve --target handle --source \"functions/${MINIMART_FUNCTION}/main.py\" --signature-type \"${MINIMART_SIGNATURE}\" --host 0.0.0.0 --port 8080"]
