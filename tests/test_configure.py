"""configure() and the global provider. Each case runs in a fresh interpreter: OpenTelemetry allows
one global provider per process, and Strands only uses the global one."""

from __future__ import annotations

import json
from typing import Any

from helpers import TOOL_RUN_ROWS, his_otel, new_session, run_script
from his_otel.read import session_rows

AGENT_RUN = """
from his_otel import HISAgent, ScriptedModel, ToolCall, milestone
from strands import tool

@tool
def lookup(query: str) -> str:
    '''Look up.'''
    milestone("PROGRESS", "inside tool")
    return "r"

model = ScriptedModel([ToolCall("lookup", {"query": "q"}), "done"])
agent = HISAgent(TABLE, SESSION, model=model, tools=[lookup])
agent("go")
"""


def script(table: str, session: str, body: str) -> str:
    return f"import json\nTABLE = {table!r}\nSESSION = {session!r}\n{body}"


def run_json(code: str, env: dict[str, str] | None = None) -> Any:
    proc = run_script(code, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lifecycle(ddb: Any, table: str, session: str) -> list[str]:
    return [r["evt_type"] for r in session_rows(ddb, table, session)]


def test_installs_a_provider_when_none_exists_and_is_idempotent(ddb: Any, table: str) -> None:
    session = new_session()
    out = run_json(
        script(
            table,
            session,
            """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import his_otel
h = his_otel.configure(TABLE)
again = his_otel.configure("another-table")
"""
            + AGENT_RUN
            + """
print(json.dumps({
    "installed": h.installed_provider,
    "global_is_ours": trace.get_tracer_provider() is h.provider,
    "sdk": isinstance(h.provider, TracerProvider),
    "same_handle": again is h,
    "otlp": h.otlp_exporter is not None,
    "flushed": h.force_flush(10000),
}))
""",
        )
    )
    assert out == {
        "installed": True,
        "global_is_ours": True,
        "sdk": True,
        "same_handle": True,
        "otlp": False,
        "flushed": True,
    }
    assert "PROGRESS" in lifecycle(ddb, table, session)


def test_attaches_to_the_apps_provider_without_replacing_it(ddb: Any, table: str) -> None:
    session = new_session()
    out = run_json(
        script(
            table,
            session,
            """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
mem = InMemorySpanExporter()
app = TracerProvider()
app.add_span_processor(SimpleSpanProcessor(mem))
trace.set_tracer_provider(app)
import his_otel
h = his_otel.configure(TABLE)
"""
            + AGENT_RUN
            + """
print(json.dumps({
    "installed": h.installed_provider,
    "kept_app_provider": trace.get_tracer_provider() is app and h.provider is app,
    "app_exporter_got_spans": len(mem.get_finished_spans()) > 0,
    "flushed": trace.get_tracer_provider().force_flush(10000),
}))
""",
        )
    )
    assert out == {
        "installed": False,
        "kept_app_provider": True,
        "app_exporter_got_spans": True,
        "flushed": True,
    }
    assert lifecycle(ddb, table, session)[:2] == ["EVENT_LOOP", "START"]


def test_his_agent_configures_tracing_when_nothing_is_set_up(ddb: Any, table: str) -> None:
    session = new_session()
    out = run_json(
        script(
            table,
            session,
            AGENT_RUN
            + """
from opentelemetry import trace
import his_otel
h = his_otel.current_handle()
flushed = h.force_flush(10000)
print(json.dumps({"handle": h is not None, "installed": h.installed_provider, "flushed": flushed}))
""",
        )
    )
    assert out == {"handle": True, "installed": True, "flushed": True}
    assert {"START", "TOOLING", "PROGRESS", "COMPLETION", "AGENT_STATS", "RESULT"} <= set(
        lifecycle(ddb, table, session)
    )


def test_sampled_out_traces_still_get_every_status_row(ddb: Any, table: str) -> None:
    session = new_session()
    out = run_json(
        script(
            table,
            session,
            """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
otlp_stand_in = InMemorySpanExporter()
app = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
app.add_span_processor(SimpleSpanProcessor(otlp_stand_in))
trace.set_tracer_provider(app)
import his_otel
h = his_otel.configure(TABLE)
"""
            + AGENT_RUN
            + """
print(json.dumps({"exported": len(otlp_stand_in.get_finished_spans()), "flushed": h.force_flush(10000)}))
""",
        )
    )
    assert out == {"exported": 0, "flushed": True}  # OTLP export stays sampled out...
    rows = session_rows(ddb, table, session)
    assert [r["evt_type"] for r in rows] == TOOL_RUN_ROWS  # ...status rows do not
    # Sampled-out spans still have real ids: the row still points at the (unexported) trace.
    assert len({r["trace_id"] for r in rows}) == 1


def test_otlp_exporter_follows_the_standard_variables(table: str) -> None:
    body = """
import his_otel
h = his_otel.configure(TABLE)
e = h.otlp_exporter
print(json.dumps(None if e is None else type(e).__module__))
"""
    code = script(table, "unused", body)
    assert run_json(code, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) == (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    )
    assert run_json(
        code,
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ) == ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    assert (
        run_json(code, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"})
        is None
    )
    assert run_json(code) is None


def emit_then(table: str, session: str, n: int, then: str) -> str:
    """A script that queues n milestones (a 60 s batching delay keeps them pending), then runs ``then``."""
    return script(
        table,
        session,
        f"""
import sys, time, his_otel
from opentelemetry import trace
his_otel.configure(TABLE, schedule_delay_millis=60000)
with trace.get_tracer("t").start_as_current_span("pending"):
    for i in range({n}):
        his_otel.milestone("PROGRESS", str(i), session_id=SESSION)
{then}
""",
    )


def test_pending_rows_are_written_at_interpreter_exit(ddb: Any, table: str) -> None:
    session = new_session()
    proc = run_script(emit_then(table, session, 30, "# no flush, no shutdown: the process just ends"))
    assert proc.returncode == 0, proc.stderr
    assert len(session_rows(ddb, table, session)) == 30


def test_pending_rows_are_written_on_sigterm(ddb: Any, table: str) -> None:
    import signal
    import subprocess
    import sys

    session = new_session()
    code = emit_then(table, session, 20, 'print("ready", flush=True)\ntime.sleep(60)')
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # still dies of SIGTERM, as it would without us
    assert len(session_rows(ddb, table, session)) == 20


def test_a_session_block_alone_is_enough_for_rows(ddb: Any, table: str) -> None:
    """The README's ``with his_otel.session(...)``, outside any agent, with no configure() call."""
    session = new_session()
    proc = run_script(
        f"import his_otel\n"
        f"with his_otel.session({session!r}, agent_id='batch', table={table!r}):\n"
        f"    for i in range(3):\n"
        f"        his_otel.milestone('PROGRESS', f'step {{i}}')\n"
    )
    assert proc.returncode == 0 and "HISOtelWarning" not in proc.stderr, proc.stderr
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["step 0", "step 1", "step 2"]


def test_one_rule_for_every_setting_a_bad_value_refuses_to_start_loudly(table: str) -> None:
    """A privacy setting with a typo never keeps full text; a yes/no that is neither, a port that is
    not one, refuse as their arguments do: a sentence naming the variable, with no logging set up."""
    agent = (
        "from his_otel import HISAgent, ScriptedModel\n"
        f"HISAgent({table!r}, 's', model=ScriptedModel(['ok']))('hi')\n"
        "print('ran')\n"
    )
    for env, value in (("HIS_OTEL_MESSAGE_MODE", "dropp"), ("HIS_OTEL_COPIES", "logs"),
                       ("HIS_OTEL_DISABLED", "maybe"), ("HIS_OTEL_MAX_QUEUE_SIZE", "lots")):  # fmt: skip
        proc = run_script(agent, {env: value})
        assert proc.returncode != 0 and "ran" not in proc.stdout, (env, proc.stdout)
        assert f"{env}={value!r} is not valid" in proc.stderr, (env, proc.stderr)
    for env, value in (("HIS_OTEL_BRIDGE_ALLOW_UNAUTHENTICATED", "maybe"), ("HIS_OTEL_BRIDGE_PORT", "http")):
        bridge = his_otel("bridge", "--table", table, extra_env={env: value}, timeout=60)
        assert bridge.returncode != 0 and f"{env}={value!r} is not valid" in bridge.stderr, bridge.stderr
        assert "Traceback" not in bridge.stderr, bridge.stderr
