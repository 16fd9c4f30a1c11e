from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cli import demo_spec_path


@pytest.fixture
def demo_spec() -> dict[str, Any]:
    """The built-in example's spec as a dict, for tests to edit and write back.

    Only its ONNX-level recipes are kept: they apply to any baseline source (an ONNX file too)
    and need no retraining. Tests of the torch-level recipes set their own."""
    from components.spec import Candidate
    from optimizers.base import Stage

    spec: dict[str, Any] = yaml.safe_load(demo_spec_path().read_text())
    spec["candidates"] = [
        c for c in spec["candidates"]
        if all(s.build().stage is Stage.ONNX for s in Candidate.model_validate(c).steps)
    ]  # fmt: skip
    return spec


@pytest.fixture
def write_spec(tmp_path: Path) -> Any:
    def write(spec: dict[str, Any], name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


@pytest.fixture
def competing_load() -> Any:
    """``with competing_load():`` two processes that are not slimgate's (they hold no lock) keep
    both cores of the machine busy."""
    import subprocess
    import sys
    from contextlib import contextmanager

    burn = "import time\nt = time.time()\nwhile time.time() - t < 600: pass"

    @contextmanager
    def busy() -> Iterator[None]:
        burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
        try:
            yield
        finally:
            for b in burners:
                b.kill()
                b.wait()

    return busy


@pytest.fixture(scope="session")
def needs() -> Any:
    """``needs(service, present, how)``: skip a test whose service is missing here, or fail it
    where ``SLIMGATE_TEST_REQUIRE`` (set by .ci/run) lists the service: CI never skips them."""

    def check(service: str, present: bool, how: str) -> None:
        if present:
            return
        required = os.environ.get("SLIMGATE_TEST_REQUIRE", "").split(",")
        message = f"needs {service} ({how})"
        if service in required:
            pytest.fail(f"{message}: SLIMGATE_TEST_REQUIRE says it must be here")
        pytest.skip(message)

    return check


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API on loopback (moto's server), shared through the standard AWS
    environment variables so that subprocesses reach it too. Starts empty but for a bucket
    named ``models``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "slimgate-test",
           "AWS_SECRET_ACCESS_KEY": "slimgate-test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="models")
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback (SQLite backend store, artifacts proxied into a local
    folder), as ``mlflow://127.0.0.1:PORT``. Starts empty; about 15 s."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield f"mlflow://127.0.0.1:{port}"
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
