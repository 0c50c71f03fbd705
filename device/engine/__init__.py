"""The engine code that both sides run: the device daemon and the host (evaluate, report, compress, release).

Inference runtimes and their registry (``runtimes``, with ``open_onnx``), the benchmark (``bench``), the
engine cache (``builder``), the golden-set self-test (``selftest``), INT8 forms, quantization and verification
(``calibration``), the drift reference (``reference``), ONNX checks (``onnx_check``), machine facts
(``sysinfo``) and the Jetson sensors they read (``jetson``).

The host imports only this package of ``device``; nothing here imports the daemon (the rest of ``device``).
Both rules are import-linter contracts in pyproject.toml.
"""
