"""What Meshline materializes and the machinery it uses.

`assets.loading` (the watermarked loader), `assets.sources` (source connectors) and `assets.sandbox`
(simulated source systems) are plain Python; `assets.flows` and `assets.dbt` define Dagster assets.
Nothing here imports `orchestration`.
"""
