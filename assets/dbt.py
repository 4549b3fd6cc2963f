"""dbt: staging → marts over the raw boundary tables, as Dagster assets (dbt tests become asset checks)."""


import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets


def dbt_project(project_dir: Path, target: str, profiles_dir: Path) -> DbtProject:
    """The dbt project for one target, with its own target path so DuckDB and Postgres manifests never mix.
    The manifest is built on first use (`dbt parse`) and by `dagster dev` on every reload."""
    project = DbtProject(project_dir=project_dir, target=target, target_path=f"target/{target}",
                         profiles_dir=profiles_dir)
    if _stale(project) or project.preparer.using_dagster_dev():
        _parse(project, profiles_dir)
    return project


def _parse(project: DbtProject, profiles_dir: Path) -> None:
    """`dbt parse` under a file lock: processes that start together (a webserver and a daemon, run
    workers, parallel test workers) would otherwise write the same manifest at once. Whoever waited on
    the lock finds the manifest fresh and does not parse again."""
    import fcntl

    target = Path(project.project_dir) / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stale(project) or project.preparer.using_dagster_dev():
            dbt_cli(project, profiles_dir).cli(["parse", "--quiet"], target_path=project.target_path).wait()


def _stale(project: DbtProject) -> bool:
    """No manifest yet, or a model, macro, test or project file changed since it was written."""
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project.project_dir)
    sources = [root / "dbt_project.yml", *root.glob("models/**/*"), *root.glob("macros/**/*"),
               *root.glob("tests/**/*")]
    return any(p.is_file() and p.stat().st_mtime > built for p in sources)


def dbt_executable() -> str:
    """dbt from PATH, else the one installed beside this Python (a venv that is not activated)."""
    return shutil.which("dbt") or str(Path(sys.executable).parent / "dbt")


def dbt_cli(project: DbtProject, profiles_dir: Path) -> DbtCliResource:
    return DbtCliResource(project_dir=project, target=project.target, profiles_dir=str(profiles_dir),
                          dbt_executable=dbt_executable())


def build_dbt_assets(project: DbtProject, *, pool: str | None) -> dg.AssetsDefinition:
    @dbt_assets(manifest=project.manifest_path, project=project, name="meshline_dbt", pool=pool)
    def meshline_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        yield from dbt.cli(["build"], context=context).stream()

    return meshline_dbt
