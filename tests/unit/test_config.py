"""serve's options come from the command line, AURORATRACK_* variables or a TOML file, in that
order of precedence; durations and sizes are parsed with clear errors."""

from click.testing import CliRunner

from proxy.cli import main
from proxy.logs import JsonFormatter
from proxy.units import parse_duration, parse_size


def help_text(*args: str, env: dict | None = None) -> str:
    result = CliRunner().invoke(main, ["serve", *args, "--help"], env=env or {})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_toml_file_sets_defaults_and_env_overrides_it(tmp_path):
    config = tmp_path / "auroratrack.toml"
    config.write_text('[serve]\nbacktrack-window = "2h"\nlisten = "0.0.0.0:4000"\n')
    text = help_text("--config", str(config))
    assert "[default: 2h]" in text and "[default: 0.0.0.0:4000]" in text
    assert "AURORATRACK_BACKTRACK_WINDOW" in text  # every option names its variable


def test_bad_values_are_refused_with_the_accepted_forms():
    result = CliRunner().invoke(main, ["serve", "--upstream", "h:1", "--user", "u", "--backtrack-window", "soon"])
    assert result.exit_code == 2 and "examples: 90s, 15m, 2h30m" in result.output
    result = CliRunner().invoke(main, ["serve", "--upstream", "h:1", "--user", "u", "--backtrack-window", "100h"])
    assert result.exit_code == 2 and "at most 72h" in result.output


def test_units():
    assert parse_duration("2h30m") == 9000 and parse_duration("90") == 90 and parse_duration("500ms") == 0.5
    assert parse_size("10GiB") == 10 * 1024**3 and parse_size("500MB") == 500_000_000


def test_json_log_lines_carry_extra_fields():
    import json
    import logging

    record = logging.LogRecord("proxy.x", logging.INFO, __file__, 1, "streamer at %s", ("b.1:4",), None)
    record.position = "b.1:4"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "streamer at b.1:4" and line["position"] == "b.1:4" and line["level"] == "info"


def test_backfill_is_on_unless_turned_off(monkeypatch, tmp_path):
    import proxy.cli as cli

    configs = []
    monkeypatch.setattr(cli, "_serve", configs.append)
    monkeypatch.setattr(cli, "asyncio_run", lambda _: 0)
    base = ["serve", "--upstream", "h:1", "--user", "u", "--data-dir", str(tmp_path)]
    runs = [(base, {}), ([*base, "--no-backfill"], {}), (base, {"AURORATRACK_BACKFILL": "false"})]
    for args, env in runs:
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
    assert [config.backfill for config in configs] == [True, False, False]
    assert configs[0].streamer_config().backfill is True
