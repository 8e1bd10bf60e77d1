# The genpipe pipeline image: the runtime lock (no test/lint tools) and the carriers of setup.
# Kubeflow runs this image for every component; TFX references run_fn/preprocessing_fn by dotted
# path into the installed package, so no module file is copied at run time.
FROM python:3.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GENPIPE_ASSETS=/opt/genpipe/assets \
    GENPIPE_CACHE=/opt/genpipe/cache

WORKDIR /opt/genpipe/src
RUN pip install --no-cache-dir uv==0.13.9

# The GPU variant: `--build-arg TENSORFLOW_EXTRAS=and-cuda` adds the CUDA wheels that
# tensorflow[and-cuda] pins exactly for the locked TensorFlow; the lock constrains that install,
# so no locked package moves (a dry resolution adds the 12 nvidia-*-cu12 wheels, nothing else).
ARG TENSORFLOW_EXTRAS=
COPY requirements/lock.txt requirements/carriers.txt requirements/
RUN uv pip install --system --no-cache -r requirements/lock.txt \
 && if [ -n "$TENSORFLOW_EXTRAS" ]; then \
      uv pip install --system --no-cache -c requirements/lock.txt \
        "tensorflow[$TENSORFLOW_EXTRAS]==$(sed -n 's/^tensorflow==//p' requirements/lock.txt)"; \
    fi \
 && uv pip install --system --no-cache --no-deps -r requirements/carriers.txt

COPY pyproject.toml README.md ./
COPY contracts contracts
COPY models models
COPY components components
COPY pipeline pipeline
COPY protos protos
COPY serving serving
COPY client client
COPY sources sources
COPY scripts scripts
RUN uv pip install --system --no-cache --no-deps . \
 && bash scripts/setup_extras.sh

ENTRYPOINT ["genpipe"]
CMD ["--help"]
