"""Export bundles for a data subject (R6, R7) or the police (R8): a zip of the audio files,
``metadata.json`` and a ``SHA256SUMS`` manifest (``sha256sum -c`` reads it).

Each audio file is checked against the sha256 recorded when the call ended, so what is
disclosed is provably what was recorded; a mismatch refuses the export.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal

import orjson

from callrec.access import policy as access
from callrec.archive.settings import EXTENSIONS
from callrec.privacy import redact
from callrec.recording.facts import Recording

Source = Callable[[Recording], Iterator[bytes]]
"""A recording's audio as the recipient gets it (archive/reading.py), block by block; raises
``IntegrityError`` when it is missing or fails its check."""

MAX_RECORDINGS = 1000
EmployeeIdentity = Literal["included", "withheld"]
EMPLOYEE_IDENTITY: tuple[EmployeeIdentity, ...] = ("included", "withheld")
# What of a recording's metadata names an employee (the JSON names of facts.Recording): GDPR
# Art. 15(4), a data subject's copy must not adversely affect the rights of others.
_EMPLOYEE_FIELDS = ("agent", "agent_user", "agent_display_name")
_CASE_REFERENCE = re.compile(r"^[A-Za-z0-9 ./:_#()-]{1,100}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadExport(ValueError):
    """The export request is missing something or unusable; the message says what."""


class IntegrityError(Exception):
    """An audio file is gone or no longer matches the sha256 recorded with it."""


@dataclass(frozen=True, slots=True)
class Disclosure:
    """Who receives the bundle and why (recorded in the audit log)."""

    recipient: str
    legal_basis: str
    case_reference: str

    @classmethod
    def parse(cls, recipient: Any, legal_basis: Any, case_reference: Any) -> Disclosure:
        def text(name: str, value: Any) -> str:
            if not isinstance(value, str) or not value.strip() or len(value) > 300 or _CONTROL.search(value):
                raise BadExport(f"{name}: required, one line of at most 300 characters")
            # Free text typed by a person; a phone number in it must not reach the register.
            return redact(value.strip())

        if not isinstance(case_reference, str) or not _CASE_REFERENCE.match(case_reference.strip()):
            raise BadExport("case_reference: required; letters, digits, spaces and . / : _ # ( ) -")
        case = redact(case_reference.strip())  # "040/123/4567" fits the pattern, and is a number
        return cls(text("recipient", recipient), text("legal_basis", legal_basis), case)

    def to_json(self) -> dict[str, str]:
        return {
            "recipient": self.recipient,
            "legal_basis": self.legal_basis,
            "case_reference": self.case_reference,
        }


@dataclass(frozen=True, slots=True)
class Bundle:
    file: IO[bytes]
    """An anonymous temporary file: the operating system deletes it on close or crash."""
    size: int
    sha256: str


def parse_ids(values: Any) -> list[uuid.UUID]:
    """Recording ids in the order given, duplicates dropped."""
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_RECORDINGS:
        raise BadExport(f"recording_ids: a list of 1 to {MAX_RECORDINGS} recording ids")
    try:
        return list(dict.fromkeys(uuid.UUID(str(v)) for v in values))
    except ValueError:
        raise BadExport("recording_ids: each must be a recording id (a UUID)") from None


def parse_employee_identity(value: Any) -> EmployeeIdentity:
    """The request's ``employee_identity``: ``included`` (the default) or ``withheld``."""
    if value is None or value == "":
        return "included"
    if value not in EMPLOYEE_IDENTITY:
        raise BadExport("employee_identity: included or withheld")
    return "withheld" if value == "withheld" else "included"


def _entry(rec: Recording, employee_identity: EmployeeIdentity) -> dict[str, Any]:
    """A recording's metadata as disclosed. Withheld: no agent's id, login or name, and the
    agents' stints keep only their times (that the call was transferred, not to whom)."""
    entry = rec.to_json(access.VIEWS["dpo"], audio=False)
    if employee_identity == "withheld":
        for name in _EMPLOYEE_FIELDS:
            entry.pop(name, None)
        entry["agents"] = [{k: v for k, v in a.items() if k != "agent"} for a in rec.agents]
    return entry


def _member(rec: Recording) -> str:
    # Start and id only: a file name never names the agent (or the customer).
    return f"audio/{rec.started_at:%Y%m%dT%H%M%SZ}_{rec.id}{EXTENSIONS[rec.audio_format]}"


def build(
    recordings: Sequence[Recording],
    source: Source,
    disclosure: Disclosure,
    *,
    exported_by: str,
    exported_at: datetime,
    employee_identity: EmployeeIdentity = "included",
) -> Bundle:
    """Blocking (file copies and hashing): run it in a thread. ``employee_identity``
    ``withheld`` leaves every employee's identity out of metadata.json, the exporting DPO's
    login included, and says so in it (docs/api.md#exports)."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it after sending
    try:
        sums: list[tuple[str, str]] = []
        entries = []
        with zipfile.ZipFile(out, "w") as zf:
            for rec in recordings:
                name = _member(rec)
                digest = hashlib.sha256()
                info = zipfile.ZipInfo(name, date_time=rec.started_at.utctimetuple()[:6])
                # Audio is stored, not deflated: it barely shrinks and hashing dominates.
                with zf.open(info, "w") as dst:
                    for chunk in source(rec):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != rec.sha256:
                    raise IntegrityError(
                        f"recording {rec.id}: the audio file does not match its recorded sha256"
                    )
                sums.append((rec.sha256, name))
                entries.append(_entry(rec, employee_identity) | {"file": name})
            manifest: dict[str, Any] = {"disclosure": disclosure.to_json()}
            if employee_identity == "included":
                manifest["exported_by"] = exported_by
            manifest |= {"exported_at": exported_at, "employee_identity": employee_identity}
            metadata = orjson.dumps(
                manifest | {"recordings": entries},
                option=orjson.OPT_INDENT_2,
                default=str,
            )
            zf.writestr("metadata.json", metadata, compress_type=zipfile.ZIP_DEFLATED)
            sums.append((hashlib.sha256(metadata).hexdigest(), "metadata.json"))
            zf.writestr("SHA256SUMS", "".join(f"{h}  {n}\n" for h, n in sums))
        size = out.tell()
        out.seek(0)
        whole = hashlib.sha256()
        while chunk := out.read(1 << 20):
            whole.update(chunk)
        out.seek(0)
        return Bundle(out, size, whole.hexdigest())
    except BaseException:
        out.close()
        raise
