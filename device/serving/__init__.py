"""The agent serves its active engine: a local HTTP inference API with dynamic batching, frame sources
(camera, video, RTSP, a watched folder), live latency telemetry, drift signals and a field-sample
reservoir. Every part runs without torch and without a GPU (any registered runtime serves)."""
