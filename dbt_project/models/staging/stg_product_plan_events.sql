-- actor_email (PII) stays in raw.
with

source as (
    select * from {{ source('raw', 'product_plan_events') }}
),

renamed as (
    select
        event_id,
        account_id,
        event_type,
        plan,
        occurred_at,
        source_position,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
