"""Settings: every bad value is refused with its variable's name and the accepted range."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config.settings import FLAT, Settings, SettingsError


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("SHELFCAST_BUCKET_SECONDS", "abc", "an integer >= 1"),
        ("SHELFCAST_BUCKET_SECONDS", "0", "an integer >= 1"),
        ("SHELFCAST_SERVICE_LEVEL", "1.5", "a number > 0 and < 1"),
        ("SHELFCAST_SERVICE_LEVEL", "1", "a number > 0 and < 1"),
        ("SHELFCAST_SERVICE_LEVEL", "nan", "a number > 0 and < 1"),
        ("SHELFCAST_PARTITIONS", "-2", "an integer >= 1"),
        ("SHELFCAST_WEB_PORT", "70000", "<= 65535"),
        ("SHELFCAST_LATENESS_SECONDS", "-1", "an integer >= 0"),
        ("SHELFCAST_TRAIN_MINUTES", "0", "a number > 0"),
        ("SHELFCAST_LSTM_BATCH_SIZE", "0", "an integer >= 1"),
        ("SHELFCAST_LSTM_LR", "0", "a number > 0"),
        ("SHELFCAST_LSTM_LR", "nan", "a number > 0"),
        ("SHELFCAST_LOG_LEVEL", "loud", "one of critical, error, warning, info, debug"),
        ("SHELFCAST_CLOSED_WHEN_NO_ORDERS", "maybe", "one of 1, true, yes, on / 0, false"),
        ("SHELFCAST_MIXED_SERVICES", "2", "one of 1, true"),
    ],
)
def test_a_bad_value_names_its_variable_and_range(var: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: value})
    assert f"{var}={value!r}" in str(err.value)
    assert expected in str(err.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SHELFCAST_HORIZON": "0", "SHELFCAST_BATCH_SIZE": "x"})
    assert "SHELFCAST_HORIZON" in str(err.value) and "SHELFCAST_BATCH_SIZE" in str(err.value)


def test_calendar_variables_are_checked_at_start() -> None:
    with pytest.raises(SettingsError, match="SHELFCAST_CLOSED_WEEKDAYS"):
        Settings.from_env({"SHELFCAST_CLOSED_WEEKDAYS": "9"})
    with pytest.raises(SettingsError, match="SHELFCAST_CLOSED_DATES"):
        Settings.from_env({"SHELFCAST_CLOSED_DATES": "2011-13-01"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("False", False), ("false", False), ("0", False), ("no", False), ("OFF", False)],
        *[("True", True), ("1", True), ("yes", True), ("on", True), ("", True)],
    ],
)
def test_booleans_read_as_written(value: str, expected: bool) -> None:
    assert Settings.from_env(
        {"SHELFCAST_CLOSED_WHEN_NO_ORDERS": value}
    ).time.closed_when_no_orders is (expected)


def test_values_are_typed_and_unset_or_empty_keeps_the_default() -> None:
    s = Settings.from_env(
        {
            "SHELFCAST_BUCKET_SECONDS": " 3600 ",
            "SHELFCAST_SERVICE_LEVEL": "0.9",
            "SHELFCAST_LOG_LEVEL": "WARNING",
            "SHELFCAST_HOME": "/tmp/x",
            "SHELFCAST_PARTITIONS": "",
            "XDG_CACHE_HOME": "/tmp/cache",
        }
    )
    assert (s.time.bucket_seconds, s.alerts.service_level, s.log_level) == (3600, 0.9, "warning")
    assert s.home == Path("/tmp/x") and s.kafka.partitions == Settings().kafka.partitions
    assert s.data_dir == Path("/tmp/cache/shelfcast")
    assert Settings.from_env({"SHELFCAST_DATA_DIR": "/d"}).data_dir == Path("/d")


def test_values_set_in_code_are_held_to_the_same_ranges() -> None:
    with pytest.raises(SettingsError, match="SHELFCAST_PARTITIONS=0"):
        Settings.of(partitions=0)
    with pytest.raises(SettingsError, match="SHELFCAST_SERVICE_LEVEL"):
        Settings().replace(service_level=1.0)


def test_one_real_service_and_one_embedded_only_when_asked() -> None:
    kafka_only = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    problem = kafka_only.mixing_problem()
    assert problem is not None
    assert "REDIS_URL" in problem and "SHELFCAST_MIXED_SERVICES=1" in problem
    redis_only = Settings.from_env({"REDIS_URL": "redis://r:6379/0"}).mixing_problem()
    assert redis_only is not None and "set KAFKA_BOOTSTRAP_SERVERS too" in redis_only
    mixed = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "SHELFCAST_MIXED_SERVICES": "1"}
    assert Settings.from_env(mixed).mixing_problem() is None
    assert Settings().mixing_problem() is None  # all embedded
    both = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "REDIS_URL": "redis://r:6379/0"}
    assert Settings.from_env(both).mixing_problem() is None


def test_a_password_in_redis_url_stays_out_of_the_repr() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://:s3cret@r:6379/0"})
    assert "s3cret" not in repr(s)


def test_kafka_security_is_read_from_the_same_environment() -> None:
    with pytest.raises(SettingsError, match="KAFKA_SECURITY_PROTOCOL must be one of"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    env = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "u"}
    with pytest.raises(SettingsError, match="KAFKA_SASL_PASSWORD"):
        Settings.from_env(env)
    s = Settings.from_env({**env, "KAFKA_SASL_PASSWORD": "s3cret"})
    assert s.kafka.security.protocol == "SASL_SSL" and "s3cret" not in repr(s)


def test_every_variable_sets_one_field_of_one_section() -> None:
    rules = [
        (rule.var, section)
        for section, kind in (("", Settings), *Settings.SECTIONS.items())
        for rule in kind.rules().values()
    ]
    variables = [var for var, _ in rules]
    assert len(variables) == len(set(variables))
    assert {section for _, section in rules} == {"", *Settings.SECTIONS}
    for name, (section, key) in FLAT.items():
        owner = getattr(Settings(), section) if section else Settings()
        assert hasattr(owner, key), name


def test_flat_names_build_typed_sections() -> None:
    s = Settings.of(redis_url="redis://r:6379/0", service_level=0.9, train_every_buckets=14)
    assert (s.redis.url, s.alerts.service_level, s.trainer.every_buckets) == (
        "redis://r:6379/0", 0.9, 14,
    )  # fmt: skip
    assert s.replace(horizon=3).models.horizon == 3 and s.models.horizon == 7
    with pytest.raises(TypeError, match="unknown settings: horizn"):
        s.replace(horizn=3)
    with pytest.raises(SettingsError, match="SHELFCAST_HORIZON=0"):
        s.models.replace(horizon=0)


def test_one_error_names_every_bad_value_and_only_optional_settings_take_none() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.of(partitions=0, web_port=0)
    assert "SHELFCAST_PARTITIONS" in str(err.value) and "SHELFCAST_WEB_PORT" in str(err.value)
    with pytest.raises(SettingsError, match="SHELFCAST_PARTITIONS=None"):
        Settings.of(partitions=None)
    assert Settings.of(lstm_hidden=None).trainer.lstm_hidden is None
    with pytest.raises(SettingsError, match="SHELFCAST_LSTM_WINDOWS_PER_EPOCH='0'"):
        Settings.from_env({"SHELFCAST_LSTM_WINDOWS_PER_EPOCH": "0"})
