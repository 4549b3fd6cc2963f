{# Minutes from one timestamp to another, the same on DuckDB and Postgres. #}
{% macro minutes_between(start, stop) -%}
    (extract(epoch from {{ stop }}) - extract(epoch from {{ start }})) / 60.0
{%- endmacro %}
