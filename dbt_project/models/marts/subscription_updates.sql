-- Every account's latest plan event against billing's subscription, with the sync status:
--   in_sync         billing carries the event's plan
--   plan_mismatch   billing applied a plan after the event, but another one
--   not_reflected   billing has not applied the event, and the SLA has passed (as of billing's latest change)
--   pending         not applied yet, SLA not passed
with

events as (
    select
        *,
        row_number() over (partition by account_id order by occurred_at desc, event_id desc) as recency
    from {{ ref('stg_product_plan_events') }}
),

latest as (
    select * from events where recency = 1
),

subscriptions as (
    select
        *,
        row_number() over (partition by account_id order by updated_at desc, subscription_id desc) as recency
    from {{ ref('stg_billing_subscriptions') }}
),

billed as (
    select * from subscriptions where recency = 1
),

as_of as (
    select max(updated_at) as as_of from {{ ref('stg_billing_subscriptions') }}
),

final as (
    select
        latest.account_id,
        latest.event_id,
        latest.event_type,
        latest.plan as product_plan,
        latest.occurred_at,
        cast(latest.occurred_at as date) as event_date,
        billed.subscription_id,
        billed.plan as billing_plan,
        billed.plan_effective_at,
        case
            when billed.plan = latest.plan then 'in_sync'
            when billed.plan is not null and billed.plan_effective_at >= latest.occurred_at then 'plan_mismatch'
            when {{ minutes_between('latest.occurred_at', 'as_of.as_of') }} >= {{ var('plan_sync_sla_hours') }} * 60
                then 'not_reflected'
            else 'pending'
        end as sync_status
    from latest
    cross join as_of
    left join billed on billed.account_id = latest.account_id
)

select * from final
