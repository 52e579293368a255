"""`segment`: new T1 scans segmented with any trained model of the workspace, their tissue volumes and QC pictures."""

from .choice import Chosen, checked_model_name, choose_model
from .inputs import collect_inputs, input_signature, output_names
from .measures import soft_volumes, tissue_volumes
from .options import SegmentOptions
from .pipeline import SegmentResult, segment
from .qc import qc_picture, snapshot
from .record import MEASURES, VOLUME_COLUMNS
from .reference import Reference, scan_warnings, training_reference
from .scans import Scan, ScanOutcome

__all__ = ["MEASURES", "VOLUME_COLUMNS", "Chosen", "Reference", "Scan", "ScanOutcome", "SegmentOptions",
           "SegmentResult", "checked_model_name", "choose_model", "collect_inputs", "input_signature",
           "output_names", "qc_picture", "scan_warnings", "segment", "snapshot", "soft_volumes", "tissue_volumes",
           "training_reference"]
