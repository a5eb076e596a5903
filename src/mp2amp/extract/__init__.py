"""Extract: Mixpanel records from files (local, s3://, gs://) and from the Raw Export API."""

from mp2amp.extract.files import SourceFile, expand_paths, iter_file, iter_records

__all__ = ["SourceFile", "expand_paths", "iter_file", "iter_records"]
