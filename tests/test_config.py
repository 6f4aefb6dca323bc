"""Configuration: precedence, the reference file, and a table of refused inputs."""

import re
import sys
from pathlib import Path

import pytest
import yaml

from streamer import config
from streamer.config import Config, ConfigError, load
from streamer.credentials import API_KEY, HTTP_TOKEN, MQTT_PASSWORD, resolve_secret
from streamer.redact import scrub

ROOT = Path(__file__).resolve().parent.parent


def test_reference_file_is_exactly_the_defaults():
    assert load(ROOT / "config.yaml", env={}) == Config()


def test_reference_file_comments_every_key():
    """Each key line in config.yaml has a comment line just above it (or above its group)."""
    lines = (ROOT / "config.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[a-z_]+:", line) and not line.rstrip().endswith(":"):
            above = [text.strip() for text in lines[max(0, i - 3) : i]]
            assert any(text.startswith("#") for text in above) or re.match(r"^\s*[a-z_]+:", lines[i - 1]), (
                f"config.yaml line {i + 1} has no comment: {line!r}"
            )


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    path = _write(tmp_path, "api:\n  api_key: from-file\n  model: a/1\ninference:\n  confidence: 0.5\n")
    cfg = load(path, env={})
    assert (cfg.api.api_key, cfg.inference.confidence, cfg.inference.overlap) == ("from-file", 0.5, 0.3)
    cfg = load(path, env={"ROBOFLOW_API_KEY": "from-env"})
    assert cfg.api.api_key == "from-env"
    cfg = load(path, {"api.api_key": "from-flag", "inference.confidence": 0.7}, env={"ROBOFLOW_API_KEY": "e"})
    assert (cfg.api.api_key, cfg.inference.confidence) == ("from-flag", 0.7)


def test_key_file_and_systemd_credential(tmp_path):
    (tmp_path / "key").write_text("secret-from-file\n")
    cfg = load(None, {"api.api_key_file": str(tmp_path / "key")}, env={})
    assert resolve_secret(cfg, API_KEY, env={}) == "secret-from-file"
    (tmp_path / "roboflow_api_key").write_text("secret-from-credential")
    assert resolve_secret(Config(), API_KEY, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "secret-from-credential"
    with pytest.raises(ConfigError, match="api.api_key_file: cannot read"):
        resolve_secret(load(None, {"api.api_key_file": str(tmp_path / "nope")}, env={}), API_KEY, env={})


def test_webcam_index_may_be_written_as_a_number(tmp_path):
    assert load(_write(tmp_path, "source:\n  uri: 0\n"), env={}).source.uri == "0"


BAD = [
    ("output:\n  zmq_topic: s\n", "output.zmq_status_topic", "prefix"),
    ("output:\n  zmq_status_topic: detections-status\n", "output.zmq_status_topic", "prefix"),
    # (file text, the key path the one-line error must name, a word from the reason)
    ("inference:\n  confidence: 1.5\n", "inference.confidence", "fraction"),
    ("mqtt:\n  discovery_prefix: null\n", "mqtt.discovery_prefix", "topic"),  # not topics under "None/"
    ("inference:\n  confidence: 40\n", "inference.confidence", "0.4"),
    ("inference:\n  confidence: 1\n", "inference.confidence", "for 1 % write 0.01"),  # the API reads 1 as 1 %
    ("inference:\n  classes: ',,'\n", "inference.classes", "class names"),
    ("inference:\n  confidence: '0.5'\n", "inference.confidence", "fraction"),
    ("inference:\n  overlap: -0.1\n", "inference.overlap", "fraction"),
    ("inference:\n  max_side: 0\n", "inference.max_side", "whole number"),
    ("inference:\n  max_side: 640.5\n", "inference.max_side", "whole number"),
    ("inference:\n  jpeg_quality: 101\n", "inference.jpeg_quality", "1 to 100"),
    ("inference:\n  classes: person\n", "inference.classes", None),  # a string is split: valid
    ("inference:\n  classes: [1, 2]\n", "inference.classes", "list of class names"),
    ("inference:\n  confidense: 0.5\n", "inference.confidense", "did you mean inference.confidence"),
    ("api:\n  url: ftp://example.com\n", "api.url", "http(s) URL"),
    ("api:\n  url: https://user:pw@example.com\n", "api.url", "no user"),
    ("api:\n  model: hard-hat-sample\n", "api.model", "PROJECT/VERSION"),
    ("api:\n  timeout_s: 0\n", "api.timeout_s", "above 0"),
    ("api:\n  timeout_s: .nan\n", "api.timeout_s", "number"),
    ("api:\n  backoff_initial_s: 10\n  backoff_max_s: 5\n", "api.backoff_max_s", "below"),
    ("api: 5\n", "api", "mapping"),
    ("source:\n  rtsp_transport: http\n", "source.rtsp_transport", "tcp, udp"),
    ("source:\n  queue_size: 1000\n", "source.queue_size", "1 to 64"),
    ("source:\n  loop: yes please\n", "source.loop", "true or false"),
    ("output:\n  zmq: 70000\n", "output.zmq", "ZeroMQ endpoint"),
    ("output:\n  zmq: localhost:5555\n", "output.zmq", "ZeroMQ endpoint"),
    ("output:\n  zmq: tcp://0.0.0.0:5555\n", "output.zmq", "output.zmq_allow_remote: true"),
    ("output:\n  zmq: tcp://0.0.0.0:5555\n  zmq_allow_remote: true\n", "output.zmq", None),
    ("output:\n  zmq_allow_remote: 1\n", "output.zmq_allow_remote", "true or false"),
    (
        "output:\n  zmq_curve_clients_dir: clients\n",
        "output.zmq_curve_clients_dir",
        "needs output.zmq_curve_secret_key_file",
    ),
    ("output:\n  record: out.mkv\n", "output.record", ".mp4"),
    ("output:\n  headless: 1\n", "output.headless", "true or false"),
    ("duration_s: -3\n", "duration_s", "above 0"),
    ("log_level: loud\n", "log_level", "debug, info"),
    ("camera: 0\n", "camera", "unknown key"),
]


@pytest.mark.parametrize("text, key, reason", BAD, ids=[row[1] + "-" + str(i) for i, row in enumerate(BAD)])
def test_bad_values_name_the_key(tmp_path, text, key, reason):
    path = _write(tmp_path, text)
    if reason is None:
        load(path, env={})
        return
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(key + ":")
    assert reason in message
    assert str(path) in message  # says which file


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("source: [unclosed\n", "not valid YAML at line"),
        ("- a\n- b\n", "mapping"),
        ("just words\n", "mapping"),
    ],
)
def test_bad_files(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load(_write(tmp_path, text), env={})


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load(tmp_path / "nope.yaml", env={})


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"^inference\.confidence: .*\(from --confidence\)$"):
        load(None, {"inference.confidence": 2.0}, env={})


def test_key_value_never_shown_in_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, "api:\n  api_key: [sekrit-value]\n"), env={})
    assert "sekrit-value" not in str(info.value)


def test_the_reference_file_parses_and_each_key_knows_its_flag():
    assert yaml.safe_load((ROOT / "config.yaml").read_text())
    assert config.flag_for("inference.max_side") == "--max-side" and config.flag_for("api.timeout_s") is None


# --- the keys checked against each other, after each value is ---

CROSS = [
    # (flags as key paths, environment, the key path the one-line error names, where from, a word from the
    # reason and the fix; None: accepted)
    ({"api.http2": True}, {}, None, None, None),  # h2 is installed here
    ({"source.uri": "rtsp://cam/x", "source.width": 640}, {}, "source.width", None, "names a stream source"),
    ({"source.uri": "synthetic", "source.fps": 30}, {}, "source.fps", None, "synthetic.width"),
    ({"source.uri": "gst:videotestsrc ! appsink", "source.fourcc": "MJPG"}, {}, "source.fourcc", None, "caps"),
    ({"source.uri": "/dev/video2", "source.fps": 30}, {}, None, None, None),
    ({"output.record": "r.avi", "output.record_max_mb": 100}, {}, "output.record_max_mb", None, "record_segment_s"),
    ({"output.record_max_mb": 100}, {}, None, None, None),  # nothing recorded: nothing to cap
    ({"output.record": "r.avi", "output.record_max_mb": 1, "output.record_segment_s": 60}, {}, None, None, None),
    ({"output.http": "0.0.0.0:80"}, {}, "output.http", "--http", "output.http_allow_remote: true"),
    ({"output.http": "0.0.0.0:80", "output.http_allow_remote": True}, {}, "output.http", "--http", "needs a token"),
    ({"output.http": "0.0.0.0:80", "output.http_allow_remote": True, "output.http_token": "t"}, {}, None, None, None),
    ({"output.http": "0.0.0.0:80", "output.http_allow_remote": True, "output.http_auth": "none"}, {}, None, None, None),
    ({"output.http": "8080"}, {}, None, None, None),  # this machine only: no token needed
    ({"output.zmq_curve_clients_dir": "c"}, {}, "output.zmq_curve_clients_dir", None, "keygen"),
    ({"mqtt.url": "mqtt://broker"}, {"STREAMER_MQTT_PASSWORD": "pw"}, "mqtt.url", "--mqtt", "mqtt://USER@HOST"),
    ({"mqtt.url": "mqtt://cam@broker"}, {"STREAMER_MQTT_PASSWORD": "pw"}, None, None, None),
    ({"mqtt.url": "mqtt://broker"}, {}, None, None, None),
    ({"mqtt.url": "mqtt://broker", "mqtt.ca_file": "ca.pem"}, {}, "mqtt.ca_file", None, "mqtts://HOST:8883"),
    ({"mqtt.url": "mqtts://broker", "mqtt.cert_file": "c.pem"}, {}, "mqtt.cert_file", None, "set both"),
    ({"api.backoff_initial_s": 10, "api.backoff_max_s": 5}, {}, "api.backoff_max_s", None, "below api.backoff_"),
]


@pytest.mark.parametrize("overrides, env, key, origin, words", CROSS, ids=[str(row[2]) for row in CROSS])
def test_keys_checked_against_each_other(overrides, env, key, origin, words):
    if key is None:
        load(None, overrides, env=env)
        return
    with pytest.raises(ConfigError) as info:
        load(None, overrides, env=env)
    message = str(info.value)
    assert "\n" not in message and message.startswith(key + ": ") and words in message
    assert f"(from {origin or key}); " in message  # where the value came from, then the fix


def test_a_systemd_credential_is_a_token(tmp_path):
    remote = {"output.http": "0.0.0.0:80", "output.http_allow_remote": True}
    with pytest.raises(ConfigError, match="needs a token"):
        load(None, remote, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    (tmp_path / "http_token").write_text("t0ken")
    assert load(None, remote, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}).output.http_allow_remote


def test_a_missing_h2_is_named_when_http2_is_asked(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h2", None)  # find_spec then finds no h2
    with pytest.raises(ConfigError, match=r"^api\.http2: true needs the h2 package \(from .*c\.yaml\); pip install"):
        load(_write(tmp_path, "api:\n  http2: true\n"), env={})


def test_a_command_that_calls_the_api_needs_a_model():
    with pytest.raises(ConfigError, match=r"^api\.model: not set; pass --model PROJECT/VERSION"):
        load(None, {"source.uri": "synthetic"}, env={}, need_model=True)
    assert load(None, {"api.model": "a/1"}, env={}, need_model=True).api.model == "a/1"
    assert load(None, {}, env={}).api.model is None  # the config alone may leave it to a flag


# --- secrets: one lookup for the API key, the web page's token and the broker password ---


@pytest.mark.parametrize("secret", [API_KEY, HTTP_TOKEN, MQTT_PASSWORD], ids=lambda s: s.credential)
def test_a_secret_comes_from_its_value_then_its_file_then_its_credential(tmp_path, secret):
    (tmp_path / secret.credential).write_text("from-credential\n")
    (tmp_path / "file").write_text("from-file\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve_secret(Config(), secret, env) == "from-credential"
    assert resolve_secret(Config(), secret, {}) is None
    with_file = load(None, {secret.file: str(tmp_path / "file")}, env={})
    assert resolve_secret(with_file, secret, env) == "from-file"
    if secret.value.startswith("$"):
        env[secret.value[1:]] = " from-value "
        with_value = with_file
    else:
        with_value = load(None, {secret.file: str(tmp_path / "file"), secret.value: " from-value "}, env={})
    assert resolve_secret(with_value, secret, env) == "from-value"
    assert scrub("from-value and from-file") == "*** and ***"  # registered, so never logged
    (tmp_path / "file").write_text("\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(secret.file)}: .* is empty; put {secret.what} in it$"):
        resolve_secret(with_file, secret, {})
