"""C-FIND (PS3.4 Annex C) answered from the index with QIDO-RS's matching.

An identifier becomes the same :class:`service.core.qido.Search` a QIDO-RS request
does: each element with a value is a matching key parsed by QIDO's own rules
(wildcards, date and time ranges, UID lists, person names), each element is a return
key. Results come from :class:`QidoService` as DICOM JSON and are turned back into
identifiers holding exactly the requested keys (empty when the instance lacks one).

Levels: STUDY, SERIES, IMAGE in the Study Root and Patient Root models; PATIENT in the
Patient Root model, answered from study records, one response per Patient ID.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio.to_thread
import msgspec
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from service.core.qido import QidoService, Search, parse_search
from service.core.search import Level
from service.errors import MalformedRequest

__all__ = ["FindPlan", "FindService"]

_LEVELS = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
# Elements of the identifier that are not matching keys.
_NOT_KEYS = {0x00080005, 0x00080052, 0x00080054, 0x00080056}
_PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"  # Patient Root Q/R Information Model - FIND


class FindPlan(msgspec.Struct, kw_only=True):
    """One C-FIND request, parsed: what to search, and what each response carries."""

    level_name: str
    search: Search
    #: The requested keys: (tag, VR), in identifier order.
    keys: list[tuple[int, str]]
    page_size: int
    #: PATIENT level: Patient IDs already answered (one response per patient).
    seen_patients: set[str] | None = None


def _text(element: DataElement) -> str:
    value: Any = element.value
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value).strip()


class FindService:
    def __init__(self, qido: QidoService, *, page_size: int) -> None:
        self.qido = qido
        self.page_size = page_size

    def plan(self, identifier: Dataset, model: str) -> FindPlan:
        """Parse an identifier; ValueError says what is wrong with it."""
        level_name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        patient = level_name == "PATIENT"
        if patient and model != _PATIENT_ROOT:
            raise ValueError("PATIENT level needs the Patient Root model")
        level = Level.STUDY if patient else _LEVELS.get(level_name)
        if level is None:
            raise ValueError(f"QueryRetrieveLevel {level_name!r} is not supported")
        params: list[tuple[str, str]] = []
        keys: list[tuple[int, str]] = []
        for element in identifier:
            tag = int(element.tag)
            if tag in _NOT_KEYS or element.tag.group == 0x0002:
                continue
            keys.append((tag, element.VR))
            keyword = keyword_for_tag(tag)
            if not keyword or element.VR == "SQ":
                continue  # returned (empty unless stored) but not matched on
            params.append((keyword, _text(element)))
        try:
            search = parse_search(
                params, level=level, default_limit=self.page_size, max_limit=self.page_size
            )
        except MalformedRequest as exc:
            raise ValueError(exc.message) from None
        return FindPlan(
            level_name=level_name,
            search=search,
            keys=keys,
            page_size=self.page_size,
            seen_patients=set() if patient else None,
        )

    async def page(self, plan: FindPlan, offset: int) -> tuple[list[Dataset], bool]:
        """The response identifiers of one page of results, and whether more exist."""
        query = msgspec.structs.replace(plan.search.query, offset=offset)
        search = msgspec.structs.replace(plan.search, query=query)
        # A bounded-scan warning (DynamoDB) has no place in a C-FIND response.
        documents, more, _warning = await self.qido.search(search, root="")
        answers = await anyio.to_thread.run_sync(_answers, plan, documents)
        return answers, more


def _answers(plan: FindPlan, documents: Iterable[bytes]) -> list[Dataset]:
    out = []
    for document in documents:
        found = Dataset.from_json(document.decode())
        seen = plan.seen_patients
        if seen is not None:
            patient = str(found.get("PatientID", ""))
            if patient in seen:
                continue
            seen.add(patient)
        answer = Dataset()
        answer.SpecificCharacterSet = "ISO_IR 192"
        answer.QueryRetrieveLevel = plan.level_name
        for tag, vr in plan.keys:
            if tag in found:
                answer[tag] = found[tag]
            else:
                answer.add_new(tag, vr, None)
        out.append(answer)
    return out
