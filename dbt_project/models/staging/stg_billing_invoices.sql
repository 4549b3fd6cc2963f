with

source as (
    select * from {{ source('raw', 'billing_invoices') }}
),

renamed as (
    select
        invoice_id,
        opportunity_id,
        amount,
        currency,
        issued_at,
        updated_at,
        _run_id as loaded_by_run,
        _contract_version as contract_version
    from source
)

select * from renamed
