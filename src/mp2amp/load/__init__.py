"""Load: Amplitude's ingestion contract (Batch / HTTP V2) and the S3-import file sink."""

from mp2amp.load.batcher import Batcher, Limits
from mp2amp.load.deadletter import DeadLetterFile
from mp2amp.load.observer import LoadObserver, NullObserver, Origin, Submitted
from mp2amp.load.responses import Verdict, classify
from mp2amp.load.sender import RetriesExhausted
from mp2amp.load.settings import LoadReport, UploadSettings
from mp2amp.load.uploader import Uploader

__all__ = [
    "Batcher", "DeadLetterFile", "Limits", "LoadObserver", "LoadReport", "NullObserver",
    "Origin", "RetriesExhausted", "Submitted", "UploadSettings", "Uploader", "Verdict",
    "classify",
]
