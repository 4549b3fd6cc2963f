-- Per flow and day: volume read, dead letters and their rate, reconciliation failures, and freshness
-- (hours between the newest change loaded for the day and the day's end).
with

loads as (
    select flow, asset, partition_key, max(rows_read) as rows_read
    from {{ source('meshline', 'load_log') }}
    where partition_key <> 'all'
    group by flow, asset, partition_key
),

volume as (
    select flow, partition_key, sum(rows_read) as rows_read
    from loads
    group by flow, partition_key
),

dead as (
    select flow, partition_key, count(*) as dead_letters
    from {{ source('meshline', 'dead_letters') }}
    group by flow, partition_key
),

fresh as (
    select l.flow, w.partition_key, min(w.watermark) as oldest_newest_change
    from {{ source('meshline', 'watermarks') }} w
    join (select distinct flow, asset from loads) l on l.asset = w.asset
    group by l.flow, w.partition_key
),

recon as (
    -- every flow's declared rules, as their checks last found them
    select flow, partition_key, sum(failing) as failures
    from {{ source('meshline', 'rule_findings') }}
    group by flow, partition_key
),

final as (
    select
        volume.flow,
        volume.partition_key,
        volume.rows_read,
        coalesce(dead.dead_letters, 0) as dead_letters,
        case when volume.rows_read > 0
            then cast(coalesce(dead.dead_letters, 0) as double precision) / volume.rows_read end as dead_letter_rate,
        coalesce(recon.failures, 0) as reconciliation_failures,
        {{ minutes_between('fresh.oldest_newest_change', "cast(volume.partition_key as date) + interval '1 day'") }} / 60.0
            as freshness_lag_hours
    from volume
    left join dead on dead.flow = volume.flow and dead.partition_key = volume.partition_key
    left join recon on recon.flow = volume.flow and recon.partition_key = volume.partition_key
    left join fresh on fresh.flow = volume.flow and fresh.partition_key = volume.partition_key
)

select * from final
