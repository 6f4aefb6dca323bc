"""What /healthz answers: the reasons streamer is not doing its job, or none."""

from __future__ import annotations

from streamer.live.stats import Stats


def health_reasons(stats: Stats, last_result_mono: float | None, now: float, max_age_s: float) -> list[str]:
    """Why streamer is unhealthy now; empty while frames flow and results come.

    Calls the motion gate or the call budget chose not to make, and a wait the API asked
    for (Retry-After), are not faults: the newest result stands for them."""
    reasons = []
    if stats.source_state in ("reconnecting", "stalled", "ended"):
        reasons.append(f"source {stats.source_state}")
    elif stats.last_frame_mono is None:
        reasons.append("no frame yet")
    elif now - stats.last_frame_mono > max_age_s:
        reasons.append(f"no frame for {now - stats.last_frame_mono:.0f} s")
    if stats.api_state in ("failing", "down"):
        failures = stats.failures_text()
        reasons.append(stats.api_text(now) + (f" ({failures})" if failures else ""))
    skipping = stats.last_skip_mono is not None and now - stats.last_skip_mono < max_age_s
    asked_to_wait = now < stats.api_quiet_until
    if not (skipping or asked_to_wait):
        if last_result_mono is None:
            reasons.append("no result yet")
        elif now - last_result_mono > max_age_s:
            reasons.append(f"no result for {now - last_result_mono:.0f} s")
    return reasons
