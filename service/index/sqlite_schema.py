"""The SQLite index's tables, and how an instance's attributes fill them.

``instances`` holds every stored instance; ``studies`` and ``series`` hold one row per
study and series, kept up to date in the same transaction as each instance, with the
columns QIDO-RS matches on, the counts it returns, and the level documents it answers
with. ``names`` holds person names, once per component group and once per word, so
that case-insensitive, wildcard and fuzzy name matching use an index.
"""

from __future__ import annotations

from service.core.matching import (
    NAME_ATTRIBUTES,
    NUMBER_KEYWORDS,
    TIME_KEYWORDS,
    name_rows,
    number,
)

__all__ = [
    "INSTANCE_COLUMNS",
    "NAME_ATTRIBUTES",
    "NUMBER_KEYWORDS",
    "PLANNER_STATISTICS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SERIES_COLUMNS",
    "STUDY_COLUMNS",
    "TIME_KEYWORDS",
    "name_rows",
    "number",
]

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    store           TEXT NOT NULL,
    sop_uid         TEXT NOT NULL,
    study_uid       TEXT NOT NULL,
    series_uid      TEXT NOT NULL,
    sop_class_uid   TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    instance_number INTEGER,
    blob_key        TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    attributes      TEXT NOT NULL,
    metadata        BLOB NOT NULL,
    layout          BLOB NOT NULL,
    stored_at       REAL NOT NULL,
    PRIMARY KEY (store, sop_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_by_study
    ON instances (store, study_uid, series_uid, instance_number, sop_uid);
CREATE TABLE IF NOT EXISTS studies (
    store                TEXT NOT NULL,
    study_uid            TEXT NOT NULL,
    patient_id           TEXT,
    issuer_of_patient_id TEXT,
    patient_birth_date   TEXT,
    patient_sex          TEXT,
    study_date           TEXT,
    study_time           TEXT,
    accession_number     TEXT,
    study_id             TEXT,
    study_description    TEXT,
    modalities           TEXT NOT NULL DEFAULT '',
    series_count         INTEGER NOT NULL DEFAULT 0,
    instance_count       INTEGER NOT NULL DEFAULT 0,
    revision             INTEGER NOT NULL DEFAULT 0,
    document             BLOB NOT NULL,
    PRIMARY KEY (store, study_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS studies_by_patient_id ON studies (store, patient_id);
CREATE INDEX IF NOT EXISTS studies_by_accession ON studies (store, accession_number);
CREATE INDEX IF NOT EXISTS studies_by_date ON studies (store, study_date);
CREATE TABLE IF NOT EXISTS series (
    store              TEXT NOT NULL,
    study_uid          TEXT NOT NULL,
    series_uid         TEXT NOT NULL,
    modality           TEXT,
    series_date        TEXT,
    series_time        TEXT,
    series_description TEXT,
    body_part_examined TEXT,
    series_number      INTEGER,
    pps_start_date     TEXT,
    pps_start_time     TEXT,
    instance_count     INTEGER NOT NULL DEFAULT 0,
    revision           INTEGER NOT NULL DEFAULT 0,
    document           BLOB NOT NULL,
    PRIMARY KEY (store, study_uid, series_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_by_uid ON series (store, series_uid);
CREATE INDEX IF NOT EXISTS series_by_modality ON series (store, modality, study_uid);
CREATE TABLE IF NOT EXISTS names (
    store     TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    attribute TEXT NOT NULL,
    kind      TEXT NOT NULL,  -- 'g': a whole component group, 'w': one word
    value     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS names_by_value ON names (store, attribute, kind, value, study_uid);
CREATE INDEX IF NOT EXISTS names_by_study ON names (store, study_uid);
CREATE TABLE IF NOT EXISTS claims (
    store      TEXT NOT NULL,
    sop_uid    TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    owner      TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (store, sop_uid)
);
"""

#: What the query planner is told about a new, empty index (sqlite_stat1 rows: table,
#: index, "rows rows-per-distinct-prefix..."), shaped like a large archive: 1 M
#: instances in 10 k studies. Without statistics SQLite's guesses can be badly wrong:
#: it listed the instances of one series by scanning every instance of the store (260
#: ms at 100 k instances) instead of seeking instances_by_study (1 ms). A later ANALYZE
#: replaces these with measured figures.
PLANNER_STATISTICS = (
    ("instances", "instances", "1000000 1000000 1"),
    ("instances", "instances_by_study", "1000000 1000000 100 50 1 1"),
    ("studies", "studies", "10000 10000 1"),
    ("studies", "studies_by_patient_id", "10000 10000 3"),
    ("studies", "studies_by_accession", "10000 10000 1"),
    ("studies", "studies_by_date", "10000 10000 10"),
    ("series", "series", "20000 20000 2 1"),
    ("series", "series_by_uid", "20000 20000 1"),
    ("series", "series_by_modality", "20000 20000 2000 1"),
    ("names", "names_by_study", "40000 40000 8"),
    ("names", "names_by_value", "40000 40000 10000 5000 10 1"),
)

#: keyword -> column, for the attributes matched by plain comparison.
STUDY_COLUMNS = {
    "StudyInstanceUID": "study_uid",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "StudyDescription": "study_description",
}
SERIES_COLUMNS = {
    "SeriesInstanceUID": "series_uid",
    "Modality": "modality",
    "SeriesDate": "series_date",
    "SeriesTime": "series_time",
    "SeriesDescription": "series_description",
    "BodyPartExamined": "body_part_examined",
    "SeriesNumber": "series_number",
    "PerformedProcedureStepStartDate": "pps_start_date",
    "PerformedProcedureStepStartTime": "pps_start_time",
}
INSTANCE_COLUMNS = {
    "SOPInstanceUID": "sop_uid",
    "SOPClassUID": "sop_class_uid",
    "InstanceNumber": "instance_number",
}
