with

source as (
    select * from {{ source('raw', 'crm_leads') }}
),

renamed as (
    select
        crm_lead_id,
        marketing_lead_id,
        owner as owner_handle,
        status,
        created_at,
        updated_at,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
