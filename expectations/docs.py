"""Great Expectations Data Docs: a static site under MESHLINE_HOME with every contract suite and the
latest validation results of the contract checks.

A GX file context lives in `<root>/gx`; the site is `<root>/gx/uncommitted/data_docs/local_site/`.
Validations store counts only (`partial_unexpected_count: 0`), so the site never shows a row's values.
Runs in several processes (Dagster's multiprocess executor) take turns through a file lock.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from expectations.contract import Contract
from expectations.validation import NO_VALUES, SuiteResult, summarize

DATASOURCE = "meshline"
_STORED: set[tuple[str, str]] = set()  # (root, suite) already written by this process


class DataDocs:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def index(self) -> Path:
        return self.root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

    @contextmanager
    def _context(self) -> Iterator[Any]:
        import great_expectations as gx

        from expectations.compiler import gx_context

        gx_context()  # make sure the module-level setup (analytics off) ran
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".meshline-gx.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                from great_expectations.data_context.types.base import ProgressBarsConfig

                ctx = gx.get_context(mode="file", project_root_dir=str(self.root))
                ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
                yield ctx
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _suite(self, ctx: Any, contract: Contract, *, refresh: bool = False) -> Any:
        """The contract's suite in the file context, written once per process (writing it is slow)."""
        from expectations.compiler import compile_suite, suite_name

        key = (str(self.root), suite_name(contract))
        if key in _STORED and not refresh:
            return ctx.suites.get(key[1])
        suite = ctx.suites.add_or_update(compile_suite(contract))
        _STORED.add(key)
        return suite

    def validate(self, frame: pd.DataFrame, contract: Contract) -> SuiteResult:
        """Validate, store the result and render its page (and the index). Returns counts and the page URL."""
        import great_expectations as gx
        from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

        from expectations.compiler import suite_name

        with self._context() as ctx:
            suite = self._suite(ctx, contract)
            try:
                source = ctx.data_sources.get(DATASOURCE)
            except (KeyError, ValueError):
                source = ctx.data_sources.add_pandas(DATASOURCE)
            try:
                asset = source.get_asset(contract.name)
            except LookupError:
                asset = source.add_dataframe_asset(contract.name)
            try:
                batch_def = asset.get_batch_definition("partition")
            except KeyError:
                batch_def = asset.add_batch_definition_whole_dataframe("partition")
            vd = ctx.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite_name(contract), data=batch_def, suite=suite))
            res = vd.run(batch_parameters={"dataframe": frame.reset_index(drop=True)}, result_format=NO_VALUES)
            keys = [k for k in ctx.validation_results_store.list_keys()
                    if k.expectation_suite_identifier.name == suite.name]
            newest = max(keys, key=lambda k: k.run_id.run_time)
            targets = [newest]
            page = self.index.parent / "expectations" / f"{suite.name}.html"
            if not page.exists():
                targets.append(ExpectationSuiteIdentifier(name=suite.name))
            ctx.build_data_docs(resource_identifiers=targets)
            out = summarize(res, len(frame))
            urls = ctx.get_docs_sites_urls(resource_identifier=newest)
            out.docs_url = urls[0]["site_url"] if urls else None
            return out

    def build(self, contracts: Iterable[Contract]) -> str:
        """Every suite (and every stored result) rendered; returns the index URL."""
        with self._context() as ctx:
            for c in contracts:
                self._suite(ctx, c, refresh=True)
            return str(ctx.build_data_docs()["local_site"])
