"""The fleet control plane: releases, the store, ingest, rollouts, the web app and the simulator (no torch)."""
