-- billing_email (PII) stays in raw.
with

source as (
    select * from {{ source('raw', 'billing_subscriptions') }}
),

renamed as (
    select
        subscription_id,
        account_id,
        plan,
        mrr,
        plan_effective_at,
        updated_at,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
