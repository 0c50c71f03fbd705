"""Field re-calibration from the host: ``service`` sends recalibrate commands (stored before they are
published) and promotes kept calibrations; ``sets`` packs a host folder of images that devices download."""

from host.fleet.recalibration.service import RecalibrateRequest, RecalibrationError, Recalibrations
from host.fleet.recalibration.sets import CalibrationSets

__all__ = ["CalibrationSets", "RecalibrateRequest", "RecalibrationError", "Recalibrations"]
