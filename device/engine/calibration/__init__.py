"""INT8 that is right on the machine that runs it: the Q/DQ form a runtime and ISA need, torch-free
calibration with ONNX Runtime's quantization tools, calibration-set checks, and the INT8-against-FP32
verification every INT8 engine passes before it goes live."""
