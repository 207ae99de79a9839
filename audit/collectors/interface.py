"""The collector interface: one abstract method, a base error, a timeout per source.

A collector observes one *source* (a Keycloak, a firewall, a vCenter …) and returns evidence
about one or more targets. ``run_collectors`` runs many concurrently and turns every failure
or timeout into ``Evidence.unobserved`` for each kind the collector promised, so the engine
reports ``error`` rather than silently missing controls.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from policies import Evidence


class CollectorError(Exception):
    """A source could not be observed (unreachable, refused, malformed answer)."""


@dataclass(frozen=True)
class Observation:
    """What a collector saw of one target; ``run_collectors`` stamps source, time and digest."""

    kind: str
    target: str
    data: Mapping[str, Any]
    site: str | None = None
    municipality: str | None = None
    # Set only by collectors that replay evidence captured earlier (the bundle collector).
    source: str | None = None
    collected_at: datetime | None = None
    error: str | None = None


class Collector(abc.ABC):
    """Observe one source. Subclasses set ``kinds`` and implement ``collect``."""

    kinds: ClassVar[tuple[str, ...]]
    timeout: float = 60.0

    def __init__(self, source_id: str, *, site: str | None = None,
                 municipality: str | None = None) -> None:
        self.source_id = source_id
        self.site = site
        self.municipality = municipality

    @property
    def source(self) -> str:
        return f"{self.kinds[0].split('.')[0]}:{self.source_id}"

    @abc.abstractmethod
    def collect(self) -> Iterable[Observation]:
        """Observe the source; raise ``CollectorError`` when it cannot be observed."""


Progress = Callable[[str, str], None]


def _collect_all(collector: Collector) -> list[Observation]:
    """Everything one collector observes (run on a worker thread)."""
    return list(collector.collect())


def run_collectors(collectors: Sequence[Collector], *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                   progress: Progress | None = None, workers: int = 8) -> list[Evidence]:
    """Run every collector concurrently, each bounded by its own timeout."""
    evidence: list[Evidence] = []
    if not collectors:
        return evidence
    pool = cf.ThreadPoolExecutor(max_workers=min(workers, len(collectors)),
                                 thread_name_prefix="collector")
    try:
        futures = {c: pool.submit(_collect_all, c) for c in collectors}
        for c, fut in futures.items():
            try:
                observations = fut.result(timeout=c.timeout)
            except cf.TimeoutError:
                evidence.extend(_unobserved(c, clock(), f"no answer within {c.timeout:g} s"))
                _tell(progress, c.source, "timeout")
                continue
            except CollectorError as err:
                evidence.extend(_unobserved(c, clock(), str(err)))
                _tell(progress, c.source, "error")
                continue
            except Exception as err:  # a collector bug must not pass silently: it is an error
                evidence.extend(_unobserved(c, clock(), f"collector failed: {type(err).__name__}: {err}"))
                _tell(progress, c.source, "error")
                continue
            at = clock()
            for o in observations:
                site = o.site if o.site is not None else c.site
                muni = o.municipality if o.municipality is not None else c.municipality
                source, when = o.source or c.source, o.collected_at or at
                if o.error is not None:
                    evidence.append(Evidence.unobserved(o.kind, o.target, source, when, o.error,
                                                        site=site, municipality=muni))
                else:
                    evidence.append(Evidence.observed(o.kind, o.target, source, when, o.data,
                                                      site=site, municipality=muni))
            _tell(progress, c.source, "ok")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return evidence


def _unobserved(c: Collector, at: datetime, why: str) -> list[Evidence]:
    return [Evidence.unobserved(kind, c.source_id, c.source, at, why, site=c.site,
                                municipality=c.municipality) for kind in c.kinds]


def _tell(progress: Progress | None, source: str, state: str) -> None:
    if progress is not None:
        progress(source, state)
