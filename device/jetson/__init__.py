"""What is particular to NVIDIA Jetson boards: the L4T release, and (in the modules beside this one)
their telemetry. Everything here reads files and runs tools that exist only on a Jetson, and answers
None (absent) elsewhere, never zero."""
