"""A handler that serves several paths takes its UIDs from the path only: a query
parameter named like a missing path segment (``?instance=``, ``?study=``) is not one."""

from __future__ import annotations

import httpx

from tests.dicomgen import make_instance, new_uid
from tests.helpers import failures, multipart, referenced, stow_headers
from tests.test_wado import ANY_SYNTAX, split

JSON = {"Accept": "application/dicom+json"}


def _store(http: httpx.Client, study: str, series: str, sops: list[str]) -> None:
    body = multipart(*(make_instance(study=study, series=series, sop=s) for s in sops))
    r = http.post("/studies", content=body, headers=stow_headers())
    assert r.status_code == 200, r.text


def test_instance_in_the_query_does_not_narrow_a_series_retrieve(http: httpx.Client) -> None:
    study, series, sops = new_uid(), new_uid(), [new_uid(), new_uid()]
    _store(http, study, series, sops)
    url = f"/studies/{study}/series/{series}"
    r = http.get(url, params={"instance": sops[0]}, headers={"Accept": ANY_SYNTAX})
    assert r.status_code == 200
    assert len(split(r)) == 2
    meta = http.get(url + "/metadata", params={"instance": sops[0]}, headers=JSON)
    assert meta.status_code == 200 and len(meta.json()) == 2
    # And a study retrieve is not narrowed to a series by ?series=.
    whole = http.get(
        f"/studies/{study}", params={"series": "1.2.3"}, headers={"Accept": ANY_SYNTAX}
    )
    assert whole.status_code == 200 and len(split(whole)) == 2


def test_study_in_the_query_does_not_bind_an_upload(http: httpx.Client) -> None:
    other = new_uid()
    body = multipart(make_instance(study=new_uid(), series=new_uid()))
    r = http.post("/studies", params={"study": other}, content=body, headers=stow_headers())
    assert r.status_code == 200, r.text
    assert len(referenced(r.json())) == 1 and not failures(r.json())


def test_study_in_the_query_of_a_search_is_an_unknown_search_key(http: httpx.Client) -> None:
    r = http.get("/series", params={"study": "not-a-uid"}, headers=JSON)
    assert r.status_code == 400
    assert "search key 'study'" in r.json()["detail"]
    r = http.get("/instances", params={"series": "not-a-uid"}, headers=JSON)
    assert r.status_code == 400
    assert "search key 'series'" in r.json()["detail"]
