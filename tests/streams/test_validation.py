from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.config import ValidationSettings
from fleetstream.schemas import codec
from fleetstream.schemas.sample_batch import SampleBatch
from fleetstream.streams.app import StreamStats, validate_message
from fleetstream.streams.validation import FLAG_ABOVE_WARNING, FLAG_BELOW_WARNING, FLAG_CLAMPED, Validator

NOW_MS = 1_800_000_000_000


def signal(name: str, unit: str, values: list[float | None], **extra) -> dict:
    return {
        "batch_id": "b", "source": "test", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1", "device_id": "d",
        "name": name, "unit": unit,
        "samples": [{"timestamp_ms": NOW_MS - 1000 + i, "value": v, "svalue": None, "flags": 0}
                    for i, v in enumerate(values)],
        **extra,
    }


@pytest.fixture
def validator() -> Validator:
    return Validator(ValidationSettings())


def test_good_samples_pass_untouched(validator):
    outcome = validator.validate("signal_batch", signal("EngineSpeed", "rpm", [800.0, 3000.0]), NOW_MS)
    assert outcome.valid_samples == 2 and not outcome.rejected
    assert [s["flags"] for s in outcome.valid["samples"]] == [0, 0]


def test_nan_and_infinity_are_split_out_by_reason(validator):
    outcome = validator.validate("signal_batch", signal("EngineSpeed", "rpm", [800.0, math.nan, math.inf, 900.0]),
                                 NOW_MS)
    assert outcome.valid_samples == 2
    assert {(r.error_code, r.sample_count) for r in outcome.rejected} == {("nan", 1), ("infinite", 1)}


def test_hard_range_from_the_design_table_rejects(validator):
    outcome = validator.validate("signal_batch", signal("EngineSpeed", "rpm", [25_000.0]), NOW_MS)
    assert outcome.valid is None
    (rejected,) = outcome.rejected
    assert rejected.error_code == "out_of_range"
    assert "outside the hard range [0, 20000]" in rejected.reason


@pytest.mark.parametrize(
    ("channel", "unit", "value", "flag"),
    [("EngineSpeed", "rpm", 400.0, FLAG_BELOW_WARNING), ("AFR", "AFR", 21.0, FLAG_ABOVE_WARNING),
     ("IAT", "degF", 20.0, FLAG_BELOW_WARNING), ("torque", "ft-lb", 900.0, FLAG_ABOVE_WARNING)],
)
def test_outside_warning_range_is_valid_but_flagged(validator, channel, unit, value, flag):
    outcome = validator.validate("signal_batch", signal(channel, unit, [value]), NOW_MS)
    assert outcome.valid is not None
    assert outcome.valid["samples"][0]["flags"] == flag
    assert outcome.warnings == 1


def test_ranges_apply_after_unit_conversion(validator):
    # 160 degC = 320 degF, above the IAT hard maximum of 300 degF
    outcome = validator.validate("signal_batch", signal("IAT", "degC", [160.0, 20.0]), NOW_MS)
    assert outcome.valid_samples == 1 and outcome.rejected[0].error_code == "out_of_range"


@pytest.mark.parametrize("mode", ["reject", "sanitize"])
@pytest.mark.parametrize("unit", ["unknown(code=13,sub=0)", "unknown", "unknown(code=6,sub=2)"])
def test_a_value_of_unknown_unit_is_never_range_checked_nor_converted(mode, unit):
    # lambda 0.775 in an "afr" channel, 350 in an "IAT" one: outside the AFR and degF rules, but their unit is
    # not known, so no rule of another unit applies (and sanitize must not clamp them either).
    validator = Validator(ValidationSettings(mode=mode))
    for channel, value in (("afr", 0.775), ("IAT", 350.0)):
        outcome = validator.validate("signal_batch", signal(channel, unit, [value]), NOW_MS)
        assert not outcome.rejected and outcome.valid is not None
        assert outcome.valid["unit"] == unit and outcome.valid["samples"][0] == {
            "timestamp_ms": NOW_MS - 1000, "value": value, "svalue": None, "flags": 0}


def test_sanitize_mode_clamps_and_flags():
    validator = Validator(ValidationSettings(mode="sanitize"))
    outcome = validator.validate("signal_batch", signal("TPS", "%", [130.0]), NOW_MS)
    assert outcome.valid is not None
    sample = outcome.valid["samples"][0]
    assert sample["value"] == 100.0 and sample["flags"] & FLAG_CLAMPED
    assert outcome.clamped == 1


def test_timestamps_in_the_future_or_too_old_are_rejected(validator):
    record = signal("EngineSpeed", "rpm", [900.0, 900.0, 900.0])
    record["samples"][0]["timestamp_ms"] = NOW_MS + 3_600_000
    record["samples"][1]["timestamp_ms"] = NOW_MS - 11 * 365 * 86_400_000
    outcome = validator.validate("signal_batch", record, NOW_MS)
    assert outcome.valid_samples == 1
    assert sorted(r.error_code for r in outcome.rejected) == ["future", "too_old"]


def test_missing_required_field_rejects_the_whole_batch(validator):
    outcome = validator.validate("signal_batch", signal("EngineSpeed", "rpm", [1.0, 2.0], vehicle_id=""), NOW_MS)
    assert outcome.valid is None and outcome.rejected[0].error_code == "missing_field"
    assert outcome.rejected[0].sample_count == 2


def test_text_samples_need_a_value_or_svalue(validator):
    outcome = validator.validate("signal_batch", signal("VIN", "", [None]), NOW_MS)
    assert outcome.rejected[0].error_code == "missing_value"


def test_gps_outside_the_globe_is_rejected(validator):
    record = {"batch_id": "b", "source": "t", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1", "device_id": "d",
              "points": [{"timestamp_ms": NOW_MS, "latitude": 91.0, "longitude": 0.0},
                         {"timestamp_ms": NOW_MS, "latitude": 45.0, "longitude": 7.0}]}
    outcome = validator.validate("gps_batch", record, NOW_MS)
    assert outcome.valid_samples == 1 and outcome.rejected[0].error_code == "out_of_range"


def test_netstats_with_more_matched_than_total_is_rejected(validator):
    record = {"batch_id": "b", "source": "t", "org_id": "7", "fleet_id": "42", "vehicle_id": "v1", "device_id": "d",
              "timestamp_ms": NOW_MS, "name": "CAN1", "total_messages": 10, "matched_messages": 11,
              "unmatched_messages": 0, "error_messages": 0, "long_message_parts": 0, "rate": 1.0}
    assert validator.validate("network_stats", record, NOW_MS).rejected[0].error_code == "out_of_range"


def test_every_sample_ends_valid_or_dead_lettered_exactly_once(validator):
    stats = StreamStats()
    record = signal("EngineSpeed", "rpm", [800.0, math.nan, 25_000.0, 400.0, 1200.0])
    outputs = validate_message(validator, "telemetry.signals", 1, 42, b"v1", codec.encode("signal_batch", record),
                               NOW_MS, stats)
    topics = [topic for topic, _, _ in outputs]
    assert topics.count("telemetry.signals.valid") == 1 and topics.count("dlq.telemetry.signals") == 2
    valid = codec.decode(outputs[0][2], "signal_batch")
    letters = [codec.decode(value, "dead_letter") for topic, _, value in outputs[1:]]
    assert len(valid["samples"]) + sum(dl["sample_count"] for dl in letters) == 5
    assert stats.valid_samples == 3 and stats.dead_letter_samples == 2
    for letter in letters:
        assert letter["source_topic"] == "telemetry.signals" and letter["partition"] == 1 and letter["offset"] == 42
        replay = codec.decode(letter["original"], "signal_batch")  # the failing samples, replayable
        assert len(replay["samples"]) == letter["sample_count"]


def test_undecodable_message_is_one_dead_letter_with_the_original_bytes(validator):
    outputs = validate_message(validator, "telemetry.signals", 0, 7, b"k", b"\xc3\x01garbage", NOW_MS)
    ((topic, key, value),) = outputs
    letter = codec.decode(value, "dead_letter")
    assert topic == "dlq.telemetry.signals" and key == b"k"
    assert letter["original"] == b"\xc3\x01garbage" and letter["stage"] == "decode"
    assert letter["error_code"] == "malformed" and letter["sample_count"] == 1


def test_an_unexpected_error_becomes_a_dead_letter_not_a_crash(validator, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(validator, "validate", boom)
    record = signal("EngineSpeed", "rpm", [800.0, 900.0])
    ((_, _, value),) = validate_message(validator, "telemetry.signals", 0, 1, b"k",
                                        codec.encode("signal_batch", record), NOW_MS)
    letter = codec.decode(value, "dead_letter")
    assert letter["error_code"] == "internal_error" and letter["sample_count"] == 2 and "bug" in letter["reason"]


# --- the columnar path (signal and dyno batches as SampleBatch) judges exactly as the per-sample one ----------

batch_values = st.one_of(st.none(), st.floats(), st.sampled_from([400.0, 25_000.0, -5.0, 21.0, 160.0, 350.0]))
batch_samples = st.lists(st.fixed_dictionaries({
    "timestamp_ms": st.sampled_from([NOW_MS - 1000, NOW_MS + 10**9, NOW_MS - 10**12, NOW_MS - 5]),
    "value": batch_values, "svalue": st.one_of(st.none(), st.just("ON")), "flags": st.integers(0, 3)}),
    max_size=30)


def _as_dict(record):
    return record.to_record() if isinstance(record, SampleBatch) else record


@settings(max_examples=300, deadline=None)
@given(samples=batch_samples, mode=st.sampled_from(["reject", "sanitize"]),
       channel=st.sampled_from([("EngineSpeed", "rpm"), ("IAT", "degC"), ("IAT", "degF"), ("afr", "unknown"),
                                ("Nothing", "rpm"), ("AFR", "AFR")]),
       record_type=st.sampled_from(["signal_batch", "dyno_sample_batch"]))
def test_a_batch_judged_by_masks_matches_sample_by_sample(samples, mode, channel, record_type):
    validator = Validator(ValidationSettings(mode=mode))
    name, unit = channel
    if record_type == "signal_batch":
        record = signal(name, unit, [])
    else:
        record = {"batch_id": "b", "source": "jetdrive", "station_id": "s1", "provider": "p", "channel": name,
                  "unit": unit, "run_id": "", "sensor_state": ""}
        samples = [{"timestamp_ms": s["timestamp_ms"], "value": 1.0 if s["value"] is None else s["value"],
                    "flags": s["flags"]} for s in samples]
    record = {**record, "samples": samples}
    decoded = codec.decode(codec.encode(record_type, record), record_type)
    by_sample = validator.validate(record_type, copy.deepcopy(decoded), NOW_MS)
    batch = SampleBatch.from_record(record_type, decoded)
    by_mask = validator.validate(record_type, batch, NOW_MS)
    assert _same(batch.to_record(), decoded)  # the input batch is not changed
    assert (by_mask.valid is None) == (by_sample.valid is None)
    if by_mask.valid is not None:
        assert _same(_as_dict(by_mask.valid), by_sample.valid)
    assert [(r.error_code, r.reason, r.sample_count) for r in by_mask.rejected] == \
        [(r.error_code, r.reason, r.sample_count) for r in by_sample.rejected]
    assert all(_same(_as_dict(a.record), b.record) for a, b in zip(by_mask.rejected, by_sample.rejected, strict=True))
    assert (by_mask.valid_samples, by_mask.warnings, by_mask.clamped) == \
        (by_sample.valid_samples, by_sample.warnings, by_sample.clamped)


def _same(a, b):
    """Equal records, NaN equal to NaN."""
    return repr(a) == repr(b)
