"""A browser on another origin reads a study's metadata, pixel data and a frame through CORS.

Headless Chromium (Debian's package, installed by ``make test``) loads a page from a
test origin; the page's ``fetch()`` calls carry an Authorization header (so the
browser sends a preflight first) and read the response headers a viewer needs. The
test then checks what the browser received against what was stored.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.browser import PageServer, chromium
from tests.dicomgen import encode, make_dataset
from tests.helpers import multipart, stow_headers

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium not installed")

PAGE = """<!doctype html><meta charset="utf-8"><title>viewer</title><script>
const args = new URLSearchParams(location.search);
const headers = (accept) => ({Accept: accept, Authorization: "Bearer viewer-token"});
async function run() {
  const out = {};
  try {
    const m = await fetch(args.get("metadata"), {headers: headers("application/dicom+json")});
    out.metadataStatus = m.status;
    out.etag = m.headers.get("ETag");
    out.metadata = await m.json();
    const again = await fetch(args.get("metadata"), {
      headers: {...headers("application/dicom+json"), "If-None-Match": out.etag}});
    out.revalidatedStatus = again.status;
    const uri = out.metadata[0]["7FE00010"].BulkDataURI;
    const p = await fetch(uri, {headers: {...headers("application/octet-stream"),
                                          Range: "bytes=0-99"}});
    out.pixelStatus = p.status;
    out.contentRange = p.headers.get("Content-Range");
    const bytes = new Uint8Array(await p.arrayBuffer());
    out.pixels = btoa(String.fromCharCode(...bytes));
    const instance = uri.split("/bulkdata/")[0];
    const f = await fetch(instance + "/frames/1", {headers: headers("application/octet-stream")});
    out.frameStatus = f.status;
    out.frameType = f.headers.get("Content-Type");
    const frame = new Uint8Array(await f.arrayBuffer());
    out.frame = btoa(String.fromCharCode(...frame));
  } catch (e) {
    out.error = String(e);
  }
  await fetch("/result", {method: "POST", body: JSON.stringify(out)});
}
run();
</script>"""


def _open(page: PageServer, host: str, metadata: str) -> Any:
    return page.run_page(f"http://{host}:{page.port}/?" + urlencode({"metadata": metadata}))


def test_viewer_on_another_origin_reads_metadata_and_pixels(start_server) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset(rows=32, cols=32, pixel_seed=11)
    with PageServer(PAGE) as page:
        service = start_server(cors_origins=f"http://127.0.0.1:{page.port}")
        r = httpx.post(
            service.root + "/studies", content=multipart(encode(ds)), headers=stow_headers()
        )
        assert r.status_code == 200
        metadata = f"{service.root}/studies/{ds.StudyInstanceUID}/metadata"
        seen = _open(page, "127.0.0.1", metadata)
        assert "error" not in seen, seen
        assert seen["metadataStatus"] == 200
        assert seen["etag"]  # exposed to the page, so it can revalidate
        assert seen["revalidatedStatus"] == 304
        assert seen["metadata"][0]["00080018"]["Value"] == [ds.SOPInstanceUID]
        assert seen["pixelStatus"] == 206
        assert seen["contentRange"] == f"bytes 0-99/{len(ds.PixelData)}"
        assert base64.b64decode(seen["pixels"]) == ds.PixelData[:100]
        assert seen["frameStatus"] == 200
        assert seen["frameType"].startswith("application/octet-stream")
        assert base64.b64decode(seen["frame"]) == ds.PixelData  # one native frame

        # The same page from an origin the service does not list is refused by the
        # browser: fetch() rejects, nothing is read.
        refused = _open(page, "localhost", metadata)
        assert "metadata" not in refused
        assert "Failed to fetch" in refused["error"]
