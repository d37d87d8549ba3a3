"""A scratch copy of the project in its own git repository, for pipeline tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.params import DEFAULT_PARAMS, DataParams, load_paths, load_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("validate", "featurize", "train", "evaluate", "register")


def project_files(root: Path = ROOT) -> list[str]:
    """Files git would put in a clone, plus new files not ignored (the work in progress)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return [f for f in listed if f and (root / f).is_file()]


def ran(output: str) -> set[str]:
    """Names of the stages that a `dvc repro` output says it ran."""
    return {s for s in STAGES if f"Running stage '{s}'" in output}


@dataclass
class ScratchRepo:
    """A copy of the project, committed once in a fresh git repository."""

    path: Path
    env: dict[str, str]

    @classmethod
    def create(cls, path: Path, root: Path = ROOT) -> ScratchRepo:
        """Copy the project into ``path`` (which must be empty) and commit it."""
        for name in project_files(root):
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, path / name)
        # Nothing of the caller's tools leaks in: not its MLflow store, git identity, DVC
        # settings, nor an outer make's flags (`make test` running `make run`).
        isolated = ("MLFLOW_", "GIT_", "DVC_", "MAKE", "MFLAGS")
        env = {k: v for k, v in os.environ.items() if not k.startswith(isolated)}
        env |= {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "GIT_AUTHOR_NAME": "scratch",
            "GIT_AUTHOR_EMAIL": "scratch@example.com",
            "GIT_COMMITTER_NAME": "scratch",
            "GIT_COMMITTER_EMAIL": "scratch@example.com",
        }
        repo = cls(path, env)
        repo.run("git", "init", "-q", "-b", "main")
        repo.run("git", "add", "-A")
        repo.run("git", "commit", "-qm", "template")
        repo.warm_dvc_cache(root)
        return repo

    def warm_dvc_cache(self, root: Path = ROOT) -> None:
        """Put the project's table in the copy's DVC cache when params name no packaged copy.

        A fresh clone of such a project gets its table from the DVC remote; the copy has none,
        so its cache stands in for it, and `make data` restores data/ from there. data/ itself
        stays out of the copy, as out of a clone.
        """
        params = root / DEFAULT_PARAMS
        if load_section("data", DataParams, params).offline:
            return
        data = load_paths(params).data
        if not (root / data).exists():
            return  # nothing to put: the copy's `make data` says what is missing
        shutil.copytree(root / data, self.path / data)
        self.dvc("commit", "--force", str(load_paths(params).data_dvc))
        shutil.rmtree(self.path / data)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the copy; with ``check``, a failure raises with its output."""
        done = subprocess.run(
            args, cwd=self.path, env=self.env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the environment's ``dvc`` in the copy."""
        return self.run(str(BIN / "dvc"), *args, check=check)

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the environment's Python in the copy."""
        return self.run(sys.executable, *args, check=check)

    def read(self, relative: str) -> bytes:
        """Bytes of a file of the copy."""
        return (self.path / relative).read_bytes()
