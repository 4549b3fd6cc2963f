-- Each MQL with its CRM lead(s) and the handoff status:
--   duplicated  more than one CRM lead for the MQL
--   handed_off  one CRM lead, created within the SLA
--   late        one CRM lead, created after the SLA
--   missing     no CRM lead, and the SLA has passed (as of the CRM's latest change)
--   pending     no CRM lead yet, SLA not passed
with

mqls as (
    select * from {{ ref('stg_marketing_leads') }}
),

crm as (
    select * from {{ ref('stg_crm_leads') }}
),

as_of as (
    select max(updated_at) as as_of from crm
),

per_mql as (
    select
        marketing_lead_id as lead_id,
        count(*) as crm_lead_count,
        min(crm_lead_id) as first_crm_lead_id,
        min(created_at) as first_crm_created_at
    from crm
    where marketing_lead_id is not null
    group by marketing_lead_id
),

joined as (
    select
        mqls.lead_id,
        mqls.campaign,
        mqls.mql_at,
        cast(mqls.mql_at as date) as mql_date,
        coalesce(per_mql.crm_lead_count, 0) as crm_lead_count,
        per_mql.first_crm_lead_id,
        per_mql.first_crm_created_at,
        {{ minutes_between('mqls.mql_at', 'per_mql.first_crm_created_at') }} as handoff_latency_minutes,
        as_of.as_of
    from mqls
    cross join as_of
    left join per_mql on per_mql.lead_id = mqls.lead_id
),

final as (
    select
        *,
        case
            when crm_lead_count > 1 then 'duplicated'
            when crm_lead_count = 1 and handoff_latency_minutes <= {{ var('handoff_sla_hours') }} * 60 then 'handed_off'
            when crm_lead_count = 1 then 'late'
            when {{ minutes_between('mql_at', 'as_of') }} >= {{ var('handoff_sla_hours') }} * 60 then 'missing'
            else 'pending'
        end as handoff_status
    from joined
)

select * from final
