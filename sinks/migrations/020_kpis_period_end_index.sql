-- The read API selects KPIs by period_end (a period belongs to the range it ended in), but kpis is partitioned
-- and sorted by period_start, so such a range pruned nothing and every dashboard read all retained KPIs. A
-- minmax index on period_end skips the granules outside the range; an index never changes a result.
ALTER TABLE fleetstream.kpis ADD INDEX IF NOT EXISTS period_end_minmax period_end TYPE minmax GRANULARITY 1;

-- the KPIs stored before this migration (a mutation: the server builds it in the background)
ALTER TABLE fleetstream.kpis MATERIALIZE INDEX period_end_minmax;
