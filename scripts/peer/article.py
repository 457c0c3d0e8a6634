"""The article's asyncio scraper, reproduced as the Python peer of fetchlab's models.

The program the fetchlab README starts from (12,000 pages with asyncio) is built
from a handful of idioms, and this file uses exactly those, in the article's
style rather than the fastest Python possible:

- one `httpx.AsyncClient` shared by every request, its connection pool sized to
  the concurrency;
- an `asyncio.Semaphore` to limit the requests in flight;
- `asyncio.wait_for` for a per-request timeout;
- retries with exponential backoff (and a little jitter) for timeouts,
  connection errors, 5xx and 429;
- one task per URL, all created up front, awaited with
  `asyncio.gather(*tasks, return_exceptions=True)` so that a failure is a result,
  not a reason to stop the batch;
- each page's <title> parsed with the standard library's html.parser, on the
  event loop (the CPU-bound step, as in the article).

It prints one JSON object: pages, ok, errors, titles, wall_s, pages_per_s and
errors_by_kind. scripts/peer runs it against fetchlab's mock server and compares
it with every fetchlab model on the same server and URLs.

    python article.py --urls urls.txt [--concurrency 100] [--timeout-s 30] [--retries 2]
"""

import argparse
import asyncio
import json
import random
import sys
import time
from html.parser import HTMLParser

import httpx

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class TitleParser(HTMLParser):
    """Collects the <title> text and counts <a href> links."""

    def __init__(self):
        super().__init__()
        self.title = None
        self.links = 0
        self._in_title = False
        self._parts = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag == "a" and any(name == "href" for name, _ in attrs):
            self.links += 1

    def handle_endtag(self, tag):
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = "".join(self._parts).strip()

    def handle_data(self, data):
        if self._in_title:
            self._parts.append(data)


def parse(html):
    parser = TitleParser()
    parser.feed(html)
    parser.close()
    return parser.title, parser.links


class RetryableStatus(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


async def fetch(client, semaphore, url, timeout_s, retries, backoff_s):
    # As in the article, the slot is held for the whole fetch, retries and
    # backoff included: the semaphore bounds the URLs being worked on.
    async with semaphore:
        for attempt in range(retries + 1):
            try:
                response = await asyncio.wait_for(client.get(url), timeout_s)
                if response.status_code in RETRYABLE_STATUS:
                    raise RetryableStatus(response.status_code)
                response.raise_for_status()
                title, links = parse(response.text)
                return {"url": url, "status": response.status_code, "title": title, "links": links}
            except (asyncio.TimeoutError, httpx.TransportError, RetryableStatus):
                if attempt == retries:
                    raise
                delay = backoff_s * 2**attempt
                await asyncio.sleep(delay + random.uniform(0, delay / 2))


async def main(urls, concurrency, timeout_s, retries, backoff_s):
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # httpx's own timeout is the same as wait_for's, so neither cuts the other short.
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        semaphore = asyncio.Semaphore(concurrency)
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(fetch(client, semaphore, url, timeout_s, retries, backoff_s))
            for url in urls
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - started

    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = {}
    for r in results:
        if isinstance(r, BaseException):
            kind = type(r).__name__
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "program": "article.py (asyncio + httpx " + httpx.__version__ + ")",
        "pages": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "titles": sum(1 for r in ok if r["title"]),
        "wall_s": round(wall, 3),
        "pages_per_s": round(len(ok) / wall, 1) if wall > 0 else 0.0,
        "errors_by_kind": errors,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", required=True, help="file with one URL per line")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout")
    ap.add_argument("--retries", type=int, default=2, help="extra attempts")
    ap.add_argument("--backoff-s", type=float, default=0.5, help="first retry delay")
    args = ap.parse_args()
    with open(args.urls) as f:
        urls = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    summary = asyncio.run(main(urls, args.concurrency, args.timeout_s, args.retries, args.backoff_s))
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
