"""A scratch copy of the project in its own git repository, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipelines.params import DEFAULT_PARAMS, DataParams, load_paths, load_section
from tools.act.simulation import uv_cache_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
HOME = ".scratch-home"  # the copy's HOME, inside it and ignored by git


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
        # Nor the user's own settings (DVC's global and system config, git's, BentoML's home):
        # a home of the copy's own, which git ignores. uv's cache stays the real one, so that
        # nothing is downloaded again.
        home = path / HOME
        env |= {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CONFIG_DIRS": str(home / "etc"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "UV_CACHE_DIR": uv_cache_dir(),
        }
        # `make` in the copy runs in this environment, the one running the tests, and must not
        # change it: an exact `uv sync` would remove whatever the lock does not list from under
        # them. CHECK_ENV makes `make install` only check it against the lock (see the
        # Makefile); UV_NO_SYNC keeps `uv run` from installing into it.
        env |= {"UV_PROJECT_ENVIRONMENT": sys.prefix, "CHECK_ENV": "1", "UV_NO_SYNC": "1"}
        home.mkdir()
        repo = cls(path, env)
        repo.run("git", "init", "-q", "-b", "main")
        with (path / ".git" / "info" / "exclude").open("a") as exclude:
            exclude.write(f"/{HOME}/\n")
        repo.run("git", "add", "-A")
        repo.run("git", "commit", "-qm", "template")
        repo.warm_dvc_cache(root)
        return repo

    def copy(self, path: Path) -> ScratchRepo:
        """A copy at ``path`` (which must not exist): work tree, git history and DVC cache.

        The MLflow store stays behind: its experiments hold absolute artifact paths into this
        copy, so the new one starts its own.
        """
        store = load_paths(self.path / DEFAULT_PARAMS).mlflow
        shutil.copytree(self.path, path, symlinks=True, ignore=shutil.ignore_patterns(str(store)))
        env = {k: v.replace(str(self.path), str(path)) for k, v in self.env.items()}
        return ScratchRepo(path, env)

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

    def hide_uv(self, bin_dir: Path) -> None:
        """Run as on a machine without uv: no ``uv`` on PATH, a Python with pip as ``python3``.

        ``bin_dir`` (empty, outside the copy) gets a ``python3`` link to the interpreter this
        environment was made from; PATH keeps only directories without a ``uv``.
        """
        (bin_dir / "python3").symlink_to(Path(sys._base_executable).resolve())  # type: ignore[attr-defined]
        self.env.pop("UV", None)  # `uv run` tells its children where uv is; make would use it
        kept = [d for d in self.env["PATH"].split(os.pathsep) if not (Path(d) / "uv").exists()]
        self.env["PATH"] = os.pathsep.join([str(bin_dir), str(BIN), *kept])
        if shutil.which("uv", path=self.env["PATH"]) is not None:
            raise RuntimeError("uv is still on PATH")

    def read(self, relative: str) -> bytes:
        """Bytes of a file of the copy."""
        return (self.path / relative).read_bytes()


@dataclass(frozen=True)
class FreshClone:
    """A copy where `make run` ran as on a fresh clone, on a machine without uv, and its output."""

    repo: ScratchRepo
    first: subprocess.CompletedProcess[str]
