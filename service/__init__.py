"""A DICOMweb (PS3.18) microservice: STOW-RS, WADO-RS and QIDO-RS over local files and
SQLite by default, S3 and DynamoDB in production."""

__version__ = "0.1.0"
