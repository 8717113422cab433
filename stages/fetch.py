"""Stage `fetch`: the photo domain and the real Monets -> data/external/{photos,monet}/."""

from __future__ import annotations

from dataclasses import dataclass

from lowshot.http import HttpClient, RetryPolicy
from lowshot.params import Params
from lowshot.sources import materialize
from stages.paths import DOWNLOADS, EXTERNAL


@dataclass
class FetchSummary:
    counts: dict[str, int]

    def describe(self) -> str:
        return ", ".join(f"{name}: {n} images" for name, n in self.counts.items())


def run(params: Params, *, progress: bool = True) -> FetchSummary:
    p = params.fetch
    client = HttpClient(timeout_s=p.timeout_s, retry=RetryPolicy(retries=p.retries))
    counts = {}
    for name, source in (("photos", p.photos), ("monet", p.monet)):
        files = materialize(source.source, EXTERNAL / name, cache_dir=DOWNLOADS, client=client,
                            sha256=source.sha256, subdirs=source.subdirs)
        counts[name] = len(files)
    return FetchSummary(counts)
