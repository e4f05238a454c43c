"""A local S3-compatible server for the object-storage tests: moto's server mode, bound to
loopback on a free port, with one bucket, and the AWS variables that point this process
(and everything it starts: a local Ray's workers, a CLI subprocess) at it.

    with s3_server("studies") as env:   # env: the AWS variables, also set in os.environ
        ...s3://studies/...

Fake keys, a fixed region, no profile or session token from the user's own setup: nothing
leaves the machine.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import pytest

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE")


@contextmanager
def s3_server(*buckets: str) -> Iterator[dict[str, str]]:
    """Start the server, create ``buckets``, set the AWS variables; undo all of it on exit."""
    server_module = pytest.importorskip("moto.server", reason='the S3 tests need `pip install "moto[server]"`')
    import pyarrow.fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", **FAKE_KEYS}
        with pytest.MonkeyPatch.context() as patch:
            for key in CLEARED:
                patch.delenv(key, raising=False)
            patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)  # never the user's ~/.aws keys
            for key, value in env.items():
                patch.setenv(key, value)
            fs = pyarrow.fs.S3FileSystem(
                endpoint_override=env["AWS_ENDPOINT_URL"], region=env["AWS_DEFAULT_REGION"], allow_bucket_creation=True
            )
            for bucket in buckets:
                fs.create_dir(bucket)
            yield env
    finally:
        server.stop()
