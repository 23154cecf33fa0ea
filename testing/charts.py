"""The pinned Istio charts (`base`, `istiod`, `gateway`), fetched from a Helm repository, verified
and cached, so the tests stand on the project alone plus what the chart repository serves.

    ensure_charts(version: str | None = None) -> Path

returns `.cache/istio-charts/<version>/` (git-ignored), a Helm chart repository: an `index.yaml`
listing the three charts at `version` with relative URLs, beside `<chart>-<version>.tgz`. Serve
that directory over HTTP on loopback and give its URL as `istioChartRepository` to install the
exact pinned charts with Helm or pulumi-kubernetes. `version` defaults to the dev stack's
`istioVersion` (Pulumi.dev.yaml, else the program's default in components/config.py).

Where the charts come from:
- by default the repository the dev stack installs from: `istioChartRepository`, whose default is
  Istio's official Helm repository (components/config.py);
- or the mirror named by the ISTIO_CHART_MIRROR environment variable: a local directory holding a
  Helm repository (`index.yaml` and the archives it lists) or an http(s) URL of one.

Every archive is checked before it is cached: its bytes against the digest the source's own
`index.yaml` gives (when it gives one), and its `Chart.yaml` name and version against the pin. No
digest is committed here: the only charts this project has ever fetched came from a locally
packaged mirror, whose bytes differ from the official repository's. Once all three charts are
cached, later calls use the cache and touch no network. Any failure is a ChartError with a
one-line message; neither network nor mirror names both ways out.

`python -m testing.charts` fetches them (`make test` does so first) and prints the directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from components.config import parse_config
from testing.program import ROOT, stack_config

MIRROR_ENV = "ISTIO_CHART_MIRROR"
CHARTS = ("base", "istiod", "gateway")
CACHE_ROOT = ROOT / ".cache" / "istio-charts"
# Long enough for a slow link, short enough that a firewall that drops packets is reported soon.
FETCH_TIMEOUT_SECONDS = 30


class ChartError(RuntimeError):
    """The pinned charts cannot be had or are not what the pin says; the message is one line."""


def dev_settings_version() -> str:
    return parse_config(stack_config("dev")).istio_version


def program_repository() -> str:
    """The repository the dev stack installs the charts from (by default Istio's official one)."""
    return parse_config(stack_config("dev")).istio_chart_repository


def archive_name(chart: str, version: str) -> str:
    return f"{chart}-{version}.tgz"


def ensure_charts(version: str | None = None, *, repository: str | None = None,
                  cache_root: Path | None = None) -> Path:
    """The cache directory holding the pinned charts as a Helm repository, fetched on first use.

    `repository` (tests only) replaces the program's default repository; the mirror variable
    still wins over it, as it does over the default."""
    version = version or dev_settings_version()
    cache_root = cache_root or CACHE_ROOT
    cache = cache_root / version
    if _cached(cache, version):
        return cache
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    source = mirror or repository or program_repository()
    if mirror and "://" not in mirror:
        source = str(Path(mirror).resolve())
    index = _source_index(source, version, from_mirror=bool(mirror))
    entries = {chart: _entry(index, chart, version, source) for chart in CHARTS}
    cache_root.mkdir(parents=True, exist_ok=True)
    # Built beside the cache and moved in whole: an interrupted fetch never looks like a cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache_root))
    try:
        cached_entries = {}
        for chart, entry in entries.items():
            data = _read(_resolve(source, entry["urls"][0]), source, from_mirror=bool(mirror))
            _verify(chart, version, entry, data, source)
            (staging / archive_name(chart, version)).write_bytes(data)
            cached_entries[chart] = [{**entry, "urls": [archive_name(chart, version)],
                                      "digest": hashlib.sha256(data).hexdigest()}]
        (staging / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": cached_entries}))
        # Where they came from, for whoever wonders which bytes these are.
        (staging / "SOURCE").write_text(f"{source}\n")
        shutil.rmtree(cache, ignore_errors=True)
        try:
            staging.rename(cache)
        except OSError:
            # Another run (e.g. pytest and the e2e at once) cached them first: theirs will do.
            if not _cached(cache, version):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def _cached(cache: Path, version: str) -> bool:
    if not (cache / "index.yaml").is_file():
        return False
    for chart in CHARTS:
        path = cache / archive_name(chart, version)
        if not path.is_file():
            return False
        found = _chart_yaml(path.read_bytes())
        if (found.get("name"), str(found.get("version"))) != (chart, version):
            return False
    return True


def _source_index(source: str, version: str, from_mirror: bool) -> dict[str, Any]:
    data = _read(_resolve(source, "index.yaml"), source, from_mirror)
    try:
        index = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise ChartError(f"{source}/index.yaml is not YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise ChartError(f"{source}/index.yaml is not a Helm repository index (no `entries`)")
    return index


def _entry(index: dict[str, Any], chart: str, version: str, source: str) -> dict[str, Any]:
    versions = index["entries"].get(chart) or []
    for entry in versions:
        if str(entry.get("version")) == version and entry.get("urls"):
            return entry
    offered = ", ".join(str(e.get("version")) for e in versions[:5]) or "none"
    raise ChartError(f"chart {chart}: wanted version {version}, {source} offers {offered}")


def _resolve(source: str, url: str) -> str:
    """An index's URLs may be absolute or relative to the repository."""
    if "://" in url:
        return url
    if "://" in source:
        return urllib.parse.urljoin(source.rstrip("/") + "/", url)
    return str(Path(source) / url)


def _read(location: str, source: str, from_mirror: bool) -> bytes:
    try:
        if "://" not in location:
            return Path(location).read_bytes()
        with urllib.request.urlopen(location, timeout=FETCH_TIMEOUT_SECONDS) as response:
            return response.read()
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", None) or error.strerror or error
        if from_mirror:
            raise ChartError(f"cannot read {location} from the chart mirror {MIRROR_ENV}={source}: {reason}; "
                             f"point {MIRROR_ENV} at a directory or http(s) URL holding a Helm repository "
                             "index.yaml and the charts, or unset it to fetch from "
                             f"{program_repository()}") from None
        raise ChartError(f"cannot fetch {location}: {reason}; the tests need the pinned Istio charts: "
                         f"allow network access to {source}, or set {MIRROR_ENV} to a mirror directory "
                         "or http(s) URL holding a Helm repository index.yaml and the charts") from None


def _chart_yaml(archive: bytes) -> dict[str, Any]:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            # Helm packs Chart.yaml first: stop there rather than unpack the whole archive.
            for member in tar:
                if member.isfile() and member.name.count("/") == 1 and member.name.endswith("/Chart.yaml"):
                    found = yaml.safe_load(tar.extractfile(member).read())  # type: ignore[union-attr]
                    return found if isinstance(found, dict) else {}
    except (tarfile.TarError, OSError, yaml.YAMLError):
        return {}
    return {}


def _verify(chart: str, version: str, entry: dict[str, Any], data: bytes, source: str) -> None:
    digest = entry.get("digest")
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise ChartError(f"chart {chart} {version} from {source}: its bytes do not match the sha256 {digest} "
                         "of the repository's own index.yaml (a broken download or mirror)")
    found = _chart_yaml(data)
    if not found:
        raise ChartError(f"chart {chart} {version} from {source}: not a chart archive (no <chart>/Chart.yaml)")
    name, found_version = found.get("name"), str(found.get("version"))
    if name != chart or found_version != version:
        raise ChartError(f"chart {chart}: wanted version {version}, found {name} {found_version} "
                         f"in the Chart.yaml of the archive from {source}")


def chart_file(version: str, chart: str, path: str) -> bytes:
    """One file of a pinned chart (e.g. `values.yaml`, `files/crd-all.gen.yaml`), from the cache."""
    with tarfile.open(ensure_charts(version) / archive_name(chart, version)) as tar:
        try:
            member = tar.extractfile(f"{chart}/{path}")
        except KeyError:
            member = None
        if member is None:
            raise FileNotFoundError(f"chart {chart} {version} has no file {path}")
        return member.read()


def main() -> int:
    try:
        print(ensure_charts())
    except ChartError as error:
        print(f"istio charts: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
