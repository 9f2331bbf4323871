"""The local stack's supervision without running it: generated config, the crash-loop rules,
the code hash, the Kafka cluster id."""

from __future__ import annotations

import configparser
import shlex
import uuid
from pathlib import Path

import pytest

from minimart.local.servers.crashloop import BASE_S, CAP_S, RESET_AFTER_S, CrashLoop
from minimart.local.servers.kafka_broker import new_cluster_id
from minimart.local.servers.supervision import Program, SupervisionError, render_program
from minimart.local.stack import code_hash


def _section(text: str, name: str) -> configparser.SectionProxy:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser[f"program:{name}"]


def test_a_program_renders_to_what_supervisord_reads_back() -> None:
    program = Program(
        "fn-x",
        ("/bin/echo", "50% off", "a b"),
        Path("/srv"),
        {"A": "1", "DSN": "postgresql://u@127.0.0.1:1/db,x"},
        user="postgres",
        stop_signal="INT",
        stop_group=False,
        stop_wait_s=15,
    )
    section = _section(render_program(program, Path("/logs/fn-x.log")), "fn-x")

    # supervisord expands %(name)s: a literal % is doubled; the command is shell-quoted.
    assert shlex.split(section["command"].replace("%%", "%")) == list(program.argv)
    assert section["environment"] == 'A="1",DSN="postgresql://u@127.0.0.1:1/db,x"'
    assert section["user"] == "postgres"
    assert section["autostart"] == "false"  # the runner starts layers in order
    assert section["autorestart"] == "true"
    assert (section["stopsignal"], section["stopasgroup"], section["killasgroup"]) == (
        "INT", "false", "true",
    )  # fmt: skip
    assert section["stopwaitsecs"] == "15"
    assert section["stdout_logfile"] == "/logs/fn-x.log"


def test_supervisords_own_parser_reads_the_environment_back() -> None:
    from supervisor.datatypes import dict_of_key_value_pairs

    env = {"A": "1", "DSN": "postgresql://u@127.0.0.1:1/db,x", "P": "/a b/c"}
    section = _section(render_program(Program("p", ("true",), Path("/"), env), Path("/l")), "p")
    assert dict_of_key_value_pairs(section["environment"]) == env


def test_a_value_supervisord_cannot_carry_is_refused() -> None:
    with pytest.raises(SupervisionError, match="double quote"):
        render_program(Program("p", ("true",), Path("/"), {"X": 'say "hi"'}), Path("/l"))
    with pytest.raises(SupervisionError, match="newline"):
        render_program(Program("p", ("echo", "a\nb"), Path("/")), Path("/l"))


def _fatal(loop: CrashLoop, name: str, now: float) -> None:
    for state, previous in (("STARTING", "BACKOFF"), ("BACKOFF", "STARTING"),
                            ("FATAL", "BACKOFF")):  # fmt: skip
        loop.on_event(f"PROCESS_STATE_{state}", {"processname": name, "from_state": previous}, now)


def test_a_fatal_program_is_started_again_after_a_doubling_capped_delay() -> None:
    loop = CrashLoop()
    now = 1000.0
    delays = []
    for _ in range(6):
        _fatal(loop, "kafka", now)
        due = loop.due["kafka"]
        assert loop.on_event("TICK_5", {"when": str(int(due) - 1)}, due - 1) == []
        assert loop.on_event("TICK_5", {"when": str(int(due))}, due) == ["kafka"]
        delays.append(due - now)
        now = due
    assert delays == [BASE_S, 2 * BASE_S, 4 * BASE_S, 8 * BASE_S, CAP_S, CAP_S]


def test_the_delay_resets_after_a_long_run_and_a_stop_cancels_the_revival() -> None:
    loop = CrashLoop()
    _fatal(loop, "p", 0.0)
    _fatal(loop, "p", 10.0)
    assert loop.delay("p") == 2 * BASE_S
    loop.on_event("PROCESS_STATE_RUNNING", {"processname": "p", "from_state": "STARTING"}, 20.0)
    loop.on_event("PROCESS_STATE_EXITED", {"processname": "p", "from_state": "RUNNING"},
                  20.0 + RESET_AFTER_S)  # fmt: skip
    _fatal(loop, "p", 30.0 + RESET_AFTER_S)
    assert loop.delay("p") == BASE_S
    loop.on_event("PROCESS_STATE_STOPPED", {"processname": "p", "from_state": "FATAL"}, 40.0)
    assert loop.on_event("TICK_5", {}, 10_000.0) == []


def test_restarts_count_what_was_not_asked_for() -> None:
    loop = CrashLoop()
    for previous in ("STOPPED", "EXITED", "BACKOFF", "FATAL", "STOPPED"):
        loop.on_event("PROCESS_STATE_STARTING", {"processname": "p", "from_state": previous}, 0)
    assert loop.restarts == {"p": 3}  # a start after STOPPED is someone's `up`, not a restart


def test_new_cluster_ids_never_begin_with_a_dash() -> None:
    # URL-safe base64 begins with '-' when the first byte is 0xF8..0xFB (one UUID in 64).
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x01" + bytes(15))
    draws = iter([dashed, dashed, plain])

    cluster_id = new_cluster_id(lambda: next(draws))

    assert cluster_id == "AQAAAAAAAAAAAAAAAAAAAA"
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_the_code_hash_follows_file_contents(tmp_path: Path) -> None:
    for folder in ("minimart", "functions", "eventing", "k8s"):
        (tmp_path / folder).mkdir()
    (tmp_path / "minimart" / "a.py").write_text("x = 1\n")
    first = code_hash(tmp_path)
    (tmp_path / "minimart" / "__pycache__").mkdir()
    (tmp_path / "minimart" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert code_hash(tmp_path) == first
    (tmp_path / "eventing" / "s.yaml").write_text("retry: 9\n")
    second = code_hash(tmp_path)
    assert second != first
    (tmp_path / "minimart" / "a.py").write_text("x = 2\n")
    assert code_hash(tmp_path) not in (first, second)
