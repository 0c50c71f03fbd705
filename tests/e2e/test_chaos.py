"""Chaos against real processes on loopback (Mosquitto with persistence, `edgeloop serve`, agents), each
bounded in time and printing its counts:

* the broker restarts mid-rollout: the rollout completes;
* ``kill -9`` of the agent during an engine swap: it restarts on a consistent engine, the old one or
  the new one, never a half-written file;
* ``kill -9`` of ``serve`` during a steady stream of reports: after the restart none is lost and none
  is duplicated;
* ``kill -9`` of one ingest worker process while the other runs: the watchdog restarts it, nothing lost.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from device.engine.builder import EngineCache
from device.state import AgentState
from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore, golden_top1
from shared import protocol as p
from shared.modelmeta import read_meta
from tests.e2e.conftest import DEVICES, ServeProcess, StartAgent, wait
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto, Recorder, free_port, signed
from tests.shared.factories import benchmark_report

pytestmark = [pytest.mark.e2e, pytest.mark.security]

FAST = {"warmup": 2, "iterations": 20, "throughput_batch": 16, "evaluate": True, "eval_limit": 100}


# -- the broker restarts mid-rollout --------------------------------------------------------------
def _wave_state(api: ApiClient, rid: str, wave: int) -> str:
    return str(api.get(f"/api/v1/rollouts/{rid}")["waves"][wave]["state"])


def test_a_broker_restart_mid_rollout_and_the_rollout_completes(
    fleet: Any, mosquitto: Mosquitto, zoo_onnx: Path, make_release: MakeRelease
) -> None:
    serve, api, agents = fleet
    m = make_release(zoo_onnx, "1.0.0", source_top1=golden_top1(zoo_onnx, read_meta(zoo_onnx)))
    # a broker restart can lose a command it acknowledged or a report on its way: the host sends an unanswered
    # command again after 30 s (then 60, 120 s) and the agent answers a repeat with the reports it made
    cfg = {"waves": ["1", "2", "100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 240, "bench": FAST}
    t0 = time.monotonic()
    rid = str(api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"])
    restarts = 0
    for wave in (0, 1):  # while the canary, then the second wave, are deploying
        wait(lambda w=wave: _wave_state(api, rid, w) == "sent", 120, f"wave {wave} sent")  # type: ignore[misc]
        mosquitto.stop()
        time.sleep(1.5)
        mosquitto.start()
        restarts += 1
    r = wait(lambda: (x := api.get(f"/api/v1/rollouts/{rid}"))["state"] in ("completed", "rolled_back", "aborted")
             and x, 300, "rollout finished")  # fmt: skip
    releases = {d["device_id"]: d["release"] for d in api.get("/api/v1/fleet")}
    # reports the just restarted broker dropped (no subscriber until ingest reconnected), kept and sent again
    unrouted = sum(a.text().count("the broker had no subscriber for report") for a in agents.values())
    print(
        f"\nchaos broker restart: broker restarts={restarts} rollout={r['state']} "
        f"waves={[w['state'] for w in r['waves']]} devices passed={sum(d['state'] == 'passed' for d in r['devices'])}"
        f"/{len(r['devices'])} times an agent had a report dropped (no subscriber yet) and sent it again={unrouted} "
        f"seconds={time.monotonic() - t0:.0f}"
    )
    resent = serve.log.read_text(errors="replace").count("sent it again (same message id)")
    answered_again = sum(a.text().count("report(s) sent again, nothing run twice") for a in agents.values())
    print(f"commands sent again for want of an answer={resent}; repeats the agents answered again={answered_again}")
    if r["state"] != "completed":  # what each process saw, for the one run in many that fails
        for name, text in [
            ("serve", serve.log.read_text(errors="replace")),
            *((n, a.text()) for n, a in agents.items()),
            ("mosquitto", (mosquitto.workdir / "mosquitto.log").read_text(errors="replace")),
        ]:
            lines = [x for x in text.splitlines() if "PINGREQ" not in x and "PINGRESP" not in x]
            print(f"--- {name} (last 60 lines) ---\n" + "\n".join(lines[-60:]))  # fmt: skip
    assert r["state"] == "completed", r["reason"]
    assert [w["state"] for w in r["waves"]] == ["passed"] * 3
    assert all(d["state"] == "passed" for d in r["devices"]) and len(r["devices"]) == len(DEVICES)
    wait(lambda: set({d["device_id"]: d["release"] for d in api.get("/api/v1/fleet")}.values()) == {"r20@1.0.0"},
         60, f"every device on r20@1.0.0 ({releases})")  # fmt: skip
    assert all(a.alive for a in agents.values())


def test_a_deploy_the_broker_lost_is_sent_again_and_the_rollout_completes(
    fleet: Any, mosquitto: Mosquitto, zoo_onnx: Path, make_release: MakeRelease
) -> None:
    """The broker acknowledges the deploys (queued for the offline agents) and dies (``kill -9``) before it
    saves them: the host hears no answer and sends each again, with the same message id."""
    serve, api, agents = fleet
    mosquitto.stop()  # saved: sessions and subscriptions; from now on nothing is saved (no autosave)
    mosquitto.autosave_interval = 3600
    mosquitto.start()
    wait(lambda: len([d for d in api.get("/api/v1/fleet") if d["state"] == "online"]) == 3, 60, "3 agents back")
    for a in agents.values():
        a.terminate()  # offline; their persistent sessions wait for commands
    m = make_release(zoo_onnx, "1.0.0", source_top1=golden_top1(zoo_onnx, read_meta(zoo_onnx)))
    cfg = {"waves": ["100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 120, "command_resend_s": 2, "bench": FAST}
    t0 = time.monotonic()
    rid = str(api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"])
    wait(lambda: all(d["state"] == "sent" and d["published"] for d in api.get(f"/api/v1/rollouts/{rid}")["devices"]),
         30, "deploys acknowledged by the broker")  # fmt: skip
    mosquitto.kill()  # the queued deploys were never saved: lost
    mosquitto.start()
    for a in agents.values():
        a.start()
    r = wait(lambda: (x := api.get(f"/api/v1/rollouts/{rid}"))["state"] in ("completed", "rolled_back", "aborted")
             and x, 150, "rollout finished")  # fmt: skip
    resent = serve.log.read_text(errors="replace").count("sent it again (same message id)")
    print(f"\nchaos broker kill -9 with the deploys queued: rollout={r['state']} commands sent again={resent} "
          f"seconds={time.monotonic() - t0:.0f}")  # fmt: skip
    assert r["state"] == "completed", r["reason"]
    assert resent >= len(agents)  # each lost deploy was sent again
    assert all(d["state"] == "passed" for d in r["devices"])


# -- kill -9 of the agent during an engine swap -----------------------------------------------------
def _variant(src: Path, dst: Path, tag: str) -> Path:
    """The same model with another sha256: a new artifact, so every deploy fetches and builds an engine."""
    import onnx

    model = onnx.load(str(src))
    model.doc_string = tag
    onnx.save(model, str(dst))
    return dst


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(state_dir: Path) -> list[str]:
    """Partial files a kill left behind (an engine mid-build, a download, a state file mid-write)."""
    found = [*(state_dir / "engines").glob(".build-*"), *state_dir.rglob("*.part"), *state_dir.rglob("*.tmp")]
    return sorted(str(f.relative_to(state_dir)) for f in found)


def _consistent(state_dir: Path) -> p.ReleaseRef:
    """The release the state names, after checking that each of its files is whole."""
    state = AgentState(state_dir)
    slot = state.current
    assert slot is not None
    manifest = state.load_manifest(slot.ref)
    assert manifest is not None and manifest.ref == slot.ref
    artifact = state.artifact_path(slot.artifact_sha256)
    assert artifact.is_file() and _sha256(artifact) == slot.artifact_sha256
    engine = EngineCache(state_dir / "engines").lookup(slot.engine)
    assert engine is not None and engine.path.stat().st_size > 0
    return slot.ref


def _online_with_engine(rec: Recorder, timeout: float = 90) -> p.DeviceStatus:
    def ready() -> p.DeviceStatus | None:
        for raw in reversed(rec.topics("/status")):
            s = p.decode_status(raw)
            if s.state == "online" and s.runtime is not None:
                return s
        return None

    return wait(ready, timeout, "the agent online with an engine")


def _deploy(rec: Recorder, m: p.ReleaseManifest, served: str, key: Path) -> None:
    cmd = p.DeployCommand(device_id="dev-1", manifest=m, base_url=served, bench=p.BenchSettings(**FAST))
    rec.publish(p.command_topic("lab", "dev-1"), signed(cmd, key))


def _activated_after(agent_log: Path, ref: p.ReleaseRef, since: int, timeout: float = 120) -> float:
    t0 = time.monotonic()
    wait(lambda: f"activated {ref}" in agent_log.read_text(errors="replace")[since:], timeout, f"{ref} activated")
    return time.monotonic() - t0


def test_kill_9_of_the_agent_during_an_engine_swap_leaves_the_old_or_the_new_engine(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    make_release: MakeRelease,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """Kill moments found by bisection on the swap: a kill that left the old engine moves the next one
    later, one that left the new engine moves it earlier, so the kills close in on the swap itself."""
    rec = Recorder(mosquitto.port, "edgeloop/v1/lab/dev-1/#")
    agent = start_agent(eval_dir=None)
    state_dir = agent.config.parent / "state"
    rec.wait_online()
    versions = iter(range(1, 100))

    def release() -> p.ReleaseManifest:
        v = next(versions)
        return make_release(_variant(zoo_onnx, tmp_path / f"m{v}.onnx", f"chaos {v}"), f"{v}.0.0")

    first = release()
    _deploy(rec, first, served, keys[0])
    _activated_after(agent.log, first.ref, 0)
    second = release()  # timed on a warm agent: the window to bisect
    since = len(agent.log.read_text(errors="replace"))
    _deploy(rec, second, served, keys[0])
    lo, hi = 0.0, _activated_after(agent.log, second.ref, since) + 0.3
    current, outcomes, leftovers = second.ref, {"old": 0, "new": 0}, 0
    for _ in range(6):
        m, delay = release(), (lo + hi) / 2
        _online_with_engine(rec)
        _deploy(rec, m, served, keys[0])
        time.sleep(delay)
        agent.kill()
        left = _leftovers(state_dir)
        leftovers += len(left)
        with rec._lock:
            rec.messages.clear()
        agent.start()
        status = _online_with_engine(rec)
        landed = _consistent(state_dir)
        assert status.release == landed and landed in (current, m.ref), (landed, current, m.ref)
        new = landed == m.ref
        outcomes["new" if new else "old"] += 1
        lo, hi = (lo, delay) if new else (delay, hi)
        current = landed
        print(f"  kill at {delay:.2f} s: restarted on {'the new' if new else 'the old'} {landed}; partial files {left}")
    print(f"\nchaos agent kill -9: kills=6 restarted on the old engine={outcomes['old']} "
          f"on the new={outcomes['new']} partial files left by the kills={leftovers} (none used); "
          f"swap window bisected to {lo:.2f}-{hi:.2f} s")  # fmt: skip
    assert agent.alive and not [f for f in _leftovers(state_dir) if f.startswith("engines/.build-")]
    rec.close()


# -- kill -9 of serve, and of one ingest worker, during a steady stream of reports -------------------
class Stream:
    """A steady stream of benchmark reports from 20 devices at ``rate`` a second, each acked by the broker."""

    def __init__(self, port: int, total: int, rate: float) -> None:
        self.sent: list[str] = []
        self._total, self._rate = total, rate
        self._pub = Recorder(port, "nothing/#", client_id=f"stream-{uuid.uuid4().hex[:8]}")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(self._total):
            r = benchmark_report(f"s{i % 20}", message_id=uuid.uuid4())
            self._pub.client.publish(
                p.report_topic("lab", r.device_id, "benchmark"), p.encode(r), qos=1
            ).wait_for_publish(30)
            self.sent.append(str(r.message_id))
            time.sleep(max(0.0, t0 + (i + 1) / self._rate - time.monotonic()))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._pub.close()


def _stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT message_id FROM reports WHERE device_id LIKE 's%'")]


def _serve(tmp_path: Path, mosquitto: Mosquitto, store: ReleaseStore, workers: int) -> ServeProcess:
    store.root.mkdir(parents=True, exist_ok=True)
    serve = ServeProcess(tmp_path, mosquitto.url, store.root, free_port(), extra=["--ingest-workers", str(workers)])
    serve.start()
    wait(lambda: all(w["alive"] for w in ApiClient(serve.url).get("/api/v1/health")["ingest"]), 60, "ingest up")
    time.sleep(1)  # the shared subscriptions settle
    return serve


def _all_stored(db: Path, stream: Stream, total: int, timeout: float) -> list[str]:
    wait(lambda: len(stream.sent) == total and len(_stored_ids(db)) >= total, timeout, f"{total} stored")
    time.sleep(2)  # anything redelivered twice would show now
    return _stored_ids(db)


def test_kill_9_of_serve_during_a_steady_stream_loses_and_duplicates_nothing(
    mosquitto: Mosquitto, store: ReleaseStore, tmp_path: Path
) -> None:
    serve = _serve(tmp_path, mosquitto, store, workers=2)
    total, db = 3000, tmp_path / "host.sqlite"
    stream = Stream(mosquitto.port, total, rate=250).start()
    wait(lambda: len(_stored_ids(db)) > 500, 60, "ingest under way")
    before_kill = len(_stored_ids(db))
    serve.kill()  # SIGKILL: what its workers had received and not stored was not acked either
    time.sleep(2)
    serve.start()
    stored = _all_stored(db, stream, total, 180)
    stream.join(10)
    health = ApiClient(serve.url).get("/api/v1/health")["ingest"]
    redelivered = sum(w["duplicates"] for w in health)
    print(f"\nchaos serve kill -9: sent={len(stream.sent)} stored before the kill={before_kill} stored={len(stored)} "
          f"unique={len(set(stored))} lost={len(set(stream.sent) - set(stored))} "
          f"redelivered already stored={redelivered} "
          f"per worker written after the restart={[w['written'] for w in health]}")  # fmt: skip
    assert len(stored) == len(set(stored)) == total and set(stored) == set(stream.sent)
    serve.stop()


def test_kill_9_of_one_ingest_worker_while_the_other_runs(
    mosquitto: Mosquitto, store: ReleaseStore, tmp_path: Path
) -> None:
    serve = _serve(tmp_path, mosquitto, store, workers=2)
    api, total, db = ApiClient(serve.url), 3000, tmp_path / "host.sqlite"
    stream = Stream(mosquitto.port, total, rate=250).start()
    wait(lambda: len(_stored_ids(db)) > 500, 60, "ingest under way")
    victim = api.get("/api/v1/health")["ingest"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    at_kill = api.get("/api/v1/health")["ingest"][0]["written"]
    back = wait(lambda: (w := api.get("/api/v1/health")["ingest"][1])["restarts"] == 1 and w["alive"] and w, 60,
                "the watchdog restarted worker 1")  # fmt: skip
    stored = _all_stored(db, stream, total, 180)
    stream.join(10)
    health = api.get("/api/v1/health")["ingest"]
    print(f"\nchaos ingest worker kill -9: sent={len(stream.sent)} stored={len(stored)} unique={len(set(stored))} "
          f"lost={len(set(stream.sent) - set(stored))} worker 1 pid {victim['pid']} -> {back['pid']} "
          f"restarts={health[1]['restarts']} worker 0 wrote {health[0]['written'] - at_kill} meanwhile and after; "
          f"written per worker={[w['written'] for w in health]}")  # fmt: skip
    assert back["pid"] != victim["pid"] and health[0]["restarts"] == 0
    assert health[0]["written"] > at_kill  # the other worker went on
    assert len(stored) == len(set(stored)) == total and set(stored) == set(stream.sent)
    assert "ingest worker 1 is dead; restarting it" in serve.log.read_text()
    with urllib.request.urlopen(f"{serve.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'edgeloop_ingest_worker_restarts_total{worker="1"} 1.0' in metrics
    serve.stop()
