-- MQLs without their PII columns: e-mail and names stay in raw (DESIGN.md invariant 5).
with

source as (
    select * from {{ source('raw', 'marketing_leads') }}
),

renamed as (
    select
        lead_id,
        company,
        campaign,
        mql_at,
        updated_at,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
