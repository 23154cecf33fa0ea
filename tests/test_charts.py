"""testing/charts.py: the pinned charts come from a Helm repository served here on loopback, are
checked against the pin, cached as a Helm repository, and reused offline; without network or
mirror the error says both ways out."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing import charts
from testing.charts import MIRROR_ENV, ChartError, ensure_charts
from testing.program import ROOT, stack_config

PIN = stack_config("dev")["istioVersion"]
OTHER = "1.29.0"
# What the program installs from unless istioChartRepository says otherwise: Istio's Helm
# repository as its install guide names it (istio.io/latest/docs/setup/install/helm/).
OFFICIAL_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"


def chart_archive(chart: str, version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("Chart.yaml", f"apiVersion: v2\nname: {chart}\nversion: {version}\n"),
                           ("values.yaml", f"chart: {chart}\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"{chart}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_repository(directory: Path, listed: str, packaged: str, digest: str | None = None) -> Path:
    """A Helm repository whose index lists each chart at `listed` while its archive's Chart.yaml
    says `packaged`."""
    directory.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for chart in charts.CHARTS:
        data = chart_archive(chart, packaged)
        (directory / f"{chart}-{listed}.tgz").write_bytes(data)
        entries[chart] = [{"apiVersion": "v2", "name": chart, "version": listed, "urls": [f"{chart}-{listed}.tgz"],
                           "digest": digest or hashlib.sha256(data).hexdigest()}]
    (directory / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": entries}))
    return directory


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request in the test output."""


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/charts"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_loopback_url() -> str:
    """A loopback URL nothing listens on: what an unreachable repository looks like, without
    sending anything off this machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/charts"


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def test_a_repository_serving_another_chart_version_under_the_pin_is_rejected(tmp_path):
    write_repository(tmp_path / "www" / "charts", listed=PIN, packaged=OTHER)
    with serve(tmp_path / "www") as url, pytest.raises(ChartError) as error:
        ensure_charts(PIN, repository=url, cache_root=tmp_path / "cache")
    message = str(error.value)
    assert f"chart base: wanted version {PIN}, found base {OTHER}" in message and url in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / PIN).exists(), "nothing unverified is cached"


def test_a_repository_without_the_pinned_version_says_what_it_offers(tmp_path):
    write_repository(tmp_path / "www" / "charts", listed=OTHER, packaged=OTHER)
    with serve(tmp_path / "www") as url, pytest.raises(ChartError, match=rf"wanted version {PIN}, .* offers {OTHER}"):
        ensure_charts(PIN, repository=url, cache_root=tmp_path / "cache")


def test_an_archive_that_is_not_the_one_the_index_describes_is_rejected(tmp_path):
    write_repository(tmp_path / "www" / "charts", listed=PIN, packaged=PIN, digest="0" * 64)
    with serve(tmp_path / "www") as url, pytest.raises(ChartError, match="do not match the sha256"):
        ensure_charts(PIN, repository=url, cache_root=tmp_path / "cache")


def test_the_charts_are_cached_as_a_helm_repository_and_reused_offline(tmp_path):
    served = write_repository(tmp_path / "www" / "charts", listed=PIN, packaged=PIN)
    with serve(tmp_path / "www") as url:
        cache = ensure_charts(PIN, repository=url, cache_root=tmp_path / "cache")
    assert cache == tmp_path / "cache" / PIN
    index = yaml.safe_load((cache / "index.yaml").read_text())
    assert set(index["entries"]) == {"base", "istiod", "gateway"}
    for chart, (entry,) in index["entries"].items():
        archive = (cache / entry["urls"][0]).read_bytes()
        assert entry["version"] == PIN and "://" not in entry["urls"][0], "relative URLs: any port serves it"
        assert archive == (served / f"{chart}-{PIN}.tgz").read_bytes()
        assert entry["digest"] == hashlib.sha256(archive).hexdigest()
    # The server is gone: a fetch now fails (seen below), yet the cache answers.
    with pytest.raises(ChartError, match="cannot fetch"):
        ensure_charts(PIN, repository=url, cache_root=tmp_path / "elsewhere")
    assert ensure_charts(PIN, repository=url, cache_root=tmp_path / "cache") == cache


def test_the_mirror_variable_wins_and_may_be_a_local_directory(tmp_path, monkeypatch):
    mirror = write_repository(tmp_path / "mirror", listed=PIN, packaged=PIN)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    cache = ensure_charts(PIN, repository=closed_loopback_url(), cache_root=tmp_path / "cache")
    assert (cache / f"istiod-{PIN}.tgz").read_bytes() == (mirror / f"istiod-{PIN}.tgz").read_bytes()
    assert (cache / "SOURCE").read_text().strip() == str(mirror)


def test_a_broken_mirror_is_named_as_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ChartError, match=rf"chart mirror {MIRROR_ENV}={tmp_path / 'missing'}: No such file"):
        ensure_charts(PIN, cache_root=tmp_path / "cache")


def test_neither_network_nor_mirror_is_one_line_naming_both_ways_out(tmp_path, monkeypatch, capsys):
    unreachable = closed_loopback_url()
    with pytest.raises(ChartError) as error:
        ensure_charts(PIN, repository=unreachable, cache_root=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert f"allow network access to {unreachable}" in message
    assert f"set {MIRROR_ENV} to a mirror directory or http(s) URL" in message
    # `make test` fetches with `python -m testing.charts` first: one line on stderr, exit 1.
    monkeypatch.setattr(charts, "program_repository", lambda: unreachable)
    monkeypatch.setattr(charts, "CACHE_ROOT", tmp_path / "cache")
    assert charts.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"network access to {unreachable}" in err and MIRROR_ENV in err


def test_by_default_the_dev_stacks_version_comes_from_the_official_repository(tmp_path, monkeypatch):
    asked = []

    def offline(location: str, source: str, from_mirror: bool) -> bytes:
        asked.append(location)
        raise ChartError("offline")

    monkeypatch.setattr(charts, "_read", offline)
    with pytest.raises(ChartError):
        ensure_charts(cache_root=tmp_path / "cache")
    assert asked == [f"{OFFICIAL_REPOSITORY}/index.yaml"]
    # ... and the pinned version is the stack file's: the cache directory's name.
    monkeypatch.undo()
    mirror = write_repository(tmp_path / "mirror", listed=PIN, packaged=PIN)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    assert ensure_charts(cache_root=tmp_path / "cache").name == PIN


def test_the_readme_documents_the_mirror_and_ci_points_it_at_the_shared_repository():
    readme = (ROOT / "README.md").read_text()
    for title in ("Prerequisites", "Tests"):
        section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert MIRROR_ENV in section and OFFICIAL_REPOSITORY in section, title
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'export {MIRROR_ENV}="$PWD/../shared/istio-charts/$version/repo"' in ci
    assert "Pulumi.dev.yaml" in ci and PIN not in ci, "the version is read from the stack file, not restated"
