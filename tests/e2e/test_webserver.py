"""The Dagster webserver over workspace.yaml, on 127.0.0.1: every asset and the raw → staging → mart
edges are visible through its GraphQL API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from assets.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow

QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RESOURCES = """{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
  ... on RepositoryLocation { repositories { allTopLevelResourceDetails {
    name configuredValues { key value type } } } } } } } } }"""
SECRETS = {"MESHLINE_ALERT_WEBHOOK_URL": "https://hooks.example/services/T0/B0/WEBHOOKSECRET0001",
           "MESHLINE_SOURCE_CRM_URL": "postgresql+psycopg2://crm:SOURCEPASSWORD0001@127.0.0.1:5432/crm"}


def test_webserver_shows_every_asset_and_the_lineage_and_no_secret(home, tmp_path, monkeypatch):
    """...and its configuration API names the environment variables secrets come from, never their values
    (the webserver has no authentication)."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    settings = Settings.from_env()
    env = {**os.environ, "DAGSTER_HOME": str(settings.ensure_local_dagster_home())}
    port = _free_port()
    webserver = Path(sys.executable).parent / "dagster-webserver"
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen([str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        nodes = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                r = httpx.post(f"{url}/graphql", json={"query": QUERY}, timeout=10)
                data = r.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        assert nodes, "webserver never served the asset graph:\n" + (tmp_path / "webserver.log").read_text()[-3000:]
        deps = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert {"raw/marketing_leads", "raw/crm_leads", "staging/stg_marketing_leads", "staging/stg_crm_leads",
                "marts/reconciliation_failures"} <= set(deps)
        assert "raw/marketing_leads" in deps["staging/stg_marketing_leads"]
        assert "raw/crm_leads" in deps["staging/stg_crm_leads"]
        assert {"meshline/rule_findings", "meshline/rule_failures"} <= deps["marts/reconciliation_failures"]
        answer = httpx.post(f"{url}/graphql", json={"query": RESOURCES}, timeout=30).text
        resources = json.loads(answer)["data"]["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"]
        values = {(r["name"], v["key"]): (v["type"], v["value"]) for r in resources["repositories"][0][
            "allTopLevelResourceDetails"] for v in r["configuredValues"]}
        assert values[("notifier", "url")] == ("ENV_VAR", "MESHLINE_ALERT_WEBHOOK_URL")
        assert values[("warehouse", "redaction_key")] == ("ENV_VAR", "MESHLINE_REDACTION_KEY")
        assert "${MESHLINE_SOURCE_CRM_URL" in values[("sources", "boundaries")][1]
        for secret in [*SECRETS.values(), os.environ["MESHLINE_REDACTION_KEY"], "SOURCEPASSWORD0001"]:
            assert secret not in answer
        # bound to loopback only
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for addr in addrs - {"127.0.0.1"} if not addrs <= {"127.0.0.1"} else []:
            with socket.socket() as s:
                assert s.connect_ex((addr, port)) != 0, f"webserver reachable on {addr}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
