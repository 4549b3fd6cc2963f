"""dbt: staging → marts over the raw boundary tables, as Dagster assets (dbt tests become asset checks)."""


import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets


def dbt_project(project_dir, target: str) -> DbtProject:
    """The dbt project for one target, with its own target path so DuckDB and Postgres manifests never mix.
    The manifest is built on first use (`dbt parse`) and by `dagster dev` on every reload."""
    project = DbtProject(project_dir=project_dir, target=target, target_path=f"target/{target}")
    if _stale(project) or project.preparer.using_dagster_dev():
        _parse(project)
    return project


def _parse(project: DbtProject) -> None:
    """`dbt parse` under a file lock: processes that start together (a webserver and a daemon, run
    workers, parallel test workers) would otherwise write the same manifest at once. Whoever waited on
    the lock finds the manifest fresh and does not parse again."""
    import fcntl

    target = Path(project.project_dir) / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stale(project) or project.preparer.using_dagster_dev():
            dbt_cli(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()


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


def dbt_cli(project: DbtProject) -> DbtCliResource:
    return DbtCliResource(project_dir=project, target=project.target, dbt_executable=dbt_executable())


def build_dbt_assets(project: DbtProject, *, pool: str | None, dbt_vars: Mapping[str, object]):
    @dbt_assets(manifest=project.manifest_path, project=project, name="meshline_dbt", pool=pool)
    def meshline_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build", "--vars", json.dumps(dict(dbt_vars))], context=context).stream()

    return meshline_dbt
