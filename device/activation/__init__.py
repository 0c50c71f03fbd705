"""Activating a release on the device (see ``manager``): the engine manager, its steps, the INT8 gate."""

from device.activation.manager import EngineManager
from device.activation.records import Activation, ActivationError, prep_of

__all__ = ["Activation", "ActivationError", "EngineManager", "prep_of"]
