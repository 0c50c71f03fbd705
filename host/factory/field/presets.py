"""The names of the shift presets (``shift.PRESETS`` defines them), importable without numpy or OpenCV."""

PRESET_NAMES = ("dusk", "glare", "fog", "defocus", "sensor-noise", "night")
