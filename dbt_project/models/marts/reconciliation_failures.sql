-- Each record a declared reconciliation rule finds failing, or pending within its SLA, as the rule's
-- check last evaluated the record's partition; with the rule's kind, boundaries and judging horizon.
-- The rules live in meshline.yaml; their checks write meshline.rule_findings and meshline.rule_failures.
with

failures as (
    select * from {{ source('meshline', 'rule_failures') }}
),

findings as (
    select * from {{ source('meshline', 'rule_findings') }}
),

final as (
    select
        failures.flow,
        failures.rule,
        findings.kind,
        findings.a_asset,
        findings.b_asset,
        findings.critical,
        failures.partition_key,
        cast(failures.partition_key as date) as partition_date,
        failures.record_key,
        failures.state,
        findings.as_of,
        failures.evaluated_at
    from failures
    join findings
        on findings.flow = failures.flow
        and findings.rule = failures.rule
        and findings.partition_key = failures.partition_key
)

select * from final
