-- Every closed-won deal and every invoice, matched, with the quote-to-cash status:
--   invoiced           the deal has an invoice of the same amount and currency
--   currency_mismatch  an invoice in another currency than the deal
--   amount_mismatch    an invoice of another amount
--   missing_invoice    no invoice, and the SLA has passed (as of billing's latest change)
--   pending            no invoice yet, SLA not passed
--   no_deal            an invoice for an opportunity the CRM does not have
with

deals as (
    select * from {{ ref('stg_crm_opportunities') }}
),

invoices as (
    select * from {{ ref('stg_billing_invoices') }}
),

as_of as (
    select max(updated_at) as as_of from invoices
),

won as (
    select * from deals where stage = 'closed_won'
),

matched as (
    select
        won.opportunity_id,
        invoices.invoice_id,
        won.amount as deal_amount,
        invoices.amount as invoice_amount,
        won.currency as deal_currency,
        invoices.currency as invoice_currency,
        won.closed_at,
        invoices.issued_at,
        cast(coalesce(won.closed_at, invoices.issued_at) as date) as event_date,
        case
            when invoices.invoice_id is null
                and {{ minutes_between('won.closed_at', 'as_of.as_of') }} >= {{ var('invoice_sla_hours') }} * 60
                then 'missing_invoice'
            when invoices.invoice_id is null then 'pending'
            when invoices.currency <> won.currency then 'currency_mismatch'
            when abs(invoices.amount - won.amount) > 0.005 then 'amount_mismatch'
            else 'invoiced'
        end as q2c_status
    from won
    cross join as_of
    left join invoices on invoices.opportunity_id = won.opportunity_id
),

orphans as (
    select
        invoices.opportunity_id,
        invoices.invoice_id,
        cast(null as double precision) as deal_amount,
        invoices.amount as invoice_amount,
        cast(null as text) as deal_currency,
        invoices.currency as invoice_currency,
        cast(null as timestamp) as closed_at,
        invoices.issued_at,
        cast(invoices.issued_at as date) as event_date,
        'no_deal' as q2c_status
    from invoices
    left join deals on deals.opportunity_id = invoices.opportunity_id
    where deals.opportunity_id is null
),

final as (
    select * from matched
    union all
    select * from orphans
)

select * from final
