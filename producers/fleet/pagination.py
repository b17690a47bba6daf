"""The two pagination styles, walked for the caller: Motive's page offsets and Samsara's cursors.

Both take a `fetch_page` function (one HTTP call, parsed) and yield items, so each provider module only
says how to ask for one page. Both stop defensively: a server that never ends the walk is an error,
not an infinite loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from fleetstream.producers.fleet.errors import MalformedResponseError
from fleetstream.producers.fleet.models import MotivePagination, SamsaraPagination

__all__ = ["MOTIVE_MAX_PER_PAGE", "cursor_items", "offset_items"]

T = TypeVar("T")

MOTIVE_MAX_PER_PAGE = 100
_MAX_PAGES = 100_000


def offset_items(
    fetch_page: Callable[[int, int], tuple[list[T], MotivePagination | None]],
    per_page: int = MOTIVE_MAX_PER_PAGE,
) -> Iterator[T]:
    """Motive: `page_no` from 1; stop on an empty page or when page_no * per_page >= total.

    A response without a pagination block (some endpoints, the docs' examples) is the whole answer.
    The server's own `per_page` wins over the requested one (it may clamp), so the end test stays
    right when it does.
    """
    per_page = max(1, min(per_page, MOTIVE_MAX_PER_PAGE))
    for page_no in range(1, _MAX_PAGES + 1):
        items, pagination = fetch_page(page_no, per_page)
        yield from items
        if not items or pagination is None:  # no pagination block: the answer is not paged
            return
        if pagination.page_no * pagination.per_page >= pagination.total:
            return
    raise RuntimeError(f"offset pagination did not end after {_MAX_PAGES} pages")


def cursor_items(
    fetch_page: Callable[[str | None], tuple[list[T], SamsaraPagination]],
    provider: str,
    endpoint: str,
) -> Iterator[T]:
    """Samsara: pass `after=endCursor` while `hasNextPage`; pages may be short or empty.

    The last page carries `endCursor: ""`. A next page promised with an empty or repeated cursor would
    loop forever, so it is reported as a malformed response.
    """
    after: str | None = None
    seen: set[str] = set()
    while True:
        items, pagination = fetch_page(after)
        yield from items
        if not pagination.hasNextPage:
            return
        cursor = pagination.endCursor
        if not cursor:
            raise MalformedResponseError(provider, endpoint, "pagination.endCursor",
                                         "empty while hasNextPage is true")
        if cursor in seen:
            raise MalformedResponseError(provider, endpoint, "pagination.endCursor",
                                         f"cursor {cursor!r} repeated; the walk would never end")
        seen.add(cursor)
        after = cursor
