"""The suite's own bookkeeping: the thread-leak check (support.running.streamer_threads) knows
every thread streamer names."""

from __future__ import annotations

import ast

from conftest import ROOT

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
