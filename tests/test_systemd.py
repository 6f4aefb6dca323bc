"""systemd/streamer.service and streamer@.service: lint them with systemd-analyze and check the
settings a user relies on.

systemd is not PID 1 here, so no unit is ever started; `systemd-analyze verify` and
`systemd-analyze security --offline=yes` check them as files.  verify insists that ExecStart
names an existing executable, so a copy points at this interpreter's console script.  The
template is copied as an instance, streamer@cam1.service, so that %i means something: given the
bare template, systemd-analyze 252 makes up the instance "i" (and security names the unit
"streamer@i.service"); the copy behaves the same in every version and reads better in failures.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, need, need_tool

from streamer.commands.cli import build_parser
from streamer.config import ApiConfig, SourceConfig
from streamer.credentials import CREDENTIAL_NAME

pytestmark = pytest.mark.system

UNIT = ROOT / "systemd" / "streamer.service"
TEMPLATE = ROOT / "systemd" / "streamer@.service"
INSTANCE = "cam1"
ENV_EXAMPLE = ROOT / "systemd" / "streamer.env.example"
INSTALLED_EXE = "/usr/local/bin/streamer"
ANALYZE_TIMEOUT_S = 60
MAX_EXPOSURE = 3.0  # 1.6 for both units when written; a rise means some hardening was dropped

# The lines in which the template differs from streamer.service, on purpose: what the instance
# name selects.  Everything else (notify, watchdog, restarts, hardening) must be identical.
PER_INSTANCE = {"Description", "Documentation", "ExecStart", "EnvironmentFile", "StateDirectory", "WorkingDirectory"}
CONFIG = {UNIT: "/etc/streamer/config.yaml", TEMPLATE: "/etc/streamer/%i.yaml"}
ENV_FILES = {UNIT: ["-/etc/streamer/streamer.env"], TEMPLATE: ["-/etc/streamer/streamer.env", "-/etc/streamer/%i.env"]}
both_units = pytest.mark.parametrize("unit_file", [UNIT, TEMPLATE], ids=lambda p: p.name)


def settings(text: str) -> dict[str, list[str]]:
    """Active Key=value lines of a unit file (comments and section headers left out)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def lines_by_section(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every active line, in file order."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and line[0] not in "#;":
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


def seconds(timespan: str) -> float:
    """A systemd time span of the simple forms used in our units ("60", "90s", "2min")."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", timespan)
    assert found, f"unexpected time span {timespan!r}: extend seconds() in this test"
    return float(found[1]) * (60 if found[2] == "min" else 1)


@pytest.fixture(params=[UNIT, TEMPLATE], ids=lambda p: p.name)
def unit_copy(request, tmp_path) -> Path:
    """A unit with only its ExecStart executable replaced by the real console script; the
    template as the instance streamer@cam1.service."""
    need_tool("systemd-analyze")
    script = Path(sys.executable).parent / "streamer"
    need(
        script.is_file() and os.access(script, os.X_OK),
        f"no console script {script}: install streamer into this interpreter (pip install -e .)",
    )
    unit = request.param
    text = unit.read_text()
    old = f"ExecStart={INSTALLED_EXE} "
    assert text.count(old) == 1, f"expected exactly one line starting {old!r} in {unit}"
    # verify takes the unit name, and so the instance name, from the file name
    copy = tmp_path / unit.name.replace("@.", f"@{INSTANCE}.")
    copy.write_text(text.replace(old, f"ExecStart={script} "))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["systemd-analyze", *args], check=False, capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"systemd-analyze {' '.join(args)} did not finish within {ANALYZE_TIMEOUT_S} s")


def unit_warnings(stderr: str, unit: Path) -> list[str]:
    return [line for line in stderr.splitlines() if unit.name in line or str(unit) in line]


def test_verify_passes_without_warnings(unit_copy):
    result = analyze("verify", str(unit_copy))
    assert result.returncode == 0, result.stderr
    assert unit_warnings(result.stderr, unit_copy) == []


def test_verify_would_catch_a_broken_unit(unit_copy):
    """Control: the check above does see a warning about our unit when there is one."""
    unit_copy.write_text(unit_copy.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = analyze("verify", str(unit_copy))
    # systemd only warns and ignores the line (exit code 0), hence the check on stderr.
    assert any("sometimes" in line for line in unit_warnings(result.stderr, unit_copy)), result.stderr


@both_units
def test_unit_runs_headless_from_etc_and_restarts_only_when_that_can_help(unit_file):
    unit = settings(unit_file.read_text())
    config = CONFIG[unit_file]
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED_EXE
    assert "--headless" in argv
    assert argv[argv.index("-c") + 1] == config
    args = build_parser().parse_args(argv[1:])  # the flags exist in this version of the CLI
    assert (args.command, vars(args)["output.headless"], args.config) == ("run", True, config)

    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartSec"] == ["5"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # configuration/authorisation error
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["TimeoutStopSec"] == ["10"]
    assert unit["WantedBy"] == ["multi-user.target"]

    # A camera must stay reachable under the hardening.
    assert unit["DynamicUser"] == ["yes"]
    assert unit["SupplementaryGroups"] == ["video"]
    assert unit.get("PrivateDevices", ["no"]) == ["no"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"]


@both_units
def test_api_key_comes_from_optional_env_file_with_credential_as_commented_alternative(unit_file):
    text = unit_file.read_text()
    unit = settings(text)
    # "-": a missing file does not stop the unit (a self-hosted API may need no key).  The
    # template reads the camera's own file second, so that its key wins.
    assert unit["EnvironmentFile"] == ENV_FILES[unit_file]
    # LoadCredential= fails the unit when its file is missing, so it is offered, not active.
    assert "LoadCredential" not in unit
    assert re.search(rf"^#\s*LoadCredential={CREDENTIAL_NAME}:/etc/streamer/api_key$", text, re.MULTILINE), (
        f"the commented alternative must name the credential streamer reads ({CREDENTIAL_NAME})"
    )

    example = settings(ENV_EXAMPLE.read_text())
    assert list(example) == ["ROBOFLOW_API_KEY"]
    assert "chmod 600" in ENV_EXAMPLE.read_text()


def test_security_offline_scores_the_unit(unit_copy):
    result = analyze("security", "--offline=yes", str(unit_copy))
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert found, result.stdout[-2000:]
    exposure = float(found.group(1))
    print(f"\nsystemd-analyze security: exposure {exposure} {found.group(2)} for {unit_copy.name}")
    assert exposure <= MAX_EXPOSURE, result.stdout


@both_units
def test_ready_is_awaited_and_the_watchdog_outlasts_streamers_own_backoff(unit_file):
    unit = settings(unit_file.read_text())
    source, api = SourceConfig(), ApiConfig()
    # streamer sends READY=1 and WATCHDOG=1 itself (streamer.outputs.notify); a helper may not.
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    # Pings stop while the camera or the API is down; the longest wait between two attempts
    # must end well before systemd gives up, so every outage gets a reconnect or a probe.
    (watchdog,) = unit["WatchdogSec"]
    assert seconds(watchdog) > max(source.reconnect_max_s, api.backoff_max_s), watchdog
    # READY=1 needs a frame and an answer: room for a full camera reconnect and a full API
    # backoff at boot, on top of the timeouts of one attempt each.
    (start,) = unit["TimeoutStartSec"]
    needed_s = source.open_timeout_s + source.reconnect_max_s + api.timeout_s + api.backoff_max_s
    assert seconds(start) > needed_s, start


def test_template_is_the_single_unit_apart_from_the_instance_lines():
    single, template = lines_by_section(UNIT.read_text()), lines_by_section(TEMPLATE.read_text())
    shared = [line for line in single if line[1] not in PER_INSTANCE]
    assert [line for line in template if line[1] not in PER_INSTANCE] == shared, (
        "streamer.service and streamer@.service differ in a shared setting: change both"
    )

    one, per_camera = settings(UNIT.read_text()), settings(TEMPLATE.read_text())
    assert set(one) & PER_INSTANCE == set(per_camera) & PER_INSTANCE == PER_INSTANCE
    assert "%i" in per_camera["Description"][0]
    assert per_camera["Documentation"] == ["file:///etc/streamer/%i.yaml"]
    # The single unit serves the web page on 127.0.0.1:8080; cameras pick a port each in NAME.yaml.
    single_exec = one["ExecStart"][0].replace(" --http 8080", "")
    assert per_camera["ExecStart"] == [single_exec.replace(CONFIG[UNIT], CONFIG[TEMPLATE])]
    assert per_camera["EnvironmentFile"] == one["EnvironmentFile"] + ["-/etc/streamer/%i.env"]
    # Each camera writes into its own directory; %i (not %I) keeps "front-door" as one name.
    assert per_camera["StateDirectory"] == [one["StateDirectory"][0] + "/%i"]
    assert per_camera["WorkingDirectory"] == [one["WorkingDirectory"][0] + "/%i"]
