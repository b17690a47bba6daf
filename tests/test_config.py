"""Configuration refuses mistakes: unknown keys and variables, bad values and DSNs are errors naming the key, where
it came from and the nearest valid name; keyed lists merge with the defaults; `config show` says where every value
came from; every configuration the repository ships still loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fleetstream.cli import app
from fleetstream.config import ConfigError, Settings, load_settings
from fleetstream.errors import FleetstreamError
from fleetstream.producers.agent import load_agent_config

REPO = Path(__file__).resolve().parent.parent
SHORT_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CLICKHOUSE_DSN", "GRAPHQL_ENDPOINT",
                   "SEC_AUTH_TOKEN")
DEFAULT_RANGES = [("engine_speed", "rpm"), ("afr", "AFR"), ("map", "kPa"), ("power", "hp"), ("torque", "ft-lb"),
                  ("tps", "%"), ("iat", "degF")]
DEFAULT_RULES = ["over_rev", "lean_afr", "coolant_overheat", "engine_overspeed"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration from the environment this test runs in."""
    for name in list(os.environ):
        if name.upper().startswith("FLEETSTREAM_") or name in SHORT_VARIABLES:
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(call: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        call()
    assert isinstance(caught.value, FleetstreamError)
    return caught.value


def ranges(settings: Settings) -> list[tuple[str, str]]:
    return [(r.channel, r.unit) for r in settings.validation.ranges]


def rules(settings: Settings) -> list[str]:
    return [rule["rule_id"] for rule in settings.streams.alert_rules]


# --- unknown keys ------------------------------------------------------------------------------------------

YAML_TYPOS = [
    ("clickhous: {dsn: null}\n", "unknown key 'clickhous' in {file}", "did you mean 'clickhouse'?"),
    ("kafka:\n  bootstrap_server: 127.0.0.1:9092\n", "unknown key 'kafka.bootstrap_server' in {file}",
     "did you mean 'kafka.bootstrap_servers'?"),
    ("validation:\n  mod: sanitize\n", "unknown key 'validation.mod' in {file}", "did you mean 'validation.mode'?"),
    ("validation:\n  ranges:\n    - {channel: oil, unit: degF, hard_mx: 300}\n",
     "unknown key 'validation.ranges[oil/degF].hard_mx' in {file}",
     "did you mean 'validation.ranges[oil/degF].hard_max'?"),
    ("streams:\n  alert_rules:\n    - {rule_id: hot, channel: iat, comparator: '>', threshhold: 200}\n",
     "unknown key 'streams.alert_rules[hot].threshhold' in {file}",
     "did you mean 'streams.alert_rules[hot].threshold'?"),
    ("streams:\n  dtc: {silence_s: 60000}\n", "unknown key 'streams.dtc.silence_s' in {file}",
     "did you mean 'streams.dtc.silence_ms'?"),
    ("streams:\n  metrics:\n    - {name: m, kind: counter, dimension: [vehicle_id]}\n",
     "unknown key 'streams.metrics[m].dimension' in {file}", "did you mean 'streams.metrics[m].dimensions'?"),
    ("fleet:\n  motive: {rate_per_sec: 2}\n", "unknown key 'fleet.motive.rate_per_sec' in {file}",
     "did you mean 'fleet.motive.rate_per_s'?"),
    ("topics:\n  topics:\n    - {name: dyno.samples, partition: 6}\n",
     "unknown key 'topics.topics[dyno.samples].partition' in {file}",
     "did you mean 'topics.topics[dyno.samples].partitions'?"),
    ("zzz: 1\n", "unknown key 'zzz' in {file}", "valid keys: api, clickhouse, fleet, graphql"),
]


@pytest.mark.parametrize(("text", "message", "hint"), YAML_TYPOS, ids=[m for _, m, _ in YAML_TYPOS])
def test_an_unknown_key_in_the_yaml_file_is_refused_with_the_nearest_name(tmp_path: Path, text: str, message: str,
                                                                           hint: str) -> None:
    path = write(tmp_path, text)
    error = refused(lambda: load_settings(path))
    assert str(error) == message.format(file=path)
    assert error.hint.startswith(hint)


ENV_TYPOS = [
    ({"FLEETSTREAM_VALIDATON__MODE": "sanitize"}, "unknown variable FLEETSTREAM_VALIDATON__MODE",
     "did you mean FLEETSTREAM_VALIDATION__MODE?"),
    ({"FLEETSTREAM_KAFKA__BOOTSTRAP_SERVER": "h:9092"}, "unknown variable FLEETSTREAM_KAFKA__BOOTSTRAP_SERVER",
     "did you mean FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS?"),
    ({"FLEETSTREAM_STREAMS__DTC__SILENCE_S": "1"}, "unknown variable FLEETSTREAM_STREAMS__DTC__SILENCE_S",
     "did you mean FLEETSTREAM_STREAMS__DTC__SILENCE_MS?"),
    ({"FLEETSTREAM_HOME__DIR": "/x"}, "unknown variable FLEETSTREAM_HOME__DIR: home has no sub-keys",
     "use FLEETSTREAM_HOME"),
    ({"FLEETSTREAM_KAFKA": '{"linger": 5}'}, "unknown key 'kafka.linger' in FLEETSTREAM_KAFKA",
     "did you mean 'kafka.linger_ms'?"),
    ({"FLEETSTREAM_KAFKA__CLIENT_CONFIG": "not json"}, "FLEETSTREAM_KAFKA__CLIENT_CONFIG is not valid JSON",
     "kafka.client_config takes a JSON value"),
]


@pytest.mark.parametrize(("env", "message", "hint"), ENV_TYPOS, ids=[next(iter(e)) for e, _, _ in ENV_TYPOS])
def test_a_fleetstream_variable_that_names_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                 env: dict[str, str], message: str,
                                                                 hint: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    error = refused(load_settings)
    assert str(error).startswith(message)
    assert error.hint == hint


def test_variables_that_are_not_settings_and_keys_of_free_dicts_are_accepted(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETSTREAM_CONFIG", str(write(tmp_path, "log_level: DEBUG\n")))
    monkeypatch.setenv("FLEETSTREAM_FAULT", "before_insert:1")  # the sink's test hook, read by sinks.clickhouse
    monkeypatch.setenv("FLEETSTREAM_KAFKA__CLIENT_CONFIG__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("FLEETSTREAM_STREAMS__DTC__SILENCE_MS", "60000")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert settings.kafka.client_config == {"security_protocol": "SSL"}
    assert settings.streams.dtc == {"silence_ms": "60000"}


AGENT_TYPOS = [
    ("spool_dri: /tmp/spool\n", "unknown key 'spool_dri' in {file}", "did you mean 'spool_dir'?"),
    ("metrics_prot: 9000\n", "unknown key 'metrics_prot' in {file}", "did you mean 'metrics_port'?"),
    ("sources:\n  - {name: a, type: counter, optons: {}}\n", "unknown key 'sources[0].optons' in {file}",
     "did you mean 'sources[0].options'?"),
    ("sources:\n  - {name: a, type: vehicle_simm}\n", "source 'a' in {file} has unknown type 'vehicle_simm'",
     "did you mean 'vehicle_sim'?"),
    ("sources:\n  - {name: a, type: counter}\n  - {name: a, type: counter}\n",
     "invalid configuration in {file}: source names must be unique: a used more than once", ""),
    ("drain_chunk: 0\n", "invalid drain_chunk in {file}: Input should be greater than or equal to 1", "got 0"),
    ("- just a list\n", "{file} must hold a mapping of settings at the top level", "it holds a list"),
    ("station_id: [unclosed\n", "{file} is not valid YAML at line 2, column 1", ""),
]


@pytest.mark.parametrize(("text", "message", "hint"), AGENT_TYPOS, ids=[m for _, m, _ in AGENT_TYPOS])
def test_a_mistake_in_agent_yaml_is_refused_naming_the_file(tmp_path: Path, text: str, message: str,
                                                             hint: str) -> None:
    path = write(tmp_path, text, "agent.yaml")
    error = refused(lambda: load_agent_config(path))
    assert str(error).startswith(message.format(file=path))
    assert error.hint == hint


# --- lists merge with the defaults ---------------------------------------------------------------------------


def test_a_range_in_the_file_replaces_its_default_and_keeps_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, """
validation:
  ranges:
    - {channel: afr, unit: AFR, hard_min: 7, hard_max: 30}
    - {channel: oil_temp, unit: degF, hard_min: -40, hard_max: 350, warn_max: 280}
""")
    settings = load_settings(path)
    assert ranges(settings) == [*DEFAULT_RANGES, ("oil_temp", "degF")]
    afr = settings.validation.ranges[1]
    assert (afr.hard_min, afr.hard_max, afr.warn_min, afr.aliases) == (7, 30, None, [])  # replaced, not patched


def test_enabled_false_removes_a_default_item_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, """
validation:
  ranges: [{channel: tps, unit: '%', enabled: false}]
streams:
  alert_rules: [{rule_id: coolant_overheat, enabled: false}]
""")
    settings = load_settings(path)
    assert ranges(settings) == [r for r in DEFAULT_RANGES if r != ("tps", "%")]
    assert rules(settings) == ["over_rev", "lean_afr", "engine_overspeed"]

    typo = write(tmp_path, "streams:\n  alert_rules: [{rule_id: coolant_overheet, enabled: false}]\n", "typo.yaml")
    error = refused(lambda: load_settings(typo))
    assert str(error) == f"streams.alert_rules[coolant_overheet] in {typo} removes an item that is not there"
    assert "[coolant_overheat]" in error.hint


LIST_MISTAKES = [
    ("streams:\n  alert_rules:\n    - {channel: rpm, comparator: '>', threshold: 1}\n",
     "streams.alert_rules[0] in {file} has no rule_id"),
    ("validation:\n  ranges:\n    - {channel: afr, unit: AFR}\n    - {channel: afr, unit: AFR}\n",
     "validation.ranges[afr/AFR] is listed twice in {file}"),
    ("validation:\n  ranges:\n    - afr\n", "validation.ranges[0] in {file} is not a mapping"),
    ("validation:\n  ranges:\n    - {channel: afr, unit: AFR, enabled: no-thanks}\n",
     "validation.ranges[afr/AFR].enabled in {file} is 'no-thanks'"),
    ("streams:\n  alert_rules: []\n",
     "streams.alert_rules: [] in {file} changes nothing: the list merges with the 4 items below it"),
]


@pytest.mark.parametrize(("text", "message"), LIST_MISTAKES, ids=[m for _, m in LIST_MISTAKES])
def test_a_malformed_keyed_list_item_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert str(refused(lambda: load_settings(path))) == message.format(file=path)


def test_a_list_in_a_variable_is_given_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A variable is one value: `[]` means no rules (what the worker tests and benchmarks rely on)."""
    path = write(tmp_path, "streams:\n  alert_rules: [{rule_id: hot, channel: iat, comparator: '>', threshold: 1}]\n")
    assert rules(load_settings(path)) == [*DEFAULT_RULES, "hot"]
    monkeypatch.setenv("FLEETSTREAM_STREAMS__ALERT_RULES", "[]")
    assert rules(load_settings(path)) == []
    rule = {"rule_id": "cold", "channel": "iat", "comparator": "<", "threshold": 0}
    monkeypatch.setenv("FLEETSTREAM_STREAMS__ALERT_RULES", json.dumps([rule]))
    settings = load_settings(path)
    assert rules(settings) == ["cold"]
    shown = {key: source for key, _, source in settings.effective_values()}
    assert shown["streams.alert_rules[cold]"] == "FLEETSTREAM_STREAMS__ALERT_RULES"


def readme_yaml() -> str:
    """The YAML example of README.md's Configuration section, as a user would copy it."""
    section = (REPO / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None, "README.md's Configuration section has no ```yaml block"
    return match.group(1)


def test_the_readme_example_loaded_as_is_keeps_every_default_range_and_rule(tmp_path: Path) -> None:
    example = yaml.safe_load(readme_yaml())
    settings = load_settings(write(tmp_path, readme_yaml()))
    assert ranges(settings) == DEFAULT_RANGES
    assert rules(settings) == DEFAULT_RULES
    # and what the example sets is what is used
    written = example["validation"]["ranges"][0]
    engine = settings.validation.ranges[0]
    assert (engine.hard_max, engine.warn_max, engine.aliases) == (written["hard_max"], written["warn_max"],
                                                                  written["aliases"])
    assert settings.streams.alert_rules[0] == example["streams"]["alert_rules"][0]
    assert settings.kafka.client_config == example["kafka"]["client_config"]


# --- values ----------------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("topics:\n  topics: [{name: dyno.samples, partitions: -3}]\n", "invalid topics.topics[dyno.samples].partitions",
     "greater than or equal to 1", "got -3"),
    ("topics:\n  replication_factor: 0\n", "invalid topics.replication_factor", "greater than or equal to 1", "got 0"),
    ("topics:\n  topics: [{name: dyno.samples, retention_ms: 0}]\n", "invalid topics.topics[dyno.samples].retention_ms",
     "use -1 to keep them forever", "got 0"),
    ("validation:\n  ranges: [{channel: afr, unit: AFR, hard_min: 35, hard_max: 6}]\n",
     "invalid validation.ranges[afr/AFR]", "hard_min 35 is above hard_max 6", ""),
    ("validation:\n  ranges: [{channel: afr, unit: AFR, warn_min: 20, warn_max: 10}]\n",
     "invalid validation.ranges[afr/AFR]", "warn_min 20 is above warn_max 10", ""),
    ("validation:\n  ranges: [{channel: afr, unit: AFR, hard_min: 6, hard_max: 35, warn_min: 5}]\n",
     "invalid validation.ranges[afr/AFR]", "hard_min 6 is above warn_min 5", ""),
    ("validation:\n  ranges: [{channel: afr, unit: AFR, hard_max: 35, warn_max: 40}]\n",
     "invalid validation.ranges[afr/AFR]", "warn_max 40 is above hard_max 35", ""),
    ("validation:\n  mode: strict\n", "invalid validation.mode", "should match pattern", "got 'strict'"),
    ("clickhouse:\n  batch_rows: 0\n", "invalid clickhouse.batch_rows", "greater than or equal to 1", "got 0"),
    ("clickhouse:\n  batch_seconds: 0\n", "invalid clickhouse.batch_seconds", "greater than 0", "got 0"),
    ("graphql:\n  timeout_seconds: -1\n", "invalid graphql.timeout_seconds", "greater than 0", "got -1"),
    ("kafka:\n  linger_ms: -1\n", "invalid kafka.linger_ms", "greater than or equal to 0", "got -1"),
    ("kafka:\n  compression_type: brotli\n", "invalid kafka.compression_type", "should match pattern",
     "got 'brotli'"),
    ("streams:\n  hopping_advance_ms: 600000\n", "invalid streams", "hopping_advance_ms 600000 is above", ""),
    ("streams:\n  alert_rules: [{rule_id: hot, channel: iat, comparator: '=>', threshold: 1}]\n",
     "invalid streams.alert_rules[hot].comparator", "Input should be '>'", "got '=>'"),
    ("log_level: LOUD\n", "invalid log_level", "should match pattern", "got 'LOUD'"),
]


@pytest.mark.parametrize(("text", "start", "reason", "hint"), BAD_VALUES, ids=[s for _, s, _, _ in BAD_VALUES])
def test_a_value_out_of_range_is_refused_naming_key_and_file(tmp_path: Path, text: str, start: str, reason: str,
                                                              hint: str) -> None:
    path = write(tmp_path, text)
    error = refused(lambda: load_settings(path))
    assert str(error).startswith(f"{start} in {path}: ")
    assert reason in str(error)
    assert error.hint == hint


BAD_DSNS = [
    ("notadsn", "a ClickHouse DSN starts with chdb://, http://, https:// (got 'notadsn')"),
    ("mysql://app:hunter2@db:3306/x", "starts with chdb://, http://, https://, not mysql:// "
                                      "(got 'mysql://app:***@db:3306/x')"),
    ("clickhouse://db:9000", "not clickhouse://"),  # clickhouse-connect speaks HTTP only
    ("http://", "the DSN names no host (http://host:port)"),
    ("chdb://", "a chdb:// DSN names the store's directory"),
]


@pytest.mark.parametrize(("dsn", "expected"), BAD_DSNS, ids=[d for d, _ in BAD_DSNS])
def test_a_clickhouse_dsn_of_another_scheme_is_refused_not_replaced(monkeypatch: pytest.MonkeyPatch, dsn: str,
                                                                    expected: str) -> None:
    monkeypatch.setenv("CLICKHOUSE_DSN", dsn)
    error = refused(load_settings)
    shown = f"{error} ({error.hint})"
    assert shown.startswith("invalid clickhouse.dsn in CLICKHOUSE_DSN: ")
    assert expected in shown
    assert "hunter2" not in shown


@pytest.mark.parametrize("dsn", ["chdb:///var/lib/fleetstream", "http://clickhouse:8123",
                                 "https://default:pw@ch.example.com:8443/fleetstream"])
def test_the_supported_dsns_are_kept_as_given(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    monkeypatch.setenv("CLICKHOUSE_DSN", dsn)
    assert load_settings().clickhouse_dsn == dsn


# --- config show and --version --------------------------------------------------------------------------------


def test_config_show_names_the_source_of_every_value_and_masks_secrets(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    path = write(tmp_path, """
kafka:
  linger_ms: 50
  client_config: {sasl.username: svc, sasl.password: s3cret-pw}
validation:
  ranges: [{channel: afr, unit: AFR, hard_min: 7, hard_max: 30}]
""")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__LINGER_MS", "5")
    monkeypatch.setenv("CLICKHOUSE_DSN", "http://default:ch-pw@clickhouse:8123")
    monkeypatch.setenv("SEC_AUTH_TOKEN", "tok-123")
    result = CliRunner().invoke(app, ["--config", str(path), "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    expected = {
        "kafka.linger_ms": (5, "FLEETSTREAM_KAFKA__LINGER_MS"),
        "kafka.client_config.sasl.username": ("svc", str(path)),
        "kafka.client_config.sasl.password": ("***", str(path)),
        "clickhouse.dsn": ("http://default:***@clickhouse:8123", "CLICKHOUSE_DSN"),
        "sec_auth_token": ("***", "SEC_AUTH_TOKEN"),
        "kafka.bootstrap_servers": ("127.0.0.1:9092", "default"),
        "validation.ranges[engine_speed/rpm]": (shown["validation.ranges[engine_speed/rpm]"]["value"], "default"),
    }
    for key, (value, source) in expected.items():
        assert (shown[key]["value"], shown[key]["source"]) == (value, source), key
    assert shown["validation.ranges[afr/AFR]"]["source"] == str(path)
    assert shown["validation.ranges[afr/AFR]"]["value"]["hard_max"] == 30
    for secret in ("s3cret-pw", "ch-pw", "tok-123"):
        assert secret not in result.stdout

    text = CliRunner().invoke(app, ["--config", str(path), "config", "show"])
    assert text.exit_code == 0
    assert re.search(r"^kafka\.linger_ms +5 +\[FLEETSTREAM_KAFKA__LINGER_MS\]$", text.stdout, re.M)
    assert "tok-123" not in text.stdout


def test_version_is_the_installed_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"fleetstream {version('fleetstream')}\n"


CLI_MISTAKES = [
    ({"fleet.yaml": "clickhous: {dsn: null}\n"}, {}, ["--config", "{dir}/fleet.yaml", "topics", "list"],
     "error: unknown key 'clickhous' in {dir}/fleet.yaml (did you mean 'clickhouse'?)"),
    ({}, {"FLEETSTREAM_VALIDATON__MODE": "sanitize"}, ["topics", "list"],
     "error: unknown variable FLEETSTREAM_VALIDATON__MODE (no setting 'validaton.mode') "
     "(did you mean FLEETSTREAM_VALIDATION__MODE?)"),
    ({}, {"CLICKHOUSE_DSN": "mysql://u:pw@h/db"}, ["config", "show"],
     "error: invalid clickhouse.dsn in CLICKHOUSE_DSN: a ClickHouse DSN starts with chdb://, http://, https://, "
     "not mysql:// (got 'mysql://u:***@h/db')"),
    ({"agent.yaml": "spool_dri: /tmp/x\n"}, {}, ["agent", "run", "--config", "{dir}/agent.yaml", "--seconds", "1"],
     "error: unknown key 'spool_dri' in {dir}/agent.yaml (did you mean 'spool_dir'?)"),
]


@pytest.mark.parametrize(("files", "env", "args", "line"), CLI_MISTAKES, ids=["yaml", "env", "dsn", "agent"])
def test_a_config_mistake_exits_2_with_one_error_line_and_no_traceback(tmp_path: Path, files: dict[str, str],
                                                                       env: dict[str, str], args: list[str],
                                                                       line: str) -> None:
    for name, text in files.items():
        write(tmp_path, text, name)
    clean = {k: v for k, v in os.environ.items()
             if not k.upper().startswith("FLEETSTREAM_") and k not in SHORT_VARIABLES}
    result = subprocess.run([sys.executable, "-m", "fleetstream", *[a.format(dir=tmp_path) for a in args]],
                            env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line.format(dir=tmp_path)]
    assert result.stdout == ""


# --- what the repository ships ----------------------------------------------------------------------------------


def test_every_configuration_the_repository_ships_still_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/agent.yaml, the docker-compose environment, and the variables the demo gives its children."""
    assert [s.name for s in load_agent_config(REPO / "examples" / "agent.yaml").sources] == ["vehicles"]

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, value in compose["x-fleetstream"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings()
    assert settings.clickhouse_dsn == "http://default:fleetstream@clickhouse:8123"
    assert (settings.kafka.bootstrap_servers, settings.home) == ("kafka:9092", Path("/data"))

    for name, value in {"FLEETSTREAM_STREAMS__IDLE_FLUSH_S": "3.0", "FLEETSTREAM_STREAMS__APP_ID": "demo-x",
                        "FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:19092", "FLEETSTREAM_HOME": "/tmp/h",
                        "CLICKHOUSE_DSN": "chdb:///tmp/h/clickhouse"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.streams.idle_flush_s, settings.kafka.bootstrap_servers) == (3.0, "127.0.0.1:19092")


def test_replication_follows_the_cluster_unless_configured(caplog: pytest.LogCaptureFixture) -> None:
    from fleetstream.admin import Replication, ReplicationError

    assert (Replication.for_cluster(1).factor, Replication.for_cluster(1).min_insync) == (1, 1)
    assert (Replication.for_cluster(2).factor, Replication.for_cluster(2).min_insync) == (2, 1)
    assert (Replication.for_cluster(5).factor, Replication.for_cluster(5).min_insync) == (3, 2)
    assert Replication.for_cluster(3).topic_config() == {"min.insync.replicas": "2"}
    with caplog.at_level("WARNING"):
        assert Replication.for_cluster(3, configured=1).factor == 1
    assert "replication factor 1 on a cluster of 3 brokers" in caplog.text
    with pytest.raises(ReplicationError, match="replication_factor 4 needs 4 brokers, the cluster has 3"):
        Replication.for_cluster(3, configured=4)
