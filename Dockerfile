# The pmcp-build image: ZIP_URL -> deterministic Lambda package -> s3://S3_BUCKET/S3_KEY.
# Based on AWS's Lambda Python image so the interpreter (and any bytecode) matches the
# runtime the package will run on.
ARG PYTHON_VERSION=3.12
FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}

ARG PYTHON_VERSION
ENV PYTHON_VERSION=${PYTHON_VERSION} \
    PMCP_BUILD_CACHE_DIR=/tmp/pmcp-cache \
    PIP_NO_CACHE_DIR=1

COPY pyproject.toml README.md /opt/pmcp-build/
COPY pmcp_build /opt/pmcp-build/pmcp_build
COPY boot /opt/pmcp-build/boot
RUN pip install /opt/pmcp-build

WORKDIR /tmp/work
COPY docker/entrypoint.sh /usr/local/bin/pmcp-image
ENTRYPOINT ["/usr/local/bin/pmcp-image"]
