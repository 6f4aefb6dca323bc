"""``streamer run`` and ``streamer demo``: build the live pipeline from a validated config."""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack, closing
from urllib.parse import urlsplit

from streamer.api.client import DetectionClient
from streamer.config import Config
from streamer.credentials import API_KEY, MQTT_PASSWORD, resolve_secret
from streamer.imaging import limit_opencv_threads
from streamer.live.dispatch import HUNG_PER_SLOT, InferenceSettings
from streamer.live.pipeline import Outputs, Pipeline, Supervision
from streamer.names import source_name
from streamer.outputs.jsonl import JsonlWriter
from streamer.outputs.notify import SystemdNotifier
from streamer.outputs.recorder import MIN_FREE_BYTES, Recorder
from streamer.outputs.window import Window, display_available
from streamer.outputs.zmq_feed import ZmqPublisher
from streamer.redact import url_for_display
from streamer.retry import Backoff
from streamer.sources.open import make_source

log = logging.getLogger(__name__)

TERMINAL_STATUS_S = 5.0  # status lines for a person watching
JOURNAL_STATUS_S = 60.0  # and for a journal that keeps weeks of them


def make_client(config: Config, api_key: str | None, max_connections: int = 4) -> DetectionClient:
    """The API client; config is one that ``load(need_model=True)`` accepted."""
    return DetectionClient(
        config.api.url,
        config.api.model,
        api_key,
        confidence=config.inference.confidence,
        overlap=config.inference.overlap,
        connect_timeout_s=config.api.connect_timeout_s,
        timeout_s=config.api.timeout_s,
        max_connections=max(max_connections, config.inference.max_in_flight),
        http2=config.api.http2,
    )


def _outputs(config: Config, source, opened: ExitStack) -> Outputs:
    """The outputs config names, each registered on ``opened`` as soon as it is open."""
    out = config.output
    window = None
    if not out.headless:
        ok, reason = display_available()
        if ok:
            window = opened.enter_context(closing(Window(out.window_title)))
        else:
            log.info("no preview window: %s; running headless", reason)
    outputs = []
    if out.zmq:
        outputs.append(
            opened.enter_context(
                closing(
                    ZmqPublisher(
                        out.zmq,
                        out.zmq_topic,
                        status_topic=out.zmq_status_topic,
                        curve_secret_key_file=out.zmq_curve_secret_key_file,
                        curve_clients_dir=out.zmq_curve_clients_dir,
                    )
                )
            )
        )
    if out.jsonl:
        writer = JsonlWriter(out.jsonl, max_bytes=int(out.jsonl_max_mb * 2**20), keep=out.jsonl_keep)
        outputs.append(opened.enter_context(closing(writer)))
    recorder = None
    if out.record:  # fps is asked on the first frame: by then the source is open and knows its rate
        recorder = opened.enter_context(
            closing(
                Recorder(
                    out.record,
                    lambda: getattr(source, "fps", None),
                    segment_s=out.record_segment_s,
                    max_bytes=int(out.record_max_mb * 2**20),
                    min_free_bytes=MIN_FREE_BYTES,
                )
            )
        )
    return Outputs(window=window, outputs=outputs, recorder=recorder)


def _mqtt(config: Config, name: str, pipeline: Pipeline):
    """The MQTT output; made after the pipeline, whose annotated frames are its snapshots."""
    from streamer.outputs.mqtt import MqttPublisher

    return MqttPublisher(
        config.mqtt,
        name,
        config.inference.classes,
        resolve_secret(config, MQTT_PASSWORD),
        snapshot=pipeline.annotated,
        event_frame=pipeline.event_frame,
    )


def _settings(config: Config) -> InferenceSettings:
    inf = config.inference
    return InferenceSettings(
        inf.max_side,
        inf.jpeg_quality,
        tuple(inf.classes),
        max_in_flight=inf.max_in_flight,
        max_fps=inf.max_fps or None,
        min_change=inf.min_change,
        budget_calls=inf.budget_calls,
        budget_period=inf.budget_period,
    )


def status_interval_s(config: Config) -> float:
    """output.status_interval_s, or by default 5 s on a terminal and 60 s in a journal."""
    if config.output.status_interval_s is not None:
        return config.output.status_interval_s
    return TERMINAL_STATUS_S if sys.stderr.isatty() else JOURNAL_STATUS_S


def _supervision(config: Config) -> Supervision:
    return Supervision(
        stall_timeout_s=config.source.stall_timeout_s,
        open_timeout_s=config.source.open_timeout_s,
        probe_after_failures=config.api.probe_after_failures,
        status_interval_s=status_interval_s(config),
        heartbeat_s=config.output.heartbeat_s,
    )


def run_pipeline(config: Config, stop: threading.Event) -> int:
    """Run the live pipeline that config describes until stopped; the exit code.

    Everything opened is registered on one ExitStack, so a failure at any step (a port in
    use, a bad key file) closes what was already open.  The pipeline closes its outputs
    itself on the way out; closing them again here does nothing."""
    limit_opencv_threads()
    api_key = resolve_secret(config, API_KEY)
    if not api_key and (urlsplit(config.api.url).hostname or "").endswith("roboflow.com"):
        log.warning("no API key: set $ROBOFLOW_API_KEY or api.api_key_file (a hosted API answers 401)")
    with ExitStack() as opened:
        source = make_source(config, stop)
        # Requests can be outstanding in each slot, and hung ones beside them: a connection each.
        client = opened.enter_context(
            make_client(config, api_key, (1 + HUNG_PER_SLOT) * config.inference.max_in_flight)
        )
        outputs = _outputs(config, source, opened)
        name = config.name or source_name(config.source.uri)
        log.info(
            "source %s -> %s (confidence %.2f, max side %d px, up to %d in flight, %s)",
            source.name,
            url_for_display(client.endpoint),
            config.inference.confidence,
            config.inference.max_side,
            config.inference.max_in_flight,
            f"at most {config.inference.max_fps:g} calls/s" if config.inference.max_fps else "no call rate cap",
        )
        pipeline = Pipeline(
            source,
            client,
            outputs,
            _settings(config),
            stop,
            queue_size=config.source.queue_size,
            loop=config.source.loop,
            duration_s=config.duration_s,
            supervision=_supervision(config),
            source_backoff=Backoff(config.source.reconnect_initial_s, config.source.reconnect_max_s),
            api_backoff=Backoff(config.api.backoff_initial_s, config.api.backoff_max_s),
            notifier=opened.enter_context(closing(SystemdNotifier.from_env())),
            name=name,
        )
        if config.mqtt.url:
            pipeline.add_output(opened.enter_context(closing(_mqtt(config, name, pipeline))))
        if config.output.http:  # after the pipeline: the page shows its frames and status
            from streamer.outputs.web import WebServer, web_settings

            pipeline.add_output(opened.enter_context(closing(WebServer(pipeline, web_settings(config)))).start())
        outs = pipeline.outputs
        if outs.window is None and not outs.outputs and outs.recorder is None:
            log.warning(
                "results go nowhere: no window and no output; add --http PORT, --zmq PORT, --mqtt URL, "
                "--jsonl FILE or --record FILE (or the output: keys of the config file)"
            )
        return pipeline.run()
