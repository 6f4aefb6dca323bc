"""The flags the CLI makes from the config schema: each sets its key, and --help shows the
schema's default (or the demo's own)."""

import argparse
import functools
import subprocess
import sys

import pytest

from streamer.commands import options
from streamer.commands.cli import DEMO_DEFAULTS, build_parser
from streamer.config import flags

FLAGS = [  # (arguments after "run", the key path they set, its value in the config)
    (["--source", "synthetic"], "source.uri", "synthetic"),
    (["--api-url", "http://127.0.0.1:9/"], "api.url", "http://127.0.0.1:9"),
    (["--model", "hard-hat-sample/2"], "api.model", "hard-hat-sample/2"),
    (["--api-key", "k3y"], "api.api_key", "k3y"),
    (["--confidence", "0.5"], "inference.confidence", 0.5),
    (["--overlap", "0.2"], "inference.overlap", 0.2),
    (["--classes", "person, car"], "inference.classes", ["person", "car"]),
    (["--max-side", "320"], "inference.max_side", 320),
    (["--max-in-flight", "3"], "inference.max_in_flight", 3),
    (["--max-fps", "0"], "inference.max_fps", 0.0),
    (["--min-change", "0.1"], "inference.min_change", 0.1),
    (["--headless"], "output.headless", True),
    (["--zmq", "5555"], "output.zmq", "tcp://127.0.0.1:5555"),
    (["--jsonl", "d.jsonl"], "output.jsonl", "d.jsonl"),
    (["--record", "r.avi"], "output.record", "r.avi"),
    (["--http", "8080"], "output.http", "127.0.0.1:8080"),
    (["--mqtt", "mqtt://cam@broker"], "mqtt.url", "mqtt://cam@broker"),
    (["--name", "Front Door"], "name", "front-door"),
    (["--duration", "3"], "duration_s", 3.0),
    (["--log-level", "debug"], "log_level", "debug"),
]


@pytest.fixture
def config_of(tmp_path, monkeypatch):
    """The config `streamer run ARGS` builds, with no config file and no logging set-up."""
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    monkeypatch.setattr(options, "setup_logging", lambda level: None)
    for name in ("ROBOFLOW_API_KEY", "STREAMER_MQTT_PASSWORD", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    return lambda argv: options.config_from_args(build_parser().parse_args(["run", "--model", "a/1", *argv]))


@pytest.mark.parametrize("argv, path, value", FLAGS, ids=[row[0][0] for row in FLAGS])
def test_each_flag_sets_its_key(config_of, argv, path, value):
    assert functools.reduce(getattr, path.split("."), config_of(argv)) == value


def test_the_table_has_every_flag_of_the_schema():
    assert [row[1] for row in FLAGS] == [path for path, _, _ in flags()]


def test_a_flag_not_given_leaves_the_file_its_say(config_of, tmp_path):
    (tmp_path / "c.yaml").write_text("inference:\n  confidence: 0.6\noutput:\n  headless: true\n")
    config = config_of(["-c", "c.yaml", "--overlap", "0.1"])
    assert (config.inference.confidence, config.inference.overlap, config.output.headless) == (0.6, 0.1, True)


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--max-side", "640.5"], "argument --max-side: invalid int value: '640.5'"),
        (["--confidence", "high"], "argument --confidence: invalid float value: 'high'"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_by_the_parser(capsys, argv, error):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["run", *argv])
    assert stopped.value.code == 2 and error in capsys.readouterr().err


def _help_line(command: str, flag: str, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # one line a flag
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()] + [""]
    i = next(i for i, line in enumerate(lines) if line.startswith(flag + " "))
    # A long "--flag METAVAR" has its help on the next line.
    return lines[i] + " " + lines[i + 1] if lines[i + 1] and not lines[i + 1].startswith("-") else lines[i]


HELP = [  # (command, flag, the default its help ends with: the schema's, the demo's, or none)
    ("run", "--confidence", "(default 0.4)"),
    ("run", "--api-url", "(default https://detect.roboflow.com)"),
    ("run", "--max-in-flight", "(default 2)"),
    ("run", "--max-fps", "(default 2)"),
    ("run", "--min-change", "0: off (default 0)"),
    ("run", "--source", "(default 0)"),
    ("run", "--log-level", "how much to log (default info)"),
    ("run", "--model", "e.g. hard-hat-sample/2"),
    ("run", "--headless", "never open a window"),
    ("run", "--classes", "(comma separated)"),
    ("demo", "--max-in-flight", f"(default {DEMO_DEFAULTS['inference.max_in_flight']})"),
    ("demo", "--max-fps", "(default 30)"),
    ("demo", "--http", "(default 127.0.0.1:0)"),
    ("predict", "--max-side", "(default 640)"),
    ("video", "--overlap", "(default 0.3)"),
    ("listen", "--log-level", "(default info)"),
    ("serve", "--log-level", "(default info)"),
]


@pytest.mark.parametrize("command, flag, ending", HELP, ids=[f"{row[0]}{row[1]}" for row in HELP])
def test_help_ends_with_the_default(monkeypatch, capsys, command, flag, ending):
    assert _help_line(command, flag, monkeypatch, capsys).endswith(ending)


def test_run_help_lists_every_flag_of_the_schema_once():
    proc = subprocess.run([sys.executable, "-m", "streamer", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    usage = proc.stdout.split("\n\n", 1)[0]
    for _, _, flag in flags():
        assert usage.count(f"[{flag.name}") == 1, flag.name
    for heading in ("source:", "detection API:", "request rate:", "output:", "logging:"):
        assert "\n" + heading + "\n" in proc.stdout


def _subcommands():
    from streamer.commands.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("name", ["run", "demo", "predict", "video", "listen", "keygen", "serve"])
def test_every_subcommand_has_a_description_and_every_option_its_help_and_default(name):
    """Issue 21: `streamer serve --help` listed --host and --port with no help and no default."""
    parser = _subcommands()[name]
    assert parser.description and parser.description.endswith("."), name
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = action.help or ""
        has_default = action.default not in (None, False, argparse.SUPPRESS, [])
        if not text or (has_default and "default" not in text):
            missing.append(f"{'/'.join(action.option_strings)}: {text!r} (default {action.default!r})")
    assert missing == [], missing


def test_the_config_file_is_a_general_option_not_a_detection_api_one():
    groups = {group.title: [a.dest for a in group._group_actions] for group in _subcommands()["run"]._action_groups}
    assert "config" in groups["options"] and "config" not in groups["detection API"], groups
