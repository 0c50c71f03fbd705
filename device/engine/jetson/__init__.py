"""What is particular to NVIDIA Jetson boards: the L4T release, and (in the modules beside this one)
their telemetry. Everything here reads files and runs tools that exist only on a Jetson, and answers
None (absent) elsewhere, never zero.

``release`` (L4T release), ``sample`` (one telemetry reading, and the base of the streams that read
them), ``tegrastats`` (its line parser and a long-lived reader), ``jtop`` (jetson-stats, when its service
runs), ``sources`` (which of the two to read), ``clocks`` (nvpmodel mode, jetson_clocks state) and
``power`` (mean/peak power and energy over a benchmark run).
"""
