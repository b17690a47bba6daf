-- Data quality in a time range: dead letters by source, stage and error; duplicate and late samples.
SELECT kind, source, stage, reason, records, samples
FROM
(
    SELECT
        'dead_letter' AS kind,
        toString(source_topic) AS source,
        toString(stage) AS stage,
        toString(error_code) AS reason,
        count() AS records,
        sum(toUInt64(sample_count)) AS samples
    FROM fleetstream.dead_letters FINAL
    WHERE first_seen >= {from:DateTime64(3)} AND first_seen < {to:DateTime64(3)}
    GROUP BY source, stage, reason

    UNION ALL

    SELECT
        'duplicate' AS kind,
        'samples' AS source,
        'sink' AS stage,
        'same vehicle, channel and time stored more than once' AS reason,
        count() AS records,
        sum(copies - 1) AS samples
    FROM
    (
        SELECT count() AS copies
        FROM fleetstream.samples
        WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
        GROUP BY org_id, vehicle_id, channel, ts
        HAVING copies > 1
    )

    UNION ALL

    SELECT
        'late' AS kind,
        'samples' AS source,
        'sink' AS stage,
        concat('stored more than ', toString({late_seconds:UInt32}), ' s after event time') AS reason,
        uniqExact(kafka_topic, kafka_partition, kafka_offset) AS records,
        count() AS samples
    FROM fleetstream.samples
    WHERE ts >= {from:DateTime64(3)} AND ts < {to:DateTime64(3)}
      AND dateDiff('millisecond', ts, ingested_at) > {late_seconds:UInt32} * 1000
)
ORDER BY kind, source, stage, reason
