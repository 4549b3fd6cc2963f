with

source as (
    select * from {{ source('raw', 'crm_opportunities') }}
),

renamed as (
    select
        opportunity_id,
        account_id,
        stage,
        amount,
        currency,
        closed_at,
        updated_at,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
