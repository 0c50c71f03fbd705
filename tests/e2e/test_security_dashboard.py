"""The dashboard against a server with an API token, in a real headless Chromium: it asks for the token,
takes it from a "#token=" link, keeps it in sessionStorage and sends it on its API calls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from shared import protocol as p
from tests.e2e.test_dashboard import _headless
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.security]

TOKEN = "dashboard-token-0123456789abcdef"


@pytest.fixture
def token_host(store: ReleaseStore, tmp_path: Path) -> Iterator[HostServer]:
    store.root.mkdir(parents=True, exist_ok=True)
    cfg = ServeConfig(releases=store.root, store_url=str(tmp_path / "d.sqlite"), port=free_port(),
                      embedded_broker=True, embedded_broker_port=free_port(), api_token=TOKEN)  # fmt: skip
    srv = HostServer(cfg)
    srv.start()
    srv.store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", runtime="onnxruntime"))
    yield srv
    srv.stop()


def test_the_dashboard_asks_for_the_token_and_uses_it(token_host: HostServer, tmp_path: Path) -> None:
    base = token_host.config.base_url
    dom = _headless(base, tmp_path, "--dump-dom").stdout
    assert 'data-auth="required"' in dom and 'data-loaded="1"' not in dom, dom[:2000]
    assert re.search(r'<form id="login"(?![^>]*hidden)', dom)  # the form shows
    assert '<tr data-device="dev-1">' not in dom  # and no fleet data without the token
    dom = _headless(base + "#token=wrong-token-0123456789", tmp_path, "--dump-dom").stdout
    assert 'data-auth="refused"' in dom and '<tr data-device="dev-1">' not in dom
    dom = _headless(base + f"#token={TOKEN}", tmp_path, "--dump-dom").stdout
    assert 'data-loaded="1"' in dom and 'data-auth="token"' in dom, dom[:2000]
    assert '<tr data-device="dev-1">' in dom
    assert re.search(r'<form id="login"[^>]*hidden', dom)
