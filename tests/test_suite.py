"""The suite's own bookkeeping: the thread-leak check (support.running.streamer_threads) knows
every thread streamer names, and the opencv marker (tests/conftest.py) every test that uses a
part of OpenCV that differs from one build to another."""

from __future__ import annotations

import ast
import re

from conftest import ALL, OPENCV_TESTS, ROOT

from support.running import THREAD_NAMES, THREAD_PREFIXES


def _name_pattern(arg: ast.expr | None) -> str | None:
    """ "x" for a constant name, "x{}" for an f-string (its text up to the first placeholder)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return arg.values[0].value + "{}"
    return None


def _names_in_source() -> set[str]:
    """Thread names as streamer's code writes them: named_thread("x", ...), Thread(name="x"),
    ThreadPoolExecutor(n, "x") (whose threads are x_0, x_1 ...) and thread.name = "x"."""
    found = set()
    for path in (ROOT / "streamer").rglob("*.py"):
        if path.parent.name == "standin":  # the stand-in API server is not streamer's run
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = None
            if isinstance(node, ast.Call):
                callee = getattr(node.func, "id", getattr(node.func, "attr", ""))
                keyword = next((k.value for k in node.keywords if k.arg in ("name", "thread_name_prefix")), None)
                if callee == "named_thread" and node.args:
                    name = _name_pattern(node.args[0])
                elif callee == "Thread":
                    name = _name_pattern(keyword)
                elif callee == "ThreadPoolExecutor":
                    prefix = _name_pattern(node.args[1] if len(node.args) > 1 else keyword)
                    name = prefix and prefix.replace("{}", "") + "_{}"
            elif isinstance(node, ast.Assign) and getattr(node.targets[0], "attr", "") == "name":
                if "thread" in ast.unparse(node.targets[0].value):
                    name = _name_pattern(node.value)
            if name:
                found.add(name)
    return found


def test_the_leak_check_knows_every_thread_streamer_names():
    names = _names_in_source()
    assert {"capture", "dispatch", "request-{}", "http", "mqtt", "web-snapshot_{}"} <= names  # the walk works
    unknown = sorted(
        name
        for name in names
        if not (name in THREAD_NAMES if "{}" not in name else name.split("{}")[0].startswith(THREAD_PREFIXES))
    )
    assert unknown == [], f"add them to THREAD_NAMES or THREAD_PREFIXES in tests/support/running.py: {unknown}"


# What a test uses that behaves differently from one OpenCV build to another.
OPENCV_SIGNS = re.compile(
    r"VideoCapture|VideoWriter|CvSource|write_clip|rtsp_clip|camera_clip|RtspServer|(?<!\.)\bclip\b|outputs\.recorder"
    r"|--record|draw_predictions|encode_jpeg|imencode|imread|imshow|namedWindow|gst:"
)
NOT_OPENCV = {  # uses one of those signs, but not in a way that depends on the build
    "test_frames.py::test_frames_wake_the_output_loop_only_when_something_draws_them": "which outputs draw, not how",
    "test_frames.py::test_gstreamer_password_properties_are_masked_and_remembered": "gst: text, masked",
    "test_frames.py::test_every_way_gstreamer_reads_a_password_is_masked": "gst: text, masked",
    "test_server.py::test_multipart_file_part": "a JPEG only to have an upload to send",
}


def _tests_using_opencv() -> list[str]:
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if OPENCV_SIGNS.search(ast.get_source_segment(source, node)):
                    found.append(f"{path.name}::{node.name}")
    return found


def _marked(test: str) -> bool:
    module, name = test.split("::")
    listed = OPENCV_TESTS.get(module, frozenset())
    return listed is ALL or name in listed


def test_the_opencv_marker_names_real_tests_and_every_test_using_an_opencv_part():
    stale = []
    for module, names in OPENCV_TESTS.items():
        path = ROOT / "tests" / module
        if not path.exists():
            stale.append(module)
        elif names is not ALL:
            defined = {getattr(node, "name", "") for node in ast.parse(path.read_text()).body}
            stale += [f"{module}::{name}" for name in sorted(names - defined)]
    assert stale == [], f"OPENCV_TESTS in tests/conftest.py names tests that do not exist: {stale}"
    unmarked = [test for test in _tests_using_opencv() if test not in NOT_OPENCV and not _marked(test)]
    assert unmarked == [], f"add them to OPENCV_TESTS in tests/conftest.py (or to NOT_OPENCV, saying why): {unmarked}"
